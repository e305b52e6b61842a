"""A language-modelling token stream on disk (memory-mapped ids) and resumable random windows.

As in nanoGPT, the whole corpus is one flat binary array of token ids (``uint16`` when the
vocabulary fits, else ``uint32``) read through ``numpy.memmap``: drawing a window is a slice,
so random access is fast and memory stays flat however large the corpus. A small JSON
sidecar (``<file>.json``) records the dtype and length so the file can be read back safely.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from attnkit.data.batching import LMBatch
from attnkit.data.resumable import ResumableBatches, fingerprint, seed_from

if TYPE_CHECKING:
    from attnkit.data.tokenizers import TextTokenizer

__all__ = ["LMWindowSource", "TokenStream"]

_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


class TokenStream:
    """Read-only memory-mapped token ids: ``len(stream)`` tokens, ``stream.tokens`` a memmap.

    Open an existing file with ``TokenStream(path)`` (dtype from the ``.json`` sidecar) or
    write one with ``TokenStream.build``.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from attnkit.data import CharTokenizer, TokenStream
        >>> tok = CharTokenizer.train(["abcd"])
        >>> path = Path(tempfile.mkdtemp()) / "train.bin"
        >>> stream = TokenStream.build("abcdabcd", path, tokenizer=tok)
        >>> len(stream), stream.dtype.name, len(TokenStream(path))  # reopened from disk
        (8, 'uint16', 8)
        >>> stream.window(2, 4).tolist(), tok.decode(stream.window(2, 4))
        ([6, 7, 4, 5], 'cdab')
        >>> x, y = stream.random_windows(batch_size=3, block_size=5)
        >>> tuple(x.shape), bool((x[:, 1:] == y[:, :-1]).all())  # y is x shifted by one
        ((3, 5), True)
    """

    def __init__(self, path: str | os.PathLike, dtype: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such token file")
        meta_file = _meta_path(self.path)
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        if dtype is None and "dtype" not in meta:
            raise ValueError(f"{self.path}: no {meta_file.name} sidecar; pass dtype=")
        if dtype is not None and meta.get("dtype", dtype) != dtype:
            raise ValueError(f"{self.path}: dtype {dtype!r} given, sidecar says {meta['dtype']!r}")
        name = dtype or meta["dtype"]
        if name not in _DTYPES:
            raise ValueError(f"{self.path}: dtype must be 'uint16' or 'uint32'; got {name!r}")
        self.dtype = np.dtype(_DTYPES[name])
        size = self.path.stat().st_size
        if size == 0 or size % self.dtype.itemsize:
            raise ValueError(f"{self.path}: {size} bytes is not a whole number of {self.dtype}")
        self.tokens = np.memmap(self.path, dtype=self.dtype, mode="r")
        if "num_tokens" in meta and meta["num_tokens"] != len(self.tokens):
            raise ValueError(
                f"{self.path}: has {len(self.tokens)} tokens, sidecar says {meta['num_tokens']}"
            )

    @classmethod
    def build(
        cls,
        data: str | Sequence[int] | np.ndarray | Tensor,
        path: str | os.PathLike,
        *,
        tokenizer: TextTokenizer | None = None,
        dtype: str | None = None,
    ) -> TokenStream:
        """Write ids (or ``tokenizer.encode(text)``) to ``path`` and open it.

        ``dtype`` is ``"uint16"`` or ``"uint32"``; by default the smallest that holds the
        largest id. Ids outside the dtype's range are an error, never wrapped around.
        """
        if isinstance(data, str):
            if tokenizer is None:
                raise ValueError("building a TokenStream from text needs tokenizer=")
            data = tokenizer.encode(data)
        ids = np.asarray(data.cpu() if isinstance(data, Tensor) else data, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(f"need a non-empty 1-D sequence of ids; got shape {ids.shape}")
        low, high = int(ids.min()), int(ids.max())
        dtype = dtype or ("uint16" if high < 2**16 else "uint32")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'uint16' or 'uint32'; got {dtype!r}")
        limit = np.iinfo(_DTYPES[dtype]).max
        if low < 0 or high > limit:
            raise ValueError(f"ids must lie in [0, {limit}] for {dtype}; got [{low}, {high}]")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")  # never leave a half-written stream behind
        ids.astype(_DTYPES[dtype]).tofile(tmp)
        os.replace(tmp, path)
        meta = {"dtype": dtype, "num_tokens": int(ids.size)}
        _meta_path(path).write_text(json.dumps(meta))
        return cls(path)

    def __len__(self) -> int:
        return len(self.tokens)

    def window(self, start: int, length: int) -> Tensor:
        """Ids ``[start, start + length)`` as an int64 tensor ``(length,)``."""
        return torch.from_numpy(self.tokens[start : start + length].astype(np.int64))

    def random_windows(
        self, batch_size: int, block_size: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(x, y)``, each ``(batch_size, block_size)`` int64, ``y`` = ``x`` shifted by one.

        Window starts are uniform over every position that leaves room for the shift.
        """
        if len(self) < block_size + 1:
            raise ValueError(
                f"{self.path}: {len(self)} tokens cannot hold a window of block_size "
                f"{block_size} plus the next token"
            )
        starts = torch.randint(len(self) - block_size, (batch_size,), generator=generator)
        rows = np.stack([self.tokens[s : s + block_size + 1] for s in starts.tolist()])
        rows = torch.from_numpy(rows.astype(np.int64))
        return rows[:, :-1], rows[:, 1:]


class LMWindowSource(ResumableBatches[int, LMBatch]):
    """``steps_per_epoch`` batches of random windows per epoch, resumable exactly.

    The windows of step ``position`` in ``epoch`` come from a generator seeded by
    ``(seed, epoch, position, rank)``, so a resumed run draws exactly the same windows and
    ranks draw different ones (independent, not disjoint: windows are random).
    Yields ``LMBatch(x (B, T), y (B, T))`` with ``B = batch_size``, ``T = block_size``.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from pathlib import Path
        >>> from attnkit.data import LMWindowSource, TokenStream
        >>> stream = TokenStream.build(list(range(100)), Path(tempfile.mkdtemp()) / "ids.bin")
        >>> settings = dict(batch_size=4, block_size=8, seed=0, steps_per_epoch=3)
        >>> source = LMWindowSource(stream, **settings)
        >>> first = next(iter(source))
        >>> tuple(first.x.shape), len(source), source.state_dict()["position"]
        ((4, 8), 3, 1)
        >>> resumed = LMWindowSource(stream, **settings)
        >>> resumed.load_state_dict(source.state_dict())
        >>> torch.equal(next(iter(resumed)).x, next(iter(source)).x)  # the same second batch
        True
    """

    def __init__(
        self,
        stream: TokenStream,
        batch_size: int,
        block_size: int,
        *,
        seed: int,
        steps_per_epoch: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(seed=seed, rank=rank, world_size=world_size)
        for name, value in (("batch_size", batch_size), ("block_size", block_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1; got {value}")
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1; got {steps_per_epoch}")
        if len(stream) < block_size + 1:
            raise ValueError(f"{len(stream)} tokens cannot hold block_size {block_size} + 1")
        self.stream = stream
        self.batch_size, self.block_size = batch_size, block_size
        self.steps_per_epoch = steps_per_epoch

    def _fingerprint(self) -> str:
        return fingerprint(len(self.stream), self.batch_size, self.block_size, self.steps_per_epoch)

    def _plan(self, epoch: int) -> range:
        return range(self.steps_per_epoch)

    def _build(self, item: Any, epoch: int, position: int) -> LMBatch:
        generator = torch.Generator().manual_seed(seed_from(self.seed, epoch, position, self.rank))
        x, y = self.stream.random_windows(self.batch_size, self.block_size, generator)
        return LMBatch(x, y)
