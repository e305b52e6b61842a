"""T5's bucketed relative position bias (Raffel et al. 2020, section 2.1).

Each head learns one scalar per *bucket* of relative distance ``key - query``.
Small distances get a bucket each; larger ones share logarithmically wider
buckets up to ``max_distance``, beyond which all fall in the last bucket.
Bidirectional (encoder) biases split the buckets between keys before and
after the query; causal (decoder) biases use them all for keys before it.

The module is a :class:`attnkit.nn.ScoreBias`: T5 shares one per stack, so
pass the same instance to every self-attention layer's ``score_bias``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["T5RelativePositionBias", "relative_position_bucket"]


def relative_position_bucket(
    relative_position: Tensor, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> Tensor:
    """Bucket ids (same shape, long) of ``relative_position = key - query``."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        # Keys after the query use the upper half of the buckets.
        buckets = buckets + (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)  # keys after the query: distance 0
    exact = num_buckets // 2
    # Logarithmic buckets from ``exact`` up to ``max_distance``.
    log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = exact + (log_ratio * (num_buckets - exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < exact, distance, large)


class T5RelativePositionBias(nn.Module):
    """A learned ``(num_buckets, H)`` table turned into a ``(1, H, Tq, Tk)`` score bias.

    Args:
        num_heads: heads ``H``.
        num_buckets: buckets of relative distance (32 in T5).
        max_distance: distances from here on share the last bucket (128 in T5).
        bidirectional: ``True`` for encoders, ``False`` for causal decoders.

    Call: ``bias(query_len, key_len, offset=0)`` with queries at positions
    ``offset .. offset + query_len - 1`` and keys at ``0 .. key_len - 1``.

    Example:
        >>> from attnkit.nn import T5RelativePositionBias
        >>> bias = T5RelativePositionBias(num_heads=2, num_buckets=8, max_distance=16)
        >>> tuple(bias(3, 4).shape)  # (1, H, Tq, Tk)
        (1, 2, 3, 4)
    """

    def __init__(
        self,
        num_heads: int,
        num_buckets: int = 32,
        max_distance: int = 128,
        *,
        bidirectional: bool = True,
    ) -> None:
        super().__init__()
        # Half the buckets (per direction, when bidirectional) count exact distances,
        # the rest grow logarithmically up to max_distance: both halves must be non-empty.
        if num_buckets < 4 or max_distance <= num_buckets // 2:
            raise ValueError(
                "num_buckets must be >= 4 and max_distance > num_buckets // 2; got "
                f"num_buckets={num_buckets}, max_distance={max_distance}"
            )
        self.num_heads = num_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def buckets(self, query_len: int, key_len: int, offset: int = 0) -> Tensor:
        """``(Tq, Tk)`` bucket ids."""
        device = self.embedding.weight.device
        queries = torch.arange(offset, offset + query_len, device=device)[:, None]
        keys = torch.arange(key_len, device=device)[None, :]
        return relative_position_bucket(
            keys - queries,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )

    def forward(self, query_len: int, key_len: int, *, offset: int = 0) -> Tensor:
        """The ``(1, H, query_len, key_len)`` bias."""
        values = self.embedding(self.buckets(query_len, key_len, offset))  # (Tq, Tk, H)
        return values.permute(2, 0, 1).unsqueeze(0)

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, num_buckets={self.num_buckets}, "
            f"max_distance={self.max_distance}, bidirectional={self.bidirectional}"
        )
