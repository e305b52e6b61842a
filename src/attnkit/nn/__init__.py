"""Modules: attention, positional encodings, layers and the KV cache."""

from attnkit.nn.attention import (
    MultiHeadAttention,
    QueryKeyTransform,
    ScaledDotProductAttention,
    ScoreBias,
)
from attnkit.nn.kv_cache import KVCache, KVCacheStack, StaticKVCache
from attnkit.nn.layers import (
    DecoderCache,
    DecoderLayerCache,
    FeedForward,
    PositionwiseFeedForward,
    RMSNorm,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    make_norm,
)
from attnkit.nn.position import (
    LearnedPositionalEncoding,
    PositionalEncoding,
    RotaryEmbedding,
    sinusoidal_table,
)

__all__ = [
    "DecoderCache",
    "DecoderLayerCache",
    "FeedForward",
    "KVCache",
    "KVCacheStack",
    "LearnedPositionalEncoding",
    "MultiHeadAttention",
    "PositionalEncoding",
    "PositionwiseFeedForward",
    "QueryKeyTransform",
    "RMSNorm",
    "RotaryEmbedding",
    "ScaledDotProductAttention",
    "ScoreBias",
    "StaticKVCache",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "make_norm",
    "sinusoidal_table",
]
