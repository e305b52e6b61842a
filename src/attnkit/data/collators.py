"""Pre-training collators: BERT's masked-LM corruption and T5's span corruption.

Both take a batch of token ids and return model inputs with labels; both draw
their randomness from a ``torch.Generator`` so that a seed gives the same batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "MaskedLMBatch",
    "MaskedLMCollator",
    "SpanCorruptionBatch",
    "SpanCorruptionCollator",
]

IGNORE_INDEX = -100


@dataclass
class MaskedLMBatch:
    """``input_ids (B, T)`` corrupted, ``labels (B, T)`` (-100 where not predicted),
    ``attention_mask (B, T)`` true at real tokens."""

    input_ids: Tensor
    labels: Tensor
    attention_mask: Tensor

    @property
    def num_tokens(self) -> int:
        """Predicted positions (what the loss averages over)."""
        return int((self.labels != IGNORE_INDEX).sum())

    def to(self, device: torch.device | str) -> MaskedLMBatch:
        return MaskedLMBatch(
            self.input_ids.to(device), self.labels.to(device), self.attention_mask.to(device)
        )


class MaskedLMCollator:
    """BERT's masking: pick ``probability`` of the maskable tokens, then 80/10/10.

    Of the picked positions, 80% become ``mask_id``, 10% a random token from
    ``[0, vocab_size)`` that is not special, 10% stay unchanged; labels hold
    the original ids at picked positions and ``-100`` elsewhere. Padding and
    ``special_ids`` (``[CLS]``, ``[SEP]``, ...) are never picked.

    Args:
        vocab_size: vocabulary size ``V``.
        mask_id: the ``[MASK]`` token id.
        pad_id: padding id (also excluded).
        special_ids: other ids never masked.
        probability: the share of maskable tokens to predict (0.15 in BERT).
        generator: the source of randomness (``None``: torch's global generator).

    ``collator(input_ids (B, T))`` -> :class:`MaskedLMBatch`.
    """

    def __init__(
        self,
        vocab_size: int,
        mask_id: int,
        *,
        pad_id: int = 0,
        special_ids: Iterable[int] = (),
        probability: float = 0.15,
        generator: torch.Generator | None = None,
    ) -> None:
        if not 0.0 < probability < 1.0:
            raise ValueError(f"probability must be in (0, 1); got {probability}")
        for name, value in (("mask_id", mask_id), ("pad_id", pad_id)):
            if not 0 <= value < vocab_size:
                raise ValueError(f"{name} must be in [0, {vocab_size}); got {value}")
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.pad_id = pad_id
        self.special = torch.tensor(sorted({mask_id, pad_id, *special_ids}), dtype=torch.long)
        self.probability = probability
        self.generator = generator

    def _uniform(self, shape: torch.Size) -> Tensor:
        return torch.rand(shape, generator=self.generator)

    def _random_tokens(self, count: int) -> Tensor:
        """``count`` ids drawn uniformly from the non-special vocabulary."""
        allowed = torch.ones(self.vocab_size, dtype=torch.bool)
        allowed[self.special] = False
        choices = allowed.nonzero().squeeze(1)
        picks = torch.randint(len(choices), (count,), generator=self.generator)
        return choices[picks]

    def __call__(self, input_ids: Tensor) -> MaskedLMBatch:
        if input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ValueError(
                f"input_ids must be integer ids of shape (B, T); got {input_ids.dtype} "
                f"{tuple(input_ids.shape)}"
            )
        ids = input_ids.cpu()
        maskable = ~torch.isin(ids, self.special)
        picked = maskable & (self._uniform(ids.shape) < self.probability)
        labels = torch.where(picked, ids, torch.full_like(ids, IGNORE_INDEX))
        choice = self._uniform(ids.shape)
        to_mask = picked & (choice < 0.8)
        to_random = picked & (choice >= 0.8) & (choice < 0.9)
        corrupted = ids.masked_fill(to_mask, self.mask_id)
        corrupted[to_random] = self._random_tokens(int(to_random.sum()))
        attention_mask = ids != self.pad_id
        device = input_ids.device
        return MaskedLMBatch(corrupted.to(device), labels.to(device), attention_mask.to(device))


@dataclass
class SpanCorruptionBatch:
    """T5 pre-training batch: corrupted ``input_ids (B, S)`` and ``labels (B, T)``,
    both padded (labels with ``-100``), and ``attention_mask (B, S)``."""

    input_ids: Tensor
    labels: Tensor
    attention_mask: Tensor

    @property
    def num_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    def to(self, device: torch.device | str) -> SpanCorruptionBatch:
        return SpanCorruptionBatch(
            self.input_ids.to(device), self.labels.to(device), self.attention_mask.to(device)
        )


class SpanCorruptionCollator:
    """T5's span corruption (Raffel et al. 2020, section 3.1.4).

    About ``noise_density`` of each sequence's tokens, in spans of mean length
    ``mean_span_length``, are dropped from the input; each dropped span is
    replaced by one sentinel, and the target lists the sentinels each followed
    by the span it stands for, then ``eos``::

        input:  Thank you <X> me to your party <Y> week .
        target: <X> for inviting <Y> last <Z>

    Sentinel ``k`` is ``first_sentinel_id - k`` (T5's ``<extra_id_0>`` is the
    highest id). Randomness comes from ``generator``.

    ``collator(sequences)`` takes a list of 1-D id tensors (no padding, no eos)
    and returns a :class:`SpanCorruptionBatch`.
    """

    def __init__(
        self,
        first_sentinel_id: int,
        *,
        eos_id: int = 1,
        pad_id: int = 0,
        noise_density: float = 0.15,
        mean_span_length: float = 3.0,
        generator: torch.Generator | None = None,
    ) -> None:
        if not 0.0 < noise_density < 1.0:
            raise ValueError(f"noise_density must be in (0, 1); got {noise_density}")
        if mean_span_length < 1.0:
            raise ValueError(f"mean_span_length must be >= 1; got {mean_span_length}")
        self.first_sentinel_id = first_sentinel_id
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.noise_density = noise_density
        self.mean_span_length = mean_span_length
        self.generator = generator

    def _segments(self, total: int, parts: int) -> list[int]:
        """``parts`` positive lengths summing to ``total``, uniformly at random."""
        cuts = torch.randperm(total - 1, generator=self.generator)[: parts - 1] + 1
        edges = [0, *sorted(cuts.tolist()), total]
        return [b - a for a, b in itertools.pairwise(edges)]

    def noise_mask(self, length: int) -> Tensor:
        """``(length,)`` bool: ``True`` at the tokens to drop, in alternating spans."""
        noise = min(max(round(length * self.noise_density), 1), length - 1)
        spans = max(min(round(noise / self.mean_span_length), noise, length - noise), 1)
        noise_lengths = self._segments(noise, spans)
        keep_lengths = self._segments(length - noise, spans)
        mask = torch.zeros(length, dtype=torch.bool)
        start = 0
        for keep, drop in zip(keep_lengths, noise_lengths, strict=True):
            start += keep
            mask[start : start + drop] = True
            start += drop
        return mask

    def _replace_spans(self, tokens: Tensor, dropped: Tensor) -> Tensor:
        """Drop the ``dropped`` tokens, each run of them replaced by the next sentinel."""
        previous = torch.cat([torch.tensor([False]), dropped[:-1]])
        starts = dropped & ~previous
        sentinels = self.first_sentinel_id - (starts.cumsum(0) - 1)
        return torch.where(starts, sentinels, tokens)[starts | ~dropped]

    def corrupt(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """One sequence ``(L,)`` -> ``(input ids, target ids)``, both ending in ``eos``.

        Spans alternate kept / noise, starting with a kept one, so the target
        is the same replacement applied to the kept tokens: sentinel ``k``
        then noise span ``k``.
        """
        if tokens.dim() != 1 or tokens.numel() < 2:
            raise ValueError(
                f"each sequence must be 1-D with at least 2 tokens; got {tuple(tokens.shape)}"
            )
        noise = self.noise_mask(tokens.numel())
        eos = torch.tensor([self.eos_id])
        inputs = self._replace_spans(tokens, noise)
        targets = self._replace_spans(tokens, ~noise)
        return torch.cat([inputs, eos]), torch.cat([targets, eos])

    def __call__(self, sequences: list[Tensor]) -> SpanCorruptionBatch:
        pairs = [self.corrupt(seq.cpu().long()) for seq in sequences]
        inputs = torch.nn.utils.rnn.pad_sequence(
            [p[0] for p in pairs], batch_first=True, padding_value=self.pad_id
        )
        labels = torch.nn.utils.rnn.pad_sequence(
            [p[1] for p in pairs], batch_first=True, padding_value=IGNORE_INDEX
        )
        lengths = torch.tensor([p[0].numel() for p in pairs])
        mask = torch.arange(inputs.size(1))[None, :] < lengths[:, None]
        return SpanCorruptionBatch(inputs, labels, mask)
