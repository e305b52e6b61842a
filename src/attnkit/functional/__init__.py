"""Pure functions: attention masks and scaled dot-product attention with its backends."""

from attnkit.functional.attention import (
    AttentionBackend,
    attention_weights,
    available_backends,
    register_backend,
    scaled_dot_product_attention,
)
from attnkit.functional.chunked import chunked_attention
from attnkit.functional.dropout import dropout
from attnkit.functional.masks import (
    combine_masks,
    create_causal_mask,
    create_padding_mask,
    create_sliding_window_mask,
    from_torch_mha_masks,
    mask_to_additive,
    positions_from_mask,
)
from attnkit.functional.softmax import masked_softmax

__all__ = [
    "AttentionBackend",
    "attention_weights",
    "available_backends",
    "chunked_attention",
    "combine_masks",
    "create_causal_mask",
    "create_padding_mask",
    "create_sliding_window_mask",
    "dropout",
    "from_torch_mha_masks",
    "mask_to_additive",
    "masked_softmax",
    "positions_from_mask",
    "register_backend",
    "scaled_dot_product_attention",
]
