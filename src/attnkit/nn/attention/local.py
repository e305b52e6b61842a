"""Sliding-window multi-head attention (local attention, as in Longformer's window or Mistral)."""

from __future__ import annotations

from torch import Tensor

from attnkit.functional import create_sliding_window_mask
from attnkit.functional.local import sliding_window_attention
from attnkit.nn.attention.pattern import PatternAttention, key_padding_from_mask

__all__ = ["SlidingWindowAttention", "key_padding_from_mask"]


class SlidingWindowAttention(PatternAttention):
    """Multi-head self-attention in which each position sees only a window of positions.

    Args:
        d_model, num_heads, dropout: as :class:`MultiHeadAttention` (and its options).
        window: with ``is_causal=True`` the ``window`` most recent positions
            (its own included); otherwise ``window`` positions on each side.

    A full forward over a sequence (no cache, at most a key-padding mask) runs
    :func:`attnkit.functional.local.sliding_window_attention`: blockwise,
    memory ``O(T * window)``. Decoding with a KV cache, or any other mask,
    uses the dense path with the window as a mask (same numbers).

    Example:
        >>> import torch
        >>> from attnkit.nn import SlidingWindowAttention
        >>> attention = SlidingWindowAttention(d_model=16, num_heads=2, window=2)
        >>> out, weights = attention(torch.randn(2, 6, 16), is_causal=True, need_weights=True)
        >>> tuple(out.shape), weights[0, 0, 5, :4].tolist()  # outside the window: 0
        ((2, 6, 16), [0.0, 0.0, 0.0, 0.0])
    """

    def __init__(
        self, d_model: int, num_heads: int, dropout: float = 0.0, *, window: int = 256, **options
    ) -> None:
        super().__init__(d_model, num_heads, dropout, **options)
        if window < 1:
            raise ValueError(f"window must be >= 1; got {window}")
        self.window = window

    def pattern_mask(self, query_len: int, total: int, causal: bool, device) -> Tensor:
        return create_sliding_window_mask(
            query_len, total, window=self.window, causal=causal, device=device
        )

    def pattern_attention(
        self, q: Tensor, k: Tensor, v: Tensor, padding: Tensor | None, causal: bool
    ) -> Tensor:
        return sliding_window_attention(
            q,
            k,
            v,
            window=self.window,
            causal=causal,
            key_padding_mask=padding,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scale,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window={self.window}"
