"""Model families composed from attnkit.nn parts."""

from attnkit.models.transformer import (
    Transformer,
    TransformerAttention,
    TransformerConfig,
    build_transformer,
)

__all__ = ["Transformer", "TransformerAttention", "TransformerConfig", "build_transformer"]
