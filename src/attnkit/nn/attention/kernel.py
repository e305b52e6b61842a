"""Kernelised attention modules: linear attention (elu + 1) and the Performer (FAVOR+).

Both replace ``exp(q . k)`` by ``phi(q) . phi(k)`` with positive features, so
a full forward costs ``O(T)`` (:func:`attnkit.functional.linear.feature_attention`).
Decoding with a KV cache evaluates the same kernel over the cached keys
(``O(T)`` per new token), and ``need_weights`` returns the normalised kernel
weights. Masks: key padding ``(B, 1, 1, T)`` only (the sums cannot skip
arbitrary pairs); no score bias; ``dropout`` is unused (there is no weight
matrix to drop from).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from attnkit.functional._common import compute_dtype, repeat_kv
from attnkit.functional.linear import EPS, elu_feature_map, feature_attention
from attnkit.functional.performer import orthogonal_random_features, positive_random_features
from attnkit.nn.attention.multihead import MultiHeadAttention
from attnkit.nn.attention.pattern import required_key_padding
from attnkit.nn.kv_cache import KVCache, StaticKVCache

__all__ = ["KernelAttention", "LinearAttention", "PerformerAttention"]


class KernelAttention(MultiHeadAttention, ABC):
    """Base class: subclasses define :meth:`features` ``(q, k) -> (phi(q), phi(k))``."""

    def __init__(
        self, d_model: int, num_heads: int, dropout: float = 0.0, *, chunk_size: int = 64, **options
    ) -> None:
        if options.get("score_bias") is not None:
            raise ValueError(f"{type(self).__name__} has no scores to bias; got a score_bias")
        super().__init__(d_model, num_heads, dropout, **options)
        self.chunk_size = chunk_size

    @abstractmethod
    def features(self, query: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
        """Positive features ``(B, H, Tq, F)`` and ``(B, H, Tk, F)`` of queries and keys."""

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        mask: Tensor | None = None,
        *,
        need_weights: bool = False,
        cache: KVCache | StaticKVCache | None = None,
        is_causal: bool = False,
        attn_bias: Tensor | None = None,
        positions: Tensor | None = None,
        head_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Shapes as :meth:`MultiHeadAttention.forward` (self-attention only)."""
        if attn_bias is not None:
            raise ValueError(f"{type(self).__name__} has no scores to bias; got attn_bias")
        padding = required_key_padding(self, query, key, value, mask, cache)
        q = self._split_heads(self.q_proj(query), self.num_heads)
        q, k, v, _ = self._keys_values(q, query, query, cache, positions)
        dtype = compute_dtype(q.dtype)
        k = repeat_kv(k, self.num_heads // k.size(1)).to(dtype)
        v = repeat_kv(v, self.num_heads // v.size(1)).to(dtype)
        q_features, k_features = self.features(q.to(dtype), k)
        if padding is not None:
            k_features = k_features * padding[:, None, :, None].to(dtype)
        weights = None
        if cache is None and not need_weights:
            out = feature_attention(
                q_features, k_features, v, causal=is_causal, chunk_size=self.chunk_size
            )
        else:
            weights = _kernel_weights(q_features, k_features, is_causal)
            out = weights @ v
        out = self._merge_heads(out.to(query.dtype), head_mask)
        return self.out_proj(out), (weights.to(query.dtype) if need_weights else None)


def _kernel_weights(q_features: Tensor, k_features: Tensor, causal: bool) -> Tensor:
    """Normalised ``phi(q) . phi(k)``; causal: queries are the last ``Tq`` of ``Tk``."""
    scores = q_features @ k_features.transpose(-1, -2)
    if causal:
        offset = scores.size(-1) - scores.size(-2)
        keep = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device)
        scores = scores * keep.tril(offset)
    return scores / (scores.sum(-1, keepdim=True) + EPS)


class LinearAttention(KernelAttention):
    """Linear attention (Katharopoulos et al. 2020): ``phi(x) = elu(x) + 1``.

    Args: as :class:`MultiHeadAttention`, plus ``chunk_size`` of the causal prefix sums.

    Example:
        >>> import torch
        >>> from attnkit.nn import LinearAttention
        >>> out, _ = LinearAttention(d_model=16, num_heads=2)(torch.randn(2, 5, 16), is_causal=True)
        >>> tuple(out.shape)
        (2, 5, 16)
    """

    def features(self, query: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
        return elu_feature_map(query), elu_feature_map(key)


class PerformerAttention(KernelAttention):
    """The Performer's FAVOR+ (Choromanski et al. 2021): softmax attention approximated
    with ``num_features`` positive orthogonal random features per head dimension.

    Args: as :class:`MultiHeadAttention`, plus ``num_features`` (``m``; the error
    falls as it grows) and ``chunk_size``. :meth:`redraw_features` draws new
    directions (e.g. every few hundred training steps, as the paper does).

    Example:
        >>> import torch
        >>> from attnkit.nn import PerformerAttention
        >>> attention = PerformerAttention(d_model=16, num_heads=2, num_features=32)
        >>> out, _ = attention(torch.randn(2, 5, 16))
        >>> tuple(out.shape)
        (2, 5, 16)
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        *,
        num_features: int = 256,
        **options,
    ) -> None:
        super().__init__(d_model, num_heads, dropout, **options)
        self.num_features = num_features
        projection = orthogonal_random_features(num_features, self.head_dim)
        self.register_buffer("projection", projection, persistent=True)

    @torch.no_grad()
    def redraw_features(self, generator: torch.Generator | None = None) -> None:
        """Replace the random directions (in place, same device and dtype)."""
        fresh = orthogonal_random_features(self.num_features, self.head_dim, generator=generator)
        self.projection.copy_(fresh)

    def features(self, query: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
        scale = self.head_dim**-0.25
        q = positive_random_features(query * scale, self.projection, is_query=True)
        k = positive_random_features(key * scale, self.projection, is_query=False)
        return q, k

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_features={self.num_features}"
