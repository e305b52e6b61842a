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
    """``"layernorm"`` -> :class:`torch.nn.LayerNorm`, ``"rmsnorm"`` -> :class:`RMSNorm`."""
    if kind == "layernorm":
        return nn.LayerNorm(d_model, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(d_model, eps=eps)
    raise ValueError(f"norm must be 'layernorm' or 'rmsnorm'; got {kind!r}")
