"""Sliding-window multi-head attention (local attention, as in Longformer's window or Mistral)."""

from __future__ import annotations

import torch
from torch import Tensor

from attnkit.functional import combine_masks, create_sliding_window_mask
from attnkit.functional.local import sliding_window_attention
from attnkit.nn.attention.multihead import MultiHeadAttention
from attnkit.nn.kv_cache import KVCache, StaticKVCache

__all__ = ["SlidingWindowAttention", "key_padding_from_mask"]


class SlidingWindowAttention(MultiHeadAttention):
    """Multi-head self-attention in which each position sees only a window of positions.

    Args:
        d_model, num_heads, dropout: as :class:`MultiHeadAttention` (and its options).
        window: with ``is_causal=True`` the ``window`` most recent positions
            (its own included); otherwise ``window`` positions on each side.

    A full forward over a sequence (no cache, at most a key-padding mask) runs
    :func:`attnkit.functional.local.sliding_window_attention`: blockwise,
    memory ``O(T * window)``. Decoding with a KV cache, or any other mask,
    uses the dense path with the window as a mask (same numbers).
    """

    def __init__(
        self, d_model: int, num_heads: int, dropout: float = 0.0, *, window: int = 256, **options
    ) -> None:
        super().__init__(d_model, num_heads, dropout, **options)
        if window < 1:
            raise ValueError(f"window must be >= 1; got {window}")
        self.window = window

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
        """Shapes as :meth:`MultiHeadAttention.forward` (self-attention only)."""
        if key is not None and key is not query:
            raise ValueError("SlidingWindowAttention is self-attention; got a separate key")
        padding = key_padding_from_mask(mask, query.size(0), query.size(1))
        blockwise = cache is None and not need_weights and attn_bias is None
        if not blockwise or (mask is not None and padding is None) or self.score_bias is not None:
            return self._dense(query, mask, need_weights, cache, is_causal, attn_bias, positions)
        q = self._split_heads(self.q_proj(query), self.num_heads)
        q, k, v, _ = self._keys_values(q, query, query, None, positions)
        out = sliding_window_attention(
            q,
            k,
            v,
            window=self.window,
            causal=is_causal,
            key_padding_mask=padding,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scale,
        )
        return self.out_proj(out.transpose(1, 2).flatten(2)), None

    def _dense(self, query, mask, need_weights, cache, is_causal, attn_bias, positions):
        """The window as a mask over all keys (cached decoding, weights, other masks)."""
        total = query.size(1) + (cache.length if cache is not None else 0)
        window = create_sliding_window_mask(
            query.size(1), total, window=self.window, causal=is_causal, device=query.device
        )
        return super().forward(
            query,
            mask=combine_masks(mask, window),
            need_weights=need_weights,
            cache=cache,
            attn_bias=attn_bias,
            positions=positions,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window={self.window}"


def key_padding_from_mask(mask: Tensor | None, batch: int, key_len: int) -> Tensor | None:
    """A ``(B, Tk)`` key-padding mask if ``mask`` is a bool ``(B or 1, 1, 1, Tk)``, else None."""
    if mask is None or mask.dim() != 4 or mask.shape[1:3] != (1, 1):
        return None
    if mask.size(-1) != key_len or mask.dtype != torch.bool:
        return None
    return mask[:, 0, 0, :].expand(batch, -1)
