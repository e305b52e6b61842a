# ruff: noqa: I001  (import order matters here, see below)
"""Attention modules."""

# The factory comes last: it imports the positional schemes, whose modules import
# nn.layers, which needs MultiHeadAttention from here already.
from attnkit.nn.attention.multihead import MultiHeadAttention, QueryKeyTransform, ScoreBias
from attnkit.nn.attention.relative import RelativePositionAttention, relative_buckets
from attnkit.nn.attention.local import SlidingWindowAttention
from attnkit.nn.attention.kernel import KernelAttention, LinearAttention, PerformerAttention
from attnkit.nn.attention.lsh import LSHAttention
from attnkit.nn.attention.scaled_dot_product import ScaledDotProductAttention
from attnkit.nn.attention.additive import (
    LUONG_SCORES,
    AttentionLayer,
    BahdanauAttention,
    LuongAttention,
)
from attnkit.nn.attention.sparse import BlockSparseAttention
from attnkit.nn.attention.graph import DenseGraphAttentionLayer, GraphAttentionLayer
from attnkit.nn.attention.factory import ATTENTION_KINDS, build_self_attention

__all__ = [
    "ATTENTION_KINDS",
    "LUONG_SCORES",
    "AttentionLayer",
    "BahdanauAttention",
    "BlockSparseAttention",
    "DenseGraphAttentionLayer",
    "GraphAttentionLayer",
    "KernelAttention",
    "LSHAttention",
    "LinearAttention",
    "LuongAttention",
    "MultiHeadAttention",
    "PerformerAttention",
    "QueryKeyTransform",
    "RelativePositionAttention",
    "ScaledDotProductAttention",
    "ScoreBias",
    "SlidingWindowAttention",
    "build_self_attention",
    "relative_buckets",
]
