"""torch's FlexAttention as an attnkit backend, and score/mask modifications for it.

``flex_attention`` takes a ``mask_mod(b, h, q, kv) -> bool`` and a
``score_mod(score, b, h, q, kv) -> score``; under ``torch.compile`` it
generates one fused kernel for them (and skips fully masked blocks). Called
eagerly, as here by default, it materialises the scores like the math backend;
compile the model to get the fused kernel.

- :func:`flex_backend` is registered as ``backend="flex"``: the library's bool
  mask, causal alignment and additive bias become a mask and a score
  modification, so it gives the math backend's numbers (tested).
- :func:`sliding_window_mask_mod`, :func:`document_mask_mod`,
  :func:`alibi_score_mod` and :func:`bias_table_score_mod` build structured
  modifications without a ``(T, T)`` tensor, for :func:`flex_scaled_dot_product_attention`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from attnkit.functional._common import finite_bias
from attnkit.functional.masks import CausalAlignment

__all__ = [
    "alibi_score_mod",
    "bias_table_score_mod",
    "document_mask_mod",
    "flex_available",
    "flex_backend",
    "flex_scaled_dot_product_attention",
    "sliding_window_mask_mod",
]

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]

try:  # torch >= 2.5
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # pragma: no cover - older torch
    create_block_mask = flex_attention = None


def flex_available() -> bool:
    """Whether this torch provides FlexAttention."""
    return flex_attention is not None


def _and(first: MaskMod | None, second: MaskMod | None) -> MaskMod | None:
    if first is None or second is None:
        return first or second
    return lambda b, h, q, kv: first(b, h, q, kv) & second(b, h, q, kv)


def sliding_window_mask_mod(window: int, *, causal: bool = True, offset: int = 0) -> MaskMod:
    """Keys within ``window`` of the query (as :func:`create_sliding_window_mask`)."""

    def mask_mod(b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
        distance = q + offset - kv
        if causal:
            return (distance >= 0) & (distance < window)
        return distance.abs() <= window

    return mask_mod


def document_mask_mod(document_ids: Tensor, *, causal: bool = False) -> MaskMod:
    """Packed sequences: a query sees keys of its own document only (``document_ids (B, T)``)."""

    def mask_mod(b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
        same = document_ids[b, q] == document_ids[b, kv]
        return same & (q >= kv) if causal else same

    return mask_mod


def alibi_score_mod(slopes: Tensor, *, causal: bool = True, offset: int = 0) -> ScoreMod:
    """ALiBi's ``-slope_h * distance`` (as :class:`attnkit.nn.ALiBi`)."""

    def score_mod(score: Tensor, b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
        distance = q + offset - kv
        distance = distance.clamp(min=0) if causal else distance.abs()
        return score - slopes[h] * distance

    return score_mod


def bias_table_score_mod(bias: Tensor) -> ScoreMod:
    """Add a bias broadcastable to ``(B, H, Tq, Tk)`` (e.g. T5's bucketed bias)."""

    def score_mod(score: Tensor, b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
        return score + bias[b, h, q, kv]

    return score_mod


def flex_scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    mask_mod: MaskMod | None = None,
    score_mod: ScoreMod | None = None,
    scale: float | None = None,
) -> Tensor:
    """FlexAttention with attnkit's conventions: ``(B, H, T, D)`` in and out, GQA,
    and zeros (not NaN) for a query whose keys are all masked."""
    if not flex_available():
        raise RuntimeError("FlexAttention needs torch >= 2.5 (torch.nn.attention.flex_attention)")
    batch, heads, query_len, _ = query.shape
    key_len = key.size(2)
    block_mask = None
    if mask_mod is not None:
        block_mask = create_block_mask(
            mask_mod, batch, heads, query_len, key_len, device=str(query.device)
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile")
        out = flex_attention(
            query,
            key,
            value,
            score_mod=score_mod,
            block_mask=block_mask,
            scale=scale,
            enable_gqa=key.size(1) != heads,
        )
    return out.nan_to_num(0.0)


def flex_backend(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: CausalAlignment | None,
    dropout_p: float,
    scale: float,
    need_weights: bool,
) -> tuple[Tensor, None]:
    """The ``"flex"`` backend (no dropout, no weights)."""
    del need_weights  # the dispatcher routes weight requests elsewhere
    if dropout_p > 0:
        raise ValueError("the flex backend has no attention dropout; use another backend")
    shape = (query.size(0), query.size(1), query.size(2), key.size(2))
    mask_mod = None
    if mask is not None:
        full = mask.expand(shape)
        mask_mod = lambda b, h, q, kv: full[b, h, q, kv]  # noqa: E731
    if causal is not None:
        offset = key.size(2) - query.size(2) if causal == "bottom_right" else 0
        mask_mod = _and(mask_mod, lambda b, h, q, kv: q + offset >= kv)
    score_mod = None
    if bias is not None:
        score_mod = bias_table_score_mod(finite_bias(bias, query.dtype).expand(shape))
    out = flex_scaled_dot_product_attention(
        query, key, value, mask_mod=mask_mod, score_mod=score_mod, scale=scale
    )
    return _zero_empty_rows(out, mask, causal, query, key), None


def _zero_empty_rows(out: Tensor, mask, causal, query: Tensor, key: Tensor) -> Tensor:
    """Rows whose keys are all masked: zeros, as every attnkit backend returns."""
    if mask is None and causal is None:
        return out
    shape = (query.size(0), query.size(1), query.size(2), key.size(2))
    if mask is None:
        visible = torch.ones(shape, dtype=torch.bool, device=query.device)
    else:
        visible = mask.expand(shape)
    if causal is not None:
        offset = key.size(2) - query.size(2) if causal == "bottom_right" else 0
        rows = torch.arange(query.size(2), device=query.device)[:, None] + offset
        visible = visible & (torch.arange(key.size(2), device=query.device) <= rows)
    return out.masked_fill(~visible.any(-1, keepdim=True), 0.0)
