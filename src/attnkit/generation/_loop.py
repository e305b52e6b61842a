"""The token-by-token loop shared by greedy decoding and sampling (one sequence per input)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from attnkit.generation.interface import DecodingModel, check_special_ids

# choose(logits (B, V), generated so far (B, t)) -> next tokens (B,)
ChooseToken = Callable[[Tensor, Tensor], Tensor]


def decode_one_per_row(
    decoder: DecodingModel,
    choose: ChooseToken,
    *,
    max_new_tokens: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
) -> Tensor:
    """Generate until every row has produced ``eos`` or ``max_new_tokens`` are reached.

    Returns ``(B, L)`` ids without ``bos``: each row is its tokens up to and
    including ``eos``, then ``pad_id``. Loops over time steps only.
    """
    state, logits = decoder.start(1, max_new_tokens, bos_id=bos_id)
    check_special_ids(logits.size(-1), eos_id=eos_id, pad_id=pad_id)
    batch_size = logits.size(0)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=logits.device)
    generated = torch.empty(batch_size, 0, dtype=torch.long, device=logits.device)
    for step in range(max_new_tokens):
        token = choose(logits, generated).masked_fill(finished, pad_id)
        generated = torch.cat([generated, token[:, None]], dim=1)
        finished |= token == eos_id
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        logits = decoder.step(state, token[:, None])
    return generated
