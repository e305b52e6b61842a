"""Logit processors: small pure functions over next-token logits ``(N, V)``.

Each returns new logits and leaves its input untouched. Removed tokens get
``-inf`` (probability exactly zero after softmax); every filter keeps at least
one token per row, so a row never becomes all ``-inf``.

:func:`sample <attnkit.generation.sample>` applies them in the order of
Hugging Face ``generate``: suppressed tokens, repetition penalty, temperature,
top-k, top-p.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "apply_repetition_penalty",
    "apply_suppression",
    "apply_temperature",
    "apply_top_k",
    "apply_top_p",
    "suppressed_ids",
]


def _check_logits(logits: Tensor) -> None:
    if logits.dim() != 2 or not logits.dtype.is_floating_point:
        raise ValueError(
            f"logits must be floating point with shape (N, V); got {tuple(logits.shape)} "
            f"{logits.dtype}"
        )


def check_temperature(temperature: float) -> None:
    """Raise unless ``temperature`` is a finite number > 0."""
    if isinstance(temperature, bool) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(
            f"temperature must be a finite number > 0 (use greedy_decode for temperature 0); "
            f"got {temperature!r}"
        )


def check_top_k(top_k: int) -> None:
    """Raise unless ``top_k`` is an integer >= 1."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1 (or None for no limit); got {top_k!r}")


def check_top_p(top_p: float) -> None:
    """Raise unless ``0 < top_p <= 1``."""
    if isinstance(top_p, bool) or not (0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be in (0, 1]; got {top_p!r}")


def check_repetition_penalty(penalty: float) -> None:
    """Raise unless ``penalty`` is a finite number > 0."""
    if isinstance(penalty, bool) or not math.isfinite(penalty) or penalty <= 0:
        raise ValueError(
            f"repetition_penalty must be a finite number > 0 (1.0 = off); got {penalty!r}"
        )


def suppressed_ids(ids: Sequence[int] | None, vocab_size: int, device: torch.device) -> Tensor:
    """``ids`` as a ``(n,)`` long tensor for :func:`apply_suppression` (empty for ``None``).

    Raises unless every id is in ``[0, vocab_size)`` and at least one token stays allowed.

    Example:
        >>> import torch
        >>> from attnkit.generation import suppressed_ids
        >>> suppressed_ids([0, 3], 5, torch.device("cpu")).tolist()
        [0, 3]
    """
    ids = [] if ids is None else list(ids)
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab_size:
            raise ValueError(
                f"suppress_ids must be token ids in [0, {vocab_size}); got {value!r} in {ids}"
            )
    if len(set(ids)) >= vocab_size:
        raise ValueError(f"suppress_ids would forbid all {vocab_size} tokens")
    return torch.tensor(ids, dtype=torch.long, device=device)


def apply_suppression(logits: Tensor, ids: Tensor) -> Tensor:
    """Forbid the token ``ids (n,)``: their logits in ``(N, V)`` become ``-inf``.

    Returns the input itself when ``ids`` is empty (nothing to forbid).

    Hugging Face calls this ``suppress_tokens``: e.g. the special tokens of a
    character model trained on raw text, which decode to nothing.

    Example:
        >>> import torch
        >>> from attnkit.generation import apply_suppression
        >>> apply_suppression(torch.tensor([[1.0, 3.0, 2.0]]), torch.tensor([1])).tolist()
        [[1.0, -inf, 2.0]]
    """
    if ids.numel() == 0:  # the common case, once per decoding step: no checks, no copy
        return logits
    _check_logits(logits)
    return logits.index_fill(-1, ids, -math.inf)


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``logits / temperature``: below 1 sharpens the distribution, above 1 flattens it.

    Args:
        logits: ``(N, V)``.
        temperature: > 0; as it tends to 0 sampling tends to greedy decoding.

    Example:
        >>> import torch
        >>> from attnkit.generation import apply_temperature
        >>> apply_temperature(torch.tensor([[2.0, -1.0]]), 0.5).tolist()
        [[4.0, -2.0]]
    """
    _check_logits(logits)
    check_temperature(temperature)
    return logits / temperature


def apply_top_k(logits: Tensor, top_k: int) -> Tensor:
    """Keep the ``top_k`` highest logits of each row ``(N, V)``; others become ``-inf``.

    Tokens tied with the ``k``-th highest logit are kept too. ``top_k >= V``
    keeps everything.

    Example:
        >>> import torch
        >>> from attnkit.generation import apply_top_k
        >>> apply_top_k(torch.tensor([[1.0, 3.0, 2.0, 0.0]]), 2).tolist()
        [[-inf, 3.0, 2.0, -inf]]
    """
    _check_logits(logits)
    check_top_k(top_k)
    if top_k >= logits.size(-1):
        return logits.clone()
    kth = logits.topk(top_k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, -math.inf)


def apply_top_p(logits: Tensor, top_p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al. 2020) of ``(N, V)`` logits.

    Keeps, per row, the smallest set of most likely tokens whose probability
    mass reaches ``top_p`` (always at least the most likely token); the rest
    become ``-inf``. ``top_p = 1`` keeps everything.

    Example:
        >>> import torch
        >>> from attnkit.generation import apply_top_p
        >>> logits = torch.tensor([[0.5, 0.3, 0.2]]).log()  # probabilities 0.5, 0.3, 0.2
        >>> apply_top_p(logits, 0.7).isfinite().tolist()  # 0.5 + 0.3 reaches 0.7
        [[True, True, False]]
    """
    _check_logits(logits)
    check_top_p(top_p)
    if top_p >= 1.0:
        return logits.clone()
    probs = torch.softmax(logits.float(), dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    remove_sorted = mass_before >= top_p  # the kept tokens already reach top_p
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, -math.inf)


def apply_repetition_penalty(logits: Tensor, tokens: Tensor, penalty: float) -> Tensor:
    """Penalise tokens already generated (CTRL, Keskar et al. 2019; as Hugging Face).

    For every token id in ``tokens[n]``, logit ``logits[n, id]`` is divided by
    ``penalty`` if positive and multiplied by it if negative, so ``penalty > 1``
    makes repeats less likely and ``penalty < 1`` more likely. A token counts
    once however often it occurred.

    Args:
        logits: ``(N, V)``.
        tokens: ``(N, t)`` integer ids generated so far (``t`` may be 0).
        penalty: > 0; 1.0 changes nothing.

    Example:
        >>> import torch
        >>> from attnkit.generation import apply_repetition_penalty
        >>> logits = torch.tensor([[2.0, -2.0, 1.0]])
        >>> apply_repetition_penalty(logits, torch.tensor([[0, 1, 0]]), 2.0).tolist()
        [[1.0, -4.0, 1.0]]
    """
    _check_logits(logits)
    check_repetition_penalty(penalty)
    if tokens.dim() != 2 or tokens.size(0) != logits.size(0) or tokens.dtype.is_floating_point:
        raise ValueError(
            f"tokens must be integer ids of shape (N, t) with N = {logits.size(0)}; "
            f"got {tuple(tokens.shape)} {tokens.dtype}"
        )
    if tokens.size(1) == 0 or penalty == 1.0:
        return logits.clone()
    tokens = tokens.long()
    seen = logits.gather(-1, tokens)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(-1, tokens, seen)
