"""Attention before the Transformer: additive (Bahdanau) and multiplicative (Luong)
scores for RNN decoders, and a single-head attention layer for teaching.

Shapes: a decoder state ``query`` is ``(B, Dq)`` (one step) or ``(B, Tq, Dq)``
(several); ``keys (B, Tk, Dk)``; ``values (B, Tk, Dv)`` (default: the keys);
``mask`` bool ``(B, Tk)`` (True = a real source token) or broadcastable to
``(B, Tq, Tk)``. Each module returns ``(context, weights)``: ``(B, Dv)`` and
``(B, Tk)`` for a single step, ``(B, Tq, Dv)`` and ``(B, Tq, Tk)`` otherwise.
Padded keys get exactly zero weight.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from attnkit.functional import masked_softmax, scaled_dot_product_attention
from attnkit.functional._common import compute_dtype

__all__ = ["LUONG_SCORES", "AttentionLayer", "BahdanauAttention", "LuongAttention"]

LUONG_SCORES = ("dot", "general", "concat")


def _check(name: str, t: Tensor, dims: tuple[int, ...], width: int) -> None:
    if t.dim() not in dims or t.size(-1) != width:
        expected = " or ".join(f"{('(B, T, ' if d == 3 else '(B, ')}{width})" for d in dims)
        raise ValueError(f"{name} must have shape {expected}; got {tuple(t.shape)}")


def _as_steps(query: Tensor) -> tuple[Tensor, bool]:
    """``(B, Dq)`` -> ``(B, 1, Dq)`` and whether it was a single step."""
    return (query.unsqueeze(1), True) if query.dim() == 2 else (query, False)


def _check_memory(
    query: Tensor,
    keys: Tensor,
    values: Tensor | None,
    projected: Tensor | None,
    names: tuple[str, str] = ("query", "keys"),
) -> None:
    """Keys, values and projected keys must share one ``(B, Tk)``, ``B`` the query's.

    Without this a query of batch 1 would silently broadcast over every source.
    """
    if keys.dim() != 3 or keys.size(0) != query.size(0):
        raise ValueError(
            f"{names[1]} must have shape (B, Tk, D) with B = {query.size(0)} (the batch size "
            f"of {names[0]}); got {tuple(keys.shape)}"
        )
    for name, other in (("values", values), ("projected_keys", projected)):
        if other is not None and (other.dim() != 3 or other.shape[:2] != keys.shape[:2]):
            raise ValueError(
                f"{name} must have shape (B, Tk, D) with (B, Tk) = {tuple(keys.shape[:2])} "
                f"(the keys'); got {tuple(other.shape)}"
            )


def _mask_3d(mask: Tensor | None, keys: Tensor, num_queries: int = 1) -> Tensor | None:
    """A ``(B, Tk)`` source mask as ``(B, 1, Tk)``; a 3-d mask must broadcast to
    ``(B, num_queries, Tk)``."""
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool (True = real token); got {mask.dtype}")
    if mask.dim() == 2:
        if tuple(mask.shape) != tuple(keys.shape[:2]):
            raise ValueError(
                f"mask must have shape (B, Tk) = {tuple(keys.shape[:2])}; got {tuple(mask.shape)}"
            )
        return mask[:, None, :]
    target = (keys.size(0), num_queries, keys.size(1))
    if mask.dim() != 3 or any(m not in (1, t) for m, t in zip(mask.shape, target, strict=True)):
        raise ValueError(
            f"mask must have shape (B, Tk) = {tuple(keys.shape[:2])} or broadcast to "
            f"(B, Tq, Tk) = {target}; got {tuple(mask.shape)}"
        )
    return mask


def _attend(scores: Tensor, values: Tensor, mask: Tensor | None, single: bool):
    """Masked softmax of ``(B, Tq, Tk)`` scores, weighted sum of ``values``."""
    weights = masked_softmax(scores, mask)
    context = (weights @ values.to(weights.dtype)).to(values.dtype)
    weights = weights.to(values.dtype)
    return (context.squeeze(1), weights.squeeze(1)) if single else (context, weights)


def _additive_scores(query_part: Tensor, projected: Tensor, energy: nn.Linear) -> Tensor:
    """``v^T tanh(query_part + projected)``: ``(B, Tq, H)``, ``(B, Tk, H)`` -> ``(B, Tq, Tk)``."""
    hidden = torch.tanh(query_part[:, :, None, :] + projected[:, None, :, :])
    return energy(hidden).squeeze(-1)


class _DecoderStateAttention(nn.Module, ABC):
    """What Bahdanau and Luong attention share: checks, the precomputed key part,
    one step or several, the masked softmax. Subclasses give the scores."""

    query_dim: int
    key_dim: int

    @abstractmethod
    def project_keys(self, keys: Tensor) -> Tensor:
        """The step-independent part of the scores: ``(B, Tk, Dk)`` -> ``(B, Tk, P)``."""

    @abstractmethod
    def _projected_dim(self) -> int:
        """``P``, the width of :meth:`project_keys`' output."""

    @abstractmethod
    def _scores(self, steps: Tensor, projected: Tensor) -> Tensor:
        """Scores ``(B, Tq, Tk)`` of queries ``(B, Tq, Dq)`` against projected keys."""

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor | None = None,
        mask: Tensor | None = None,
        *,
        projected_keys: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Context and weights (shapes in the module docstring)."""
        _check("query", query, (2, 3), self.query_dim)
        _check_memory(query, keys, values, projected_keys)
        if projected_keys is None:
            projected_keys = self.project_keys(keys)  # checks the keys
        else:
            _check("keys", keys, (3,), self.key_dim)
            _check("projected_keys", projected_keys, (3,), self._projected_dim())
        steps, single = _as_steps(query)
        scores = self._scores(steps, projected_keys)
        values = keys if values is None else values
        return _attend(scores, values, _mask_3d(mask, keys, steps.size(1)), single)


class BahdanauAttention(_DecoderStateAttention):
    """Additive attention (Bahdanau, Cho & Bengio 2015): ``v^T tanh(W_q q + W_k k)``.

    Args:
        query_dim: ``Dq``, the decoder state size.
        key_dim: ``Dk``, the encoder output size.
        hidden_dim: size of the tanh layer (default ``Dq``).

    The key projection does not depend on the decoder step: compute it once
    with :meth:`project_keys` and pass it as ``projected_keys`` at every step.

    Example:
        >>> import torch
        >>> from attnkit.nn import BahdanauAttention
        >>> attention = BahdanauAttention(query_dim=16, key_dim=8)
        >>> keys = torch.randn(2, 6, 8)  # encoder outputs (B, Tk, Dk)
        >>> mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
        >>> context, weights = attention(torch.randn(2, 16), keys, mask=mask)  # one decoder step
        >>> tuple(context.shape), tuple(weights.shape), weights[1, 4:].tolist()
        ((2, 8), (2, 6), [0.0, 0.0])
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = hidden_dim or query_dim
        self.query_dim, self.key_dim, self.hidden_dim = query_dim, key_dim, hidden_dim
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=False)
        self.key_proj = nn.Linear(key_dim, hidden_dim, bias=True)
        self.energy = nn.Linear(hidden_dim, 1, bias=False)

    def project_keys(self, keys: Tensor) -> Tensor:
        """``W_k k``: ``(B, Tk, Dk)`` -> ``(B, Tk, hidden_dim)``."""
        _check("keys", keys, (3,), self.key_dim)
        return self.key_proj(keys)

    def _projected_dim(self) -> int:
        return self.hidden_dim

    def _scores(self, steps: Tensor, projected: Tensor) -> Tensor:
        return _additive_scores(self.query_proj(steps), projected, self.energy)


class LuongAttention(_DecoderStateAttention):
    """Multiplicative attention (Luong, Pham & Manning 2015).

    Scores of a decoder state ``h_t`` and an encoder output ``h_s``:

    * ``"dot"``: ``h_t . h_s`` (needs ``Dq == Dk``);
    * ``"general"``: ``h_t . (W_a h_s)``;
    * ``"concat"``: ``v^T tanh(W_a [h_t; h_s])``.

    Args:
        query_dim, key_dim: ``Dq`` and ``Dk``; score: one of :data:`LUONG_SCORES`;
        hidden_dim: the concat score's tanh size (default ``Dq``).

    Example:
        >>> import torch
        >>> from attnkit.nn import LuongAttention
        >>> attention = LuongAttention(query_dim=16, key_dim=8, score="general")
        >>> context, weights = attention(torch.randn(2, 3, 16), torch.randn(2, 6, 8))  # 3 steps
        >>> tuple(context.shape), tuple(weights.shape)
        ((2, 3, 8), (2, 3, 6))
    """

    def __init__(
        self, query_dim: int, key_dim: int, score: str = "general", hidden_dim: int | None = None
    ) -> None:
        super().__init__()
        if score not in LUONG_SCORES:
            raise ValueError(f"score must be one of {LUONG_SCORES}; got {score!r}")
        if score == "dot" and query_dim != key_dim:
            raise ValueError(
                f"the dot score needs query_dim == key_dim; got {query_dim} and {key_dim}"
            )
        self.query_dim, self.key_dim, self.score = query_dim, key_dim, score
        if score == "general":
            self.weight = nn.Linear(key_dim, query_dim, bias=False)
        elif score == "concat":
            hidden_dim = hidden_dim or query_dim
            self.weight = nn.Linear(query_dim + key_dim, hidden_dim, bias=False)
            self.energy = nn.Linear(hidden_dim, 1, bias=False)

    def project_keys(self, keys: Tensor) -> Tensor:
        """The step-independent part of the score: ``W_a h_s`` (general, concat) or ``h_s``."""
        _check("keys", keys, (3,), self.key_dim)
        if self.score == "general":
            return self.weight(keys)
        if self.score == "concat":
            return keys @ self.weight.weight[:, self.query_dim :].T
        return keys

    def _scores(self, steps: Tensor, projected: Tensor) -> Tensor:
        if self.score == "concat":
            query_part = steps @ self.weight.weight[:, : self.query_dim].T
            return _additive_scores(query_part, projected, self.energy)
        # Unbounded dot products overflow fp16 (|q . k| > 65504): score in float32.
        dtype = compute_dtype(steps.dtype)
        return steps.to(dtype) @ projected.to(dtype).transpose(1, 2)

    def _projected_dim(self) -> int:
        """Width of :meth:`project_keys`' output."""
        if self.score == "general":
            return self.query_dim
        return self.weight.out_features if self.score == "concat" else self.key_dim


class AttentionLayer(nn.Module):
    """Single-head scaled dot-product attention with its own projections (for teaching).

    ``out = softmax(Q K^T / sqrt(d)) V`` with ``Q, K, V`` linear maps of the
    input (self-attention) or of ``context`` for keys and values (cross-attention).

    Args:
        input_dim: feature size of ``x`` (and of ``context``).
        output_dim: ``d``, the size of queries, keys, values and the output.

    Example:
        >>> import torch
        >>> from attnkit.nn import AttentionLayer
        >>> out, weights = AttentionLayer(input_dim=16, output_dim=8)(torch.randn(2, 5, 16))
        >>> tuple(out.shape), tuple(weights.shape)
        ((2, 5, 8), (2, 5, 5))
    """

    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.input_dim, self.output_dim = input_dim, output_dim
        self.query = nn.Linear(input_dim, output_dim)
        self.key = nn.Linear(input_dim, output_dim)
        self.value = nn.Linear(input_dim, output_dim)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, *, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``x (B, T, input_dim)``; ``mask`` bool ``(B, Tk)`` or broadcastable to
        ``(B, T, Tk)``; returns ``(out (B, T, output_dim), weights (B, T, Tk))``."""
        _check("x", x, (3,), self.input_dim)
        context = x if context is None else context
        _check("context", context, (3,), self.input_dim)
        _check_memory(x, context, None, None, ("x", "context"))
        mask = _mask_3d(mask, context, x.size(1))
        q, k, v = self.query(x), self.key(context), self.value(context)
        out, weights = scaled_dot_product_attention(
            q[:, None], k[:, None], v[:, None],
            None if mask is None else mask[:, None], need_weights=True,
        )  # fmt: skip
        return out[:, 0], weights[:, 0]
