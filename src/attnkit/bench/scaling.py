"""The scaling benchmark: forward+backward time and peak memory of the attention
variants as the sequence length ``T`` grows.

It is an attention-level suite like :mod:`attnkit.bench.attention` and reuses its
machinery: the same :class:`~attnkit.bench.attention.Case` (``q, k, v`` of shape
``(B, H, T, Dh)``), :class:`~attnkit.bench.attention.Implementation` entries with
a ``build`` and a memory ``estimate``, the same run loop
(:func:`~attnkit.bench.attention.run_attention` with this module's registry) and
the same worker protocol: each case runs in a fresh process that calls
:func:`prepare` here. The dense, math and chunked entries are the attention
benchmark's own.

The sparse and approximate variants keep their usual sizes (window 256, blocks
of 64, chunks of 64, 256 random features) but shrink them to ``T // 2`` for
short sequences, so tiny test cases (and the worker's 16-position warm-up) run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from torch import Tensor

from attnkit.bench import attention
from attnkit.bench.attention import Case, Implementation, attention_case
from attnkit.bench.measure import Prepared

MIB = 2**20
WINDOW = 256  # sliding window: keys each query sees (causal) / on each side
BLOCK = 64  # block-sparse block size
CHUNK = 64  # linear, Performer and LSH chunk size
FEATURES = 256  # Performer random features
LSH_HASHES = 2  # LSH hash rounds
STRIDED = (2, 4)  # causal block-sparse: strided_layout(nb, local_blocks, stride_blocks)
SLIDING_BLOCKS = 1  # non-causal block-sparse: sliding_layout(nb, window_blocks)


def scaled(size: int, seq_len: int) -> int:
    """``size``, but at most ``T // 2`` (and at least 1) so short sequences work."""
    return max(1, min(size, seq_len // 2))


def lsh_buckets_for(seq_len: int) -> int:
    """Buckets per LSH round: ``max(2, T // 64)``, rounded up to an even number."""
    buckets = max(2, seq_len // CHUNK)
    return buckets + buckets % 2


def block_layout(seq_len: int, causal: bool) -> Tensor:
    """The ``(nb, nb)`` block layout, ``nb = ceil(T / block)``: strided (local 2 blocks,
    every 4th block before) when causal, a band of one block either side otherwise."""
    from attnkit.functional.block_sparse import sliding_layout, strided_layout

    blocks = math.ceil(seq_len / scaled(BLOCK, seq_len))
    return strided_layout(blocks, *STRIDED) if causal else sliding_layout(blocks, SLIDING_BLOCKS)


# --------------------------------------------------------------------------- builders


def _build_sliding_window(case: Case) -> Prepared:
    from attnkit.functional.local import sliding_window_attention

    window = scaled(WINDOW, case.seq_len)

    def fn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return sliding_window_attention(q, k, v, window=window, causal=case.causal)

    return attention_case(case, fn)


def _build_block_sparse(case: Case) -> Prepared:
    from attnkit.functional.block_sparse import block_sparse_attention

    block = scaled(BLOCK, case.seq_len)
    layout = block_layout(case.seq_len, case.causal)

    def fn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return block_sparse_attention(q, k, v, layout, block_size=block, causal=case.causal)

    return attention_case(case, fn)


def _build_linear(case: Case) -> Prepared:
    from attnkit.functional.linear import linear_attention

    chunk = scaled(CHUNK, case.seq_len)

    def fn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return linear_attention(q, k, v, causal=case.causal, chunk_size=chunk)

    return attention_case(case, fn)


def _build_performer(case: Case) -> Prepared:
    from attnkit.functional.performer import orthogonal_random_features, performer_attention

    chunk = scaled(CHUNK, case.seq_len)
    projection = orthogonal_random_features(FEATURES, case.head_dim).to(case.device)

    def fn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return performer_attention(q, k, v, projection, causal=case.causal, chunk_size=chunk)

    return attention_case(case, fn)


def _build_lsh(case: Case) -> Prepared:
    """Shared-QK LSH attention: inputs ``(qk, v)``, the query doubling as the key."""
    from attnkit.functional.lsh import lsh_attention, random_rotations

    chunk = scaled(CHUNK, case.seq_len)
    buckets = lsh_buckets_for(case.seq_len)
    rotations = random_rotations(case.head_dim, LSH_HASHES, buckets).to(case.device)

    def fn(qk: Tensor, v: Tensor) -> Tensor:
        return lsh_attention(
            qk, v, rotations, num_buckets=buckets, chunk_size=chunk, causal=case.causal
        )

    shared = attention_case(case, lambda q, k, v: q)  # q, k, v and a gradient like q
    qk, _, v = shared.inputs
    return Prepared(fn=fn, inputs=(qk, v), grad_output=shared.grad_output)


# --------------------------------------------------------------------------- estimates
# Estimated peak bytes of one forward+backward, inputs included; like the attention
# benchmark's, they err on the high side and only decide which cases are skipped.


def _rows(case: Case) -> int:
    """``B * H * T``: query rows."""
    return case.batch * case.heads * case.seq_len


def _qkv_bytes(case: Case) -> int:
    """Bytes of one ``(B, H, T, Dh)`` tensor."""
    return _rows(case) * case.head_dim * case.element_size


def _estimate_sliding_window(case: Case) -> int:
    """Scores, weights and their gradients over ``(B, H, T, span)``, span = 2w or 3w."""
    window = scaled(WINDOW, case.seq_len)
    span = (2 if case.causal else 3) * window
    windows = 4 * (span // window) * _qkv_bytes(case)  # gathered keys, values, gradients
    return 12 * _qkv_bytes(case) + windows + 4 * _rows(case) * span * 4 + 64 * MIB


def _estimate_block_sparse(case: Case) -> int:
    """Like the sliding window, with the widest row of the layout: ``m`` key blocks."""
    block = scaled(BLOCK, case.seq_len)
    width = int(block_layout(case.seq_len, case.causal).sum(1).max())
    gathered = 4 * width * _qkv_bytes(case)
    return 12 * _qkv_bytes(case) + gathered + 4 * _rows(case) * width * block * 4 + 64 * MIB


def _feature_map_bytes(case: Case, features: int) -> int:
    """Linear-time attention over ``features``-wide feature maps, chunked prefix sums."""
    feature_bytes = _rows(case) * features * 4
    chunk = scaled(CHUNK, case.seq_len)
    within = _rows(case) * chunk * 4  # (B, H, T/C, C, C) scores inside chunks
    states = _rows(case) // chunk * features * case.head_dim * 4  # per-chunk sums
    return 12 * _qkv_bytes(case) + 8 * (feature_bytes + within + states) + 64 * MIB


def _estimate_linear(case: Case) -> int:
    """elu+1 features: as wide as the head."""
    return _feature_map_bytes(case, case.head_dim)


def _estimate_performer(case: Case) -> int:
    """``FEATURES`` positive random features."""
    return _feature_map_bytes(case, FEATURES)


def _estimate_lsh(case: Case) -> int:
    """Per hash round: sorted q, v and their gradients, scores over ``(c, 2c)`` chunks."""
    chunk = scaled(CHUNK, case.seq_len)
    per_round = 10 * _rows(case) * case.head_dim * 4 + 6 * _rows(case) * 2 * chunk * 4
    return 12 * _qkv_bytes(case) + LSH_HASHES * per_round + 64 * MIB


# --------------------------------------------------------------------------- registry


def _dense(name: str, source: str, description: str) -> Implementation:
    """An implementation of the attention benchmark, under this benchmark's name."""
    return replace(attention.IMPLEMENTATIONS[source], name=name, description=description)


IMPLEMENTATIONS: dict[str, Implementation] = {
    impl.name: impl
    for impl in (
        _dense("dense_fused", "attnkit_fused", "attnkit sdpa, backend='fused' (exact, dense)"),
        _dense("dense_math", "attnkit_math", "attnkit sdpa, backend='math' (exact, (T, T) scores)"),
        _dense(
            "chunked",
            "attnkit_chunked",
            f"attnkit sdpa, backend='chunked' (exact, {attention.CHUNK}-square tiles)",
        ),
        Implementation(
            "sliding_window",
            f"functional.local.sliding_window_attention, window={WINDOW}",
            _build_sliding_window,
            _estimate_sliding_window,
        ),
        Implementation(
            "block_sparse",
            f"functional.block_sparse.block_sparse_attention, block_size={BLOCK}; causal: "
            f"strided_layout(nb, {STRIDED[0]}, {STRIDED[1]}), else "
            f"sliding_layout(nb, {SLIDING_BLOCKS})",
            _build_block_sparse,
            _estimate_block_sparse,
        ),
        Implementation(
            "linear",
            f"functional.linear.linear_attention (elu+1 features), chunk_size={CHUNK}",
            _build_linear,
            _estimate_linear,
        ),
        Implementation(
            "performer",
            f"functional.performer.performer_attention, {FEATURES} orthogonal random "
            f"features, chunk_size={CHUNK}",
            _build_performer,
            _estimate_performer,
        ),
        Implementation(
            "lsh",
            f"functional.lsh.lsh_attention (shared QK = q), {LSH_HASHES} hash rounds, "
            f"max(2, T/{CHUNK}) buckets (even), chunk_size={CHUNK}",
            _build_lsh,
            _estimate_lsh,
        ),
    )
}

DEFAULT_IMPLS: tuple[str, ...] = tuple(IMPLEMENTATIONS)
DEFAULT_SEQ_LENS: tuple[int, ...] = (512, 1024, 2048, 4096, 8192, 16384)
SUITE = "scaling"


def prepare(impl: str, case: dict) -> Prepared:
    """Worker hook: build implementation ``impl`` for the case given as a dict."""
    return IMPLEMENTATIONS[impl].build(Case(**case))


def run_scaling(
    settings: attention.AttentionSettings, on_record: Callable[[dict], None] | None = None
) -> list[dict]:
    """All cases of ``settings``, shortest sequences first, each in a fresh worker."""
    return attention.run_attention(settings, on_record, registry=IMPLEMENTATIONS, suite=SUITE)
