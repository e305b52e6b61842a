"""Learned absolute positional embeddings (as in GPT-2 and BERT)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.nn.layers.dropout import Dropout
from attnkit.nn.position._common import check_length

__all__ = ["LearnedPositionalEncoding", "interpolate_grid_positions"]


class LearnedPositionalEncoding(nn.Module):
    """Adds a trainable ``(max_len, D)`` table to ``(B, T, D)`` embeddings, then dropout.

    Example:
        >>> import torch
        >>> from attnkit.nn import LearnedPositionalEncoding
        >>> encoding = LearnedPositionalEncoding(d_model=8, max_len=16)
        >>> step = encoding(torch.zeros(2, 1, 8), offset=5)  # position 5 only
        >>> tuple(encoding(torch.zeros(2, 5, 8)).shape), tuple(step.shape)
        ((2, 5, 8), (2, 1, 8))
    """

    def __init__(self, d_model: int, max_len: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, d_model)
        self.dropout = Dropout(dropout)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def get_positional_encoding(self, seq_len: int, offset: int = 0) -> Tensor:
        """The ``(seq_len, D)`` embeddings of positions ``offset .. offset + seq_len - 1``."""
        check_length(seq_len, offset, self.max_len, type(self).__name__)
        positions = torch.arange(offset, offset + seq_len, device=self.embedding.weight.device)
        return self.embedding(positions)

    def forward(self, x: Tensor, offset: int = 0, positions: Tensor | None = None) -> Tensor:
        """``x (B, T, D)`` -> ``x + E[offset : offset + T]`` with dropout.

        ``positions (B, T)`` gives every row its own positions instead (e.g.
        left-padded prompts); ``offset`` is then ignored.
        """
        if x.dim() != 3 or x.size(-1) != self.d_model:
            raise ValueError(f"x must have shape (B, T, {self.d_model}); got {tuple(x.shape)}")
        if positions is None:
            table = self.get_positional_encoding(x.size(1), offset)
        else:
            table = self.embedding(self._checked(positions, x))
        return self.dropout(x + table.to(x.dtype))

    def _checked(self, positions: Tensor, x: Tensor) -> Tensor:
        """``positions`` if they are ``(B, T)`` ints in ``[0, max_len)``; raise otherwise."""
        if positions.shape != x.shape[:2] or positions.is_floating_point():
            raise ValueError(
                f"positions must be integer ids of shape {tuple(x.shape[:2])}; "
                f"got {positions.dtype} {tuple(positions.shape)}"
            )
        if positions.numel() and (positions.min() < 0 or positions.max() >= self.max_len):
            raise ValueError(
                f"{type(self).__name__} supports positions 0..{self.max_len - 1}; got "
                f"{int(positions.min())}..{int(positions.max())}"
            )
        return positions


def interpolate_grid_positions(
    table: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> Tensor:
    """Resize learned 2-D patch positions ``(old_h * old_w, D)`` to ``(new_h * new_w, D)``.

    The table is viewed as an image with ``D`` channels and resized bicubically
    (as ViT fine-tuning at a higher resolution does); the same grid is
    returned unchanged.

    Example:
        >>> import torch
        >>> from attnkit.nn import interpolate_grid_positions
        >>> table = torch.randn(4, 8)  # a 2 x 2 patch grid, D = 8
        >>> tuple(interpolate_grid_positions(table, (2, 2), (3, 3)).shape)
        (9, 8)
    """
    if old_grid == new_grid:
        return table
    if table.dim() != 2 or table.size(0) != old_grid[0] * old_grid[1]:
        raise ValueError(
            f"table must have shape ({old_grid[0] * old_grid[1]}, D) for a {old_grid} grid; "
            f"got {tuple(table.shape)}"
        )
    image = table.T.reshape(1, table.size(1), *old_grid)
    resized = F.interpolate(image.float(), size=new_grid, mode="bicubic", align_corners=False)
    return resized.reshape(table.size(1), -1).T.to(table.dtype)
