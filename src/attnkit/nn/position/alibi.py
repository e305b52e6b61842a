"""ALiBi: attention with linear biases (Press et al. 2022).

No position embeddings at all: each head ``h`` adds ``-m_h * distance`` to
its scores, with a fixed slope ``m_h`` from a geometric sequence. For ``n``
heads, a power of two, the slopes are ``2^(-8/n), 2^(-16/n), ..., 2^(-8)``;
for other head counts the paper takes the slopes of the closest smaller power
of two ``k`` and adds every other slope of ``2k`` heads until there are ``n``.

The module is a :class:`attnkit.nn.ScoreBias`: pass it to
``MultiHeadAttention(score_bias=...)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ALiBi", "alibi_slopes"]


def _power_of_two_slopes(heads: int) -> list[float]:
    start = 2.0 ** (-8.0 / heads)
    return [start ** (i + 1) for i in range(heads)]


def alibi_slopes(num_heads: int) -> Tensor:
    """The ``(num_heads,)`` float64 slopes of the paper's recipe, for any head count."""
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1; got {num_heads}")
    closest = 2 ** math.floor(math.log2(num_heads))
    slopes = _power_of_two_slopes(closest)
    if closest < num_heads:
        slopes += _power_of_two_slopes(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float64)


class ALiBi(nn.Module):
    """A ``(1, H, Tq, Tk)`` bias of ``-slope_h * distance``.

    Args:
        num_heads: heads ``H``.
        causal: ``True`` (the paper's decoder): ``distance = query - key`` for
            keys at or before the query (later keys are masked anyway);
            ``False``: ``|query - key|``, the symmetric form for encoders.

    Call: ``bias(query_len, key_len, offset=0)`` with queries at positions
    ``offset .. offset + query_len - 1`` and keys at ``0 .. key_len - 1``.

    Example:
        >>> from attnkit.nn import ALiBi
        >>> bias = ALiBi(num_heads=2)(3, 3)  # (1, H, Tq, Tk)
        >>> tuple(bias.shape), bias[0, 0, 2].tolist()  # head 0, slope 1/16: farther keys lower
        ((1, 2, 3, 3), [-0.125, -0.0625, -0.0])
    """

    def __init__(self, num_heads: int, *, causal: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.causal = causal
        self.register_buffer("slopes", alibi_slopes(num_heads).float(), persistent=False)

    def forward(self, query_len: int, key_len: int, *, offset: int = 0) -> Tensor:
        device = self.slopes.device
        queries = torch.arange(offset, offset + query_len, device=device)[:, None]
        keys = torch.arange(key_len, device=device)[None, :]
        distance = queries - keys
        distance = distance.clamp(min=0) if self.causal else distance.abs()
        return -(self.slopes[:, None, None] * distance).unsqueeze(0)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, causal={self.causal}"
