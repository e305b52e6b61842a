"""Block-sparse multi-head attention: Sparse Transformer patterns, Longformer and BigBird."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from attnkit.functional.block_sparse import (
    bigbird_layout,
    block_sparse_attention,
    fixed_layout,
    layout_to_mask,
    longformer_layout,
    sliding_layout,
    strided_layout,
)
from attnkit.nn.attention.pattern import PatternAttention

__all__ = ["PATTERNS", "BlockSparseAttention"]

PATTERNS = ("sliding", "strided", "fixed", "longformer", "bigbird")


class BlockSparseAttention(PatternAttention):
    """Self-attention over the key blocks a sparsity pattern selects.

    Args:
        d_model, num_heads, dropout: as :class:`MultiHeadAttention` (and its options).
        pattern: ``"sliding"``, ``"strided"``, ``"fixed"`` (Sparse Transformer,
            causal), ``"longformer"`` or ``"bigbird"``.
        block_size: positions per block.
        window_blocks: band half-width in blocks (sliding, longformer, bigbird).
        local_blocks, stride_blocks: the strided pattern.
        group_blocks, summary_blocks: the fixed pattern.
        global_blocks: block indices that attend and are attended everywhere.
        random_blocks, seed: BigBird's random blocks per row (fixed by ``seed``).

    The layout is built for each sequence length. A full forward runs
    :func:`attnkit.functional.block_sparse.block_sparse_attention`; decoding
    with a cache or asking for weights uses the dense path with the
    equivalent mask (same numbers).

    Example:
        >>> import torch
        >>> from attnkit.nn import BlockSparseAttention
        >>> attention = BlockSparseAttention(16, num_heads=2, pattern="sliding", block_size=2)
        >>> out, _ = attention(torch.randn(1, 8, 16))  # 4 blocks of 2 positions
        >>> tuple(out.shape)
        (1, 8, 16)
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        *,
        pattern: str = "sliding",
        block_size: int = 64,
        window_blocks: int = 1,
        local_blocks: int = 2,
        stride_blocks: int = 4,
        group_blocks: int = 4,
        summary_blocks: int = 1,
        global_blocks: Sequence[int] = (0,),
        random_blocks: int = 2,
        seed: int = 0,
        **options,
    ) -> None:
        super().__init__(d_model, num_heads, dropout, **options)
        if pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}; got {pattern!r}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1; got {block_size}")
        self.pattern, self.block_size = pattern, block_size
        self.pattern_options = {
            "window_blocks": window_blocks,
            "local_blocks": local_blocks,
            "stride_blocks": stride_blocks,
            "group_blocks": group_blocks,
            "summary_blocks": summary_blocks,
            "global_blocks": tuple(global_blocks),
            "random_blocks": random_blocks,
            "seed": seed,
        }

    def layout(self, num_blocks: int, causal: bool = False) -> Tensor:
        """The ``(nb, nb)`` block layout for ``num_blocks`` blocks (BigBird's random
        blocks: drawn among earlier blocks when ``causal``)."""
        o = self.pattern_options
        globals_ = [b for b in o["global_blocks"] if b < num_blocks]
        if self.pattern == "sliding":
            return sliding_layout(num_blocks, o["window_blocks"])
        if self.pattern == "strided":
            return strided_layout(num_blocks, o["local_blocks"], o["stride_blocks"])
        if self.pattern == "fixed":
            return fixed_layout(num_blocks, o["group_blocks"], o["summary_blocks"])
        if self.pattern == "longformer":
            return longformer_layout(num_blocks, o["window_blocks"], globals_)
        return bigbird_layout(
            num_blocks,
            o["window_blocks"],
            globals_,
            o["random_blocks"],
            seed=o["seed"],
            causal=causal,
        )

    def pattern_mask(self, query_len: int, total: int, causal: bool, device) -> Tensor:
        layout = self.layout(math.ceil(total / self.block_size), causal)
        sparse = layout_to_mask(layout, self.block_size, total, causal=causal)
        return sparse[:, :, total - query_len :].to(device)

    def pattern_attention(
        self, q: Tensor, k: Tensor, v: Tensor, padding: Tensor | None, causal: bool
    ) -> Tensor:
        return block_sparse_attention(
            q,
            k,
            v,
            self.layout(math.ceil(q.size(2) / self.block_size), causal),
            block_size=self.block_size,
            causal=causal,
            key_padding_mask=padding,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scale,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pattern={self.pattern!r}, block_size={self.block_size}"
