"""Relative position representations (Shaw, Uszkoreit & Vaswani 2018).

Each pair of positions ``(i, j)`` gets learned key and value vectors
``a^K_ij = w^K[clip(j - i, -k, k)]`` and ``a^V_ij = w^V[clip(j - i, -k, k)]``
(``k = max_relative_position``; ``2k + 1`` vectors of size ``Dh``, shared by
the heads)::

    e_ij = q_i . (k_j + a^K_ij) / sqrt(Dh)
    z_i  = sum_j alpha_ij (v_j + a^V_ij)

Only ``2k + 1`` distinct vectors exist, so neither term needs a
``(Tq, Tk, Dh)`` tensor: ``q . a^K`` is ``q @ w^K^T`` gathered by relative
distance, and ``sum_j alpha_ij a^V_ij`` is ``alpha`` summed per distance
bucket (``scatter_add``) times ``w^V``. Memory stays ``O(Tq * Tk + Tq * k)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnkit.functional import attention_weights
from attnkit.functional import dropout as apply_dropout
from attnkit.functional._common import repeat_kv
from attnkit.nn.attention.multihead import MultiHeadAttention
from attnkit.nn.kv_cache import KVCache, StaticKVCache

__all__ = ["RelativePositionAttention", "relative_buckets"]


def relative_buckets(
    query_len: int, key_len: int, offset: int, max_relative: int, device: torch.device
) -> Tensor:
    """``(Tq, Tk)`` ids ``clip(j - i, -k, k) + k`` for queries at ``offset + i``."""
    queries = torch.arange(offset, offset + query_len, device=device)[:, None]
    keys = torch.arange(key_len, device=device)[None, :]
    return (keys - queries).clamp(-max_relative, max_relative) + max_relative


class RelativePositionAttention(MultiHeadAttention):
    """Multi-head attention with Shaw et al.'s relative key and value embeddings.

    Args:
        d_model, num_heads, dropout: as :class:`MultiHeadAttention` (and its
            keyword options: ``num_kv_heads``, ``bias``, ``head_dim``, ``scale``).
        max_relative_position: ``k``; distances beyond it share the end vectors.

    Same call as :class:`MultiHeadAttention` (self-attention; the KV cache
    keeps keys at positions ``0 .. length - 1`` and new queries after them).
    It always runs the explicit formula, so weights are available at no cost.

    Example:
        >>> import torch
        >>> from attnkit.nn import RelativePositionAttention
        >>> attention = RelativePositionAttention(d_model=16, num_heads=2, max_relative_position=4)
        >>> out, weights = attention(torch.randn(2, 5, 16), need_weights=True)
        >>> tuple(out.shape), tuple(weights.shape)
        ((2, 5, 16), (2, 2, 5, 5))
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        *,
        max_relative_position: int = 32,
        **options,
    ) -> None:
        if options.get("rotary") is not None or options.get("score_bias") is not None:
            raise ValueError("RelativePositionAttention already encodes positions; "
                             "got a rotary or score_bias component too")  # fmt: skip
        super().__init__(d_model, num_heads, dropout, **options)
        if max_relative_position < 1:
            raise ValueError(f"max_relative_position must be >= 1; got {max_relative_position}")
        self.max_relative_position = max_relative_position
        self.relative_key = nn.Embedding(2 * max_relative_position + 1, self.head_dim)
        self.relative_value = nn.Embedding(2 * max_relative_position + 1, self.head_dim)

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
        """Shapes as :meth:`MultiHeadAttention.forward`. ``positions`` are not needed:
        distances between the tokens of one sequence do not change when it is
        left-padded (the padding is masked)."""
        del positions
        key = query if key is None else key
        value = key if value is None else value
        self._check_inputs(query, key, value)
        q = self._split_heads(self.q_proj(query), self.num_heads)
        q, k, v, offset = self._keys_values(q, key, value, cache, None)
        buckets = relative_buckets(
            q.size(2), k.size(2), offset, self.max_relative_position, q.device
        )
        scale = self.scale if self.scale is not None else self.head_dim**-0.5
        relative = self._relative_key_scores(q, buckets) * scale
        bias = relative if attn_bias is None else relative + attn_bias
        weights = attention_weights(
            q, k, mask, attn_bias=bias, is_causal="bottom_right" if is_causal else False,
            scale=scale,
        )  # fmt: skip
        dropped = apply_dropout(weights, self.dropout, self.training)
        out = dropped @ repeat_kv(v, self.num_heads // v.size(1)).to(dropped.dtype)
        out = out + self._relative_values(dropped, buckets)
        out = self._merge_heads(out.to(query.dtype), head_mask)
        return self.out_proj(out), (weights.to(query.dtype) if need_weights else None)

    def _relative_key_scores(self, q: Tensor, buckets: Tensor) -> Tensor:
        """``q_i . a^K_ij`` as ``(B, H, Tq, Tk)``: scores per bucket, gathered by distance."""
        per_bucket = q @ self.relative_key.weight.to(q.dtype).T  # (B, H, Tq, 2k + 1)
        index = buckets.expand(*q.shape[:2], *buckets.shape)
        return per_bucket.gather(-1, index)

    def _relative_values(self, weights: Tensor, buckets: Tensor) -> Tensor:
        """``sum_j alpha_ij a^V_ij`` as ``(B, H, Tq, Dh)``: weights summed per bucket."""
        per_bucket = weights.new_zeros(*weights.shape[:3], self.relative_value.num_embeddings)
        per_bucket.scatter_add_(-1, buckets.expand_as(weights), weights)
        return per_bucket @ self.relative_value.weight.to(weights.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_relative_position={self.max_relative_position}"
