"""Per-head statistics of attention weights ``(B, H, Tq, Tk)``.

Each statistic is averaged over the batch and the queries and returned per
head ``(H,)``. ``query_mask (B, Tq)`` leaves out padding queries (their rows
are meaningless). Self-attention queries sit at the last ``Tq`` of the ``Tk``
key positions (bottom-right, as in cached decoding).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["attention_entropy", "mean_attention_distance", "special_token_attention"]


def _check_weights(weights: Tensor) -> None:
    if weights.dim() != 4:
        raise ValueError(f"weights must have shape (B, H, Tq, Tk); got {tuple(weights.shape)}")


def _mean_over_queries(values: Tensor, query_mask: Tensor | None) -> Tensor:
    """``values (B, H, Tq)`` averaged over batch and (valid) queries -> ``(H,)``."""
    if query_mask is None:
        return values.mean(dim=(0, 2))
    expected = (values.size(0), values.size(2))
    if tuple(query_mask.shape) != expected:
        raise ValueError(f"query_mask must have shape {expected}; got {tuple(query_mask.shape)}")
    keep = query_mask[:, None, :].to(values.dtype)
    return (values * keep).sum(dim=(0, 2)) / keep.sum(dim=(0, 2)).clamp_min(1)


def attention_entropy(weights: Tensor, query_mask: Tensor | None = None) -> Tensor:
    """Mean entropy (nats) of each head's attention distributions -> ``(H,)``.

    0 means every query attends to one key; ``log(Tk)`` means uniform attention.

    Example:
        >>> import math, torch
        >>> from attnkit.analysis import attention_entropy
        >>> weights = torch.full((1, 2, 3, 4), 0.25)  # (B, H, Tq, Tk), uniform
        >>> tuple(round(h / math.log(4), 4) for h in attention_entropy(weights).tolist())
        (1.0, 1.0)
    """
    _check_weights(weights)
    w = weights.double()
    entropy = -(w * torch.log(w.clamp_min(1e-30))).sum(-1)
    return _mean_over_queries(entropy, query_mask).to(weights.dtype)


def mean_attention_distance(weights: Tensor, query_mask: Tensor | None = None) -> Tensor:
    """Mean ``sum_j a_ij |i - j|`` (in tokens) of each head's self-attention -> ``(H,)``.

    Example:
        >>> import torch
        >>> from attnkit.analysis import mean_attention_distance
        >>> weights = torch.zeros(1, 1, 3, 3)
        >>> weights[..., 0] = 1.0  # every query attends to token 0: distances 0, 1, 2
        >>> mean_attention_distance(weights).tolist()
        [1.0]
    """
    _check_weights(weights)
    tq, tk = weights.shape[-2:]
    queries = torch.arange(tk - tq, tk, device=weights.device)[:, None]
    keys = torch.arange(tk, device=weights.device)[None, :]
    distance = (queries - keys).abs().to(torch.float64)
    per_query = (weights.double() * distance).sum(-1)
    return _mean_over_queries(per_query, query_mask).to(weights.dtype)


def special_token_attention(
    weights: Tensor, special_keys: Tensor, query_mask: Tensor | None = None
) -> Tensor:
    """Mean share of attention that goes to special tokens -> ``(H,)``.

    Args:
        special_keys: bool ``(B, Tk)``, True at special tokens ([CLS], [SEP], <s>, ...).

    Example:
        >>> import torch
        >>> from attnkit.analysis import special_token_attention
        >>> weights = torch.full((1, 2, 3, 4), 0.25)  # (B, H, Tq, Tk), uniform
        >>> special_token_attention(weights, torch.tensor([[True, False, False, False]])).tolist()
        [0.25, 0.25]
    """
    _check_weights(weights)
    expected = (weights.size(0), weights.size(-1))
    if tuple(special_keys.shape) != expected:
        raise ValueError(
            f"special_keys must have shape {expected}; got {tuple(special_keys.shape)}"
        )
    share = (weights.double() * special_keys[:, None, None, :].double()).sum(-1)
    return _mean_over_queries(share, query_mask).to(weights.dtype)
