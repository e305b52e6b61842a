"""Feed-forward networks, norms and Transformer blocks."""

from attnkit.nn.layers.blocks import (
    DecoderCache,
    DecoderLayerCache,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from attnkit.nn.layers.dropout import Dropout
from attnkit.nn.layers.feedforward import FeedForward, PositionwiseFeedForward
from attnkit.nn.layers.norm import RMSNorm, make_norm
from attnkit.nn.layers.patch_embedding import PatchEmbedding

__all__ = [
    "DecoderCache",
    "DecoderLayerCache",
    "Dropout",
    "FeedForward",
    "PatchEmbedding",
    "PositionwiseFeedForward",
    "RMSNorm",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "make_norm",
]
