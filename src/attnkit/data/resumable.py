"""The resumable batch-source protocol shared by every attnkit batcher.

A batch source is an epoch-by-epoch sequence of batches whose order is a pure function of
``(seed, epoch)``. Its *data position* is ``(epoch, position)``, where ``position`` counts
the batches already handed out in the current epoch. The protocol (relied on by the Trainer):

* ``iter(source)`` yields the batches of the current epoch starting at ``position``.
  ``position`` is advanced *before* a batch is handed out, so a checkpoint written while
  that batch is being trained on does not replay it.
* After the last batch of an epoch the source moves on at once: ``epoch += 1`` and
  ``position = 0``; the next ``iter()`` gives the next epoch (a different shuffle).
  Breaking out of a loop early keeps the position, so the next ``iter()`` continues.
* ``state_dict()`` -> ``{"epoch", "position", "seed", "world_size", "fingerprint", ...}``
  (plain ints and strings) and ``load_state_dict(state)`` restore the position. Loading a
  state saved for other data or settings is an error, not a silent different order.
* ``len(source)`` is the number of batches per epoch for this rank (current epoch).
* With ``world_size > 1`` all ranks plan the same global batch list, truncate it to a
  multiple of ``world_size`` and take it round-robin (rank ``r`` gets global batches
  ``r, r + W, r + 2W, ...``): at every global step each rank has exactly one batch, the
  shares are disjoint, and every rank has the same ``(epoch, position)``, so one rank's
  state can be loaded by all. Up to ``W - 1`` batches per epoch are dropped (different ones
  each epoch, as the truncation happens after shuffling).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = ["ResumableBatches", "epoch_rng", "seed_from", "shard_round_robin"]

BatchT = TypeVar("BatchT")
PlanT = TypeVar("PlanT")


def epoch_rng(seed: int, epoch: int, *more: int) -> np.random.Generator:
    """A numpy generator that depends only on ``(seed, epoch, *more)``."""
    return np.random.default_rng([seed, epoch, *more])


def seed_from(*values: int) -> int:
    """A 63-bit seed (for ``torch.Generator.manual_seed``) derived from ``values``."""
    state = np.random.SeedSequence(list(values)).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def shard_round_robin(items: Sequence[PlanT], rank: int, world_size: int) -> list[PlanT]:
    """Rank ``rank``'s share: ``items[rank::world_size]`` after truncating to a multiple."""
    usable = len(items) - len(items) % world_size
    return list(items[rank:usable:world_size])


def fingerprint(*parts: Any) -> str:
    """A short stable hash of settings and data sizes (to refuse loading a foreign state)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    return digest.hexdigest()[:16]


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"need world_size >= 1 and 0 <= rank < world_size; got rank={rank}, "
            f"world_size={world_size}"
        )


class ResumableBatches(ABC, Generic[PlanT, BatchT]):
    """Base class: subclasses say how to plan an epoch and how to build one batch.

    ``_plan(epoch)`` returns this rank's list of plan items (e.g. example-index lists);
    ``_build(item, epoch, position)`` turns one into a batch. Plans are cached per epoch.

    Example:
        >>> from attnkit.data import ResumableBatches
        >>> class Chunks(ResumableBatches):  # batches of example indices, fixed order
        ...     def _plan(self, epoch):
        ...         return [[0, 1], [2, 3], [4]]
        ...     def _build(self, item, epoch, position):
        ...         return item
        ...     def _fingerprint(self):
        ...         return "5 examples, batch size 2"
        >>> source = Chunks(seed=0)
        >>> next(iter(source)), source.state_dict()["position"]  # a checkpoint here...
        ([0, 1], 1)
        >>> resumed = Chunks(seed=0)
        >>> resumed.load_state_dict(source.state_dict())
        >>> list(resumed), resumed.epoch  # ...resumes with the next batch, then epoch 1
        ([[2, 3], [4]], 1)
    """

    def __init__(self, *, seed: int, rank: int = 0, world_size: int = 1) -> None:
        _check_rank(rank, world_size)
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self._epoch = 0
        self._position = 0
        self._cached: tuple[int, Sequence[PlanT]] | None = None

    # -- to implement ---------------------------------------------------------------------
    @abstractmethod
    def _plan(self, epoch: int) -> Sequence[PlanT]:
        """The epoch's batches as plan items (e.g. lists of example indices), in order."""

    @abstractmethod
    def _build(self, item: PlanT, epoch: int, position: int) -> BatchT:
        """The batch of one plan item."""

    @abstractmethod
    def _fingerprint(self) -> str:
        """Identifies the data and settings that determine the batch order."""

    # -- protocol ---------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The current epoch (0-based)."""
        return self._epoch

    @property
    def position(self) -> int:
        """Batches already handed out in the current epoch."""
        return self._position

    def plan(self, epoch: int | None = None) -> Sequence[PlanT]:
        """This rank's plan for ``epoch`` (default: the current one)."""
        epoch = self._epoch if epoch is None else epoch
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, self._plan(epoch))
        return self._cached[1]

    def __len__(self) -> int:
        return len(self.plan())

    def __iter__(self) -> Iterator[BatchT]:
        plan = self.plan()
        if not plan:
            raise ValueError(
                f"{type(self).__name__} has no batches for rank {self.rank} of "
                f"{self.world_size} in epoch {self._epoch}: too little data for this "
                "batch size / world size"
            )
        epoch = self._epoch
        for position in range(self._position, len(plan)):
            if (self._epoch, self._position) != (epoch, position):
                raise RuntimeError(
                    f"{type(self).__name__} position changed during iteration (expected "
                    f"epoch {epoch} position {position}, found {self._epoch}, "
                    f"{self._position}): use one iterator at a time"
                )
            batch = self._build(plan[position], epoch, position)
            self._advance(epoch, position + 1, len(plan))
            yield batch

    def _advance(self, epoch: int, position: int, size: int) -> None:
        if position >= size:
            self._epoch, self._position = epoch + 1, 0
        else:
            self._epoch, self._position = epoch, position

    def state_dict(self) -> dict[str, Any]:
        """The data position and what it is valid for (plain ints/strings)."""
        return {
            "epoch": self._epoch,
            "position": self._position,
            "seed": self.seed,
            "world_size": self.world_size,
            "kind": type(self).__name__,
            "fingerprint": self._fingerprint(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position saved by ``state_dict`` of an identically configured source."""
        mine = self.state_dict()
        for key in ("kind", "seed", "world_size", "fingerprint"):
            if key in state and state[key] != mine[key]:
                raise ValueError(
                    f"cannot resume {type(self).__name__}: state has {key}={state[key]!r}, "
                    f"this source has {key}={mine[key]!r} (different data or settings "
                    "would give a different batch order)"
                )
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or position < 0:
            raise ValueError(f"epoch and position must be >= 0; got {epoch}, {position}")
        size = len(self.plan(epoch))
        if position > size:
            raise ValueError(f"position {position} is past the {size} batches of epoch {epoch}")
        self._advance(epoch, position, size)  # position == size means the next epoch
