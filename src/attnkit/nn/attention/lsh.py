"""Reformer's LSH self-attention as a module (shared query/key projection)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.functional import attention_weights
from attnkit.functional.lsh import lsh_attention, random_rotations
from attnkit.nn.attention.multihead import MultiHeadAttention
from attnkit.nn.attention.pattern import required_key_padding
from attnkit.nn.kv_cache import KVCache, StaticKVCache

__all__ = ["LSHAttention"]


class LSHAttention(MultiHeadAttention):
    """Self-attention within locality-sensitive hash buckets (Kitaev et al. 2020).

    Args:
        d_model, num_heads, dropout: as :class:`MultiHeadAttention` (``bias``,
            ``head_dim`` too; queries and keys share ``q_proj``, so there is no
            ``k_proj``).
        num_hashes: hash rounds; num_buckets: buckets per round (1 or even);
        chunk_size: sorted positions per chunk.

    Training draws fresh random rotations at every forward pass (as the paper
    does); evaluation uses fixed ones (a buffer, redrawn by :meth:`redraw`).
    Decoding with a KV cache attends to every cached key (shared-QK attention
    without buckets: what LSH computes when every key shares the query's
    bucket and chunk).

    Example:
        >>> import torch
        >>> from attnkit.nn import LSHAttention
        >>> attention = LSHAttention(d_model=16, num_heads=2, num_buckets=4, chunk_size=4).eval()
        >>> out, _ = attention(torch.randn(1, 8, 16))
        >>> tuple(out.shape)
        (1, 8, 16)
    """

    returns_weights = False

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        *,
        num_hashes: int = 2,
        num_buckets: int = 8,
        chunk_size: int = 64,
        **options,
    ) -> None:
        if options.get("rotary") is not None or options.get("score_bias") is not None:
            raise ValueError("LSHAttention takes no rotary or score_bias component")
        if options.get("num_kv_heads") not in (None, num_heads):
            raise ValueError("LSHAttention shares queries and keys: num_kv_heads must equal heads")
        super().__init__(d_model, num_heads, dropout, **options)
        self.k_proj = nn.Identity()  # queries are the keys
        self.num_hashes, self.num_buckets, self.chunk_size = num_hashes, num_buckets, chunk_size
        self.register_buffer("rotations", random_rotations(self.head_dim, num_hashes, num_buckets))

    @torch.no_grad()
    def redraw(self, generator: torch.Generator | None = None) -> None:
        """New fixed rotations for evaluation."""
        fresh = random_rotations(
            self.head_dim, self.num_hashes, self.num_buckets, generator=generator
        )
        self.rotations.copy_(fresh)

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
        """Shapes as :meth:`MultiHeadAttention.forward` (self-attention; no weights)."""
        if need_weights or attn_bias is not None:
            raise ValueError("LSHAttention returns no weights and takes no attn_bias")
        padding = required_key_padding(self, query, key, value, mask, cache)
        qk = self._split_heads(self.q_proj(query), self.num_heads)
        v = self._split_heads(self.v_proj(query), self.num_heads)
        if cache is not None:
            out = self._cached(qk, v, cache, padding, is_causal)
        else:
            rotations = self.rotations
            if self.training:
                rotations = random_rotations(self.head_dim, self.num_hashes, self.num_buckets)
            out = lsh_attention(
                qk,
                v,
                rotations.to(qk.device),
                num_buckets=self.num_buckets,
                chunk_size=self.chunk_size,
                causal=is_causal,
                key_padding_mask=padding,
                scale=self.scale,
                dropout_p=self.dropout if self.training else 0.0,
            )
        return self.out_proj(self._merge_heads(out, head_mask)), None

    def _cached(self, qk: Tensor, v: Tensor, cache, padding, causal: bool) -> Tensor:
        """New queries against every cached (unit-norm) key, themselves only if alone."""
        keys, values = cache.update(qk, v)
        tq, tk = qk.size(2), keys.size(2)
        offset = tk - tq
        rows = torch.arange(tq, device=qk.device)[:, None] + offset
        cols = torch.arange(tk, device=qk.device)[None, :]
        visible = cols <= rows if causal else torch.ones(tq, tk, dtype=torch.bool, device=qk.device)
        if padding is not None:
            visible = visible & padding[:, None, None, :]
        others = visible & (cols != rows)
        visible = torch.where(others.any(-1, keepdim=True), others, visible)
        weights = attention_weights(qk, F.normalize(keys, dim=-1), visible, scale=self.scale)
        return (weights @ values.to(weights.dtype)).to(qk.dtype)
