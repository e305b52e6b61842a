"""Self-attention restricted to a fixed pattern, with a fast path and an exact fallback.

Sliding-window and block-sparse attention share the same plan: a full
forward over one sequence (no cache, at most a key-padding mask, no bias)
runs the pattern's own memory-saving kernel; anything else (decoding with a
KV cache, weights requested, other masks or biases) runs dense attention with
the pattern as a boolean mask, which gives the same numbers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from attnkit.functional import combine_masks
from attnkit.nn.attention.multihead import MultiHeadAttention
from attnkit.nn.kv_cache import KVCache, StaticKVCache

__all__ = ["PatternAttention", "key_padding_from_mask", "required_key_padding"]


def key_padding_from_mask(mask: Tensor | None, batch: int, key_len: int) -> Tensor | None:
    """A ``(B, Tk)`` key-padding mask if ``mask`` is a bool ``(B or 1, 1, 1, Tk)``, else None."""
    if mask is None or mask.dim() != 4 or mask.shape[1:3] != (1, 1):
        return None
    if mask.size(-1) != key_len or mask.dtype != torch.bool:
        return None
    return mask[:, 0, 0, :].expand(batch, -1)


def check_self_attention(
    module: MultiHeadAttention, query: Tensor, key: Tensor | None, value: Tensor | None
) -> None:
    """Raise unless ``key`` and ``value`` are absent or ``query`` itself: these modules
    project keys and values from the query and would otherwise ignore them silently."""
    for name, given in (("key", key), ("value", value)):
        if given is not None and given is not query:
            raise ValueError(
                f"{type(module).__name__} is self-attention (keys and values come from the "
                f"query); got a separate {name}"
            )


def required_key_padding(
    module: MultiHeadAttention,
    query: Tensor,
    key: Tensor | None,
    value: Tensor | None,
    mask: Tensor | None,
    cache,
) -> Tensor | None:
    """The ``(B, T_total)`` key padding of a self-attention call that accepts no other mask.

    For attention whose kernel sums cannot skip arbitrary pairs (linear,
    Performer, LSH): raises for a separate key or value, or any mask that is not
    key padding.
    """
    name = type(module).__name__
    check_self_attention(module, query, key, value)
    total = query.size(1) + (cache.length if cache is not None else 0)
    padding = key_padding_from_mask(mask, query.size(0), total)
    if mask is not None and padding is None:
        raise ValueError(
            f"{name} takes a key-padding mask of shape (B, 1, 1, T_total); got {tuple(mask.shape)}"
        )
    return padding


class PatternAttention(MultiHeadAttention, ABC):
    """Base class: subclasses give the pattern as a mask and as a kernel."""

    @abstractmethod
    def pattern_mask(self, query_len: int, total: int, causal: bool, device) -> Tensor:
        """Bool ``(1, 1, Tq, T_total)`` for queries at the last ``Tq`` of ``T_total`` positions."""

    @abstractmethod
    def pattern_attention(
        self, q: Tensor, k: Tensor, v: Tensor, padding: Tensor | None, causal: bool
    ) -> Tensor:
        """The memory-saving kernel on ``(B, H, T, D)`` heads of one whole sequence."""

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
        check_self_attention(self, query, key, value)
        padding = key_padding_from_mask(mask, query.size(0), query.size(1))
        fast = cache is None and not need_weights and attn_bias is None
        fast = fast and (mask is None or padding is not None) and self.score_bias is None
        if not fast:
            total = query.size(1) + (cache.length if cache is not None else 0)
            pattern = self.pattern_mask(query.size(1), total, is_causal, query.device)
            return super().forward(
                query,
                mask=combine_masks(mask, pattern),
                need_weights=need_weights,
                cache=cache,
                attn_bias=attn_bias,
                positions=positions,
                head_mask=head_mask,
            )
        q = self._split_heads(self.q_proj(query), self.num_heads)
        q, k, v, _ = self._keys_values(q, query, query, None, positions)
        out = self.pattern_attention(q, k, v, padding, is_causal)
        return self.out_proj(self._merge_heads(out, head_mask)), None
