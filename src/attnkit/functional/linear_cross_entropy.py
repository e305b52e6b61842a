"""The output projection and cross-entropy in one, a chunk of rows at a time.

A language model's last step, ``logits = hidden @ weight.T`` followed by a
(label-smoothed) cross-entropy, materialises ``(N, V)`` logits, their softmax
and their gradient: for 1,024 tokens and 8,000 classes three 31 MiB tensors,
each freshly allocated (on CPU, fresh pages cost page faults comparable to
the arithmetic) and each larger than the cache. Here the rows are taken a
chunk at a time (about 8 MiB of logits): the chunk's logits, softmax, loss and
gradient (:mod:`attnkit.functional.cross_entropy`'s formula) are computed
while they are in cache, and the gradient is pushed through the projection
at once, ``grad_hidden[chunk] = grad_logits @ weight`` and
``grad_weight += grad_logits.T @ hidden[chunk]``. The backward pass then only
scales the stored gradients by the incoming one. The matrix products are the
same as the unfused version's; the memory is ``O(chunk * V)`` instead of
``O(N * V)``. Without gradients (evaluation) only the loss is computed.
Values and gradients equal ``F.cross_entropy(F.linear(hidden, weight, bias), ...)``
to float rounding (tested, with ``gradcheck`` in float64).

Under ``torch.autocast`` the products run in the autocast dtype, as
``F.linear`` would, and the softmax and loss in float32.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.functional._common import compute_dtype
from attnkit.functional.cross_entropy import (
    check_cross_entropy_arguments,
    check_target_range,
    gradient_in_place,
    row_weights,
    score_in_place,
)

__all__ = ["LinearCrossEntropy", "linear_cross_entropy"]

CHUNK_ELEMENTS = 2**21  # logits per chunk: 8 MiB in float32


class LinearCrossEntropy(NamedTuple):
    """``loss``: scalar (float32; float64 for float64 inputs); ``correct``: int64
    count of the counted rows whose target has the highest logit (ties count).

    Example:
        >>> import torch
        >>> from attnkit.functional import linear_cross_entropy
        >>> weight = torch.eye(3)  # (V, D): logits equal the hidden states
        >>> result = linear_cross_entropy(torch.eye(3) * 5, weight, torch.tensor([0, 1, 0]))
        >>> result.correct.item(), round(result.loss.item(), 3)  # the third row is wrong
        (2, 1.68)
    """

    loss: Tensor
    correct: Tensor


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    chunk_rows: int | None = None,
) -> LinearCrossEntropy:
    """Cross-entropy of ``F.linear(hidden, weight, bias)`` without holding the logits.

    Args:
        hidden: ``(N, D)`` inputs of the projection.
        weight: ``(V, D)`` projection (e.g. a tied embedding matrix).
        targets: ``(N,)`` class ids in ``[0, V)`` or ``ignore_index``.
        bias: optional ``(V,)``.
        ignore_index: target value that is left out.
        label_smoothing: ``eps`` in ``[0, 1)``, as ``F.cross_entropy``'s.
        reduction: ``"mean"`` (over counted targets; NaN when none) or ``"sum"``.
        chunk_rows: rows per chunk; default ``2**21 // V`` (at least 1).

    Returns:
        ``LinearCrossEntropy(loss, correct)``.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from attnkit.functional import linear_cross_entropy
        >>> hidden, weight = torch.randn(6, 4), torch.randn(10, 4)  # (N, D), (V, D)
        >>> targets = torch.tensor([1, 2, 3, -100, 5, 9])
        >>> loss, correct = linear_cross_entropy(hidden, weight, targets, label_smoothing=0.1)
        >>> expected = F.cross_entropy(hidden @ weight.T, targets, label_smoothing=0.1)
        >>> torch.allclose(loss, expected), 0 <= correct.item() <= 5
        (True, True)
    """
    _check_shapes(hidden, weight, targets, bias)
    check_cross_entropy_arguments(targets, label_smoothing, reduction, allowed=("mean", "sum"))
    if targets.device.type == "cpu":  # elsewhere the check would wait for the device
        check_target_range(targets, weight.size(0), ignore_index)
    rows = max(1, CHUNK_ELEMENTS // weight.size(0)) if chunk_rows is None else chunk_rows
    if rows < 1:
        raise ValueError(f"chunk_rows must be positive; got {chunk_rows}")
    inputs = (hidden, weight, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        loss, correct = _LinearCrossEntropy.apply(
            hidden, weight, bias, targets, ignore_index, label_smoothing, reduction, rows
        )
    else:  # evaluation: the loss alone (a Function would be told its inputs need gradients)
        loss, correct, _ = _run_chunks(
            inputs, targets, ignore_index, label_smoothing, reduction, rows, (False,) * 3
        )
    return LinearCrossEntropy(loss, correct)


def _check_shapes(hidden: Tensor, weight: Tensor, targets: Tensor, bias: Tensor | None) -> None:
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.size(1) != weight.size(1):
        raise ValueError(
            "linear_cross_entropy expects hidden (N, D) and weight (V, D); got hidden "
            f"{tuple(hidden.shape)} and weight {tuple(weight.shape)}"
        )
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets must be (N,) = ({hidden.size(0)},); got {tuple(targets.shape)}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be (V,) = ({weight.size(0)},); got {tuple(bias.shape)}")


def _product_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    """The products' dtype: autocast's if it is on, else the inputs' (which must agree)."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    if hidden.dtype != weight.dtype:
        raise ValueError(
            f"hidden and weight must share a dtype outside autocast; got {hidden.dtype} "
            f"and {weight.dtype}"
        )
    return hidden.dtype


def _run_chunks(
    inputs: tuple[Tensor, Tensor, Tensor | None],
    targets: Tensor,
    ignore_index: int,
    smoothing: float,
    reduction: str,
    chunk_rows: int,
    needs: tuple[bool, ...],
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Loss, correct count and the gradients ``needs`` asks for, products in their dtype."""
    hidden, weight, bias = inputs
    dtype = _product_dtype(hidden, weight)
    with torch.autocast(hidden.device.type, enabled=False):
        chunks = _Chunks(hidden.to(dtype), weight.to(dtype), bias, targets, ignore_index)
        return chunks.run(smoothing, reduction, chunk_rows, needs)


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and, if needed, every gradient; backward scales them."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        ignore_index: int,
        smoothing: float,
        reduction: str,
        chunk_rows: int,
    ) -> tuple[Tensor, Tensor]:
        loss, correct, grads = _run_chunks(
            (hidden, weight, bias),
            targets,
            ignore_index,
            smoothing,
            reduction,
            chunk_rows,
            ctx.needs_input_grad[:3],
        )
        ctx.save_for_backward(*grads)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, grad_correct: Tensor) -> tuple[Tensor | None, ...]:
        del grad_correct  # a count has no gradient
        grads = iter(ctx.saved_tensors)
        scaled = []
        for need, dtype in zip(ctx.needs_input_grad[:3], ctx.dtypes, strict=True):
            scaled.append((next(grads) * grad_loss).to(dtype) if need else None)
        return (*scaled, None, None, None, None, None)


class _Chunks:
    """The row loop: the forward of :class:`_LinearCrossEntropy` (inputs in one dtype)."""

    def __init__(
        self,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        ignore_index: int,
    ) -> None:
        self.hidden, self.weight = hidden, weight
        self.bias = None if bias is None else bias.to(hidden.dtype)
        self.counted = targets != ignore_index
        self.targets = targets.masked_fill(~self.counted, 0).unsqueeze(1)  # (N, 1)
        self.score_dtype = compute_dtype(hidden.dtype)  # softmax and loss: float32 for halves

    def run(
        self, smoothing: float, reduction: str, chunk_rows: int, needs: tuple[bool, ...]
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Loss, correct count and the gradients asked for (hidden, weight, bias order)."""
        weights = row_weights(self.counted, self.score_dtype, reduction)
        need_hidden, need_weight, need_bias = needs
        grad_hidden = torch.empty_like(self.hidden) if need_hidden else None
        # accumulated over the chunks in the scores' dtype, whatever the products' dtype
        grad_weight = torch.zeros_like(self.weight, dtype=self.score_dtype) if need_weight else None
        need_bias = need_bias and self.bias is not None
        grad_bias = (
            self.weight.new_zeros(self.weight.size(0), dtype=self.score_dtype)
            if need_bias
            else None
        )
        loss = self.hidden.new_zeros((), dtype=self.score_dtype)
        correct = torch.zeros((), dtype=torch.long, device=self.hidden.device)
        # One buffer for every chunk's logits, probabilities and gradient, in place:
        # fresh (rows, V) tensors per chunk cost more in page faults than the arithmetic.
        buffer = self.hidden.new_empty(
            (min(chunk_rows, self.hidden.size(0)), self.weight.size(0)), dtype=self.score_dtype
        )
        for start in range(0, self.hidden.size(0), chunk_rows):
            rows = slice(start, start + chunk_rows)
            logits = self._logits_into(buffer, rows)
            chunk_loss, chunk_correct, grad_logits = self._score(
                logits, rows, weights[rows], smoothing, any(needs)
            )
            loss += chunk_loss
            correct += chunk_correct
            if grad_logits is None:
                continue
            if grad_hidden is not None:
                torch.mm(grad_logits.to(self.weight.dtype), self.weight, out=grad_hidden[rows])
            if grad_weight is not None:
                _accumulate_product(grad_weight, grad_logits, self.hidden[rows])
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0)
        grads = (grad_hidden, grad_weight, grad_bias)
        return loss, correct, [g for g in grads if g is not None]

    def _logits_into(self, buffer: Tensor, rows: slice) -> Tensor:
        """The chunk's logits ``(n, V)`` written into the first ``n`` rows of ``buffer``."""
        hidden = self.hidden[rows]
        out = buffer[: hidden.size(0)]
        if self.weight.dtype != out.dtype:  # half products, float32 scores
            return out.copy_(F.linear(hidden, self.weight, self.bias))
        if self.bias is None:
            return torch.mm(hidden, self.weight.t(), out=out)
        return torch.addmm(self.bias, hidden, self.weight.t(), out=out)

    def _score(
        self, logits: Tensor, rows: slice, weights: Tensor, smoothing: float, need_grad: bool
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """One chunk's weighted loss, correct count and, in ``logits``' memory, its gradient."""
        targets = self.targets[rows]
        per_row, top_is_target, exp, partition = score_in_place(logits, targets, smoothing)
        loss = (per_row * weights).sum()
        correct = (top_is_target & self.counted[rows]).sum()
        if not need_grad:
            return loss, correct, None
        grad = gradient_in_place(exp, partition, targets, weights.unsqueeze(1), smoothing)
        return loss, correct, grad


def _accumulate_product(total: Tensor, grad_logits: Tensor, hidden: Tensor) -> None:
    """``total += grad_logits.T @ hidden`` (products in hidden's dtype, summed in total's)."""
    if hidden.dtype == total.dtype:
        total.addmm_(grad_logits.t(), hidden)
    else:
        total += grad_logits.to(hidden.dtype).t() @ hidden
