"""Exact memory-efficient attention: blocks of queries and keys with an online softmax.

The forward pass never materialises the ``(Tq, Tk)`` score matrix. It walks
key blocks keeping, for every query, a running maximum ``m``, a running sum
``l`` of ``exp(score - m)`` and a running weighted sum of values (Milakov &
Gimelshein 2018; Rabe & Staats 2021; the FlashAttention recurrence). Only the
per-row ``m`` and ``l`` are saved; the backward pass recomputes each block's
probabilities as ``exp(score - m) / l``. (FlashAttention saves ``m + log l``
instead; kept apart, ``log l`` is not lost to rounding in a row whose scores all
sit at the dtype's minimum, a row that a bias of ``-inf`` blocks entirely.) Peak
extra memory is ``O(B * H * block_q * block_k)``, so memory grows linearly with
sequence length.

Causal blocks that lie entirely above the diagonal are skipped, and the causal
mask is built per block from positions rather than as a ``(T, T)`` tensor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from attnkit.functional._common import compute_dtype, repeat_kv
from attnkit.functional.masks import CausalAlignment

DEFAULT_BLOCK_Q = 512
DEFAULT_BLOCK_K = 512


@dataclass(frozen=True)
class _Plan:
    """Static description of one chunked-attention call (shared by forward and backward)."""

    scale: float
    causal_offset: int | None  # key_len - query_len for bottom-right, 0 for top-left
    dropout_p: float
    seed: int
    block_q: int
    block_k: int
    num_k_blocks: int
    dtype: torch.dtype


@dataclass
class _Block:
    """One (query block, key block) tile."""

    index: int
    q: slice
    k: slice
    needs_causal_mask: bool


def _query_blocks(query_len: int, plan: _Plan) -> Iterator[tuple[int, slice]]:
    for qi, start in enumerate(range(0, query_len, plan.block_q)):
        yield qi, slice(start, min(start + plan.block_q, query_len))


def _key_blocks(qi: int, rows: slice, key_len: int, plan: _Plan) -> Iterator[_Block]:
    """Key tiles of one query block, skipping those that causal masking hides entirely."""
    for ki, k_start in enumerate(range(0, key_len, plan.block_k)):
        k_end = min(k_start + plan.block_k, key_len)
        needs_causal_mask = False
        if plan.causal_offset is not None:
            if k_start > rows.stop - 1 + plan.causal_offset:
                break  # this and all later key tiles lie in every query's future
            needs_causal_mask = k_end - 1 > rows.start + plan.causal_offset
        yield _Block(qi * plan.num_k_blocks + ki, rows, slice(k_start, k_end), needs_causal_mask)


def _slice_last2(t: Tensor, rows: slice, cols: slice) -> Tensor:
    """Slice the last two dims of a broadcastable tensor, leaving size-1 dims alone."""
    rows = rows if t.size(-2) != 1 else slice(None)
    cols = cols if t.size(-1) != 1 else slice(None)
    return t[..., rows, cols]


def _block_allowed(mask: Tensor | None, block: _Block, plan: _Plan, device) -> Tensor | None:
    """Bool ``(…, bq, bk)`` of the visible keys in a tile, or None if all are visible."""
    allowed = None if mask is None else _slice_last2(mask, block.q, block.k)
    if block.needs_causal_mask:
        query_pos = torch.arange(block.q.start, block.q.stop, device=device)[:, None]
        key_pos = torch.arange(block.k.start, block.k.stop, device=device)[None, :]
        causal = key_pos <= query_pos + plan.causal_offset
        allowed = causal if allowed is None else allowed & causal
    return allowed


def _tile_scores(
    scaled_q: Tensor,
    k: Tensor,
    bias: Tensor | None,
    mask: Tensor | None,
    block: _Block,
    plan: _Plan,
) -> Tensor:
    """Scores ``(B, H, bq, bk)`` of one tile in the compute dtype; hidden keys get ``-inf``.

    ``scaled_q`` is the query block already multiplied by the scale. ``-inf``
    is safe here: the online softmax below never subtracts ``-inf`` from itself.
    """
    scores = scaled_q @ k[:, :, block.k].to(plan.dtype).transpose(-2, -1)
    if bias is not None:
        scores += _slice_last2(bias, block.q, block.k).to(plan.dtype)
        scores.clamp_min_(torch.finfo(plan.dtype).min)
    allowed = _block_allowed(mask, block, plan, scores.device)
    if allowed is not None:
        scores.masked_fill_(~allowed, -torch.inf)
    return scores


def _dropout_keep(shape: torch.Size, block: _Block, plan: _Plan, device) -> Tensor:
    """Keep-mask scaled by 1/(1-p), regenerated identically in the backward pass."""
    generator = torch.Generator(device=device)
    generator.manual_seed(plan.seed + block.index)
    keep = torch.rand(shape, generator=generator, device=device) >= plan.dropout_p
    return keep.to(plan.dtype) / (1.0 - plan.dropout_p)


def _forward(q, k, v, bias, mask, plan: _Plan) -> tuple[Tensor, Tensor]:
    """Output ``(B, H, Tq, Dv)`` and the softmax statistics ``(2, B, H, Tq)`` of each row:
    its maximum score ``m`` and its sum ``l`` of ``exp(score - m)`` (``+inf`` and 1 for
    rows with no visible key, so that recomputed probabilities are 0 there)."""
    batch, heads, query_len, _ = q.shape
    out = q.new_empty((batch, heads, query_len, v.size(-1)), dtype=plan.dtype)
    stats = q.new_empty((2, batch, heads, query_len), dtype=plan.dtype)
    for qi, rows in _query_blocks(query_len, plan):
        scaled_q = q[:, :, rows].to(plan.dtype) * plan.scale
        row_max = torch.full(scaled_q.shape[:-1], -torch.inf, dtype=plan.dtype, device=q.device)
        safe_max = torch.zeros_like(row_max)
        row_sum = torch.zeros_like(row_max)
        acc = scaled_q.new_zeros((batch, heads, scaled_q.size(2), v.size(-1)))
        for block in _key_blocks(qi, rows, k.size(-2), plan):
            probs = _tile_scores(scaled_q, k, bias, mask, block, plan)
            new_max = torch.maximum(row_max, probs.amax(dim=-1))
            # Rows with no visible key yet keep max -inf; subtract 0 there instead.
            safe_max = new_max.nan_to_num(neginf=0.0)
            probs.sub_(safe_max[..., None]).exp_()
            rescale = torch.exp(row_max - safe_max)  # 0 while the old max is -inf
            row_max = new_max
            row_sum = row_sum * rescale + probs.sum(dim=-1)
            if plan.dropout_p > 0:
                probs *= _dropout_keep(probs.shape, block, plan, q.device)
            acc = acc * rescale[..., None] + probs @ v[:, :, block.k].to(plan.dtype)
        has_keys = row_sum > 0
        out[:, :, rows] = acc / torch.where(has_keys, row_sum, 1.0)[..., None]
        stats[0, :, :, rows] = torch.where(has_keys, safe_max, torch.inf)
        stats[1, :, :, rows] = torch.where(has_keys, row_sum, 1.0)
    return out, stats


def _reduce_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient back to ``shape`` (same rank)."""
    dims = [i for i, (g, s) in enumerate(zip(grad.shape, shape, strict=True)) if s == 1 and g != 1]
    return grad.sum(dim=dims, keepdim=True) if dims else grad


def _backward(q, k, v, bias, mask, out, stats, grad_out, plan: _Plan, want_bias_grad: bool):
    """Gradients for q, k, v (and bias) by recomputing each tile's probabilities."""
    grad_out = grad_out.to(plan.dtype)
    delta = (grad_out * out).sum(dim=-1)  # (B, H, Tq): rowsum(dO * O)
    grad_q = torch.zeros_like(q, dtype=plan.dtype)
    grad_k = torch.zeros_like(k, dtype=plan.dtype)
    grad_v = torch.zeros_like(v, dtype=plan.dtype)
    grad_bias = (
        torch.zeros(bias.shape, dtype=plan.dtype, device=q.device) if want_bias_grad else None
    )
    for qi, rows in _query_blocks(q.size(-2), plan):
        scaled_q = q[:, :, rows].to(plan.dtype) * plan.scale
        grad_out_rows, delta_rows = grad_out[:, :, rows], delta[:, :, rows, None]
        grad_scaled_q = torch.zeros_like(scaled_q)
        for block in _key_blocks(qi, rows, k.size(-2), plan):
            probs = _tile_scores(scaled_q, k, bias, mask, block, plan)
            # A -inf bias was clamped to the minimum: no gradient flows through it.
            clamped = probs == torch.finfo(plan.dtype).min if bias is not None else None
            # hidden keys and empty rows give 0
            probs.sub_(stats[0, :, :, rows, None]).exp_().div_(stats[1, :, :, rows, None])
            v_block = v[:, :, block.k].to(plan.dtype)
            d_scores = grad_out_rows @ v_block.transpose(-2, -1)  # dL/d(probs after dropout)
            if plan.dropout_p > 0:
                keep = _dropout_keep(probs.shape, block, plan, q.device)
                grad_v[:, :, block.k] += (probs * keep).transpose(-2, -1) @ grad_out_rows
                d_scores *= keep
            else:
                grad_v[:, :, block.k] += probs.transpose(-2, -1) @ grad_out_rows
            d_scores.sub_(delta_rows).mul_(probs)  # softmax backward
            if clamped is not None:
                d_scores.masked_fill_(clamped, 0.0)
            if grad_bias is not None:
                target = _slice_last2(grad_bias, block.q, block.k)
                target += _reduce_to(d_scores, target.shape)
            grad_scaled_q += d_scores @ k[:, :, block.k].to(plan.dtype)
            grad_k[:, :, block.k] += d_scores.transpose(-2, -1) @ scaled_q
        grad_q[:, :, rows] = grad_scaled_q * plan.scale
    return grad_q, grad_k, grad_v, grad_bias


class _ChunkedAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, bias, mask, plan: _Plan):
        out, stats = _forward(q, k, v, bias, mask, plan)
        ctx.save_for_backward(q, k, v, bias, mask, out, stats)
        ctx.plan = plan
        return out.to(q.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v, bias, mask, out, stats = ctx.saved_tensors
        want_bias_grad = bias is not None and ctx.needs_input_grad[3]
        grad_q, grad_k, grad_v, grad_bias = _backward(
            q, k, v, bias, mask, out, stats, grad_out, ctx.plan, want_bias_grad
        )
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype)
        return grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype), grad_bias, None, None


def chunked_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    mask: Tensor | None,
    bias: Tensor | None,
    causal: CausalAlignment | None,
    dropout_p: float,
    scale: float,
    need_weights: bool = False,
    block_q: int = DEFAULT_BLOCK_Q,
    block_k: int = DEFAULT_BLOCK_K,
) -> tuple[Tensor, None]:
    """Exact attention in ``block_q x block_k`` tiles; same numbers as the math backend.

    Shapes as for every backend: query ``(B, H, Tq, D)``, key ``(B, Hkv, Tk, D)``,
    value ``(B, Hkv, Tk, Dv)`` -> output ``(B, H, Tq, Dv)``. Cannot return weights.

    Example:
        >>> import torch
        >>> from attnkit.functional import chunked_attention, scaled_dot_product_attention
        >>> q = torch.randn(1, 2, 5, 4)  # (B, H, T, D)
        >>> out, _ = chunked_attention(q, q, q, mask=None, bias=None, causal=None, dropout_p=0.0,
        ...                            scale=0.5, block_q=2, block_k=2)
        >>> reference, _ = scaled_dot_product_attention(q, q, q, scale=0.5)
        >>> tuple(out.shape), torch.allclose(out, reference, atol=1e-6)
        ((1, 2, 5, 4), True)
    """
    del need_weights  # the dispatcher never routes weight requests here
    n_rep = query.size(1) // key.size(1)
    key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    query_len, key_len = query.size(-2), key.size(-2)
    causal_offset = None
    if causal is not None:
        causal_offset = key_len - query_len if causal == "bottom_right" else 0
    seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout_p > 0 else 0
    plan = _Plan(
        scale=scale,
        causal_offset=causal_offset,
        dropout_p=dropout_p,
        seed=seed,
        block_q=block_q,
        block_k=block_k,
        num_k_blocks=-(-key_len // block_k),
        dtype=compute_dtype(query.dtype),
    )
    out = _ChunkedAttentionFunction.apply(query, key, value, bias, mask, plan)
    return out, None
