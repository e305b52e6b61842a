"""Attention modules."""

from attnkit.nn.attention.local import SlidingWindowAttention
from attnkit.nn.attention.multihead import MultiHeadAttention, QueryKeyTransform, ScoreBias
from attnkit.nn.attention.relative import RelativePositionAttention, relative_buckets
from attnkit.nn.attention.scaled_dot_product import ScaledDotProductAttention

__all__ = [
    "MultiHeadAttention",
    "QueryKeyTransform",
    "RelativePositionAttention",
    "ScaledDotProductAttention",
    "ScoreBias",
    "SlidingWindowAttention",
    "relative_buckets",
]
