"""The attention benchmark: implementations under test, their cases and the run loop.

Every implementation is registered by name with a ``build`` function (a
:class:`Case` -> a :class:`~attnkit.bench.measure.Prepared` forward) and an
``estimate`` of the memory a forward+backward needs, used to skip cases that
would not fit. Add one with :func:`register`.

Attention-level implementations take ``q, k, v`` of shape ``(B, H, T, Dh)``;
module-level ones (``torch_mha``, ``attnkit_mha``) take ``x (B, T, H * Dh)``
and include the input and output projections.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.bench.measure import Prepared, Timing, run_in_worker

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
NAIVE_MASK_VALUE = -1e9
CHUNK = 512  # attnkit.functional.chunked's default block size
MIB = 2**20


@dataclass(frozen=True)
class Case:
    """One benchmark case: sizes, device and dtype (JSON-serialisable)."""

    seq_len: int
    batch: int = 2
    heads: int = 8
    head_dim: int = 64
    causal: bool = True
    device: str = "cpu"
    dtype: str = "float32"

    @property
    def d_model(self) -> int:
        """Model width ``H * Dh`` of the module-level implementations."""
        return self.heads * self.head_dim

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def element_size(self) -> int:
        return torch.empty((), dtype=self.torch_dtype).element_size()


@dataclass(frozen=True)
class Implementation:
    """A registered implementation: how to build it, how much memory it may need.

    ``available`` returns None when the implementation can run here, or the
    reason it cannot (e.g. a module that is not importable).
    """

    name: str
    description: str
    build: Callable[[Case], Prepared]
    estimate: Callable[[Case], int]
    available: Callable[[], str | None] = field(default=lambda: None)


IMPLEMENTATIONS: dict[str, Implementation] = {}


def register(impl: Implementation) -> None:
    """Add (or replace) an implementation selectable with ``--impls``."""
    IMPLEMENTATIONS[impl.name] = impl


# --------------------------------------------------------------------------- inputs


def _randn(case: Case, *shape: int) -> Tensor:
    return torch.randn(*shape, device=case.device, dtype=case.torch_dtype)


def _qkv(case: Case) -> tuple[Tensor, Tensor, Tensor]:
    """Query, key and value, each ``(B, H, T, Dh)``."""
    shape = (case.batch, case.heads, case.seq_len, case.head_dim)
    return _randn(case, *shape), _randn(case, *shape), _randn(case, *shape)


def attention_case(case: Case, fn: Callable[[Tensor, Tensor, Tensor], Tensor]) -> Prepared:
    """A prepared attention-level case: ``fn(q, k, v) -> (B, H, T, Dh)``."""
    q, k, v = _qkv(case)
    return Prepared(fn=fn, inputs=(q, k, v), grad_output=torch.randn_like(q))


def _module_case(case: Case, module: torch.nn.Module, fn: Callable[[Tensor], Tensor]) -> Prepared:
    """A prepared module-level case: ``fn(x) -> (B, T, D)`` with ``x (B, T, D)``."""
    x = _randn(case, case.batch, case.seq_len, case.d_model)
    params = tuple(module.parameters())
    return Prepared(fn=fn, inputs=(x,), grad_output=torch.randn_like(x), params=params)


# --------------------------------------------------------------------------- builders


def naive_attention(q: Tensor, k: Tensor, v: Tensor, causal: Tensor | None) -> Tensor:
    """The textbook formulation: ``softmax(masked_fill(q k^T * scale, ~causal, -1e9)) v``.

    float16 cannot hold -1e9, so it uses its own lowest value instead.
    """
    scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(q.size(-1)))
    if causal is not None:
        fill = torch.finfo(q.dtype).min if q.dtype == torch.float16 else NAIVE_MASK_VALUE
        scores = scores.masked_fill(~causal, fill)
    return torch.softmax(scores, dim=-1) @ v


def _build_naive(case: Case) -> Prepared:
    causal = None
    if case.causal:
        causal = torch.ones(case.seq_len, case.seq_len, dtype=torch.bool, device=case.device)
        causal = causal.tril()
    return attention_case(case, lambda q, k, v: naive_attention(q, k, v, causal))


def _build_attnkit_backend(backend: str) -> Callable[[Case], Prepared]:
    def build(case: Case) -> Prepared:
        from attnkit.functional import scaled_dot_product_attention

        def fn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            return scaled_dot_product_attention(q, k, v, is_causal=case.causal, backend=backend)[0]

        return attention_case(case, fn)

    return build


def _build_torch_sdpa(case: Case) -> Prepared:
    return attention_case(
        case, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=case.causal)
    )


def _build_torch_mha(case: Case) -> Prepared:
    mha = torch.nn.MultiheadAttention(
        case.d_model, case.heads, batch_first=True, device=case.device, dtype=case.torch_dtype
    )
    mask = None
    if case.causal:  # torch.nn.MultiheadAttention: True = may NOT attend
        mask = torch.ones(case.seq_len, case.seq_len, dtype=torch.bool, device=case.device)
        mask = mask.triu(1)

    def fn(x: Tensor) -> Tensor:
        return mha(x, x, x, attn_mask=mask, need_weights=False, is_causal=case.causal)[0]

    return _module_case(case, mha, fn)


def _attnkit_mha_class() -> type[torch.nn.Module]:
    from attnkit.nn import MultiHeadAttention

    return MultiHeadAttention


def _attnkit_mha_available() -> str | None:
    try:
        _attnkit_mha_class()
    except Exception as exc:
        return f"attnkit.nn.MultiHeadAttention is not importable ({type(exc).__name__}: {exc})"
    return None


def _build_attnkit_mha(case: Case) -> Prepared:
    mha = _attnkit_mha_class()(case.d_model, case.heads)
    mha = mha.to(device=case.device, dtype=case.torch_dtype)

    def fn(x: Tensor) -> Tensor:
        return mha(x, x, x, is_causal=case.causal)[0]

    return _module_case(case, mha, fn)


# --------------------------------------------------------------------------- estimates
# Estimated peak bytes of one forward+backward, inputs included. The factors were
# set from measured CPU float32 peaks at T = 256 and 1024 (B=2, H=8, Dh=64) and
# err on the high side (about 1.1-2x the measurement); they only decide skipping.


def _sizes(case: Case) -> tuple[int, int, int]:
    """Bytes of one ``(B, H, T, Dh)`` tensor, one ``(B, H, T, T)`` score matrix, and
    one ``(B, H, T, T)`` float32 matrix."""
    n = case.batch * case.heads * case.seq_len
    qkv_bytes = n * case.head_dim * case.element_size
    return qkv_bytes, n * case.seq_len * case.element_size, n * case.seq_len * 4


def _estimate_fused(case: Case) -> int:
    """Flash-style kernels: a few ``(B, H, T, Dh)`` tensors plus per-thread scratch."""
    qkv, _, _ = _sizes(case)
    return 12 * qkv + 32 * MIB


def _estimate_naive(case: Case) -> int:
    """Scores, masked scores, softmax and their gradients: about four score matrices."""
    qkv, scores, _ = _sizes(case)
    return 10 * qkv + 4 * scores + case.seq_len**2 + 64 * MIB


def _estimate_math(case: Case) -> int:
    """Like naive, but scores and softmax are float32 whatever the input dtype."""
    qkv, _, scores32 = _sizes(case)
    return 10 * qkv + 4 * scores32 + 2 * case.seq_len**2 + 64 * MIB


def _estimate_chunked(case: Case) -> int:
    """Linear in T: the tensors plus a few ``(B, H, block, block)`` float32 tiles."""
    qkv, _, _ = _sizes(case)
    tile = case.batch * case.heads * min(CHUNK, case.seq_len) ** 2 * 4
    return 10 * qkv + 12 * tile + 64 * MIB


def _estimate_module(case: Case) -> int:
    """Projections and their gradients, the ``(T, T)`` mask as float, and fused attention."""
    qkv, _, _ = _sizes(case)
    weights = 4 * case.d_model**2 * case.element_size
    return 32 * qkv + 4 * weights + 2 * case.seq_len**2 * case.element_size + 64 * MIB


# --------------------------------------------------------------------------- registry

for _impl in (
    Implementation(
        "attnkit_fused",
        "attnkit sdpa, backend='fused'",
        _build_attnkit_backend("fused"),
        _estimate_fused,
    ),
    Implementation(
        "attnkit_math",
        "attnkit sdpa, backend='math'",
        _build_attnkit_backend("math"),
        _estimate_math,
    ),
    Implementation(
        "attnkit_chunked",
        "attnkit sdpa, backend='chunked'",
        _build_attnkit_backend("chunked"),
        _estimate_chunked,
    ),
    Implementation(
        "torch_sdpa",
        "torch.nn.functional.scaled_dot_product_attention called directly",
        _build_torch_sdpa,
        _estimate_fused,
    ),
    Implementation(
        "naive",
        "q@k^T*scale, masked_fill(~causal, -1e9), softmax, @v",
        _build_naive,
        _estimate_naive,
    ),
    Implementation(
        "torch_mha",
        "torch.nn.MultiheadAttention (with projections), need_weights=False",
        _build_torch_mha,
        _estimate_module,
    ),
    Implementation(
        "attnkit_mha",
        "attnkit.nn.MultiHeadAttention (with projections)",
        _build_attnkit_mha,
        _estimate_module,
        _attnkit_mha_available,
    ),
):
    register(_impl)

DEFAULT_IMPLS: tuple[str, ...] = tuple(IMPLEMENTATIONS)
DEFAULT_SEQ_LENS: tuple[int, ...] = (256, 1024, 4096, 8192)


def prepare(impl: str, case: dict) -> Prepared:
    """Worker hook: build implementation ``impl`` for the case given as a dict."""
    return IMPLEMENTATIONS[impl].build(Case(**case))


# --------------------------------------------------------------------------- run loop


@dataclass(frozen=True)
class AttentionSettings:
    """Everything one ``attnkit bench attention`` run needs."""

    seq_lens: tuple[int, ...] = DEFAULT_SEQ_LENS
    batch: int = 2
    heads: int = 8
    head_dim: int = 64
    causal: bool = True
    device: str = "cpu"
    dtype: str = "float32"
    impls: tuple[str, ...] = DEFAULT_IMPLS
    timing: Timing = field(default_factory=Timing)
    memory_budget_bytes: int = 8 * 2**30
    threads: int | None = None
    seed: int = 0
    timeout_s: float | None = None

    def case(self, seq_len: int) -> Case:
        """The case for one sequence length."""
        return Case(
            seq_len, self.batch, self.heads, self.head_dim, self.causal, self.device, self.dtype
        )


def _base_record(impl: str, case: Case, estimate: int) -> dict:
    return {
        "impl": impl,
        "T": case.seq_len,
        "B": case.batch,
        "H": case.heads,
        "Dh": case.head_dim,
        "causal": case.causal,
        "device": case.device,
        "dtype": case.dtype,
        "est_peak_mem_bytes": estimate,
    }


def _skipped(record: dict, reason: str, message: str) -> dict:
    return {**record, "status": "skipped", "skip_reason": reason, "message": message}


def run_case(
    settings: AttentionSettings,
    impl_name: str,
    seq_len: int,
    *,
    registry: dict[str, Implementation] | None = None,
    suite: str = "attention",
) -> dict:
    """Run (or skip) one implementation at one sequence length; returns its record.

    ``registry`` (default :data:`IMPLEMENTATIONS`) holds ``impl_name``; ``suite`` names
    the module whose ``prepare`` builds the case in the worker (``attnkit.bench.<suite>``).
    """
    impl = (IMPLEMENTATIONS if registry is None else registry)[impl_name]
    case = settings.case(seq_len)
    record = _base_record(impl_name, case, impl.estimate(case))
    unavailable = impl.available()
    if unavailable:
        return _skipped(record, "unavailable", unavailable)
    if record["est_peak_mem_bytes"] > settings.memory_budget_bytes:
        message = (
            f"estimated peak {record['est_peak_mem_bytes'] / 2**30:.1f} GiB exceeds the "
            f"memory budget {settings.memory_budget_bytes / 2**30:.1f} GiB"
        )
        return _skipped(record, "memory_budget", message)
    payload = {
        "suite": suite,
        "impl": impl_name,
        "case": asdict(case),
        "timing": asdict(settings.timing),
        "threads": settings.threads,
        "seed": settings.seed,
    }
    return {**record, **run_in_worker(payload, timeout=settings.timeout_s)}


def run_attention(
    settings: AttentionSettings,
    on_record: Callable[[dict], None] | None = None,
    *,
    registry: dict[str, Implementation] | None = None,
    suite: str = "attention",
) -> list[dict]:
    """All cases, shortest sequences first; ``on_record`` sees each record as it arrives.

    ``registry`` and ``suite`` as in :func:`run_case` (another suite of attention-level
    cases, such as ``scaling``, reuses this loop with its own).
    """
    records = []
    for seq_len in settings.seq_lens:
        for impl_name in settings.impls:
            record = run_case(settings, impl_name, seq_len, registry=registry, suite=suite)
            records.append(record)
            if on_record is not None:
                on_record(record)
    return records
