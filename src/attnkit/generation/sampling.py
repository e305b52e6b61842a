"""Ancestral sampling with temperature, top-k, top-p and a repetition penalty."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from attnkit.generation._loop import decode_one_per_row
from attnkit.generation.interface import as_decoding_model, check_positive_int, eval_mode
from attnkit.generation.processors import (
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    check_repetition_penalty,
    check_temperature,
    check_top_k,
    check_top_p,
)

__all__ = ["sample"]


def sample(
    model: Any,
    src: Tensor | None,
    *,
    max_new_tokens: int,
    bos_id: int | None = None,
    eos_id: int | Sequence[int] | None = None,
    pad_id: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    generator: torch.Generator | None = None,
    src_mask: Tensor | None = None,
    suppress_ids: Sequence[int] | None = None,
) -> Tensor:
    """Draw every next token from the model's (processed) distribution.

    At each step the logits ``(B, V)`` go through, in this order (as Hugging
    Face ``generate``): the suppressed tokens, the repetition penalty over the tokens this row has
    generated so far (not ``bos``), ``/ temperature``, top-k, top-p; the token is
    then drawn with ``torch.multinomial`` from their softmax.

    Args:
        model, src, src_mask: as for :func:`~attnkit.generation.greedy_decode`.
        max_new_tokens, bos_id, eos_id, pad_id, suppress_ids: as for ``greedy_decode``.
        temperature: > 0; tends to greedy decoding as it tends to 0.
        top_k: keep only the ``k`` most likely tokens (``None``: all). ``top_k=1`` is greedy.
        top_p: nucleus sampling, in ``(0, 1]`` (``None`` or 1: off).
        repetition_penalty: > 0 (1.0: off), see
            :func:`~attnkit.generation.apply_repetition_penalty`.
        generator: the source of randomness (on the model's device); the same
            seed gives the same tokens. ``None`` uses torch's global generator.

    Returns:
        ``(B, L)`` ids without ``bos``, each row padded with ``pad_id`` after its
        ``eos``; stops once every row has finished or at ``max_new_tokens``.

    Example:
        >>> import torch
        >>> from attnkit.generation import sample
        >>> from attnkit.models import GPT, GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=50, max_len=32, d_model=32, num_heads=4, num_layers=1))
        >>> prompt = torch.randint(0, 50, (2, 4))
        >>> def draw(seed):
        ...     generator = torch.Generator().manual_seed(seed)
        ...     return sample(gpt.eval(), prompt, max_new_tokens=6, temperature=0.8, top_k=10,
        ...                   generator=generator)
        >>> tuple(draw(0).shape), torch.equal(draw(0), draw(0))  # the same seed, the same tokens
        ((2, 6), True)
    """
    check_positive_int("max_new_tokens", max_new_tokens)
    check_temperature(temperature)
    if top_k is not None:
        check_top_k(top_k)
    if top_p is not None:
        check_top_p(top_p)
    check_repetition_penalty(repetition_penalty)
    decoder = as_decoding_model(model, src, src_mask=src_mask, pad_id=pad_id)

    def choose(logits: Tensor, generated: Tensor) -> Tensor:
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        if repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, generated, repetition_penalty)
        if temperature != 1.0:
            logits = apply_temperature(logits, temperature)
        if top_k is not None:
            logits = apply_top_k(logits, top_k)
        if top_p is not None and top_p < 1.0:
            logits = apply_top_p(logits, top_p)
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    with eval_mode(model):
        return decode_one_per_row(
            decoder,
            choose,
            max_new_tokens=max_new_tokens,
            bos_id=bos_id,
            eos_id=eos_id,
            pad_id=pad_id,
            suppress_ids=suppress_ids,
        )
