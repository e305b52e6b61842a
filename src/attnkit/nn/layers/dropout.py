"""``Dropout``: ``torch.nn.Dropout`` with :func:`attnkit.functional.dropout` (faster on CPU)."""

from __future__ import annotations

from torch import Tensor, nn

from attnkit.functional.dropout import dropout

__all__ = ["Dropout"]


class Dropout(nn.Dropout):
    """Drop-in for ``torch.nn.Dropout`` (same arguments, same distribution); any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)
