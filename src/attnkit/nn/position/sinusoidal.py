"""Fixed sinusoidal positional encoding (Vaswani et al. 2017, section 3.5)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnkit.nn.layers.dropout import Dropout
from attnkit.nn.position._common import check_length

__all__ = ["PositionalEncoding", "sinusoidal_table"]


def sinusoidal_table(length: int, d_model: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(length, d_model)``: PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...).

    Example:
        >>> from attnkit.nn import sinusoidal_table
        >>> table = sinusoidal_table(4, 6)
        >>> tuple(table.shape), table[0].tolist()  # position 0: sin 0 = 0, cos 0 = 1
        ((4, 6), [0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    """
    position = torch.arange(length, dtype=torch.float64)[:, None]
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model)
    )
    angles = position * inv_freq
    table = torch.zeros(length, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    return table.to(dtype)


class PositionalEncoding(nn.Module):
    """Adds the sinusoidal table to ``(B, T, D)`` embeddings, then dropout.

    Args:
        d_model: embedding width ``D``.
        max_len: longest supported sequence (positions beyond raise).
        dropout: dropout applied after adding positions (the paper's P_drop).

    Example:
        >>> import torch
        >>> from attnkit.nn import PositionalEncoding
        >>> positions = PositionalEncoding(d_model=16)
        >>> out = positions(torch.zeros(1, 4, 16))  # (B, T, D)
        >>> tuple(out.shape), out[0, 0, :4].tolist()  # position 0: sin 0, cos 0, ...
        ((1, 4, 16), [0.0, 1.0, 0.0, 1.0])
    """

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0) -> None:
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.dropout = Dropout(dropout)
        self.register_buffer("pe", sinusoidal_table(max_len, d_model), persistent=False)

    def get_positional_encoding(self, seq_len: int, offset: int = 0) -> Tensor:
        """The ``(seq_len, D)`` encodings of positions ``offset .. offset + seq_len - 1``."""
        check_length(seq_len, offset, self.max_len, type(self).__name__)
        return self.pe[offset : offset + seq_len]

    def forward(self, x: Tensor, offset: int = 0, positions: Tensor | None = None) -> Tensor:
        """``x (B, T, D)`` -> ``x + PE[offset : offset + T]`` with dropout.

        ``positions (B, T)`` gives every row its own positions instead (left padding).
        """
        if x.dim() != 3 or x.size(-1) != self.d_model:
            raise ValueError(f"x must have shape (B, T, {self.d_model}); got {tuple(x.shape)}")
        if positions is None:
            pe = self.get_positional_encoding(x.size(1), offset)
        else:
            if positions.shape != x.shape[:2] or positions.is_floating_point():
                raise ValueError(
                    f"positions must be integer ids of shape {tuple(x.shape[:2])}; "
                    f"got {positions.dtype} {tuple(positions.shape)}"
                )
            check_length(int(positions.max()) + 1, 0, self.max_len, type(self).__name__)
            pe = self.pe[positions]
        return self.dropout(x + pe.to(x.dtype))
