"""Inverted dropout that is faster on CPU than torch's kernel.

``torch.nn.functional.dropout`` on CPU draws its mask with ``bernoulli_``,
which costs about as much as a 1024 x 256 x 1024 matrix product per
``(32, 32, 1024)`` activation; drawing uniform numbers with ``rand`` and
comparing them with ``p`` gives the same distribution (each element kept with
probability ``1 - p`` and scaled by ``1 / (1 - p)``) in about 60% of the time,
forward and backward. Other devices use torch's fused kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["dropout"]


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    Any shape; identity when ``training`` is false or ``p == 0``.

    Example:
        >>> import torch
        >>> from attnkit.functional import dropout
        >>> dropout(torch.ones(2, 3), p=0.5, training=False).tolist()  # identity at eval
        [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
        >>> _ = torch.manual_seed(0)
        >>> sorted(set(dropout(torch.ones(100), p=0.5).tolist()))  # kept ones scaled by 2
        [0.0, 2.0]
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1]; got {p}")
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p == 1.0:
        return F.dropout(x, p, training=True)
    # float32 uniforms even for half inputs: bf16 has too few bits to hit p exactly.
    keep = torch.rand(x.shape, dtype=torch.float32, device=x.device) >= p
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))
