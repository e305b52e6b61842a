"""FAVOR+: the Performer's positive orthogonal random features (Choromanski et al. 2021).

The softmax kernel ``exp(q . k / sqrt(d))`` equals the expectation of
``phi(q)^T phi(k)`` with positive random features

    phi(x) = exp(W x - |x|^2 / 2) / sqrt(m),   x = input / d^(1/4),

for ``m`` rows of ``W`` drawn from N(0, I). Drawing the rows in orthogonal
blocks (FAVOR+) lowers the variance. Attention then factorises as in linear
attention (:func:`attnkit.functional.linear.feature_attention`): ``O(T * m)``.
The approximation error falls as ``m`` grows.

For numerical safety the exponent of each feature vector is shifted by a
constant (its maximum for queries, the maximum over all keys for keys):
such a shift scales numerator and denominator alike and cancels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnkit.functional._common import compute_dtype, repeat_kv
from attnkit.functional.linear import feature_attention

__all__ = ["orthogonal_random_features", "performer_attention", "positive_random_features"]


def orthogonal_random_features(
    num_features: int, dim: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """``(num_features, dim)`` Gaussian directions drawn in orthogonal blocks of ``dim`` rows.

    Each block is the ``Q`` of a QR decomposition of a Gaussian matrix, its rows
    rescaled to the norms of Gaussian vectors (chi-distributed), as in FAVOR+.
    """
    if num_features < 1 or dim < 1:
        raise ValueError(f"num_features and dim must be >= 1; got {num_features}, {dim}")
    blocks = []
    for _ in range(math.ceil(num_features / dim)):
        gaussian = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        # QR fixes the sign of each column (diag(R) > 0 convention); undoing it makes Q
        # uniformly distributed, without which the estimator of exp(x.y) stays biased.
        blocks.append((q * torch.sign(torch.diagonal(r))).T)
    directions = torch.cat(blocks)[:num_features]
    norms = torch.randn(num_features, dim, generator=generator, dtype=torch.float64).norm(dim=1)
    return (directions * norms[:, None]).float()


def positive_random_features(x: Tensor, projection: Tensor, *, is_query: bool) -> Tensor:
    """``phi(x)`` of ``x (B, H, T, D)`` (already scaled by ``d^(-1/4)``): ``(B, H, T, m)``."""
    projected = x @ projection.to(x.dtype).T  # (B, H, T, m)
    squared = x.square().sum(-1, keepdim=True) / 2
    exponent = projected - squared
    if is_query:
        stabiliser = exponent.amax(dim=-1, keepdim=True)
    else:
        stabiliser = exponent.amax(dim=(-1, -2), keepdim=True)
    return torch.exp(exponent - stabiliser.detach()) / math.sqrt(projection.size(0))


def performer_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    projection: Tensor,
    *,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    chunk_size: int = 64,
) -> Tensor:
    """Softmax attention approximated with random features, ``O(T * m)``.

    Args:
        query: ``(B, H, T, D)``; key: ``(B, Hkv, T, D)``; value: ``(B, Hkv, T, Dv)``.
        projection: ``(m, D)`` feature directions (:func:`orthogonal_random_features`).
        causal, key_padding_mask, chunk_size: as :func:`attnkit.functional.linear.linear_attention`.

    Returns ``(B, H, T, Dv)``.
    """
    dtype = compute_dtype(query.dtype)
    heads, dim = query.size(1), query.size(-1)
    scale = dim**-0.25
    q = positive_random_features(query.to(dtype) * scale, projection, is_query=True)
    k_in = repeat_kv(key, heads // key.size(1)).to(dtype) * scale
    v = repeat_kv(value, heads // value.size(1)).to(dtype)
    k = positive_random_features(k_in, projection, is_query=False)
    if key_padding_mask is not None:
        k = k * key_padding_mask[:, None, :, None].to(dtype)
    out = feature_attention(q, k, v, causal=causal, chunk_size=chunk_size)
    return out.to(query.dtype)
