"""Block-sparse attention and the layouts of the Sparse Transformer, Longformer and BigBird.

The sequence is cut into blocks of ``block_size`` positions; a boolean
``layout (nb, nb)`` says which key blocks each query block attends to. Only
those blocks are gathered and scored, so memory is ``O(T * m * block_size)``
for at most ``m`` key blocks per query block instead of ``O(T^2)``. Within
the chosen blocks attention is exact: the result equals dense attention under
:func:`layout_to_mask` of the same layout.

Layouts (all return ``(nb, nb)`` bool):

- :func:`sliding_layout`: a band of blocks (local attention);
- :func:`strided_layout` and :func:`fixed_layout`: the Sparse Transformer's
  two factorised patterns (Child et al. 2019), at block granularity, causal;
- :func:`longformer_layout`: sliding band plus global blocks that see and are
  seen by every block (Beltagy et al. 2020);
- :func:`bigbird_layout`: band, global and ``r`` random blocks per row
  (Zaheer et al. 2020), seeded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.functional._common import compute_dtype, repeat_kv
from attnkit.functional.dropout import dropout as apply_dropout

__all__ = [
    "bigbird_layout",
    "block_sparse_attention",
    "fixed_layout",
    "layout_to_mask",
    "longformer_layout",
    "sliding_layout",
    "strided_layout",
]


def _grid(num_blocks: int) -> tuple[Tensor, Tensor]:
    rows = torch.arange(num_blocks)[:, None]
    return rows, torch.arange(num_blocks)[None, :]


def sliding_layout(num_blocks: int, window_blocks: int, *, causal: bool = False) -> Tensor:
    """Query block ``i`` sees blocks ``j`` with ``|i - j| <= w`` (causal: ``0 <= i - j <= w``)."""
    rows, cols = _grid(num_blocks)
    distance = rows - cols
    if causal:
        return (distance >= 0) & (distance <= window_blocks)
    return distance.abs() <= window_blocks


def strided_layout(num_blocks: int, local_blocks: int, stride_blocks: int) -> Tensor:
    """Sparse Transformer "strided" (causal): the ``local_blocks`` latest blocks and
    every ``stride_blocks``-th block before them."""
    rows, cols = _grid(num_blocks)
    distance = rows - cols
    return (distance >= 0) & ((distance < local_blocks) | (distance % stride_blocks == 0))


def fixed_layout(num_blocks: int, group_blocks: int, summary_blocks: int = 1) -> Tensor:
    """Sparse Transformer "fixed" (causal): the blocks of the query's own group of
    ``group_blocks``, and the last ``summary_blocks`` blocks of every earlier group."""
    rows, cols = _grid(num_blocks)
    same_group = rows // group_blocks == cols // group_blocks
    summary = cols % group_blocks >= group_blocks - summary_blocks
    return (cols <= rows) & (same_group | summary)


def longformer_layout(num_blocks: int, window_blocks: int, global_blocks: Sequence[int]) -> Tensor:
    """Sliding band plus global blocks (their rows and columns all True)."""
    layout = sliding_layout(num_blocks, window_blocks)
    chosen = torch.tensor(list(global_blocks), dtype=torch.long)
    if chosen.numel() and (chosen.min() < 0 or chosen.max() >= num_blocks):
        raise ValueError(f"global_blocks must lie in [0, {num_blocks}); got {list(global_blocks)}")
    layout[chosen] = True
    layout[:, chosen] = True
    return layout


def bigbird_layout(
    num_blocks: int,
    window_blocks: int,
    global_blocks: Sequence[int],
    random_blocks: int,
    *,
    seed: int = 0,
    causal: bool = False,
) -> Tensor:
    """Longformer's band and global blocks plus ``random_blocks`` random blocks per row.

    The random draw of block ``(row, col)`` depends on ``seed``, ``row`` and ``col``
    only, not on ``num_blocks``; with ``causal`` a row draws among the blocks at or
    before it. So a causal layout's rows stay the same as the sequence grows, and
    decoding with a KV cache sees the blocks the full forward pass saw.

    Example:
        >>> from attnkit.functional.block_sparse import bigbird_layout
        >>> short = bigbird_layout(5, 1, [0], 1, seed=3, causal=True)
        >>> longer = bigbird_layout(9, 1, [0], 1, seed=3, causal=True)
        >>> bool((longer[:5, :5] == short).all())
        True
    """
    layout = longformer_layout(num_blocks, window_blocks, global_blocks)
    if random_blocks > 0:
        scores = _block_uniforms(num_blocks, seed)
        rows, cols = _grid(num_blocks)
        taken = layout | (cols > rows) if causal else layout
        scores[taken] = -1.0  # draw among the blocks not chosen yet
        picks = scores.topk(min(random_blocks, num_blocks), dim=1).indices
        extra = torch.zeros_like(layout).scatter_(1, picks, True)
        layout = layout | (extra & (scores >= 0))
    return layout


def _block_uniforms(num_blocks: int, seed: int) -> Tensor:
    """``(nb, nb)`` numbers in ``[0, 1)``, each a hash of ``(seed, row, col)`` alone
    (an integer mix in wrapping int64 arithmetic), so that a larger grid extends a
    smaller one instead of redrawing it."""
    rows, cols = (index.long() for index in _grid(num_blocks))
    x = rows * 0x9E3779B1 + cols * 0x85EBCA77 + (seed + 1) * 0xC2B2AE3D
    for _ in range(3):
        x = (x ^ (x >> 15)) * 0x2C1B3C6D
    return (x >> 8 & 0xFFFFFF).double() / 2**24


def layout_to_mask(layout: Tensor, block_size: int, length: int, *, causal: bool = False) -> Tensor:
    """The token-level ``(1, 1, T, T)`` bool mask equivalent to ``layout`` (for dense attention)."""
    mask = layout.repeat_interleave(block_size, 0).repeat_interleave(block_size, 1)
    mask = mask[:length, :length]
    if causal:
        mask = mask & torch.ones(length, length, dtype=torch.bool).tril()
    return mask[None, None]


def _key_blocks(layout: Tensor) -> tuple[Tensor, Tensor]:
    """Per query block the indices of its key blocks ``(nb, m)`` and which are real."""
    counts = layout.sum(1)
    width = max(int(counts.max()), 1)
    # Chosen blocks first (stable order), then padding slots pointing at block 0.
    order = torch.sort((~layout).to(torch.int8), dim=1, stable=True).indices[:, :width]
    valid = torch.arange(width)[None, :] < counts[:, None]
    return order.masked_fill(~valid, 0), valid


def block_sparse_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    layout: Tensor,
    *,
    block_size: int,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    """Self-attention restricted to the key blocks ``layout`` selects.

    Args:
        query: ``(B, H, T, D)``; key, value: ``(B, Hkv, T, D)`` over the same ``T``.
        layout: ``(nb, nb)`` bool with ``nb = ceil(T / block_size)``.
        block_size: positions per block.
        causal: also hide later positions inside the chosen blocks.
        key_padding_mask: ``(B, T)`` bool, ``True`` at real tokens.

    Returns ``(B, H, T, D)``; a query with no visible key gets zeros.
    """
    batch, heads, length, dim = query.shape
    blocks = math.ceil(length / block_size)
    if layout.shape != (blocks, blocks) or layout.dtype != torch.bool:
        raise ValueError(
            f"layout must be bool (nb, nb) = ({blocks}, {blocks}) for T={length} and "
            f"block_size={block_size}; got {layout.dtype} {tuple(layout.shape)}"
        )
    if key.shape[2] != length or value.shape[2] != length:
        raise ValueError(f"key and value must have T={length} positions like the query")
    dtype = compute_dtype(query.dtype)
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    index, valid = (t.to(query.device) for t in _key_blocks(layout))
    pad = blocks * block_size - length

    def blocked(x: Tensor) -> Tensor:
        x = repeat_kv(x, heads // x.size(1)).to(dtype)
        return F.pad(x, (0, 0, 0, pad)).view(batch, heads, blocks, block_size, x.size(-1))

    q = blocked(query)
    k = blocked(key)[:, :, index].flatten(3, 4)  # (B, H, nb, m * bs, D)
    v = blocked(value)[:, :, index].flatten(3, 4)
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, nb, bs, m * bs)
    visible = _visibility(index, valid, block_size, length, causal, key_padding_mask)
    any_visible = visible.any(-1, keepdim=True)
    scores = scores.masked_fill(~(visible | ~any_visible), float("-inf"))
    weights = torch.softmax(scores, dim=-1).masked_fill(~visible, 0.0)
    weights = apply_dropout(weights, dropout_p, dropout_p > 0)
    out = (weights @ v).view(batch, heads, blocks * block_size, -1)[:, :, :length]
    return out.to(query.dtype)


def _visibility(
    index: Tensor,
    valid: Tensor,
    block_size: int,
    length: int,
    causal: bool,
    key_padding_mask: Tensor | None,
) -> Tensor:
    """``(B or 1, 1, nb, bs, m * bs)`` bool: gathered key ``j`` is visible to query ``i``."""
    offsets = torch.arange(block_size, device=index.device)
    key_pos = (index[:, :, None] * block_size + offsets).flatten(1)  # (nb, m * bs)
    visible = valid.repeat_interleave(block_size, 1) & (key_pos < length)
    visible = visible[:, None, :]  # (nb, 1, m * bs)
    if causal:
        query_pos = torch.arange(index.size(0), device=index.device)[:, None] * block_size
        query_pos = (query_pos + offsets)[:, :, None]  # (nb, bs, 1)
        visible = visible & (key_pos[:, None, :] <= query_pos)
    visible = visible[None, None]
    if key_padding_mask is not None:
        real = F.pad(key_padding_mask.bool(), (0, key_pos.max().item() + 1 - length), value=False)
        gathered = real[:, key_pos.clamp(max=real.size(1) - 1)]  # (B, nb, m * bs)
        visible = visible & gathered[:, None, :, None, :]
    return visible
