"""The token-by-token loop shared by greedy decoding and sampling (one sequence per input)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from attnkit.generation.interface import (
    DecodingModel,
    as_token_id,
    check_special_ids,
    stop_token_list,
)
from attnkit.generation.processors import apply_suppression, suppressed_ids

# choose(logits (B, V), generated so far (B, t)) -> next tokens (B,)
ChooseToken = Callable[[Tensor, Tensor], Tensor]


def decode_one_per_row(
    decoder: DecodingModel,
    choose: ChooseToken,
    *,
    max_new_tokens: int,
    bos_id: int | None,
    eos_id: int | Sequence[int] | None,
    pad_id: int,
    suppress_ids: Sequence[int] | None = None,
) -> Tensor:
    """Generate until every row has produced a stop token or ``max_new_tokens`` are reached.

    ``eos_id`` is one stop token, several, or ``None`` (never stop early); integer
    scalars (NumPy integers, one-element tensors) count as ids. Their types are
    checked before the model runs, their range once its vocabulary is known.
    ``suppress_ids`` are never chosen (their logits are ``-inf`` before ``choose``).
    Returns ``(B, L)`` ids without ``bos``: each row is its tokens up to and
    including its stop token, then ``pad_id``. Loops over time steps only.
    """
    stop_list = stop_token_list(eos_id)
    pad_id = as_token_id("pad_id", pad_id)
    state, logits = decoder.start(1, max_new_tokens, bos_id=bos_id)
    stop_ids = stop_token_ids(stop_list, logits.size(-1), logits.device)
    check_special_ids(logits.size(-1), pad_id=pad_id)
    forbidden = suppressed_ids(suppress_ids, logits.size(-1), logits.device)
    batch_size = logits.size(0)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=logits.device)
    generated = torch.empty(batch_size, 0, dtype=torch.long, device=logits.device)
    for step in range(max_new_tokens):
        token = choose(apply_suppression(logits, forbidden), generated)
        token = token.masked_fill(finished, pad_id)
        generated = torch.cat([generated, token[:, None]], dim=1)
        finished |= torch.isin(token, stop_ids)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        logits = decoder.step(state, token[:, None])
    return generated


def stop_token_ids(ids: list[int], vocab_size: int, device: torch.device) -> Tensor:
    """The stop tokens (from :func:`stop_token_list`) as a ``(n,)`` long tensor, each
    checked to lie in the vocabulary."""
    for value in ids:
        check_special_ids(vocab_size, eos_id=value)
    return torch.tensor(ids, dtype=torch.long, device=device)
