"""attnkit's one attention entry point and its backend registry.

Every attention module ends in :func:`scaled_dot_product_attention`, which
validates its inputs once, at this public boundary, and hands them to a
backend. All backends compute the same function; they differ in speed, memory
and whether they can return the attention weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from attnkit.functional.backends import attention_weights as _attention_weights
from attnkit.functional.backends import fused_attention, math_attention
from attnkit.functional.chunked import chunked_attention
from attnkit.functional.flex import flex_available, flex_backend
from attnkit.functional.masks import CausalAlignment

BackendFn = Callable[..., tuple[Tensor, Tensor | None]]

__all__ = [
    "AttentionBackend",
    "attention_weights",
    "available_backends",
    "register_backend",
    "scaled_dot_product_attention",
]


@dataclass(frozen=True)
class AttentionBackend:
    """A registered implementation of scaled dot-product attention.

    ``fn(query, key, value, *, mask, bias, causal, dropout_p, scale,
    need_weights) -> (output, weights | None)``; see ``attnkit.functional.backends``
    for the exact contract.

    Example:
        >>> from attnkit.functional import available_backends
        >>> math = available_backends()["math"]  # an AttentionBackend
        >>> math.name, math.returns_weights
        ('math', True)
    """

    name: str
    fn: BackendFn
    returns_weights: bool
    description: str


_BACKENDS: dict[str, AttentionBackend] = {}


def register_backend(
    name: str, fn: BackendFn, *, returns_weights: bool = False, description: str = ""
) -> None:
    """Add (or replace) a backend selectable with ``backend=name``.

    Example:
        >>> import torch
        >>> from attnkit.functional import available_backends, register_backend
        >>> from attnkit.functional import scaled_dot_product_attention
        >>> register_backend("doc_math", available_backends()["math"].fn, returns_weights=True)
        >>> q = torch.randn(1, 1, 3, 4)
        >>> tuple(scaled_dot_product_attention(q, q, q, backend="doc_math")[0].shape)
        (1, 1, 3, 4)
    """
    if name == "auto":
        raise ValueError("'auto' is reserved for automatic backend selection")
    _BACKENDS[name] = AttentionBackend(name, fn, returns_weights, description)


def available_backends() -> dict[str, AttentionBackend]:
    """Registered backends by name (``"auto"`` is not one: it picks among them).

    Example:
        >>> from attnkit.functional import available_backends
        >>> {"math", "chunked"} <= set(available_backends())
        True
    """
    return dict(_BACKENDS)


register_backend(
    "fused",
    fused_attention,
    description="torch.nn.functional.scaled_dot_product_attention (flash/efficient/cuDNN)",
)
register_backend(
    "math",
    math_attention,
    returns_weights=True,
    description="explicit softmax(QK^T/sqrt(d))V reference; float32 softmax; returns weights",
)
register_backend(
    "chunked",
    chunked_attention,
    description="exact blockwise attention with online softmax; memory linear in T",
)
if flex_available():
    register_backend(
        "flex",
        flex_backend,
        description="torch FlexAttention with the mask and bias as mask/score modifications "
        "(fused under torch.compile); no dropout",
    )


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_qkv(query: Tensor, key: Tensor, value: Tensor) -> None:
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"{name} must have rank 4 (B, H, T, D); got rank {t.dim()} with shape {_shape(t)}"
            )
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor; got {t.dtype}")
    for name, t in (("key", key), ("value", value)):
        if t.dtype != query.dtype:
            raise ValueError(f"{name} dtype must match query dtype {query.dtype}; got {t.dtype}")
        if t.device != query.device:
            raise ValueError(
                f"{name} device must match query device {query.device}; got {t.device}"
            )
    batch, heads, _, head_dim = query.shape
    if key.size(0) != batch or value.size(0) != batch:
        raise ValueError(
            f"key and value batch size must equal query's {batch}; "
            f"got key {_shape(key)}, value {_shape(value)}"
        )
    if key.size(-1) != head_dim:
        raise ValueError(
            f"key head dim must equal query head dim {head_dim}; got key {_shape(key)}, "
            f"query {_shape(query)}"
        )
    if key.size(1) != value.size(1) or key.size(2) != value.size(2):
        raise ValueError(
            f"value must have key's (B, Hkv, Tk) = {_shape(key)[:3]}; got {_shape(value)[:3]}"
        )
    if heads % key.size(1) != 0:
        raise ValueError(
            f"query heads ({heads}) must be a multiple of key/value heads ({key.size(1)})"
        )


def _as_4d(name: str, t: Tensor, target: tuple[int, int, int, int]) -> Tensor:
    """Validate that ``t`` broadcasts to ``target`` (B, H, Tq, Tk) and view it as rank 4."""
    expected = "(B, H, Tq, Tk) = " + str(target)
    if t.dim() > 4:
        raise ValueError(f"{name} must broadcast to {expected}; got {_shape(t)}")
    for size, full in zip(reversed(t.shape), reversed(target), strict=False):
        if size not in (1, full):
            raise ValueError(f"{name} must broadcast to {expected}; got {_shape(t)}")
    return t.reshape((1,) * (4 - t.dim()) + _shape(t))


def _check_mask_and_bias(
    attn_mask: Tensor | None, attn_bias: Tensor | None, query: Tensor, key: Tensor
) -> tuple[Tensor | None, Tensor | None]:
    target = (query.size(0), query.size(1), query.size(2), key.size(2))
    for name, t in (("attn_mask", attn_mask), ("attn_bias", attn_bias)):
        if t is not None and not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool:
            raise ValueError(
                f"attn_mask must be a bool tensor (True = may attend); got {attn_mask.dtype}. "
                "Pass additive float scores as attn_bias."
            )
        if attn_mask.device != query.device:
            raise ValueError(
                f"attn_mask device must match query device {query.device}; got {attn_mask.device}"
            )
        attn_mask = _as_4d("attn_mask", attn_mask, target)
    if attn_bias is not None:
        if not attn_bias.is_floating_point():
            raise ValueError(f"attn_bias must be a floating-point tensor; got {attn_bias.dtype}")
        if attn_bias.device != query.device:
            raise ValueError(
                f"attn_bias device must match query device {query.device}; got {attn_bias.device}"
            )
        attn_bias = _as_4d("attn_bias", attn_bias, target)
    return attn_mask, attn_bias


def _causal_alignment(is_causal: bool | str | None) -> CausalAlignment | None:
    if is_causal is None or is_causal is False:
        return None
    if is_causal is True:
        return "top_left"
    if is_causal in ("top_left", "bottom_right"):
        return is_causal  # type: ignore[return-value]
    raise ValueError(f"is_causal must be a bool, 'top_left' or 'bottom_right'; got {is_causal!r}")


def _choose_backend(backend: str, need_weights: bool) -> AttentionBackend:
    if backend == "auto":
        return _BACKENDS["math" if need_weights else "fused"]
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {sorted(_BACKENDS)}; got {backend!r}")
    chosen = _BACKENDS[backend]
    if need_weights and not chosen.returns_weights:
        capable = sorted(n for n, b in _BACKENDS.items() if b.returns_weights)
        raise ValueError(
            f"backend {backend!r} cannot return attention weights; use 'auto' or one of {capable}"
        )
    return chosen


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    *,
    attn_bias: Tensor | None = None,
    is_causal: bool | str = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
    need_weights: bool = False,
    backend: str = "auto",
) -> tuple[Tensor, Tensor | None]:
    """softmax(Q K^T * scale + attn_bias, masked) V through a chosen backend.

    Args:
        query: ``(B, H, Tq, D)``.
        key: ``(B, Hkv, Tk, D)``; ``H`` must be a multiple of ``Hkv`` (GQA/MQA).
        value: ``(B, Hkv, Tk, Dv)``.
        attn_mask: bool, broadcastable to ``(B, H, Tq, Tk)``, True = may attend.
        attn_bias: float, broadcastable to ``(B, H, Tq, Tk)``, added to the scores
            (ALiBi, T5, relative positions). ``-inf`` entries are clamped to the
            dtype's minimum.
        is_causal: ``True`` / ``"top_left"`` (query ``i`` sees keys ``<= i``, as
            torch does) or ``"bottom_right"`` (queries are the last ``Tq`` of ``Tk``
            positions, as in KV-cache decoding). Combined with ``attn_mask``.
        dropout_p: dropout on the attention weights, in ``[0, 1)``. Applied
            whenever > 0: pass 0 in evaluation.
        scale: score scale; default ``1 / sqrt(D)``.
        need_weights: also return the weights ``(B, H, Tq, Tk)`` (before dropout).
        backend: ``"auto"`` (fused, or math when weights are requested),
            ``"fused"``, ``"math"``, ``"chunked"`` or any registered name.

    Returns:
        ``(output (B, H, Tq, Dv), weights or None)``. A query whose keys are all
        masked gets a zero output row and zero weights.

    Example:
        >>> import torch
        >>> from attnkit.functional import scaled_dot_product_attention
        >>> q = k = v = torch.randn(2, 4, 5, 8)  # (B, H, T, Dh)
        >>> out, weights = scaled_dot_product_attention(q, k, v, is_causal=True, need_weights=True)
        >>> tuple(out.shape), tuple(weights.shape)
        ((2, 4, 5, 8), (2, 4, 5, 5))
        >>> weights[0, 0, 0].tolist()  # the first query sees only the first key
        [1.0, 0.0, 0.0, 0.0, 0.0]
        >>> chunked, _ = scaled_dot_product_attention(q, k, v, is_causal=True, backend="chunked")
        >>> torch.allclose(out, chunked, atol=1e-5)
        True
    """
    _check_qkv(query, key, value)
    attn_mask, attn_bias = _check_mask_and_bias(attn_mask, attn_bias, query, key)
    causal = _causal_alignment(is_causal)
    if causal == "bottom_right" and query.size(-2) == 1:
        causal = None  # one query after all the keys (a decoding step) sees every key
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1); got {dropout_p}")
    chosen = _choose_backend(backend, need_weights)
    if scale is None:
        scale = 1.0 / math.sqrt(query.size(-1))
    return chosen.fn(
        query,
        key,
        value,
        mask=attn_mask,
        bias=attn_bias,
        causal=causal,
        dropout_p=float(dropout_p),
        scale=float(scale),
        need_weights=need_weights,
    )


def attention_weights(
    query: Tensor,
    key: Tensor,
    attn_mask: Tensor | None = None,
    *,
    attn_bias: Tensor | None = None,
    is_causal: bool | str = False,
    scale: float | None = None,
) -> Tensor:
    """The attention distribution ``softmax(Q K^T * scale + attn_bias)``, masked.

    For attention that needs the weights themselves (relative positions that
    also enter the values, analysis). Arguments as for
    :func:`scaled_dot_product_attention`; ``query (B, H, Tq, D)``, ``key
    (B, Hkv, Tk, D)``. Returns ``(B, H, Tq, Tk)`` in float32 for float16/bfloat16
    inputs (else the input dtype); masked keys have weight 0 and a row with no
    visible key is all zeros.

    Example:
        >>> import torch
        >>> from attnkit.functional import attention_weights
        >>> mask = torch.tensor([True, True, False])  # the third key is padding
        >>> weights = attention_weights(torch.randn(1, 1, 2, 4), torch.randn(1, 1, 3, 4), mask)
        >>> tuple(weights.shape), weights[0, 0, :, 2].tolist()
        ((1, 1, 2, 3), [0.0, 0.0])
    """
    _check_qkv(query, key, key)
    attn_mask, attn_bias = _check_mask_and_bias(attn_mask, attn_bias, query, key)
    causal = _causal_alignment(is_causal)
    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else float(scale)
    return _attention_weights(
        query, key, mask=attn_mask, bias=attn_bias, causal=causal, scale=scale
    )
