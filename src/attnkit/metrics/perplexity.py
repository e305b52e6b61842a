"""Negative log-likelihood sums and perplexity."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["negative_log_likelihood", "perplexity"]


def negative_log_likelihood(
    logits: Tensor, targets: Tensor, pad_id: int | None = None
) -> tuple[float, int]:
    """Summed token NLL (nats) and the number of tokens it covers.

    Args:
        logits: ``(B, T, V)`` (or ``(N, V)``) unnormalised scores.
        targets: ``(B, T)`` (or ``(N,)``) token ids.
        pad_id: targets equal to it are skipped (``None``: count every position);
            it may lie outside the vocabulary, e.g. ``-100`` (the ``ignore_index``
            of attnkit's MLM and span-corruption collators).

    Returns:
        ``(total_nll, total_tokens)``; sum them over batches, then :func:`perplexity`.

    Example:
        >>> import math, torch
        >>> from attnkit.metrics import negative_log_likelihood
        >>> nll, count = negative_log_likelihood(torch.zeros(1, 3, 8), torch.tensor([[1, 2, 0]]), 0)
        >>> round(nll / math.log(8), 6), count  # uniform over 8 tokens: log(8) each
        (2.0, 2)
    """
    if logits.dim() != targets.dim() + 1 or logits.shape[:-1] != targets.shape:
        raise ValueError(
            "logits must have shape targets.shape + (V,); got logits "
            f"{tuple(logits.shape)} and targets {tuple(targets.shape)}"
        )
    keep = torch.ones_like(targets, dtype=torch.bool) if pad_id is None else targets != pad_id
    _check_target_range(targets[keep], logits.size(-1))
    safe_targets = targets.long().masked_fill(~keep, 0)  # skipped ids (e.g. -100) never index
    log_probs = torch.log_softmax(logits.detach().double(), dim=-1)
    token_nll = -log_probs.gather(-1, safe_targets[..., None])[..., 0]
    return float(token_nll[keep].sum()), int(keep.sum())


def _check_target_range(kept: Tensor, vocab_size: int) -> None:
    """Raise ``ValueError`` if a counted target id is not in ``[0, vocab_size)``."""
    bad = (kept < 0) | (kept >= vocab_size)
    if bad.any():
        raise ValueError(
            f"targets not skipped by pad_id must be token ids in [0, {vocab_size}); "
            f"got {int(kept[bad][0])} (pass pad_id=-100 to skip ignore_index labels)"
        )


def perplexity(total_nll: float | Tensor, total_tokens: int | Tensor) -> float:
    """``exp(total_nll / total_tokens)``: the model's per-token perplexity.

    Args:
        total_nll: summed negative log-likelihood in nats (natural log).
        total_tokens: number of tokens it covers, > 0.

    A model that is uniform over ``V`` tokens has perplexity ``V``. Overflow gives ``inf``.

    Example:
        >>> import math
        >>> from attnkit.metrics import perplexity
        >>> round(perplexity(3 * math.log(8), 3), 6)  # three tokens, uniform over 8
        8.0
    """
    total_nll, total_tokens = float(total_nll), int(total_tokens)
    if total_tokens <= 0:
        raise ValueError(f"total_tokens must be > 0; got {total_tokens}")
    if not total_nll >= 0:  # also rejects NaN
        raise ValueError(f"total_nll must be a non-negative number of nats; got {total_nll}")
    try:
        return math.exp(total_nll / total_tokens)
    except OverflowError:
        return math.inf
