"""Synthetic sequence tasks that need no downloaded data (for demos and learning tests)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnkit.data.batching import Seq2SeqBatch

__all__ = ["ReversalTask", "Seq2SeqBatch"]


@dataclass(frozen=True)
class ReversalTask:
    """Reverse a random digit sequence: ``3 1 4 1 5`` -> ``5 1 4 1 3``.

    Token ids: ``pad=0, bos=1, eos=2``, digit ``d`` is ``d + 3``. ``sample`` returns a
    ``Seq2SeqBatch`` with ``src (B, max_len)`` and ``tgt_in``/``tgt_out (B, max_len + 1)``.

    Example:
        >>> import torch
        >>> from attnkit.data import ReversalTask
        >>> task = ReversalTask(min_len=3, max_len=6)
        >>> batch = task.sample(4, generator=torch.Generator().manual_seed(0))
        >>> tuple(batch.src.shape), tuple(batch.tgt_out.shape), task.vocab_size
        ((4, 6), (4, 7), 13)
        >>> source, target = task.decode_digits(batch.src[0]), task.decode_digits(batch.tgt_out[0])
        >>> target.split() == source.split()[::-1]
        True
    """

    min_len: int = 4
    max_len: int = 10
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    num_digits: int = 10

    @property
    def vocab_size(self) -> int:
        return self.num_digits + 3

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Seq2SeqBatch:
        """A batch of random sequences with lengths uniform in ``[min_len, max_len]``."""
        lengths = torch.randint(self.min_len, self.max_len + 1, (batch_size,), generator=generator)
        digits = torch.randint(3, self.vocab_size, (batch_size, self.max_len), generator=generator)
        positions = torch.arange(self.max_len)[None, :]
        real = positions < lengths[:, None]
        src = digits.masked_fill(~real, self.pad_id)
        # reversed[i, j] = src[i, length_i - 1 - j] for j < length_i
        reverse_index = (lengths[:, None] - 1 - positions).clamp_min(0)
        reversed_digits = src.gather(1, reverse_index).masked_fill(~real, self.pad_id)
        tgt_out = torch.cat([reversed_digits, torch.full((batch_size, 1), self.pad_id)], dim=1)
        tgt_out[torch.arange(batch_size), lengths] = self.eos_id
        tgt_in = torch.cat([torch.full((batch_size, 1), self.bos_id), tgt_out[:, :-1]], dim=1)
        tgt_in = tgt_in.masked_fill(tgt_in == self.eos_id, self.pad_id)
        return Seq2SeqBatch(src, tgt_in, tgt_out, pad_id=self.pad_id)

    def decode_digits(self, ids: Tensor) -> str:
        """Readable digits of a 1-D id sequence, stopping at ``eos``."""
        out = []
        for token in ids.tolist():
            if token == self.eos_id:
                break
            if token >= 3:
                out.append(str(token - 3))
        return " ".join(out)
