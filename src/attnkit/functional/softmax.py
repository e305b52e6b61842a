"""Softmax over the visible keys: exact zeros where masked, never NaN."""

from __future__ import annotations

import torch
from torch import Tensor

from attnkit.functional._common import compute_dtype

__all__ = ["masked_softmax"]


def masked_softmax(scores: Tensor, mask: Tensor | None = None, dim: int = -1) -> Tensor:
    """``softmax(scores)`` over the entries where ``mask`` is True.

    Args:
        scores: any shape, e.g. ``(B, Tq, Tk)``; float16/bfloat16 are computed in float32.
        mask: bool, broadcastable to ``scores``, True = may attend.

    Returns:
        Weights in the compute dtype: masked entries exactly 0, and a row with
        no visible entry all zeros (no NaN).

    Example:
        >>> import torch
        >>> from attnkit.functional import masked_softmax
        >>> masked_softmax(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([True, True, False]))
        tensor([0.2689, 0.7311, 0.0000])
    """
    scores = scores.to(compute_dtype(scores.dtype))
    if mask is None:
        return torch.softmax(scores, dim=dim)
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool (True = may attend); got {mask.dtype}")
    # -inf, not the dtype's minimum: a score clamped to the minimum must never tie
    # with a masked one. Rows with no visible entry stay unmasked (no NaN), zeroed below.
    row_has_keys = mask.any(dim=dim, keepdim=True)
    weights = torch.softmax(scores.masked_fill(~(mask | ~row_has_keys), float("-inf")), dim=dim)
    return weights.masked_fill(~mask, 0.0)
