"""Batch containers and the collate functions that pad token-id lists into them.

Padding is dynamic: every batch is padded to its own longest sequence with ``pad_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

__all__ = [
    "ClassificationBatch",
    "LMBatch",
    "Seq2SeqBatch",
    "collate_classification",
    "collate_seq2seq",
    "pad_sequences",
]


@dataclass
class Seq2SeqBatch:
    """Padded ids: ``src (B, S)``, decoder input ``tgt_in (B, T)``, targets ``tgt_out (B, T)``.

    ``tgt_in = bos + tgt`` and ``tgt_out = tgt + eos`` (both padded with ``pad_id``), so
    ``tgt_out[:, t]`` is the token to predict after reading ``tgt_in[:, : t + 1]``.
    ``index (B,)``, when set, holds each row's position in the batcher's example list
    (to put outputs back in corpus order).
    """

    src: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    pad_id: int = 0
    index: Tensor | None = None

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Seq2SeqBatch:
        """A copy with every tensor on ``device``."""
        index = None if self.index is None else self.index.to(device, non_blocking=non_blocking)
        return replace(
            self,
            src=self.src.to(device, non_blocking=non_blocking),
            tgt_in=self.tgt_in.to(device, non_blocking=non_blocking),
            tgt_out=self.tgt_out.to(device, non_blocking=non_blocking),
            index=index,
        )

    @property
    def num_tokens(self) -> int:
        """Number of real (non-pad) target tokens, i.e. the tokens the loss is taken over."""
        return int((self.tgt_out != self.pad_id).sum())

    def __len__(self) -> int:
        return self.src.size(0)


@dataclass
class LMBatch:
    """Language-modelling windows: inputs ``x (B, T)`` and next tokens ``y (B, T)``.

    ``y[:, t] == x[:, t + 1]`` for ``t < T - 1``: both are slices of one token stream.
    """

    x: Tensor
    y: Tensor

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> LMBatch:
        """A copy with every tensor on ``device``."""
        return LMBatch(
            self.x.to(device, non_blocking=non_blocking),
            self.y.to(device, non_blocking=non_blocking),
        )

    @property
    def num_tokens(self) -> int:
        """Number of predicted tokens (windows are never padded)."""
        return self.y.numel()

    def __len__(self) -> int:
        return self.x.size(0)


@dataclass
class ClassificationBatch:
    """``input_ids (B, L)``, ``attention_mask (B, L)`` bool (True = real token), ``labels (B,)``."""

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor
    index: Tensor | None = None

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> ClassificationBatch:
        """A copy with every tensor on ``device``."""
        index = None if self.index is None else self.index.to(device, non_blocking=non_blocking)
        return ClassificationBatch(
            self.input_ids.to(device, non_blocking=non_blocking),
            self.attention_mask.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            index,
        )

    @property
    def num_tokens(self) -> int:
        """Number of real (non-pad) input tokens."""
        return int(self.attention_mask.sum())

    def __len__(self) -> int:
        return self.input_ids.size(0)


def pad_sequences(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    *,
    prefix: int | None = None,
    suffix: int | None = None,
) -> Tensor:
    """Right-pad id lists to ``(B, L)`` int64, optionally wrapping each in ``prefix``/``suffix``.

    ``L`` is the longest sequence (plus the added tokens); an empty batch is an error.
    """
    if not sequences:
        raise ValueError("cannot pad an empty list of sequences")
    extra = (prefix is not None) + (suffix is not None)
    length = max(len(seq) for seq in sequences) + extra
    out = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    start = int(prefix is not None)
    for row, seq in enumerate(sequences):
        if prefix is not None:
            out[row, 0] = prefix
        if len(seq):
            out[row, start : start + len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        if suffix is not None:
            out[row, start + len(seq)] = suffix
    return out


def collate_seq2seq(
    examples: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pad_id: int,
    bos_id: int,
    eos_id: int,
    index: Sequence[int] | None = None,
) -> Seq2SeqBatch:
    """``(src_ids, tgt_ids)`` pairs (no bos/eos yet) -> a dynamically padded ``Seq2SeqBatch``."""
    sources = [src for src, _ in examples]
    targets = [tgt for _, tgt in examples]
    return Seq2SeqBatch(
        src=pad_sequences(sources, pad_id),
        tgt_in=pad_sequences(targets, pad_id, prefix=bos_id),
        tgt_out=pad_sequences(targets, pad_id, suffix=eos_id),
        pad_id=pad_id,
        index=None if index is None else torch.as_tensor(index, dtype=torch.long),
    )


def collate_classification(
    examples: Sequence[tuple[Sequence[int], int]],
    *,
    pad_id: int,
    index: Sequence[int] | None = None,
) -> ClassificationBatch:
    """``(ids, label)`` pairs -> a dynamically padded ``ClassificationBatch``."""
    input_ids = pad_sequences([ids for ids, _ in examples], pad_id)
    lengths = torch.tensor([len(ids) for ids, _ in examples])
    # The mask comes from lengths, not from ids != pad_id: a text may contain pad_id.
    mask = torch.arange(input_ids.size(1))[None, :] < lengths[:, None]
    return ClassificationBatch(
        input_ids=input_ids,
        attention_mask=mask,
        labels=torch.tensor([label for _, label in examples], dtype=torch.long),
        index=None if index is None else torch.as_tensor(index, dtype=torch.long),
    )
