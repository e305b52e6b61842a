"""``Dropout``: ``torch.nn.Dropout`` with :func:`attnkit.functional.dropout` (faster on CPU)."""

from __future__ import annotations

from torch import Tensor, nn

from attnkit.functional.dropout import dropout

__all__ = ["Dropout"]


class Dropout(nn.Dropout):
    """Drop-in for ``torch.nn.Dropout`` (same arguments, same distribution); any shape.

    Example:
        >>> import torch
        >>> from attnkit.nn import Dropout
        >>> _ = torch.manual_seed(0)
        >>> sorted(set(Dropout(p=0.5)(torch.ones(100)).tolist()))  # kept values scaled by 2
        [0.0, 2.0]
        >>> Dropout(p=0.5).eval()(torch.ones(3)).tolist()  # identity in eval mode
        [1.0, 1.0, 1.0]
    """

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)
