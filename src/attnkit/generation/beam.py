"""Batched beam search with length normalisation, early stopping and n-best lists.

All ``B`` inputs decode together on ``B * K`` rows (``K`` = ``beam_size``); the
search is vectorised over inputs and beams, and loops only over time steps.

Scores. A hypothesis ``y_1 .. y_n`` (generated tokens, ``eos`` included when it
ended with one, ``bos`` excluded) scores

    ``sum_i log p(y_i | y_<i, x) / n ** length_penalty``

as in Hugging Face ``generate``, except that ``n`` here counts the ``eos``
token whose log-probability the sum includes (recent Hugging Face versions
leave it out of ``n``). ``length_penalty = 0`` ranks by total log-probability
(favouring short outputs), ``1`` by mean per-token log-probability, larger
values favour longer outputs.

Each step (as Hugging Face) takes the ``2K`` best continuations of the live
beams by total log-probability. Those ending in ``eos`` among the top ``K``
become finished hypotheses; the ``K`` best others become the next beams.
Every input keeps its ``K`` best finished hypotheses. When ``max_new_tokens``
is reached, live beams of unfinished inputs join them as hypotheses without
``eos``.

Stopping (``early_stopping``), per input:

- ``True``: done as soon as it has ``K`` finished hypotheses (Hugging Face's
  ``early_stopping=True``). Fast; a longer hypothesis that would have scored
  better may be missed.
- ``False``: done only when no live beam can still beat the worst of its ``K``
  kept hypotheses. The bound is exact: log-probabilities are <= 0, so a live
  beam with total ``s`` can at best finish with total ``s`` at the length that
  maximises ``s / n ** length_penalty`` (the longest possible when
  ``length_penalty > 0``, the next one otherwise). This is Hugging Face's
  ``early_stopping="never"``; its ``False`` uses a heuristic instead.

Decoding stops when every input is done or at ``max_new_tokens``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from attnkit.generation.interface import (
    as_decoding_model,
    as_token_id,
    check_positive_int,
    check_special_ids,
    eval_mode,
)
from attnkit.generation.processors import apply_suppression, suppressed_ids

__all__ = ["BeamSearchOutput", "beam_search"]


@dataclass
class BeamSearchOutput:
    """The n-best lists of a beam search, best first.

    Attributes:
        sequences: ``(B, n, L)`` generated ids without ``bos``; each ends with
            ``eos`` (unless cut at ``max_new_tokens``) followed by ``pad_id``.
        scores: ``(B, n)`` length-normalised log-probabilities, descending along ``n``.
        lengths: ``(B, n)`` generated lengths (``eos`` included), the ``n`` of the score.

    Where an input has fewer than ``n`` possible hypotheses (tiny vocabularies),
    the missing ones have score ``-inf``, length 0 and only ``pad_id``.

    Example:
        >>> import torch
        >>> from attnkit.generation import BeamSearchOutput, beam_search
        >>> from attnkit.models import Transformer
        >>> model = Transformer(vocab_size=20, d_model=32, num_heads=4, num_layers=1, d_ff=64)
        >>> out = beam_search(model.eval(), torch.randint(3, 20, (2, 6)), beam_size=3,
        ...                   max_new_tokens=5, bos_id=1, eos_id=2, num_return_sequences=3)
        >>> isinstance(out, BeamSearchOutput), tuple(out.scores.shape), tuple(out.lengths.shape)
        (True, (2, 3), (2, 3))
        >>> bool((out.scores[:, :-1] >= out.scores[:, 1:]).all()), out.sequences.size(-1) <= 5
        (True, True)
    """

    sequences: Tensor
    scores: Tensor
    lengths: Tensor


def _check_beam_args(
    beam_size: int,
    max_new_tokens: int,
    num_return_sequences: int,
    length_penalty: float,
    early_stopping: bool,
) -> None:
    check_positive_int("beam_size", beam_size)
    check_positive_int("max_new_tokens", max_new_tokens)
    check_positive_int("num_return_sequences", num_return_sequences)
    if num_return_sequences > beam_size:
        raise ValueError(
            f"num_return_sequences must be <= beam_size = {beam_size} (the search keeps "
            f"beam_size hypotheses per input); got {num_return_sequences}"
        )
    if isinstance(length_penalty, bool) or not math.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be a finite number; got {length_penalty!r}")
    if not isinstance(early_stopping, bool):
        raise ValueError(f"early_stopping must be True or False; got {early_stopping!r}")


def _gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x (B, M, L)``, ``index (B, n)`` -> ``x[b, index[b]]`` as ``(B, n, L)``."""
    return x.gather(1, index[..., None].expand(-1, -1, x.size(-1)))


class _Hypotheses:
    """The ``K`` best finished hypotheses of every input, kept as tensors."""

    def __init__(self, batch_size: int, size: int, max_len: int, pad_id: int, like: Tensor):
        self.tokens = torch.full(
            (batch_size, size, max_len), pad_id, dtype=torch.long, device=like.device
        )
        self.scores = torch.full(
            (batch_size, size), -math.inf, dtype=like.dtype, device=like.device
        )
        self.lengths = torch.zeros(batch_size, size, dtype=torch.long, device=like.device)
        self.pad_id = pad_id

    def add(self, tokens: Tensor, scores: Tensor, length: int, keep: Tensor) -> None:
        """Offer ``tokens (B, M, length)`` with normalised ``scores (B, M)`` where ``keep (B, M)``.

        Existing hypotheses win ties, and among new ones the earlier column.
        """
        size, max_len = self.scores.size(1), self.tokens.size(2)
        padded = torch.nn.functional.pad(tokens, (0, max_len - length), value=self.pad_id)
        scores = scores.masked_fill(~keep, -math.inf)
        all_scores = torch.cat([self.scores, scores], dim=1)
        order = all_scores.sort(dim=1, descending=True, stable=True).indices[:, :size]
        self.scores = all_scores.gather(1, order)
        self.tokens = _gather_rows(torch.cat([self.tokens, padded], dim=1), order)
        new_lengths = torch.full_like(scores, length, dtype=torch.long)
        self.lengths = torch.cat([self.lengths, new_lengths], dim=1).gather(1, order)

    @property
    def count(self) -> Tensor:
        """``(B,)`` number of finished hypotheses kept."""
        return torch.isfinite(self.scores).sum(dim=1)


def beam_search(
    model: Any,
    src: Tensor | None,
    *,
    beam_size: int,
    max_new_tokens: int,
    bos_id: int | None = None,
    eos_id: int,
    pad_id: int = 0,
    length_penalty: float = 1.0,
    early_stopping: bool = True,
    num_return_sequences: int = 1,
    src_mask: Tensor | None = None,
    suppress_ids: Sequence[int] | None = None,
) -> BeamSearchOutput:
    """Beam search over a batch of inputs; returns each input's n-best list.

    See the module documentation for the score and the stopping rules.

    Args:
        model, src, src_mask: as for :func:`~attnkit.generation.greedy_decode`
            (an encoder-decoder model with ``src (B, S)``, or a
            :class:`~attnkit.generation.DecodingModel` with ``src=None``).
        beam_size: ``K`` >= 1 beams per input; ``beam_size=1`` with
            ``early_stopping=True`` is greedy decoding.
        max_new_tokens: longest hypothesis (``eos`` included).
        bos_id, eos_id, pad_id: special token ids; beam search needs exactly one
            ``eos_id`` (an integer; NumPy integers and one-element tensors count).
        length_penalty: exponent of the length normalisation (1.0: mean log-probability).
        early_stopping: ``True`` stops an input at ``K`` finished hypotheses;
            ``False`` once none of its live beams can still improve its n-best list.
        num_return_sequences: ``n``, 1 <= n <= ``beam_size``.
        suppress_ids: token ids never generated (their log-probabilities become
            ``-inf``, as Hugging Face's ``suppress_tokens``).

    Returns:
        :class:`BeamSearchOutput` with ``sequences (B, n, L)``, ``scores (B, n)``
        (best first) and ``lengths (B, n)``.

    Example:
        >>> import torch
        >>> from attnkit.generation import beam_search
        >>> from attnkit.models import Transformer
        >>> model = Transformer(vocab_size=20, d_model=32, num_heads=4, num_layers=1, d_ff=64)
        >>> src = torch.randint(3, 20, (2, 6))
        >>> result = beam_search(model.eval(), src, beam_size=4, max_new_tokens=8, bos_id=1,
        ...                      eos_id=2, num_return_sequences=2)
        >>> tuple(result.sequences.shape[:2]), tuple(result.scores.shape)
        ((2, 2), (2, 2))
    """
    _check_beam_args(
        beam_size, max_new_tokens, num_return_sequences, length_penalty, early_stopping
    )
    eos_id = as_token_id("eos_id", eos_id, expected="one integer token id for beam search")
    pad_id = as_token_id("pad_id", pad_id)
    decoder = as_decoding_model(model, src, src_mask=src_mask, pad_id=pad_id)
    with eval_mode(model):
        return _beam_search(
            decoder,
            beam_size=beam_size,
            max_new_tokens=max_new_tokens,
            bos_id=bos_id,
            eos_id=eos_id,
            pad_id=pad_id,
            length_penalty=length_penalty,
            early_stopping=early_stopping,
            num_return_sequences=num_return_sequences,
            suppress_ids=suppress_ids,
        )


def _beam_search(
    decoder: Any,
    *,
    beam_size: int,
    max_new_tokens: int,
    bos_id: int | None,
    eos_id: int,
    pad_id: int,
    length_penalty: float,
    early_stopping: bool,
    num_return_sequences: int,
    suppress_ids: Sequence[int] | None,
) -> BeamSearchOutput:
    k, max_len = beam_size, max_new_tokens
    state, logits = decoder.start(k, max_len, bos_id=bos_id)
    vocab = logits.size(-1)
    check_special_ids(vocab, eos_id=eos_id, pad_id=pad_id)
    forbidden = suppressed_ids(suppress_ids, vocab, logits.device)
    batch = logits.size(0) // k
    device = logits.device
    dtype = torch.float32 if logits.dtype in (torch.float16, torch.bfloat16) else logits.dtype

    # All beams of an input start identical: only beam 0 may expand at the first step.
    beam_scores = torch.full((batch, k), -math.inf, dtype=dtype, device=device)
    beam_scores[:, 0] = 0.0
    beam_tokens = torch.empty(batch, k, 0, dtype=torch.long, device=device)
    finished = _Hypotheses(batch, k, max_len, pad_id, beam_scores)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    num_candidates = min(2 * k, k * vocab)
    rank = torch.arange(num_candidates, device=device)
    row_offset = (torch.arange(batch, device=device) * k)[:, None]

    for step in range(max_len):
        length = step + 1  # generated tokens once this step's token is appended
        log_probs = apply_suppression(torch.log_softmax(logits.to(dtype), dim=-1), forbidden)
        log_probs = log_probs.view(batch, k, vocab)
        totals = (beam_scores[..., None] + log_probs).view(batch, k * vocab)
        cand_scores, cand_index = totals.topk(num_candidates, dim=1)
        cand_beam = torch.div(cand_index, vocab, rounding_mode="floor")
        cand_token = cand_index % vocab
        is_eos = cand_token == eos_id

        # eos continuations ranked in the top K become finished hypotheses.
        accept = is_eos & (rank < k) & torch.isfinite(cand_scores) & ~done[:, None]
        if bool(accept.any()):
            sequences = torch.cat([_gather_rows(beam_tokens, cand_beam), cand_token[..., None]], 2)
            finished.add(sequences, cand_scores / length**length_penalty, length, accept)

        # The K best non-eos continuations (in rank order) are the next beams.
        order = torch.where(is_eos, rank + num_candidates, rank).argsort(dim=1)[:, :k]
        beam_scores = cand_scores.gather(1, order)
        source_beam = cand_beam.gather(1, order)
        next_token = cand_token.gather(1, order)
        beam_tokens = torch.cat([_gather_rows(beam_tokens, source_beam), next_token[..., None]], 2)

        best_live = beam_scores.max(dim=1).values
        full = finished.count >= k
        if early_stopping:
            done |= full
        else:
            longest_gain = max_len if length_penalty > 0 else min(length + 1, max_len)
            best_possible = best_live / longest_gain**length_penalty
            done |= full & (best_possible <= finished.scores[:, -1])
        done |= ~torch.isfinite(best_live)  # nothing left to extend
        if step == max_len - 1 or bool(done.all()):
            break
        decoder.reorder(state, (row_offset + source_beam).view(-1))
        logits = decoder.step(state, next_token.view(-1, 1))

    # Inputs cut at max_new_tokens: their live beams are hypotheses too.
    live = ~done[:, None] & torch.isfinite(beam_scores)
    if bool(live.any()):
        length = beam_tokens.size(-1)
        finished.add(beam_tokens, beam_scores / length**length_penalty, length, live)

    n = num_return_sequences
    lengths = finished.lengths[:, :n]
    width = max(int(lengths.max()), 1)
    return BeamSearchOutput(finished.tokens[:, :n, :width], finished.scores[:, :n], lengths)
