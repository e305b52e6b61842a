"""Pure functions: attention masks, scaled dot-product attention with its backends,
and the CPU-fast dropout and cross-entropy the layers and losses use."""

from attnkit.functional.attention import (
    AttentionBackend,
    attention_weights,
    available_backends,
    register_backend,
    scaled_dot_product_attention,
)
from attnkit.functional.chunked import chunked_attention
from attnkit.functional.cross_entropy import cross_entropy
from attnkit.functional.dropout import dropout
from attnkit.functional.linear_cross_entropy import LinearCrossEntropy, linear_cross_entropy
from attnkit.functional.masks import (
    combine_masks,
    create_causal_mask,
    create_padding_mask,
    create_sliding_window_mask,
    from_torch_mha_masks,
    key_padding_mask,
    mask_to_additive,
    positions_from_mask,
)
from attnkit.functional.softmax import masked_softmax

__all__ = [
    "AttentionBackend",
    "LinearCrossEntropy",
    "attention_weights",
    "available_backends",
    "chunked_attention",
    "combine_masks",
    "create_causal_mask",
    "create_padding_mask",
    "create_sliding_window_mask",
    "cross_entropy",
    "dropout",
    "from_torch_mha_masks",
    "key_padding_mask",
    "linear_cross_entropy",
    "mask_to_additive",
    "masked_softmax",
    "positions_from_mask",
    "register_backend",
    "scaled_dot_product_attention",
]
