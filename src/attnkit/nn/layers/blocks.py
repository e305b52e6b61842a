"""Encoder and decoder blocks of the Transformer and their stacks.

Each block is composed from an attention module, a feed-forward module and
norms, all of which can be injected; by default they are built from the
classic arguments (``d_model, num_heads, d_ff, dropout, activation``).
``norm_first=False`` is the paper's post-LN (``x = norm(x + sublayer(x))``),
``norm_first=True`` pre-LN (``x = x + sublayer(norm(x))``).

Blocks return a tensor, or ``(tensor, weights)`` when ``need_weights=True``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import Tensor, nn

from attnkit.nn.attention import MultiHeadAttention
from attnkit.nn.kv_cache import KVCache, StaticKVCache
from attnkit.nn.layers.dropout import Dropout
from attnkit.nn.layers.feedforward import FeedForward
from attnkit.nn.layers.norm import make_norm

__all__ = [
    "DecoderCache",
    "DecoderLayerCache",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
]


class _Residual(nn.Module):
    """One sublayer's residual connection with dropout and a pre- or post-norm."""

    def __init__(self, norm: nn.Module, dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.norm = norm
        self.dropout = Dropout(dropout)
        self.norm_first = norm_first

    def pre(self, x: Tensor) -> Tensor:
        """Input to the sublayer."""
        return self.norm(x) if self.norm_first else x

    def post(self, x: Tensor, sublayer_out: Tensor) -> Tensor:
        """Combine the residual stream with the sublayer output."""
        out = x + self.dropout(sublayer_out)
        return out if self.norm_first else self.norm(out)


def _residual(
    norm: str, d_model: int, eps: float, bias: bool, dropout: float, norm_first: bool
) -> _Residual:
    return _Residual(make_norm(norm, d_model, eps, bias=bias), dropout, norm_first)


class TransformerEncoderLayer(nn.Module):
    """Self-attention then feed-forward, each in a residual block. ``(B, S, D) -> (B, S, D)``.

    Args:
        d_model, num_heads, d_ff, dropout, activation: as in the paper and
            ``torch.nn.TransformerEncoderLayer``.
        norm_first: pre-LN when True, post-LN (the paper) when False.
        norm: ``"layernorm"`` or ``"rmsnorm"``; ``layer_norm_eps`` its epsilon.
        attention_dropout: dropout on attention weights (default ``dropout``).
        bias: biases in projections and norms.
        self_attention, feed_forward: injected modules replacing the defaults.

    Example:
        >>> import torch
        >>> from attnkit.nn import TransformerEncoderLayer
        >>> layer = TransformerEncoderLayer(d_model=32, num_heads=4, d_ff=64, norm_first=True)
        >>> x = torch.randn(2, 6, 32)
        >>> mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])[:, None, None, :]
        >>> out, weights = layer(x, mask, need_weights=True)
        >>> tuple(out.shape), tuple(weights.shape)
        ((2, 6, 32), (2, 4, 6, 6))
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int = 2048,
        dropout: float = 0.1,
        activation: str | Callable[[Tensor], Tensor] = "relu",
        norm_first: bool = False,
        *,
        norm: str = "layernorm",
        layer_norm_eps: float = 1e-5,
        attention_dropout: float | None = None,
        bias: bool = True,
        self_attention: nn.Module | None = None,
        feed_forward: nn.Module | None = None,
    ) -> None:
        super().__init__()
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.self_attn = self_attention or MultiHeadAttention(
            d_model, num_heads, attention_dropout, bias=bias
        )
        self.feed_forward = feed_forward or FeedForward(
            d_model, d_ff, dropout, activation, bias=bias
        )
        residual_args = (norm, d_model, layer_norm_eps, bias, dropout, norm_first)
        self.attn_block = _residual(*residual_args)
        self.ff_block = _residual(*residual_args)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        *,
        is_causal: bool = False,
        need_weights: bool = False,
        cache: KVCache | None = None,
        positions: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor | None]:
        """``x (B, S, D)``; ``mask`` bool broadcastable to ``(B, H, S, S_total)``.

        With ``is_causal=True`` and a ``cache`` this is a decoder-only (GPT)
        block: ``x`` holds the new tokens, the cache the earlier ones, and
        ``S_total`` counts both. ``positions (B, S)`` go to a rotary component.
        """
        h = self.attn_block.pre(x)
        attn_out, weights = self.self_attn(
            h,
            h,
            h,
            mask,
            is_causal=is_causal,
            need_weights=need_weights,
            cache=cache,
            positions=positions,
        )
        x = self.attn_block.post(x, attn_out)
        x = self.ff_block.post(x, self.feed_forward(self.ff_block.pre(x)))
        return (x, weights) if need_weights else x


@dataclass
class DecoderLayerCache:
    """Caches of one decoder layer: growing self-attention, static cross-attention.

    Example:
        >>> import torch
        >>> from attnkit.nn import TransformerDecoder, TransformerDecoderLayer
        >>> decoder = TransformerDecoder(TransformerDecoderLayer(16, 2, 32), num_layers=1)
        >>> layer_cache = decoder.new_cache(2, max_len=5, like=torch.zeros(1)).layers[0]
        >>> type(layer_cache.self_attn).__name__, type(layer_cache.cross_attn).__name__
        ('KVCache', 'StaticKVCache')
    """

    self_attn: KVCache
    cross_attn: StaticKVCache


class DecoderCache:
    """Per-layer caches of a decoder stack; ``length`` = positions decoded so far.

    Example:
        >>> import torch
        >>> from attnkit.nn import TransformerDecoder, TransformerDecoderLayer
        >>> decoder = TransformerDecoder(TransformerDecoderLayer(16, 2, 32), num_layers=2)
        >>> cache = decoder.new_cache(2, max_len=5, like=torch.zeros(1))  # a DecoderCache
        >>> _ = decoder(torch.randn(2, 1, 16), torch.randn(2, 3, 16), cache=cache, is_causal=True)
        >>> len(cache.layers), cache.length
        (2, 1)
    """

    def __init__(self, layers: list[DecoderLayerCache]) -> None:
        self.layers = layers

    @property
    def length(self) -> int:
        return self.layers[0].self_attn.length if self.layers else 0

    def reorder(self, indices: Tensor) -> None:
        """Keep batch rows ``indices`` (beam search)."""
        for layer in self.layers:
            layer.self_attn.reorder(indices)
            layer.cross_attn.reorder(indices)


class TransformerDecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the memory, feed-forward.

    ``(B, T, D)`` with memory ``(B, S, D)`` -> ``(B, T, D)``. Arguments as for
    :class:`TransformerEncoderLayer`, plus an injectable ``cross_attention``.

    Example:
        >>> import torch
        >>> from attnkit.nn import TransformerDecoderLayer
        >>> layer = TransformerDecoderLayer(d_model=32, num_heads=4, d_ff=64)
        >>> target, memory = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
        >>> out, (self_w, cross_w) = layer(target, memory, is_causal=True, need_weights=True)
        >>> tuple(out.shape), tuple(self_w.shape), tuple(cross_w.shape)
        ((2, 5, 32), (2, 4, 5, 5), (2, 4, 5, 7))
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int = 2048,
        dropout: float = 0.1,
        activation: str | Callable[[Tensor], Tensor] = "relu",
        norm_first: bool = False,
        *,
        norm: str = "layernorm",
        layer_norm_eps: float = 1e-5,
        attention_dropout: float | None = None,
        bias: bool = True,
        self_attention: nn.Module | None = None,
        cross_attention: nn.Module | None = None,
        feed_forward: nn.Module | None = None,
    ) -> None:
        super().__init__()
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.self_attn = self_attention or MultiHeadAttention(
            d_model, num_heads, attention_dropout, bias=bias
        )
        self.cross_attn = cross_attention or MultiHeadAttention(
            d_model, num_heads, attention_dropout, bias=bias
        )
        self.feed_forward = feed_forward or FeedForward(
            d_model, d_ff, dropout, activation, bias=bias
        )
        residual_args = (norm, d_model, layer_norm_eps, bias, dropout, norm_first)
        self.self_attn_block = _residual(*residual_args)
        self.cross_attn_block = _residual(*residual_args)
        self.ff_block = _residual(*residual_args)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        *,
        is_causal: bool = False,
        need_weights: bool = False,
        cache: DecoderLayerCache | None = None,
    ) -> Tensor | tuple[Tensor, tuple[Tensor | None, Tensor | None]]:
        """Decode ``x (B, T, D)`` against ``memory (B, S, D)``.

        ``tgt_mask`` broadcasts to ``(B, H, T, T_total)``, ``memory_mask`` to
        ``(B, H, T, S)``. Returns ``x`` or ``(x, (self_weights, cross_weights))``.
        """
        h = self.self_attn_block.pre(x)
        attn_out, self_weights = self.self_attn(
            h,
            h,
            h,
            tgt_mask,
            is_causal=is_causal,
            need_weights=need_weights,
            cache=None if cache is None else cache.self_attn,
        )
        x = self.self_attn_block.post(x, attn_out)
        h = self.cross_attn_block.pre(x)
        attn_out, cross_weights = self.cross_attn(
            h,
            memory,
            memory,
            memory_mask,
            need_weights=need_weights,
            cache=None if cache is None else cache.cross_attn,
        )
        x = self.cross_attn_block.post(x, attn_out)
        x = self.ff_block.post(x, self.feed_forward(self.ff_block.pre(x)))
        return (x, (self_weights, cross_weights)) if need_weights else x


def _as_layers(layers: nn.Module | Iterable[nn.Module], num_layers: int | None) -> nn.ModuleList:
    """A list of layers, or ``num_layers`` independent copies of one layer (torch style)."""
    if isinstance(layers, nn.Module) and not isinstance(layers, nn.ModuleList):
        if num_layers is None:
            raise ValueError("num_layers is required when a single layer is given to clone")
        return nn.ModuleList(copy.deepcopy(layers) for _ in range(num_layers))
    if num_layers is not None:
        raise ValueError("num_layers must be None when a list of layers is given")
    return nn.ModuleList(layers)


class TransformerEncoder(nn.Module):
    """A stack of encoder layers with an optional final norm (needed for pre-LN).

    ``TransformerEncoder([layer, ...], norm=None)`` or, as in torch,
    ``TransformerEncoder(layer, num_layers, norm=None)`` (deep copies).

    Example:
        >>> import torch
        >>> from attnkit.nn import TransformerEncoder, TransformerEncoderLayer
        >>> encoder = TransformerEncoder(TransformerEncoderLayer(16, 2, 32), num_layers=2)
        >>> tuple(encoder(torch.randn(2, 5, 16)).shape)
        (2, 5, 16)
    """

    def __init__(
        self,
        layers: nn.Module | Iterable[nn.Module],
        num_layers: int | None = None,
        norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.layers = _as_layers(layers, num_layers)
        self.norm = norm

    def forward(
        self, x: Tensor, mask: Tensor | None = None, *, need_weights: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor | None]]:
        """``x (B, S, D)`` -> ``(B, S, D)``, or with each layer's ``(B, H, S, S)`` weights."""
        all_weights = []
        for layer in self.layers:
            if need_weights:
                x, weights = layer(x, mask, need_weights=True)
                all_weights.append(weights)
            else:
                x = layer(x, mask)
        if self.norm is not None:
            x = self.norm(x)
        return (x, all_weights) if need_weights else x


class TransformerDecoder(nn.Module):
    """A stack of decoder layers with an optional final norm, and its cache factory.

    Example:
        >>> import torch
        >>> from attnkit.nn import TransformerDecoder, TransformerDecoderLayer
        >>> decoder = TransformerDecoder(TransformerDecoderLayer(16, 2, 32), num_layers=2)
        >>> out = decoder(torch.randn(2, 5, 16), torch.randn(2, 7, 16), is_causal=True)
        >>> tuple(out.shape)
        (2, 5, 16)
    """

    def __init__(
        self,
        layers: nn.Module | Iterable[nn.Module],
        num_layers: int | None = None,
        norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.layers = _as_layers(layers, num_layers)
        self.norm = norm

    def new_cache(self, batch_size: int, max_len: int, *, like: Tensor) -> DecoderCache:
        """Empty caches for decoding up to ``max_len`` target positions."""
        return DecoderCache(
            [
                DecoderLayerCache(
                    layer.self_attn.new_cache(batch_size, max_len, like=like), StaticKVCache()
                )
                for layer in self.layers
            ]
        )

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        *,
        is_causal: bool = False,
        need_weights: bool = False,
        cache: DecoderCache | None = None,
    ) -> Tensor | tuple[Tensor, list[Tensor | None], list[Tensor | None]]:
        """``x (B, T, D)``, ``memory (B, S, D)`` -> ``(B, T, D)``.

        With ``need_weights`` also returns per-layer self- and cross-attention
        weights ``(B, H, T, T_total)`` and ``(B, H, T, S)``.
        """
        self_weights, cross_weights = [], []
        for i, layer in enumerate(self.layers):
            out = layer(
                x,
                memory,
                tgt_mask,
                memory_mask,
                is_causal=is_causal,
                need_weights=need_weights,
                cache=None if cache is None else cache.layers[i],
            )
            if need_weights:
                x, (self_w, cross_w) = out
                self_weights.append(self_w)
                cross_weights.append(cross_w)
            else:
                x = out
        if self.norm is not None:
            x = self.norm(x)
        return (x, self_weights, cross_weights) if need_weights else x
