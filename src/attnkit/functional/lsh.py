"""Reformer's LSH attention (Kitaev, Kaiser & Levskaya 2020).

Queries and keys share one projection (keys are its unit-normalised rows), so
a query's best keys are near it in angle. Random rotations hash every vector
into one of ``num_buckets`` buckets (``argmax([xR, -xR])``); positions are
sorted by bucket, cut into chunks of ``chunk_size``, and each chunk attends
to itself and the chunk before it, within the same bucket only. A position
never attends to itself unless it has nothing else to attend to. With
``num_hashes`` rounds the per-round results are combined with weights
proportional to each round's softmax normaliser (``logsumexp``).

Everything is tensor operations: sorting, gathering and the inverse
permutation; no loop over tokens, chunks or rounds. Memory
``O(num_hashes * T * chunk_size)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.functional._common import compute_dtype
from attnkit.functional.dropout import dropout

__all__ = ["lsh_attention", "lsh_buckets", "random_rotations"]


def random_rotations(
    dim: int, num_hashes: int, num_buckets: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """``(dim, num_hashes, num_buckets // 2)`` Gaussian rotations for :func:`lsh_buckets`."""
    if num_buckets < 1 or (num_buckets > 1 and num_buckets % 2):
        raise ValueError(f"num_buckets must be 1 or even; got {num_buckets}")
    return torch.randn(dim, num_hashes, max(num_buckets // 2, 1), generator=generator)


def lsh_buckets(x: Tensor, rotations: Tensor, num_buckets: int) -> Tensor:
    """Bucket ids ``(B, H, R, T)`` of ``x (B, H, T, D)`` for each of the ``R`` hash rounds."""
    if num_buckets == 1:
        return x.new_zeros((*x.shape[:2], rotations.size(1), x.size(2)), dtype=torch.long)
    rotated = torch.einsum("bhtd,drk->bhrtk", x, rotations.to(x.dtype))
    return torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """``x (B, H, T, D)`` rows in the order ``index (B, H, R, T)`` -> ``(B, H, R, T, D)``."""
    expanded = x.unsqueeze(2).expand(-1, -1, index.size(2), -1, -1)
    return expanded.gather(3, index.unsqueeze(-1).expand(-1, -1, -1, -1, x.size(-1)))


def _with_previous_chunk(x: Tensor) -> Tensor:
    """``(..., nc, c, ...)`` -> keys of each chunk and the one before ``(..., nc, 2c, ...)``."""
    return torch.cat([x, x.roll(1, dims=3)], dim=4)


def lsh_attention(
    qk: Tensor,
    value: Tensor,
    rotations: Tensor,
    *,
    num_buckets: int,
    chunk_size: int,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Shared-QK attention restricted to hash buckets.

    Args:
        qk: ``(B, H, T, D)`` shared query/key vectors; value: ``(B, H, T, Dv)``.
        rotations: from :func:`random_rotations` (``R = rotations.size(1)`` rounds).
        num_buckets: buckets per round (1, or even).
        chunk_size: ``c``; each chunk of sorted positions sees itself and the
            previous chunk.
        causal: keys after the query are hidden.
        key_padding_mask: ``(B, T)`` bool, ``True`` at real tokens.
        dropout_p: dropout on the attention weights within each round.

    Returns ``(B, H, T, Dv)``; a query with no visible key gets zeros.
    """
    batch, _, length, dim = qk.shape
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    out_dtype, dtype = value.dtype, compute_dtype(qk.dtype)
    pad = (-length) % chunk_size
    qk = F.pad(qk.to(dtype), (0, 0, 0, pad))
    value = F.pad(value.to(dtype), (0, 0, 0, pad))
    total = length + pad
    real = torch.zeros(batch, total, dtype=torch.bool, device=qk.device)
    real[:, :length] = True if key_padding_mask is None else key_padding_mask.bool()
    buckets = lsh_buckets(qk, rotations, num_buckets)  # (B, H, R, T)
    positions = torch.arange(total, device=qk.device)
    order = (buckets * total + positions).argsort(dim=-1)  # by bucket, then position
    chunks = total // chunk_size

    def chunked(x: Tensor) -> Tensor:
        return x.unflatten(3, (chunks, chunk_size))

    q = chunked(_gather(qk, order))  # (B, H, R, nc, c, D)
    k = F.normalize(q, dim=-1)
    v = chunked(_gather(value, order))
    pos = chunked(order)  # (B, H, R, nc, c)
    bucket = chunked(buckets.gather(-1, order))
    key_real = chunked(real[:, None, None, :].expand_as(order).gather(-1, order))
    if chunks > 1:
        k, v = _with_previous_chunk(k), _with_previous_chunk(v)
        key_pos, key_bucket = _with_previous_chunk(pos), _with_previous_chunk(bucket)
        key_real = _with_previous_chunk(key_real)
    else:
        key_pos, key_bucket = pos, bucket
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, R, nc, c, c or 2c)
    visible = (bucket[..., :, None] == key_bucket[..., None, :]) & key_real[..., None, :]
    if causal:
        visible = visible & (key_pos[..., None, :] <= pos[..., :, None])
    is_self = key_pos[..., None, :] == pos[..., :, None]
    others = visible & ~is_self
    visible = torch.where(others.any(-1, keepdim=True), others, visible)
    any_visible = visible.any(-1, keepdim=True)
    scores = scores.masked_fill(~visible, float("-inf")).masked_fill(~any_visible, 0.0)
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)  # (..., c, 1)
    weights = torch.exp(scores - lse).masked_fill(~visible, 0.0)
    if dropout_p > 0:
        weights = dropout(weights, dropout_p)
    out = weights @ v  # (B, H, R, nc, c, Dv)
    out, lse = out.flatten(3, 4), lse.flatten(3, 4)  # (B, H, R, T, Dv), (B, H, R, T, 1)
    # A round where the query saw nothing gets (almost) no weight; all such: zeros.
    lse = lse.masked_fill(~any_visible.flatten(3, 4), torch.finfo(dtype).min / 2)
    inverse = order.argsort(dim=-1)
    out = out.gather(3, inverse.unsqueeze(-1).expand_as(out))
    lse = lse.gather(3, inverse.unsqueeze(-1))
    # Rounds weighted by their share of the total softmax mass.
    round_weights = torch.softmax(lse, dim=2)
    combined = (out * round_weights).sum(dim=2)
    return combined[:, :, :length].to(out_dtype)
