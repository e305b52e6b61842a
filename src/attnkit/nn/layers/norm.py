"""Normalisation layers and a factory to pick one by name."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RMSNorm", "make_norm"]


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich 2019; T5's and LLaMA's norm).

    ``y = x / sqrt(mean(x^2) + eps) * weight`` over the last dim, computed in
    float32 for low-precision inputs. Shapes: ``(..., D) -> (..., D)``.

    Example:
        >>> import torch
        >>> from attnkit.nn import RMSNorm
        >>> y = RMSNorm(4)(torch.tensor([[2.0, -2.0, 2.0, -2.0]]))  # rms 2 -> unit scale
        >>> tuple(y.shape), [round(v, 4) for v in y[0].tolist()]
        ((1, 4), [1.0, -1.0, 1.0, -1.0])
    """

    def __init__(self, d_model: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        normed = F.rms_norm(x.to(compute), (x.size(-1),), eps=self.eps).to(x.dtype)
        return normed * self.weight

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}"


def make_norm(kind: str, d_model: int, eps: float = 1e-5, *, bias: bool = True) -> nn.Module:
    """``"layernorm"`` -> :class:`torch.nn.LayerNorm`, ``"rmsnorm"`` -> :class:`RMSNorm`.

    Example:
        >>> from attnkit.nn import make_norm
        >>> type(make_norm("rmsnorm", 8)).__name__, type(make_norm("layernorm", 8)).__name__
        ('RMSNorm', 'LayerNorm')
    """
    if kind == "layernorm":
        return nn.LayerNorm(d_model, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(d_model, eps=eps)
    raise ValueError(f"norm must be 'layernorm' or 'rmsnorm'; got {kind!r}")
