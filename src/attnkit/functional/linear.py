"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs").

The softmax kernel ``exp(q . k)`` is replaced by ``phi(q) . phi(k)`` with the
feature map ``phi(x) = elu(x) + 1`` (positive), so attention factorises::

    out_i = phi(q_i) S / phi(q_i) z,   S = sum_j phi(k_j) v_j^T,   z = sum_j phi(k_j)

over all keys (bidirectional) or keys ``j <= i`` (causal): time and memory
linear in ``T``. The causal prefix sums are computed in chunks of ``C``
positions: inside a chunk the masked ``C x C`` form, across chunks the
running ``S`` and ``z`` of all earlier chunks (an exclusive ``cumsum`` over
per-chunk sums) — tensor operations only, no loop over tokens or chunks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.functional._common import compute_dtype, repeat_kv

__all__ = [
    "elu_feature_map",
    "feature_attention",
    "linear_attention",
    "linear_attention_quadratic",
]

EPS = 1e-6


def elu_feature_map(x: Tensor) -> Tensor:
    """``elu(x) + 1``: positive features, so the normaliser never vanishes."""
    return F.elu(x) + 1.0


def _features(query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None):
    """phi(q), phi(k) (zero at padded keys) and v, in the compute dtype, heads repeated."""
    dtype = compute_dtype(query.dtype)
    heads = query.size(1)
    q = elu_feature_map(query.to(dtype))
    k = elu_feature_map(repeat_kv(key, heads // key.size(1)).to(dtype))
    v = repeat_kv(value, heads // value.size(1)).to(dtype)
    if key_padding_mask is not None:
        k = k * key_padding_mask[:, None, :, None].to(dtype)
    return q, k, v


def linear_attention_quadratic(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """The same attention by its ``O(T^2)`` definition (reference and cached decoding).

    With ``causal`` the queries are the last ``Tq`` of the ``Tk`` positions.
    """
    q, k, v = _features(query, key, value, key_padding_mask)
    scores = q @ k.transpose(-1, -2)  # (B, H, Tq, Tk), all >= 0
    if causal:
        offset = k.size(2) - q.size(2)
        keep = torch.ones(q.size(2), k.size(2), dtype=torch.bool, device=q.device)
        scores = scores * keep.tril(offset)
    out = (scores @ v) / (scores.sum(-1, keepdim=True) + EPS)
    return out.to(query.dtype)


def linear_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    chunk_size: int = 64,
) -> Tensor:
    """Linear attention in ``O(T)`` time and memory.

    Args:
        query: ``(B, H, T, D)``; key: ``(B, Hkv, T, D)``; value: ``(B, Hkv, T, Dv)``.
        causal: each query sums over the keys at or before it (chunked prefix sums).
        key_padding_mask: ``(B, T)`` bool, ``True`` at real tokens.
        chunk_size: ``C`` of the causal form (memory ``O(T * C)`` inside chunks).

    Returns ``(B, H, T, Dv)``; equals :func:`linear_attention_quadratic`.
    """
    if query.dim() != 4 or key.shape[2] != query.shape[2] or value.shape[2] != key.shape[2]:
        raise ValueError(
            "linear_attention needs query (B, H, T, D), key (B, Hkv, T, D), value "
            f"(B, Hkv, T, Dv) over the same T; got {tuple(query.shape)}, {tuple(key.shape)}, "
            f"{tuple(value.shape)}"
        )
    q, k, v = _features(query, key, value, key_padding_mask)
    return feature_attention(q, k, v, causal=causal, chunk_size=chunk_size).to(query.dtype)


def feature_attention(
    query_features: Tensor,
    key_features: Tensor,
    value: Tensor,
    *,
    causal: bool = False,
    chunk_size: int = 64,
) -> Tensor:
    """``phi(Q) (phi(K)^T V) / phi(Q) phi(K)^T 1`` from positive features, in ``O(T)``.

    ``query_features (B, H, T, F)``, ``key_features (B, H, T, F)`` (zero rows
    drop keys), ``value (B, H, T, Dv)``; the kernel of linear attention and
    of the Performer. ``causal`` uses chunked prefix sums of ``chunk_size``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    q, k, v = query_features, key_features, value
    if not causal:
        state = k.transpose(-1, -2) @ v  # (B, H, F, Dv)
        normaliser = q @ k.sum(dim=2, keepdim=True).transpose(-1, -2)  # (B, H, T, 1)
        return (q @ state) / (normaliser + EPS)
    return _causal_chunked(q, k, v, chunk_size)


def _causal_chunked(q: Tensor, k: Tensor, v: Tensor, chunk: int) -> Tensor:
    length = q.size(2)
    chunks = math.ceil(length / chunk)
    pad = chunks * chunk - length
    q, k, v = (F.pad(x, (0, 0, 0, pad)).unflatten(2, (chunks, chunk)) for x in (q, k, v))
    # Within each chunk: the causal C x C form.
    local = (q @ k.transpose(-1, -2)).tril()  # (B, H, n, C, C)
    numerator = local @ v
    denominator = local.sum(-1, keepdim=True)
    # Across chunks: sums over all earlier chunks (exclusive prefix).
    chunk_states = k.transpose(-1, -2) @ v  # (B, H, n, D, Dv)
    chunk_norms = k.sum(dim=3)  # (B, H, n, D)
    states = chunk_states.cumsum(dim=2) - chunk_states
    norms = (chunk_norms.cumsum(dim=2) - chunk_norms).unsqueeze(-1)  # (B, H, n, D, 1)
    numerator = numerator + q @ states
    denominator = denominator + q @ norms
    out = numerator / (denominator + EPS)
    return out.flatten(2, 3)[:, :, :length]
