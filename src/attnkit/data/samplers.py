"""Resumable batchers: token-budget length-bucketed seq2seq batches and classification batches.

Both follow the protocol in :mod:`attnkit.data.resumable` (deterministic per-epoch order from
``(seed, epoch)``, ``state_dict``/``load_state_dict``, round-robin sharding over ranks).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attnkit.data.batching import (
    ClassificationBatch,
    Seq2SeqBatch,
    collate_classification,
    collate_seq2seq,
)
from attnkit.data.resumable import ResumableBatches, epoch_rng, fingerprint, shard_round_robin

__all__ = ["ClassificationBatcher", "TokenBudgetBatcher"]


def _check_pairs(examples: Sequence[tuple], what: str) -> None:
    for i, example in enumerate(examples):
        if not isinstance(example, (tuple, list)) or len(example) != 2:
            raise TypeError(f"example {i} must be a {what} pair; got {example!r:.80}")


def _lengths(sequences: Sequence[Sequence[int]]) -> np.ndarray:
    return np.fromiter((len(seq) for seq in sequences), dtype=np.int64, count=len(sequences))


def _check_positive(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1 (or None where allowed); got {value}")


class TokenBudgetBatcher(ResumableBatches[list[int], Seq2SeqBatch]):
    """Length-bucketed seq2seq batches under a token budget, resumable and shardable.

    Args:
        examples: ``(src_ids, tgt_ids)`` pairs *without* bos/eos; the batcher adds them:
            ``tgt_in = bos + tgt``, ``tgt_out = tgt + eos``.
        max_tokens: budget per batch, counted with padding: ``B * max(S, T) <= max_tokens``
            where ``S``/``T`` are the padded source/target lengths (``T = len(tgt) + 1``).
            A single example longer than the budget forms a batch of its own (use
            ``max_src_len``/``max_tgt_len`` to drop such examples instead).
        pad_id, bos_id, eos_id: special ids (attnkit tokenizers: 0, 1, 2).
        seed: with the epoch, determines the shuffle (``numpy`` generator of ``(seed, epoch)``).
        shuffle: shuffle examples before bucketing and the batch order; without it the
            order is fixed (sorted by length, or corpus order with ``bucket_size=1``).
        bucket_size: examples per length-sorting pool. ``None`` sorts the whole data set
            (least padding; batch composition varies across epochs only among equal
            lengths); ``k`` sorts random pools of ``k``; ``1`` disables sorting.
        max_batch_size: optional cap on sentences per batch.
        rank, world_size: round-robin share of every global step (see ``resumable``).
        max_src_len, max_tgt_len: drop longer examples (counted in ``skipped``, by index).

    Yields ``Seq2SeqBatch`` with ``src (B, S)``, ``tgt_in (B, T)``, ``tgt_out (B, T)`` and
    ``index (B,)`` (positions in ``examples``), padded to the batch maximum.

    Example:
        >>> from attnkit.data import TokenBudgetBatcher
        >>> examples = [([5] * n, [6] * n) for n in (2, 3, 2, 5)]  # (src_ids, tgt_ids)
        >>> batcher = TokenBudgetBatcher(
        ...     examples, max_tokens=12, pad_id=0, bos_id=1, eos_id=2, seed=0, shuffle=False
        ... )
        >>> batches = list(batcher)  # sorted by length, packed while B * max(S, T) <= 12
        >>> tuple(b.index.tolist() for b in batches)
        ([0, 2, 1], [3])
        >>> tuple((tuple(b.src.shape), tuple(b.tgt_in.shape)) for b in batches)
        (((3, 3), (3, 4)), ((1, 5), (1, 6)))
    """

    def __init__(
        self,
        examples: Sequence[tuple[Sequence[int], Sequence[int]]],
        max_tokens: int,
        *,
        pad_id: int,
        bos_id: int,
        eos_id: int,
        seed: int,
        shuffle: bool = True,
        bucket_size: int | None = None,
        max_batch_size: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        max_src_len: int | None = None,
        max_tgt_len: int | None = None,
    ) -> None:
        super().__init__(seed=seed, rank=rank, world_size=world_size)
        _check_positive(max_tokens=max_tokens, bucket_size=bucket_size)
        _check_positive(max_batch_size=max_batch_size)
        self.examples = examples
        self.max_tokens = max_tokens
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.shuffle = shuffle
        self.bucket_size = bucket_size
        self.max_batch_size = max_batch_size
        _check_pairs(examples, "(src_ids, tgt_ids)")
        self._src_len = _lengths([src for src, _ in examples])
        tgt_len = _lengths([tgt for _, tgt in examples])
        self._tgt_len = tgt_len + 1  # bos/eos
        self._cost = np.maximum(self._src_len, self._tgt_len)
        keep = np.ones(len(examples), dtype=bool)
        if max_src_len is not None:
            keep &= self._src_len <= max_src_len
        if max_tgt_len is not None:
            keep &= tgt_len <= max_tgt_len
        self._kept = np.flatnonzero(keep)
        self.skipped: list[int] = np.flatnonzero(~keep).tolist()
        self._limits = (max_src_len, max_tgt_len)
        if not len(self._kept):
            raise ValueError(
                f"no examples left out of {len(examples)} (max_src_len={max_src_len}, "
                f"max_tgt_len={max_tgt_len})"
            )

    def _fingerprint(self) -> str:
        settings = (self.max_tokens, self.shuffle, self.bucket_size, self.max_batch_size)
        return fingerprint(settings, self._limits, self._src_len, self._tgt_len)

    def _plan(self, epoch: int) -> list[list[int]]:
        rng = epoch_rng(self.seed, epoch)
        order = rng.permutation(self._kept) if self.shuffle else self._kept
        size = len(order) if self.bucket_size is None else self.bucket_size
        sorted_order: list[int] = []
        for start in range(0, len(order), size):
            pool = order[start : start + size]
            # lexsort is stable and its last key is primary: length, then src, then tgt,
            # ties keep the shuffled order (so equal-length batches differ per epoch).
            pool = pool[np.lexsort((self._tgt_len[pool], self._src_len[pool], self._cost[pool]))]
            sorted_order.extend(pool.tolist())
        batches = self._pack(sorted_order)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return shard_round_robin(batches, self.rank, self.world_size)

    def _pack(self, order: list[int]) -> list[list[int]]:
        """Greedily fill batches in ``order`` while ``B * max_len <= max_tokens``."""
        cost = self._cost
        cap = self.max_batch_size or len(order)
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i in order:
            grown = max(longest, int(cost[i]))
            if current and (len(current) >= cap or (len(current) + 1) * grown > self.max_tokens):
                batches.append(current)
                current, grown = [], int(cost[i])
            current.append(i)
            longest = grown
        if current:
            batches.append(current)
        return batches

    def _build(self, item: list[int], epoch: int, position: int) -> Seq2SeqBatch:
        return collate_seq2seq(
            [self.examples[i] for i in item],
            pad_id=self.pad_id,
            bos_id=self.bos_id,
            eos_id=self.eos_id,
            index=item,
        )


class ClassificationBatcher(ResumableBatches[list[int], ClassificationBatch]):
    """Shuffled fixed-size classification batches, resumable and shardable.

    Args:
        examples: ``(token_ids, label)`` pairs (add bos/CLS when encoding if the model wants).
        batch_size: sentences per batch (the last batch may be smaller unless ``drop_last``).
        pad_id: padding id; ``attention_mask`` is True on real tokens.
        seed, shuffle: the order of epoch ``e`` is a permutation drawn from ``(seed, e)``;
            without ``shuffle`` the corpus order is kept (for evaluation).
        max_len: truncate longer inputs to ``max_len`` tokens (counted in ``num_truncated``).
        rank, world_size: round-robin share of every global step (see ``resumable``).
        bucket_batches: when shuffling, sort each pool of ``bucket_batches`` shuffled
            batches by length before cutting it into batches, then shuffle the batches:
            sentences of similar length share a batch, so padding (and time) shrinks.
            0 keeps plain shuffled batches.

    Yields ``ClassificationBatch`` with ``input_ids (B, L)``, ``attention_mask (B, L)``,
    ``labels (B,)`` and ``index (B,)``.

    Example:
        >>> from attnkit.data import ClassificationBatcher
        >>> examples = [([4] * n, n % 2) for n in (3, 1, 4, 1, 5)]  # (token_ids, label)
        >>> batcher = ClassificationBatcher(examples, batch_size=2, pad_id=0, seed=0, max_len=4)
        >>> len(batcher), batcher.num_truncated  # 3 batches; one input cut to 4 tokens
        (3, 1)
        >>> seen = [i for batch in batcher for i in batch.index.tolist()]
        >>> sorted(seen)  # one shuffled epoch visits every example once
        [0, 1, 2, 3, 4]
        >>> max(batch.input_ids.size(1) for batch in batcher)  # the next epoch, cut to max_len
        4
    """

    def __init__(
        self,
        examples: Sequence[tuple[Sequence[int], int]],
        batch_size: int,
        *,
        pad_id: int,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        max_len: int | None = None,
        bucket_batches: int = 0,
    ) -> None:
        super().__init__(seed=seed, rank=rank, world_size=world_size)
        _check_positive(batch_size=batch_size, max_len=max_len)
        if bucket_batches < 0:
            raise ValueError(f"bucket_batches must be >= 0; got {bucket_batches}")
        _check_pairs(examples, "(token_ids, label)")
        lengths = _lengths([ids for ids, _ in examples])
        self.examples = examples
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.max_len = max_len
        self.bucket_batches = bucket_batches
        self.num_truncated = 0 if max_len is None else int((lengths > max_len).sum())
        self._lengths = lengths

    def _fingerprint(self) -> str:
        settings = (self.batch_size, self.shuffle, self.drop_last, self.max_len)
        if self.bucket_batches:
            settings = (*settings, self.bucket_batches)
        return fingerprint(settings, self._lengths)

    def _plan(self, epoch: int) -> list[list[int]]:
        n = len(self.examples)
        rng = epoch_rng(self.seed, epoch)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        stop = n - n % self.batch_size if self.drop_last else n
        order = order[:stop]
        if self.shuffle and self.bucket_batches:
            order = self._sorted_pools(order)
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, stop, self.batch_size)]
        if self.shuffle and self.bucket_batches:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return shard_round_robin(batches, self.rank, self.world_size)

    def _sorted_pools(self, order: np.ndarray) -> np.ndarray:
        """``order`` with each pool of ``bucket_batches`` batches sorted by length."""
        pool = self.bucket_batches * self.batch_size
        pools = [order[i : i + pool] for i in range(0, len(order), pool)]
        return np.concatenate([p[np.argsort(self._lengths[p], kind="stable")] for p in pools])

    def _build(self, item: list[int], epoch: int, position: int) -> ClassificationBatch:
        chosen = [self.examples[i] for i in item]
        if self.max_len is not None:
            chosen = [(ids[: self.max_len], label) for ids, label in chosen]
        return collate_classification(chosen, pad_id=self.pad_id, index=item)
