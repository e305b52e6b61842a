"""Pre-training collators: BERT's masked-LM corruption and T5's span corruption.

Both take a batch of token ids and return model inputs with labels; both draw
their randomness from a ``torch.Generator`` so that a seed gives the same batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MaskedLMBatch", "MaskedLMCollator"]

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
