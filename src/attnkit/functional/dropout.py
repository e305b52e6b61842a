"""Inverted dropout that is faster on CPU than torch's kernel.

``torch.nn.functional.dropout`` on CPU draws one Mersenne-twister number per
element (``bernoulli_``), single-threaded: for a ``(32, 32, 1024)``
activation that costs about as much as a 1024 x 256 x 1024 matrix product.
Here each element gets 16 random bits instead of 32: ``random_()`` on int64
words gives 63 uniform bits per draw of two 32-bit numbers, read as four
16-bit lanes (the top lane has 15). An element is kept when its lane is at or
above a threshold, which keeps it with probability ``1 - p`` rounded to a
multiple of ``2**-15`` (``p = 0.1`` becomes 0.1000061); the kept elements are
scaled by the inverse of that probability, so the expectation is exact. A
``p`` that this rounding would move by more than 0.1% of itself (below about
0.01 or above 0.99) draws one float32 uniform per element instead. About half
the time of torch's kernel, forward and backward. Other devices use torch's
fused kernel.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["dropout"]

LANE_BITS = 15  # uniform bits used per element: p's resolution is 2**-15
_LANES = 2**LANE_BITS
# int16 lanes of a little-endian int64; the last holds the word's top bits,
# whose highest bit random_() leaves zero (values in [0, 2**63)).
_TOP_LANE = 3 if sys.byteorder == "little" else 0
_FULL_LANES = slice(0, 3) if sys.byteorder == "little" else slice(1, 4)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    Any shape; identity when ``training`` is false or ``p == 0``. On CPU,
    ``p`` is rounded to a multiple of ``2**-15`` when that moves it by at
    most 0.1% (see the module docstring).

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
    dropped = round(p * _LANES)
    if 0 < dropped < _LANES and abs(dropped / _LANES - p) <= 1e-3 * p:
        keep = _keep_mask_from_bits(x.shape, dropped)
        keep_probability = 1.0 - dropped / _LANES
    else:
        # float32 uniforms even for half inputs: bf16 has too few bits to hit p exactly.
        keep = torch.rand(x.shape, dtype=torch.float32) >= p
        keep_probability = 1.0 - p
    return x * keep.to(x.dtype).mul_(1.0 / keep_probability)


def _keep_mask_from_bits(shape: torch.Size, dropped: int) -> Tensor:
    """Boolean ``shape`` mask, each element False with probability ``dropped / 2**15``.

    Full 16-bit lanes, read as int16, are uniform on ``[-2**15, 2**15)`` and
    dropped below ``-2**15 + 2 * dropped``; the top lane is uniform on
    ``[0, 2**15)`` and dropped below ``dropped``: the same probability.
    """
    count = shape.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_()
    lanes = words.view(torch.int16).view(-1, 4)
    keep = torch.empty(lanes.shape, dtype=torch.bool)
    torch.ge(lanes[:, _FULL_LANES], 2 * dropped - _LANES, out=keep[:, _FULL_LANES])
    torch.ge(lanes[:, _TOP_LANE], dropped, out=keep[:, _TOP_LANE])
    return keep.view(-1)[:count].view(shape)
