"""Multi-head attention: self, cross, grouped-query / multi-query, with a KV cache.

Positional schemes plug in without changing this module: a *rotary* component
rotates queries and keys after projection, and a *score-bias* provider adds an
additive bias (ALiBi, T5 buckets, ...) to the attention scores.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch
from torch import Tensor, nn

from attnkit.functional import scaled_dot_product_attention
from attnkit.nn.kv_cache import KVCache, StaticKVCache

__all__ = ["MultiHeadAttention", "QueryKeyTransform", "ScoreBias", "head_mask_factors"]


class QueryKeyTransform(Protocol):
    """Transforms per-head queries and keys, e.g. rotary position embeddings.

    ``query (B, H, Tq, Dh)`` and ``key (B, Hkv, Tk, Dh)`` hold positions
    ``offset, offset + 1, ...``, or per row ``positions (B, Tq)`` when given
    (left-padded batches); returns the transformed pair.

    Example:
        >>> import torch
        >>> from attnkit.nn import QueryKeyTransform, RotaryEmbedding
        >>> transform: QueryKeyTransform = RotaryEmbedding(8)
        >>> q, k = transform(torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8), offset=0)
        >>> tuple(q.shape), tuple(k.shape)
        ((1, 2, 3, 8), (1, 2, 3, 8))
    """

    def __call__(
        self, query: Tensor, key: Tensor, *, offset: int, positions: Tensor | None = None
    ) -> tuple[Tensor, Tensor]: ...


class ScoreBias(Protocol):
    """Provides an additive score bias, e.g. ALiBi or T5 relative buckets.

    Queries sit at positions ``offset .. offset + query_len - 1`` and keys at
    ``0 .. key_len - 1``; returns a float tensor broadcastable to
    ``(B, H, query_len, key_len)``.

    Example:
        >>> from attnkit.nn import ALiBi, ScoreBias
        >>> bias: ScoreBias = ALiBi(num_heads=2)
        >>> tuple(bias(1, 4, offset=3).shape)  # one new query after 3 cached keys
        (1, 2, 1, 4)
    """

    def __call__(self, query_len: int, key_len: int, *, offset: int) -> Tensor: ...


def head_mask_factors(head_mask: Tensor, batch: int, num_heads: int) -> Tensor:
    """A ``(H,)`` or ``(B, H)`` head mask as factors ``(B or 1, H, 1, 1)``."""
    if head_mask.shape not in ((num_heads,), (batch, num_heads)):
        raise ValueError(
            f"head_mask must have shape ({num_heads},) or ({batch}, {num_heads}); "
            f"got {tuple(head_mask.shape)}"
        )
    return head_mask.reshape(-1, num_heads, 1, 1)


def _select_linear(layer: nn.Linear, index: Tensor, dim: int) -> nn.Linear:
    """A copy of ``layer`` keeping the given output rows (dim 0) or input columns (dim 1)."""
    weight = layer.weight.index_select(dim, index.to(layer.weight.device))
    bias = layer.bias
    if bias is not None and dim == 0:
        bias = bias.index_select(0, index.to(bias.device))
    out_features, in_features = weight.shape
    new = nn.Linear(in_features, out_features, bias=bias is not None)
    new = new.to(device=weight.device, dtype=weight.dtype)
    new.weight.copy_(weight)
    if bias is not None:
        new.bias.copy_(bias)
    return new


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017), batch first.

    Args:
        d_model: model width ``D`` of queries and of the output.
        num_heads: query heads ``H``.
        dropout: dropout on attention weights (training only).
        num_kv_heads: key/value heads ``Hkv`` (``H`` by default; 1 = multi-query;
            a divisor of ``H`` = grouped-query attention).
        bias: learn biases in the four projections.
        kdim, vdim: feature sizes of ``key`` and ``value`` inputs (default ``D``).
        head_dim: per-head size (default ``D // H``).
        rotary: optional :class:`QueryKeyTransform` applied to projected q/k.
        score_bias: optional :class:`ScoreBias` added to the scores.
        scale: score scale (default ``1 / sqrt(head_dim)``; T5 uses 1.0).
        backend: attention backend name passed to
            :func:`attnkit.functional.scaled_dot_product_attention`.

    ``returns_weights`` says whether ``need_weights=True`` is supported (the
    analysis tools skip modules that cannot return weights).

    Example:
        >>> import torch
        >>> from attnkit.nn import MultiHeadAttention
        >>> attention = MultiHeadAttention(d_model=32, num_heads=4)
        >>> x, memory = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
        >>> out, weights = attention(x, need_weights=True)  # self-attention
        >>> tuple(out.shape), tuple(weights.shape)
        ((2, 5, 32), (2, 4, 5, 5))
        >>> out, _ = attention(x, memory, memory)  # cross-attention
        >>> tuple(out.shape)
        (2, 5, 32)
        >>> multi_query = MultiHeadAttention(32, num_heads=4, num_kv_heads=1)
        >>> tuple(multi_query(x, is_causal=True)[0].shape)
        (2, 5, 32)
    """

    returns_weights = True

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        *,
        num_kv_heads: int | None = None,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        head_dim: int | None = None,
        rotary: nn.Module | None = None,
        score_bias: nn.Module | None = None,
        scale: float | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_kv_heads < 1:
            raise ValueError(f"num_kv_heads must be >= 1 (or None: num_heads); got {num_kv_heads}")
        if head_dim is None:
            if d_model % num_heads != 0:
                raise ValueError(
                    f"d_model ({d_model}) must be divisible by num_heads ({num_heads}) "
                    "or head_dim must be given"
                )
            head_dim = d_model // num_heads
        if num_heads % num_kv_heads != 0:
            raise ValueError(
                f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.kdim = kdim or d_model
        self.vdim = vdim or d_model
        self.dropout = dropout
        self.backend = backend
        self.scale = scale
        self.q_proj = nn.Linear(d_model, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(self.vdim, num_kv_heads * head_dim, bias=bias)
        self.out_proj = nn.Linear(num_heads * head_dim, d_model, bias=bias)
        self.rotary = rotary
        self.score_bias = score_bias
        # Original indices of the heads left by prune_heads (None: all of them).
        self.kept_heads: Tensor | None = None

    def _split_heads(self, x: Tensor, heads: int) -> Tensor:
        """``(B, T, heads * Dh)`` -> ``(B, heads, T, Dh)``."""
        return x.unflatten(-1, (heads, self.head_dim)).transpose(1, 2)

    def _check_inputs(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        expected = (
            ("query", query, self.d_model),
            ("key", key, self.kdim),
            ("value", value, self.vdim),
        )
        for name, t, width in expected:
            if t.dim() != 3 or t.size(-1) != width:
                raise ValueError(f"{name} must have shape (B, T, {width}); got {tuple(t.shape)}")
        if key.shape[:2] != value.shape[:2]:
            raise ValueError(
                f"key and value must share (B, Tk); got key {tuple(key.shape)}, "
                f"value {tuple(value.shape)}"
            )
        if key.size(0) != query.size(0):
            raise ValueError(
                f"key batch size must equal query's {query.size(0)}; got {key.size(0)}"
            )

    def _keys_values(
        self,
        query_heads: Tensor,
        key: Tensor,
        value: Tensor,
        cache: KVCache | StaticKVCache | None,
        positions: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor, int]:
        """Project (or fetch cached) keys/values; apply rotary. Returns q, k, v, query offset."""
        if isinstance(cache, StaticKVCache):
            if self.rotary is not None:
                # Query and memory positions are unrelated in cross-attention.
                raise ValueError("rotary applies to self-attention; got a cross-attention cache")
            if cache.ready:
                return query_heads, cache.key, cache.value, 0  # type: ignore[return-value]
        k = self._split_heads(self.k_proj(key), self.num_kv_heads)
        v = self._split_heads(self.v_proj(value), self.num_kv_heads)
        offset = cache.length if isinstance(cache, KVCache) else 0
        if self.rotary is not None:
            query_heads, k = self.rotary(query_heads, k, offset=offset, positions=positions)
        if cache is not None:
            k, v = cache.update(k, v)
        return query_heads, k, v, offset

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
        """Attend from ``query`` to ``key``/``value``.

        Args:
            query: ``(B, Tq, D)``.
            key: ``(B, Tk, kdim)``; defaults to ``query`` (self-attention).
            value: ``(B, Tk, vdim)``; defaults to ``key``.
            mask: bool, broadcastable to ``(B, H, Tq, Tk_total)``, True = may attend;
                ``Tk_total`` includes cached positions.
            need_weights: also return weights ``(B, H, Tq, Tk_total)``.
            cache: a :class:`KVCache` (self-attention: new keys/values are
                appended) or a :class:`StaticKVCache` (cross-attention: filled on
                the first call, reused afterwards).
            is_causal: each query sees keys up to its own position; with a cache
                the queries are the last ``Tq`` positions (bottom-right alignment).
            attn_bias: extra additive bias broadcastable to ``(B, H, Tq, Tk_total)``.
            positions: ``(B, Tq)`` positions of the new tokens for the rotary
                component (default ``offset, offset + 1, ...``).
            head_mask: ``(H,)`` or ``(B, H)`` factors for each head's output
                (0 silences a head, 1 keeps it; Michel et al. 2019).

        Returns:
            ``(output (B, Tq, D), weights or None)``.
        """
        key = query if key is None else key
        value = key if value is None else value
        self._check_inputs(query, key, value)
        q = self._split_heads(self.q_proj(query), self.num_heads)
        q, k, v, offset = self._keys_values(q, key, value, cache, positions)
        if self.score_bias is not None:
            position_bias = self.score_bias(q.size(2), k.size(2), offset=offset)
            position_bias = self._kept_heads_of(position_bias)
            attn_bias = position_bias if attn_bias is None else attn_bias + position_bias
        out, weights = scaled_dot_product_attention(
            q,
            k,
            v,
            mask,
            attn_bias=attn_bias,
            is_causal="bottom_right" if is_causal else False,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scale,
            need_weights=need_weights,
            backend=self.backend,
        )
        return self.out_proj(self._merge_heads(out, head_mask)), weights

    def _merge_heads(self, heads: Tensor, head_mask: Tensor | None = None) -> Tensor:
        """``(B, H, T, Dh)`` -> ``(B, T, H * Dh)``, each head scaled by ``head_mask``."""
        if head_mask is not None:
            heads = heads * head_mask_factors(head_mask, heads.size(0), self.num_heads).to(heads)
        return heads.transpose(1, 2).flatten(2)

    def _kept_heads_of(self, bias: Tensor) -> Tensor:
        """A per-head score bias restricted to the heads left by :meth:`prune_heads`."""
        if self.kept_heads is None or bias.dim() < 3 or bias.size(-3) == 1:
            return bias
        return bias.index_select(-3, self.kept_heads.to(bias.device))

    @torch.no_grad()
    def prune_heads(self, heads: Iterable[int]) -> None:
        """Remove query heads (and their parameters); outputs equal masking them to 0.

        With grouped-query attention a key/value head goes when its whole group
        does, and every group must keep the same number of query heads.
        """
        keep, keep_kv = self._heads_to_keep(sorted(set(heads)))
        dh = self.head_dim
        rows = (keep[:, None] * dh + torch.arange(dh)).flatten()
        kv_rows = (keep_kv[:, None] * dh + torch.arange(dh)).flatten()
        self.q_proj = _select_linear(self.q_proj, rows, dim=0)
        if isinstance(self.k_proj, nn.Linear):
            self.k_proj = _select_linear(self.k_proj, kv_rows, dim=0)
        self.v_proj = _select_linear(self.v_proj, kv_rows, dim=0)
        self.out_proj = _select_linear(self.out_proj, rows, dim=1)
        previous = self.kept_heads if self.kept_heads is not None else torch.arange(self.num_heads)
        self.kept_heads = previous[keep]
        self.num_heads, self.num_kv_heads = len(keep), len(keep_kv)

    def _heads_to_keep(self, pruned: list[int]) -> tuple[Tensor, Tensor]:
        """Indices of the query heads and key/value heads that stay."""
        bad = [h for h in pruned if not 0 <= h < self.num_heads]
        if bad:
            raise ValueError(f"heads to prune must be in [0, {self.num_heads}); got {bad}")
        if len(pruned) == self.num_heads:
            raise ValueError(f"at least one of the {self.num_heads} heads must remain")
        group = self.num_heads // self.num_kv_heads
        left = [[h for h in range(g * group, (g + 1) * group) if h not in pruned]
                for g in range(self.num_kv_heads)]  # fmt: skip
        sizes = {len(heads) for heads in left if heads}
        if len(sizes) > 1:
            raise ValueError(
                f"grouped-query attention ({self.num_kv_heads} key/value heads for "
                f"{self.num_heads} query heads): every group must keep the same number of "
                f"query heads; pruning {pruned} leaves {[len(h) for h in left]}"
            )
        keep = torch.tensor([h for heads in left for h in heads])
        keep_kv = torch.tensor([g for g, heads in enumerate(left) if heads])
        return keep, keep_kv

    def new_cache(self, batch_size: int, max_len: int, *, like: Tensor) -> KVCache:
        """A self-attention cache sized for this module, on ``like``'s device.

        The buffers start in ``like``'s dtype and follow the dtype of the keys
        written (e.g. bf16 under ``torch.autocast``; see :class:`KVCache`).
        """
        return KVCache(
            batch_size,
            self.num_kv_heads,
            max_len,
            self.head_dim,
            dtype=like.dtype,
            device=like.device,
        )

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, num_heads={self.num_heads}, "
            f"num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, backend={self.backend!r}"
        )
