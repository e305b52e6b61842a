"""Sliding-window (local) attention computed in blocks: memory ``O(T * w)``, not ``O(T^2)``.

Queries are cut into blocks of ``w = window`` positions. A causal query block
needs the keys of its own block and the one before; a symmetric one also the
block after. So each block attends to a span of ``2w`` (causal) or ``3w``
keys, gathered as overlapping views of the padded keys (``Tensor.unfold``),
and the band condition is a fixed ``(w, span)`` pattern: a query ``i`` and key
``j`` of the span are ``i - j + w`` positions apart, whatever the block.

Exact: the result equals dense attention under
:func:`attnkit.functional.create_sliding_window_mask` with the same window.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.functional._common import compute_dtype, repeat_kv
from attnkit.functional.dropout import dropout as apply_dropout

__all__ = ["sliding_window_attention"]


def _band(window: int, span: int, causal: bool, device: torch.device) -> Tensor:
    """``(w, span)`` bool: query ``i`` of a block may see key ``j`` of its span."""
    distance = torch.arange(window, device=device)[:, None] - torch.arange(span, device=device)
    distance = distance + window  # the span starts one block before the query block
    return (distance >= 0) & (distance < window) if causal else distance.abs() <= window


def _windows(x: Tensor, window: int, span: int, padded_len: int) -> Tensor:
    """``(B, H, T, D)`` -> ``(B, H, nb, span, D)`` overlapping views, one per query block."""
    right = padded_len - x.size(2) + span - 2 * window
    padded = F.pad(x, (0, 0, window, right))
    return padded.unfold(2, span, window).transpose(-1, -2)


def _key_validity(
    key_padding_mask: Tensor | None, batch: int, length: int, window: int, span: int, blocks: int
) -> Tensor:
    """``(B, 1, nb, 1, span)`` bool: the span position holds a real key."""
    real = torch.ones(batch, length, dtype=torch.bool, device=_device(key_padding_mask))
    if key_padding_mask is not None:
        real = key_padding_mask.bool()
    right = blocks * window - length + span - 2 * window
    padded = F.pad(real, (window, right), value=False)
    return padded.unfold(1, span, window)[:, None, :, None, :]


def _device(mask: Tensor | None) -> torch.device | None:
    return None if mask is None else mask.device


def sliding_window_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    window: int,
    causal: bool = True,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    """Self-attention where each query sees only nearby keys, in ``O(T * window)`` memory.

    Args:
        query: ``(B, H, T, D)``; key, value: ``(B, Hkv, T, D)`` (the same positions).
        window: causal: the ``window`` most recent keys including the query's own;
            symmetric (``causal=False``): ``window`` keys on each side.
        key_padding_mask: ``(B, T)`` bool, ``True`` at real tokens.
        dropout_p: dropout on the attention weights.
        scale: score scale (default ``1 / sqrt(D)``).

    Returns ``(B, H, T, D)``; a query with no visible key gets zeros.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1; got {window}")
    if query.dim() != 4 or key.shape[2:] != query.shape[2:] or value.shape[:3] != key.shape[:3]:
        raise ValueError(
            "sliding_window_attention needs query (B, H, T, D) and key/value (B, Hkv, T, D) "
            f"over the same T; got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    batch, heads, length, dim = query.shape
    if key_padding_mask is not None and key_padding_mask.shape != (batch, length):
        raise ValueError(
            f"key_padding_mask must have shape (B, T) = {(batch, length)}; "
            f"got {tuple(key_padding_mask.shape)}"
        )
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    dtype = compute_dtype(query.dtype)
    blocks = math.ceil(length / window)
    span = 2 * window if causal else 3 * window
    q = F.pad(query.to(dtype), (0, 0, 0, blocks * window - length))
    q = q.view(batch, heads, blocks, window, dim)
    k = _windows(repeat_kv(key, heads // key.size(1)).to(dtype), window, span, blocks * window)
    v = _windows(repeat_kv(value, heads // value.size(1)).to(dtype), window, span, blocks * window)
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, nb, w, span)
    visible = _band(window, span, causal, query.device) & _key_validity(
        key_padding_mask, batch, length, window, span, blocks
    ).to(query.device)
    any_visible = visible.any(dim=-1, keepdim=True)
    scores = scores.masked_fill(~(visible | ~any_visible), float("-inf"))
    weights = torch.softmax(scores, dim=-1).masked_fill(~visible, 0.0)
    weights = apply_dropout(weights, dropout_p, dropout_p > 0)
    out = (weights @ v).view(batch, heads, blocks * window, dim)[:, :, :length]
    return out.to(query.dtype)
