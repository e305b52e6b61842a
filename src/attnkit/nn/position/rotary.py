"""Rotary position embeddings (RoPE; Su et al. 2021), with context-length scaling.

Rotary encodes position ``m`` by rotating each pair of query/key features
``(x_i, x_{i + Dh/2})`` by the angle ``m * theta_i`` with
``theta_i = base^(-2i / Dh)`` (the "rotate half" pairing of GPT-NeoX and
Llama). A rotation keeps norms, and ``<R_m q, R_n k>`` depends on ``m - n``
only, so attention scores see relative offsets.

Scaling for contexts longer than trained:

- ``"linear"`` (position interpolation, Chen et al. 2023): positions are
  divided by ``factor``.
- ``"ntk"`` (NTK-aware): the base grows to ``base * factor^(Dh / (Dh - 2))``,
  which stretches low frequencies and keeps high ones.

The module is a :class:`attnkit.nn.QueryKeyTransform`: pass it to
``MultiHeadAttention(rotary=...)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["RotaryEmbedding", "apply_rotary", "rotate_half"]

SCALINGS = ("none", "linear", "ntk")


def rotate_half(x: Tensor) -> Tensor:
    """``(..., Dh)``: ``[x1, x2] -> [-x2, x1]`` with ``x1, x2`` the two halves."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x (B, H, T, Dh)`` by angles given as ``cos``/``sin`` broadcastable to it."""
    return x * cos + rotate_half(x) * sin


class RotaryEmbedding(nn.Module):
    """Rotates per-head queries and keys by their positions.

    Args:
        head_dim: per-head size ``Dh`` (even).
        base: frequency base (10000 in the paper and Llama 2).
        scaling: ``"none"``, ``"linear"`` or ``"ntk"`` (see the module docstring).
        factor: context-extension factor for the scalings (``>= 1``).

    Call: ``rotary(query (B, H, Tq, Dh), key (B, Hkv, Tk, Dh), offset=0,
    positions=None)``. Without ``positions`` the tokens sit at
    ``offset, offset + 1, ...`` (``offset`` = tokens already in a KV cache);
    ``positions (B, T)`` gives every row its own positions (left-padded
    batches), shared by queries and keys of the same call.

    Example:
        >>> import torch
        >>> from attnkit.nn import RotaryEmbedding
        >>> rotary = RotaryEmbedding(head_dim=8)
        >>> q, k = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)  # (B, H, T, Dh)
        >>> q_rotated, k_rotated = rotary(q, k)
        >>> torch.allclose(q_rotated.norm(dim=-1), q.norm(dim=-1))  # a rotation keeps lengths
        True
    """

    def __init__(
        self, head_dim: int, base: float = 10000.0, *, scaling: str = "none", factor: float = 1.0
    ) -> None:
        super().__init__()
        if head_dim < 2 or head_dim % 2:
            raise ValueError(f"head_dim must be a positive even number; got {head_dim}")
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}; got {scaling!r}")
        if factor < 1.0:
            raise ValueError(f"factor must be >= 1; got {factor}")
        self.head_dim = head_dim
        self.scaling = scaling
        self.factor = factor
        if scaling == "ntk":
            base = base * factor ** (head_dim / (head_dim - 2))
        self.base = base
        self.register_buffer("inv_freq", self._frequencies(), persistent=False)

    def _frequencies(self, device: torch.device | None = None) -> Tensor:
        """``(Dh / 2,)`` float32 inverse frequencies ``base^(-2i / Dh)``."""
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim
        return (1.0 / self.base**exponents).float().to(device)

    def _apply(self, fn, recurse: bool = True):
        """Move with the module but stay float32: ``.half()`` or ``.to(torch.bfloat16)``
        would round the frequencies, and the angles of far positions with them."""
        super()._apply(fn, recurse)
        self.inv_freq = self._frequencies(self.inv_freq.device)
        return self

    def angles(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """``cos, sin`` of shape ``(*positions.shape, Dh)`` for float or int positions."""
        scaled = positions.to(torch.float32)
        if self.scaling == "linear":
            scaled = scaled / self.factor
        freqs = scaled[..., None] * self.inv_freq.to(positions.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def _cos_sin(self, length: int, offset: int, positions: Tensor | None, like: Tensor):
        """``cos, sin`` broadcastable to ``(B, H, length, Dh)``."""
        if positions is None:
            steps = torch.arange(offset, offset + length, device=like.device)
            cos, sin = self.angles(steps)
        else:
            if positions.dim() != 2 or positions.size(-1) != length:
                raise ValueError(
                    f"positions must have shape (B, {length}); got {tuple(positions.shape)}"
                )
            cos, sin = self.angles(positions)
            cos, sin = cos[:, None], sin[:, None]
        return cos.to(like.dtype), sin.to(like.dtype)

    def forward(
        self, query: Tensor, key: Tensor, *, offset: int = 0, positions: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Rotate ``query (B, H, Tq, Dh)`` and ``key (B, Hkv, Tk, Dh)``.

        Queries and keys of one call hold the same new tokens (``Tq == Tk``), as
        in self-attention where cached keys were rotated when they were added.
        """
        if query.size(-1) != self.head_dim or key.size(-1) != self.head_dim:
            raise ValueError(
                f"query and key must have head_dim {self.head_dim}; got "
                f"{tuple(query.shape)} and {tuple(key.shape)}"
            )
        if query.size(2) != key.size(2):
            raise ValueError(
                "rotary needs queries and keys of the same new tokens; got "
                f"{query.size(2)} queries and {key.size(2)} keys"
            )
        cos, sin = self._cos_sin(query.size(2), offset, positions, query)
        return apply_rotary(query, cos, sin), apply_rotary(key, cos, sin)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base:g}, scaling={self.scaling!r}"
