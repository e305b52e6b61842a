"""Token and sequence accuracy of predictions against padded targets."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["sequence_accuracy", "token_accuracy"]


def _as_ids(predictions: Tensor, targets: Tensor) -> tuple[Tensor, bool]:
    """Ids from ``(B, L)`` ids or ``(B, T, V)`` logits; True when they came from logits."""
    if targets.dim() != 2 or targets.dtype.is_floating_point:
        raise ValueError(f"targets must be integer ids (B, T); got {tuple(targets.shape)}")
    if predictions.dtype.is_floating_point:
        if predictions.dim() != 3 or predictions.shape[:2] != targets.shape:
            raise ValueError(
                f"logits must have shape (B, T, V) with (B, T) = {tuple(targets.shape)}; "
                f"got {tuple(predictions.shape)}"
            )
        return predictions.argmax(dim=-1), True
    if predictions.dim() != 2 or predictions.size(0) != targets.size(0):
        raise ValueError(
            f"predictions must be ids (B, L) with B = {targets.size(0)}, or logits (B, T, V); "
            f"got {tuple(predictions.shape)}"
        )
    return predictions, False


def _pad_to(x: Tensor, width: int, pad_id: int) -> Tensor:
    return F.pad(x[:, :width], (0, max(0, width - x.size(1))), value=pad_id)


def token_accuracy(predictions: Tensor, targets: Tensor, pad_id: int | None = None) -> float:
    """Share of target tokens predicted correctly, skipping ``pad_id`` targets.

    Args:
        predictions: ``(B, T, V)`` logits (teacher-forced; their argmax is compared)
            or ``(B, L)`` ids (e.g. generated), right-padded or cut to ``T``.
        targets: ``(B, T)`` ids.
        pad_id: target positions equal to it are not counted (``None``: all are).

    Example:
        >>> import torch
        >>> from attnkit.metrics import token_accuracy
        >>> targets = torch.tensor([[4, 5, 6, 0]])  # 0 is padding
        >>> token_accuracy(torch.tensor([[4, 5, 9, 9]]), targets, pad_id=0)
        0.6666666666666666
    """
    predicted, _ = _as_ids(predictions, targets)
    fill = -1 if pad_id is None else pad_id
    predicted = _pad_to(predicted, targets.size(1), fill)
    counted = torch.ones_like(targets, dtype=torch.bool) if pad_id is None else targets != pad_id
    total = int(counted.sum())
    if total == 0:
        raise ValueError("targets contain no tokens to score (all are pad_id)")
    return int(((predicted == targets) & counted).sum()) / total


def sequence_accuracy(predictions: Tensor, targets: Tensor, pad_id: int) -> float:
    """Share of rows predicted exactly.

    Args:
        predictions: ``(B, L)`` ids, e.g. from greedy decoding (``eos`` then
            ``pad_id``): both sides are right-padded with ``pad_id`` to one width and
            a row counts when they are equal everywhere, so extra generated tokens
            make it wrong. Or ``(B, T, V)`` teacher-forced logits: a row counts when
            every non-pad target token is the argmax.
        targets: ``(B, T)`` ids padded with ``pad_id``.
        pad_id: the padding id.

    Example:
        >>> import torch
        >>> from attnkit.metrics import sequence_accuracy
        >>> targets = torch.tensor([[4, 5, 0], [6, 7, 8]])  # 0 is padding
        >>> sequence_accuracy(torch.tensor([[4, 5], [6, 7]]), targets, pad_id=0)
        0.5
    """
    predicted, from_logits = _as_ids(predictions, targets)
    if targets.size(0) == 0:
        raise ValueError("targets must contain at least one row")
    if from_logits:
        correct = (predicted == targets) | (targets == pad_id)
    else:
        width = max(predicted.size(1), targets.size(1))
        correct = _pad_to(predicted, width, pad_id) == _pad_to(targets, width, pad_id)
    return correct.all(dim=1).double().mean().item()
