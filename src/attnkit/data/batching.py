"""Batch containers and the collate functions that pad token-id lists into them.

Padding is dynamic: every batch is padded to its own longest sequence with ``pad_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import TypeVar

import torch
from torch import Tensor

__all__ = [
    "ClassificationBatch",
    "LMBatch",
    "Seq2SeqBatch",
    "collate_classification",
    "collate_seq2seq",
    "leading_rows",
    "pad_sequences",
]


@dataclass
class Seq2SeqBatch:
    """Padded ids: ``src (B, S)``, decoder input ``tgt_in (B, T)``, targets ``tgt_out (B, T)``.

    ``tgt_in = bos + tgt`` and ``tgt_out = tgt + eos`` (both padded with ``pad_id``), so
    ``tgt_out[:, t]`` is the token to predict after reading ``tgt_in[:, : t + 1]``.
    ``index (B,)``, when set, holds each row's position in the batcher's example list
    (to put outputs back in corpus order).

    Example:
        >>> import torch
        >>> from attnkit.data import Seq2SeqBatch
        >>> src = torch.tensor([[5, 6, 7], [8, 0, 0]])  # (B, S) = (2, 3), pad_id 0
        >>> tgt_in = torch.tensor([[1, 9, 10], [1, 11, 0]])  # bos + target
        >>> tgt_out = torch.tensor([[9, 10, 2], [11, 2, 0]])  # target + eos
        >>> batch = Seq2SeqBatch(src, tgt_in, tgt_out, pad_id=0)
        >>> len(batch), batch.num_tokens  # the loss covers 3 + 2 real target tokens
        (2, 5)
        >>> tuple(batch.to("cpu").tgt_out.shape)
        (2, 3)
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

    Example:
        >>> import torch
        >>> from attnkit.data import LMBatch
        >>> stream = torch.arange(10, 19)  # 9 token ids
        >>> batch = LMBatch(x=stream[:8].view(2, 4), y=stream[1:].view(2, 4))  # (B, T) = (2, 4)
        >>> batch.x[0].tolist(), batch.y[0].tolist()  # y is x shifted by one
        ([10, 11, 12, 13], [11, 12, 13, 14])
        >>> len(batch), batch.num_tokens
        (2, 8)
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
    """``input_ids (B, L)``, ``attention_mask (B, L)`` bool (True = real token), ``labels (B,)``.

    ``index (B,)``, when set, holds each row's position in the batcher's example list.

    Example:
        >>> import torch
        >>> from attnkit.data import ClassificationBatch
        >>> ids = torch.tensor([[4, 5, 6], [7, 0, 0]])  # (B, L) = (2, 3), right-padded
        >>> mask = torch.tensor([[True, True, True], [True, False, False]])
        >>> batch = ClassificationBatch(ids, mask, labels=torch.tensor([1, 0]))
        >>> len(batch), batch.num_tokens  # 3 + 1 real tokens
        (2, 4)
        >>> batch.to("cpu").labels.tolist()
        [1, 0]
    """

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

    Example:
        >>> from attnkit.data import pad_sequences
        >>> pad_sequences([[5, 6, 7], [8]], pad_id=0).tolist()
        [[5, 6, 7], [8, 0, 0]]
        >>> pad_sequences([[5, 6, 7], [8]], pad_id=0, prefix=1, suffix=2).tolist()
        [[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]]
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
    """``(src_ids, tgt_ids)`` pairs (no bos/eos yet) -> a dynamically padded ``Seq2SeqBatch``.

    ``src (B, S)`` is padded to the longest source, ``tgt_in``/``tgt_out (B, T)`` to the
    longest target plus one (the added ``bos``/``eos``).

    Example:
        >>> from attnkit.data import collate_seq2seq
        >>> pairs = [([5, 6, 7], [8, 9]), ([5], [8])]
        >>> batch = collate_seq2seq(pairs, pad_id=0, bos_id=1, eos_id=2, index=[4, 7])
        >>> batch.src.tolist()
        [[5, 6, 7], [5, 0, 0]]
        >>> batch.tgt_in.tolist(), batch.tgt_out.tolist()
        ([[1, 8, 9], [1, 8, 0]], [[8, 9, 2], [8, 2, 0]])
        >>> batch.index.tolist(), batch.num_tokens
        ([4, 7], 5)
    """
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
    """``(ids, label)`` pairs -> a dynamically padded ``ClassificationBatch``.

    ``input_ids``/``attention_mask (B, L)`` with ``L`` the longest input, ``labels (B,)``.

    Example:
        >>> from attnkit.data import collate_classification
        >>> batch = collate_classification([([4, 5, 6], 1), ([0, 7], 0)], pad_id=0)
        >>> batch.input_ids.tolist()
        [[4, 5, 6], [0, 7, 0]]
        >>> batch.attention_mask.tolist()  # from the lengths, so a real id 0 stays True
        [[True, True, True], [True, True, False]]
        >>> batch.labels.tolist()
        [1, 0]
    """
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


Rows = TypeVar("Rows")


def leading_rows(data: Rows, count: int | None) -> Rows:
    """A copy of the dataclass ``data`` with every tensor field cut to its first ``count``
    rows (``data`` itself for ``None``): the head of a fixed evaluation set.

    Example:
        >>> import torch
        >>> from dataclasses import dataclass
        >>> from attnkit.data.batching import leading_rows
        >>> @dataclass
        ... class Items:
        ...     ids: torch.Tensor
        ...     split: str
        >>> leading_rows(Items(torch.arange(5), "test"), 2)
        Items(ids=tensor([0, 1]), split='test')
    """
    if count is None:
        return data
    cut = {
        field.name: value[:count]
        for field in fields(data)  # type: ignore[arg-type]
        if isinstance(value := getattr(data, field.name), Tensor)
    }
    return replace(data, **cut)  # type: ignore[type-var]
