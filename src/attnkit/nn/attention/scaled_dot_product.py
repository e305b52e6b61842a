"""Scaled dot-product attention as a module, for teaching and composition."""

from __future__ import annotations

from torch import Tensor, nn

from attnkit.functional import scaled_dot_product_attention

__all__ = ["ScaledDotProductAttention"]


class ScaledDotProductAttention(nn.Module):
    """softmax(Q K^T / sqrt(d_k)) V with its weights, the textbook building block.

    Accepts single-head ``(B, T, D)`` or multi-head ``(B, H, T, D)`` inputs and
    returns ``(output, attention_weights)`` of the matching rank; weights are
    ``(B, Tq, Tk)`` or ``(B, H, Tq, Tk)``.

    Args:
        dropout: dropout on the weights in training mode.
        backend: defaults to ``"math"``, which can return weights; with
            ``need_weights=False`` any backend (e.g. ``"fused"``) may be used.
        need_weights: return the weights (else ``None`` in their place).

    Example:
        >>> import torch
        >>> from attnkit.nn import ScaledDotProductAttention
        >>> q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 6)
        >>> out, weights = ScaledDotProductAttention()(q, k, v)  # single head
        >>> tuple(out.shape), tuple(weights.shape), torch.allclose(weights.sum(-1), torch.ones(1))
        ((2, 3, 6), (2, 3, 5), True)
    """

    def __init__(
        self, dropout: float = 0.0, *, backend: str = "math", need_weights: bool = True
    ) -> None:
        super().__init__()
        self.dropout = dropout
        self.backend = backend
        self.need_weights = need_weights

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None = None,
        *,
        is_causal: bool = False,
        attn_bias: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend; ``mask`` is bool (True = may attend), broadcastable to the scores."""
        if query.dim() not in (3, 4):
            raise ValueError(
                f"query must have shape (B, T, D) or (B, H, T, D); got {tuple(query.shape)}"
            )
        single_head = query.dim() == 3
        layout = "(B, T, D)" if single_head else "(B, H, T, D)"
        for name, t in (("key", key), ("value", value)):
            if t.dim() != query.dim():
                raise ValueError(
                    f"{name} must have query's rank {query.dim()} {layout}; got {tuple(t.shape)}"
                )
        if single_head:
            query, key, value = query[:, None], key[:, None], value[:, None]
            if mask is not None and mask.dim() == 3:
                mask = mask[:, None]
            if attn_bias is not None and attn_bias.dim() == 3:
                attn_bias = attn_bias[:, None]
        out, weights = scaled_dot_product_attention(
            query,
            key,
            value,
            mask,
            attn_bias=attn_bias,
            is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
            need_weights=self.need_weights,
            backend=self.backend,
        )
        if single_head:
            out = out[:, 0]
            weights = None if weights is None else weights[:, 0]
        return out, weights
