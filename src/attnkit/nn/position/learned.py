"""Learned absolute positional embeddings (as in GPT-2 and BERT)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnkit.nn.position._common import check_length

__all__ = ["LearnedPositionalEncoding"]


class LearnedPositionalEncoding(nn.Module):
    """Adds a trainable ``(max_len, D)`` table to ``(B, T, D)`` embeddings, then dropout."""

    def __init__(self, d_model: int, max_len: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def get_positional_encoding(self, seq_len: int, offset: int = 0) -> Tensor:
        """The ``(seq_len, D)`` embeddings of positions ``offset .. offset + seq_len - 1``."""
        check_length(seq_len, offset, self.max_len, type(self).__name__)
        positions = torch.arange(offset, offset + seq_len, device=self.embedding.weight.device)
        return self.embedding(positions)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """``x (B, T, D)`` -> ``x + E[offset : offset + T]`` with dropout."""
        if x.dim() != 3 or x.size(-1) != self.d_model:
            raise ValueError(f"x must have shape (B, T, {self.d_model}); got {tuple(x.shape)}")
        return self.dropout(x + self.get_positional_encoding(x.size(1), offset).to(x.dtype))
