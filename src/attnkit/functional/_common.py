"""Small helpers shared by the attention backends."""

from __future__ import annotations

import torch
from torch import Tensor

LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype the reference paths compute scores and softmax in (float32 for fp16/bf16)."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Expand ``(B, Hkv, T, D)`` to ``(B, Hkv * n_rep, T, D)`` for grouped-query attention.

    Query head ``h`` uses key/value head ``h // n_rep`` (torch's ``enable_gqa`` layout).
    """
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def finite_bias(bias: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast an additive bias to ``dtype`` and clamp ``-inf`` to the dtype's minimum.

    A row of ``-inf`` biases would otherwise turn softmax into NaN.
    """
    bias = bias.to(dtype)
    return bias.clamp_min(torch.finfo(dtype).min)
