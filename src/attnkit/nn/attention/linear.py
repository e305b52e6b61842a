"""Linear multi-head attention (Katharopoulos et al. 2020): ``O(T)`` time and memory."""

from __future__ import annotations

import torch
from torch import Tensor

from attnkit.functional.linear import linear_attention, linear_attention_quadratic
from attnkit.nn.attention.local import key_padding_from_mask
from attnkit.nn.attention.multihead import MultiHeadAttention
from attnkit.nn.kv_cache import KVCache, StaticKVCache

__all__ = ["LinearAttention"]


class LinearAttention(MultiHeadAttention):
    """Multi-head self-attention with the ``elu + 1`` kernel instead of the softmax.

    Args: as :class:`MultiHeadAttention`, plus ``chunk_size`` of the causal
    prefix sums. A full forward runs :func:`attnkit.functional.linear.linear_attention`
    (``O(T)``); decoding with a KV cache evaluates the same attention over the
    cached keys (:func:`~attnkit.functional.linear.linear_attention_quadratic`,
    ``O(T)`` per new token). Masks: key padding ``(B, 1, 1, T)`` only (the
    kernel sums cannot skip arbitrary pairs); no score bias. ``dropout`` is
    not used: the factorised form has no weight matrix to drop from.
    """

    def __init__(
        self, d_model: int, num_heads: int, dropout: float = 0.0, *, chunk_size: int = 64, **options
    ) -> None:
        if options.get("score_bias") is not None:
            raise ValueError("LinearAttention has no scores to bias; got a score_bias")
        super().__init__(d_model, num_heads, dropout, **options)
        self.chunk_size = chunk_size

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
    ) -> tuple[Tensor, Tensor | None]:
        """Shapes as :meth:`MultiHeadAttention.forward` (self-attention only).

        ``need_weights`` returns the normalised kernel weights ``(B, H, T, T_total)``.
        """
        if key is not None and key is not query:
            raise ValueError("LinearAttention is self-attention; got a separate key")
        if attn_bias is not None:
            raise ValueError("LinearAttention has no scores to bias; got attn_bias")
        total = query.size(1) + (cache.length if cache is not None else 0)
        padding = key_padding_from_mask(mask, query.size(0), total)
        if mask is not None and padding is None:
            raise ValueError(
                "LinearAttention takes a key-padding mask of shape (B, 1, 1, T_total); "
                f"got {tuple(mask.shape)}"
            )
        q = self._split_heads(self.q_proj(query), self.num_heads)
        q, k, v, _ = self._keys_values(q, query, query, cache, positions)
        if cache is None and not need_weights:
            out = linear_attention(
                q, k, v, causal=is_causal, key_padding_mask=padding, chunk_size=self.chunk_size
            )
            weights = None
        else:
            out, weights = self._quadratic(q, k, v, is_causal, padding)
        out = out.transpose(1, 2).flatten(2)
        return self.out_proj(out), (weights if need_weights else None)

    def _quadratic(self, q, k, v, causal: bool, padding: Tensor | None):
        """Output and normalised weights by the quadratic definition (cache, weights)."""
        identity = torch.eye(k.size(2), dtype=v.dtype, device=v.device).expand(
            v.size(0), v.size(1), -1, -1
        )
        weights = linear_attention_quadratic(
            q, k, identity, causal=causal, key_padding_mask=padding
        )
        out = linear_attention_quadratic(q, k, v, causal=causal, key_padding_mask=padding)
        return out, weights
