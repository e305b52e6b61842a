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
    Dropout,
    FeedForward,
    PatchEmbedding,
    PositionwiseFeedForward,
    RMSNorm,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    make_norm,
)
from attnkit.nn.position import (
    ALiBi,
    LearnedPositionalEncoding,
    PositionalEncoding,
    RotaryEmbedding,
    T5RelativePositionBias,
    interpolate_grid_positions,
    sinusoidal_table,
)

__all__ = [
    "ALiBi",
    "DecoderCache",
    "DecoderLayerCache",
    "Dropout",
    "FeedForward",
    "KVCache",
    "KVCacheStack",
    "LearnedPositionalEncoding",
    "MultiHeadAttention",
    "PatchEmbedding",
    "PositionalEncoding",
    "PositionwiseFeedForward",
    "QueryKeyTransform",
    "RMSNorm",
    "RotaryEmbedding",
    "ScaledDotProductAttention",
    "ScoreBias",
    "StaticKVCache",
    "T5RelativePositionBias",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "interpolate_grid_positions",
    "make_norm",
    "sinusoidal_table",
]
