"""Captioned 2x2 mosaics of Fashion-MNIST images (for Show, Attend and Tell).

A mosaic is a ``56 x 56`` image made of four ``28 x 28`` Fashion-MNIST images in
the quadrants top left, top right, bottom left, bottom right (quadrant indices
0, 1, 2, 3). Its caption names each object together with its place::

    a sneaker beside a bag above a shirt beside a dress
      (TL)            (TR)       (BL)            (BR)

the top row left to right, ``above``, the bottom row left to right. The grammar
is fixed, so the word at index 1, 4, 7, 10 of a caption is the object of
quadrant 0, 1, 2, 3 (:data:`OBJECT_WORD_QUADRANTS`): every object word has a
known quadrant, which is what attention localisation is measured against.

Splits: training mosaics are composed only of images of the official train
split, test mosaics only of test-split images; a seeded slice of the train
split (``valid_images``) is held out for validation mosaics and never used for
training mosaics. Everything is a pure function of the seed.

Tokens: a closed word-level vocabulary (:class:`WordVocabulary`) with the
library's special ids ``<pad>=0, <bos>=1, <eos>=2, <unk>=3``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from attnkit.data.batching import leading_rows
from attnkit.data.images import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    load_fashion_mnist_holdout,
    normalize_pixels,
)
from attnkit.data.resumable import ResumableBatches, epoch_rng, fingerprint, shard_round_robin
from attnkit.data.tokenizers import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID

__all__ = [
    "CAPTION_LENGTH",
    "CLASS_WORDS",
    "OBJECT_WORD_QUADRANTS",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "QUADRANT_NAMES",
    "CaptionBatch",
    "MosaicBatcher",
    "MosaicSplits",
    "Mosaics",
    "WordVocabulary",
    "build_mosaics",
    "caption_for",
    "caption_vocabulary",
    "compose_mosaics",
    "load_mosaic_splits",
    "parse_caption",
    "quadrant_attention",
]

# One word per Fashion-MNIST class, in label order (so that captions tokenise word by word).
CLASS_WORDS = (
    "tshirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "boot",
)
QUADRANT_NAMES = ("top left", "top right", "bottom left", "bottom right")
_TEMPLATE = ("a", None, "beside", "a", None, "above", "a", None, "beside", "a", None)
# Word index in a caption -> quadrant of the object it names.
OBJECT_WORD_QUADRANTS: dict[int, int] = {
    index: quadrant
    for quadrant, index in enumerate(i for i, word in enumerate(_TEMPLATE) if word is None)
}
CAPTION_LENGTH = len(_TEMPLATE)
# Fashion-MNIST pixel statistics (of pixel / 255 over the training set); a mosaic
# is four such images, so it has the same statistics.
PIXEL_MEAN, PIXEL_STD = FASHION_MNIST_MEAN, FASHION_MNIST_STD
TILE = 28


# ----------------------------------------------------------------------------- vocabulary


class WordVocabulary:
    """A closed word-level vocabulary: specials ``<pad> <bos> <eos> <unk>`` then ``words``.

    ``encode`` splits at whitespace and refuses words outside the vocabulary
    (the grammars that use it are closed, so an unknown word is a bug);
    ``decode`` skips ``<pad>``/``<bos>`` and stops at the first ``<eos>``.

    Example:
        >>> from attnkit.data import WordVocabulary
        >>> vocab = WordVocabulary(["a", "cat", "sat"])
        >>> vocab.vocab_size, vocab.encode("a cat sat", add_bos=True, add_eos=True)
        (7, [1, 4, 5, 6, 2])
        >>> vocab.encode_batch(["cat sat", "a cat sat"]).tolist()  # (B, L), right-padded
        [[5, 6, 0], [4, 5, 6]]
        >>> vocab.decode([1, 5, 6, 2, 4])  # stops at <eos>
        'cat sat'
        >>> vocab.encode("a dog")
        Traceback (most recent call last):
        ...
        ValueError: word(s) ['dog'] are not in the vocabulary ['a', 'cat', 'sat']; got 'a dog'
    """

    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    def __init__(self, words: Sequence[str]) -> None:
        words = list(words)
        bad = [w for w in words if not w or w.split() != [w] or w in SPECIAL_TOKENS]
        if bad or len(set(words)) != len(words):
            raise ValueError(
                f"words must be distinct non-special words without spaces; got {bad or words}"
            )
        self.words = tuple(words)
        self.itos = (*SPECIAL_TOKENS, *words)
        self.stoi = {word: i for i, word in enumerate(self.itos)}

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included."""
        return len(self.itos)

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Ids of the whitespace-separated words of ``text``."""
        words = text.split()
        unknown = [w for w in words if w not in self.stoi or w in SPECIAL_TOKENS]
        if unknown:
            raise ValueError(
                f"word(s) {unknown} are not in the vocabulary {list(self.words)}; got {text!r}"
            )
        ids = [self.stoi[w] for w in words]
        return [BOS_ID] * add_bos + ids + [EOS_ID] * add_eos

    def encode_batch(
        self, texts: Sequence[str], *, add_bos: bool = False, add_eos: bool = False
    ) -> Tensor:
        """``(B, L)`` ids of ``texts``, right-padded with ``<pad>``."""
        rows = [self.encode(t, add_bos=add_bos, add_eos=add_eos) for t in texts]
        out = torch.full((len(rows), max(map(len, rows), default=0)), PAD_ID, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Words of ``ids (L,)`` up to the first ``<eos>`` (``<pad>``/``<bos>`` skipped)."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        words = []
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"id {i} is outside the vocabulary [0, {self.vocab_size})")
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                words.append(self.itos[i])
        return " ".join(words)

    def decode_batch(self, ids: Tensor) -> list[str]:
        """``decode`` for each row of ``(B, L)``."""
        return [self.decode(row) for row in ids.tolist()]


def caption_vocabulary() -> WordVocabulary:
    """The vocabulary of the mosaic captions (17 ids)."""
    return WordVocabulary([*dict.fromkeys(w for w in _TEMPLATE if w), *CLASS_WORDS])


# ----------------------------------------------------------------------------- grammar


def caption_for(labels: Sequence[int] | Tensor) -> str:
    """The caption of a mosaic whose quadrants (TL, TR, BL, BR) hold ``labels``."""
    labels = labels.tolist() if isinstance(labels, Tensor) else list(labels)
    if len(labels) != 4 or any(not 0 <= int(y) < len(CLASS_WORDS) for y in labels):
        raise ValueError(f"labels must be 4 class ids in [0, {len(CLASS_WORDS)}); got {labels}")
    objects = iter(CLASS_WORDS[int(y)] for y in labels)
    return " ".join(word if word else next(objects) for word in _TEMPLATE)


def parse_caption(text: str) -> tuple[int, int, int, int]:
    """The quadrant labels (TL, TR, BL, BR) a caption names; inverse of :func:`caption_for`."""
    words = text.split()
    expected = " ".join(w or "<object>" for w in _TEMPLATE)
    if len(words) != CAPTION_LENGTH:
        raise ValueError(f"a caption has {CAPTION_LENGTH} words ({expected!r}); got {text!r}")
    labels = []
    for index, (word, slot) in enumerate(zip(words, _TEMPLATE, strict=True)):
        if slot is not None and word != slot:
            raise ValueError(f"word {index} must be {slot!r} ({expected!r}); got {text!r}")
        if slot is None:
            if word not in CLASS_WORDS:
                raise ValueError(
                    f"word {index} must name an object (one of {list(CLASS_WORDS)}); got {word!r}"
                )
            labels.append(CLASS_WORDS.index(word))
    return tuple(labels)  # type: ignore[return-value]


# ----------------------------------------------------------------------------- geometry


def compose_mosaics(tiles: Tensor) -> Tensor:
    """``(N, 4, C, h, w)`` tiles (TL, TR, BL, BR) -> ``(N, C, 2h, 2w)`` mosaics."""
    if tiles.dim() != 5 or tiles.size(1) != 4:
        raise ValueError(f"tiles must have shape (N, 4, C, h, w); got {tuple(tiles.shape)}")
    n, _, channels, height, width = tiles.shape
    grid = tiles.reshape(n, 2, 2, channels, height, width).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(n, channels, 2 * height, 2 * width)


def quadrant_attention(weights: Tensor, grid: int) -> Tensor:
    """Attention mass per quadrant: ``(..., grid * grid)`` row-major cells -> ``(..., 4)``.

    ``grid`` must be even, so that each quadrant is a whole ``grid/2 x grid/2`` block.
    """
    if grid < 2 or grid % 2:
        raise ValueError(f"grid must be even (quadrants of whole cells); got {grid}")
    if weights.size(-1) != grid * grid:
        raise ValueError(
            f"weights must end in grid * grid = {grid * grid} cells; got {tuple(weights.shape)}"
        )
    half = grid // 2
    cells = weights.unflatten(-1, (2, half, 2, half))  # (..., row half, y, col half, x)
    return cells.sum(dim=(-3, -1)).flatten(-2)


# ----------------------------------------------------------------------------- data sets


@dataclass
class Mosaics:
    """A fixed set of mosaics.

    Attributes:
        images: ``(N, C, 56, 56)`` uint8.
        labels: ``(N, 4)`` class of the TL, TR, BL, BR quadrant.
        sources: ``(N, 4)`` index of each quadrant's image in its official split.
        split: ``"train"`` or ``"test"``: the official split the sources come from.
    """

    images: Tensor
    labels: Tensor
    sources: Tensor
    split: str

    def __len__(self) -> int:
        return self.images.size(0)

    def captions(self) -> list[str]:
        """The reference caption of every mosaic."""
        return [caption_for(row) for row in self.labels.tolist()]

    def head(self, count: int | None) -> Mosaics:
        """The first ``count`` mosaics (all for ``None``)."""
        return leading_rows(self, count)

    def batches(self, batch_size: int, vocabulary: WordVocabulary) -> Iterator[CaptionBatch]:
        """The mosaics in order as :class:`CaptionBatch` objects of ``batch_size`` mosaics."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            yield make_caption_batch(self.images[start:stop], self.labels[start:stop], vocabulary)


def _groups(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``(count, 4)`` source indices: consecutive fours of fresh permutations of ``pool``."""
    needed = 4 * count
    chunks = [pool[rng.permutation(len(pool))] for _ in range(-(-needed // len(pool)))]
    return np.concatenate(chunks)[:needed].reshape(count, 4)


def build_mosaics(
    images: Tensor,
    labels: Tensor,
    *,
    seed: int,
    split: str,
    count: int | None = None,
    indices: Sequence[int] | Tensor | None = None,
) -> Mosaics:
    """Deterministic mosaics of ``images (N, C, 28, 28)`` with ``labels (N,)``.

    Args:
        seed: the only source of randomness.
        split: the official split ``images`` belong to (recorded, and mixed into the seed).
        count: mosaics to build; default ``len(indices) // 4``, which uses every
            source image at most once. More reuse images (fresh permutations).
        indices: the images that may be used (default: all).
    """
    if images.dim() != 4 or images.shape[-2:] != (TILE, TILE) or labels.shape != images.shape[:1]:
        raise ValueError(
            f"images must be (N, C, {TILE}, {TILE}) with labels (N,); got "
            f"{tuple(images.shape)} and {tuple(labels.shape)}"
        )
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    pool = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
    count = len(pool) // 4 if count is None else count
    if len(pool) < 4 or count < 1:
        raise ValueError(
            f"need at least 4 source images and count >= 1; got {len(pool)} and {count}"
        )
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    sources = torch.from_numpy(_groups(pool, count, rng))
    tiles = images[sources.flatten()].reshape(count, 4, *images.shape[1:])
    return Mosaics(compose_mosaics(tiles), labels[sources], sources, split)


@dataclass
class MosaicSplits:
    """Training sources and the fixed validation and test mosaics.

    Attributes:
        train_images, train_labels: the train-split images training mosaics are
            composed from (fresh each epoch by :class:`MosaicBatcher`).
        train_indices: their indices in the official train split.
        valid: mosaics of held-out train-split images (disjoint from ``train_indices``).
        test: mosaics of test-split images, each used at most once.
    """

    train_images: Tensor
    train_labels: Tensor
    train_indices: Tensor
    valid: Mosaics
    test: Mosaics


def load_mosaic_splits(
    root: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    valid_images: int = 2000,
    limit_train_images: int | None = None,
    limit_test: int | None = None,
) -> MosaicSplits:
    """Fashion-MNIST mosaics: train sources, validation and test mosaics (see module docs).

    ``valid_images`` train-split images are held out (``valid_images // 4``
    validation mosaics); ``limit_train_images`` keeps that many of the rest;
    ``limit_test`` keeps the first test mosaics (of 2,500). The IDX files are read from
    ``root``, else ``data_root() / "fashion-mnist"`` (see ``attnkit.data.images``).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> import numpy as np
        >>> from attnkit.data.images import write_idx
        >>> root = Path(tempfile.mkdtemp())  # tiny stand-in files in the Fashion-MNIST layout
        >>> for split, n in (("train", 12), ("t10k", 8)):
        ...     _ = write_idx(root / f"{split}-images-idx3-ubyte", np.zeros((n, 28, 28), np.uint8))
        ...     _ = write_idx(root / f"{split}-labels-idx1-ubyte", np.arange(n, dtype="u1") % 10)
        >>> from attnkit.data import load_mosaic_splits
        >>> splits = load_mosaic_splits(root, valid_images=4)
        >>> len(splits.train_images), len(splits.valid), len(splits.test)  # 8 images, 1 + 2 mosaics
        (8, 1, 2)
        >>> tuple(splits.test.images.shape), len(splits.test.captions()[0].split())
        ((2, 1, 56, 56), 11)
    """
    if valid_images < 4:
        raise ValueError(f"valid_images must be >= 4 (one mosaic); got {valid_images}")
    data = load_fashion_mnist_holdout(
        root, rng_key=(seed, 2), valid_images=valid_images, limit_train_images=limit_train_images
    )
    images, labels, train_indices = data.images, data.labels, data.train_indices
    if len(train_indices) < 4:
        raise ValueError(f"need >= 4 training images; got {len(train_indices)}")
    valid = build_mosaics(images, labels, seed=seed, split="train", indices=data.valid_indices)
    test = build_mosaics(data.test_images, data.test_labels, seed=seed, split="test")
    return MosaicSplits(
        images[train_indices], labels[train_indices], train_indices, valid, test.head(limit_test)
    )


# ----------------------------------------------------------------------------- batches


@dataclass
class CaptionBatch:
    """Mosaics and their captions.

    Attributes:
        pixel_values: ``(B, C, 56, 56)`` float, normalised.
        input_ids: ``(B, T)`` decoder inputs ``<bos> w_1 .. w_{T-1}``.
        labels: ``(B, T)`` targets ``w_1 .. w_{T-1} <eos>`` (``<pad>`` where there is none).
        object_labels: ``(B, 4)`` class of each quadrant.
    """

    pixel_values: Tensor
    input_ids: Tensor
    labels: Tensor
    object_labels: Tensor

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> CaptionBatch:
        """A copy with every tensor on ``device``."""
        return CaptionBatch(
            *(
                t.to(device, non_blocking=non_blocking)
                for t in (self.pixel_values, self.input_ids, self.labels, self.object_labels)
            )
        )

    @property
    def num_tokens(self) -> int:
        """Target tokens (what the loss averages over)."""
        return int((self.labels != PAD_ID).sum())

    def __len__(self) -> int:
        return self.pixel_values.size(0)


def make_caption_batch(
    images: Tensor, object_labels: Tensor, vocabulary: WordVocabulary
) -> CaptionBatch:
    """A :class:`CaptionBatch` of uint8 mosaics ``(B, C, 56, 56)`` and labels ``(B, 4)``."""
    ids = vocabulary.encode_batch(
        [caption_for(row) for row in object_labels.tolist()], add_bos=True, add_eos=True
    )
    pixels = normalize_pixels(images, PIXEL_MEAN, PIXEL_STD)
    # Every caption has the same length, so ids[:, :-1] holds no <eos>.
    return CaptionBatch(pixels, ids[:, :-1], ids[:, 1:], object_labels)


class MosaicBatcher(ResumableBatches[np.ndarray, CaptionBatch]):
    """Training batches of mosaics composed afresh every epoch; resumable and shardable.

    Epoch ``e`` permutes the source images with ``(seed, e)`` and composes each
    consecutive four into one mosaic, so every image appears once per epoch in
    a new company and place (``len(images) // 4`` mosaics per epoch).

    Args:
        images: ``(N, C, 28, 28)`` uint8 source images; ``labels``: ``(N,)``.
        batch_size: mosaics per batch; ``vocabulary``: tokenises the captions.

    Yields ``CaptionBatch`` with ``pixel_values (B, C, 56, 56)``, ``input_ids (B, 12)``,
    ``labels (B, 12)`` (a caption is 11 words plus ``<bos>``/``<eos>``) and
    ``object_labels (B, 4)``.

    Example:
        >>> import torch
        >>> from attnkit.data import MosaicBatcher
        >>> from attnkit.data.mosaics import caption_for, caption_vocabulary
        >>> images, labels = torch.zeros(8, 1, 28, 28, dtype=torch.uint8), torch.arange(8)
        >>> vocab = caption_vocabulary()
        >>> batch = next(iter(MosaicBatcher(images, labels, 2, vocab, seed=0)))
        >>> tuple(batch.pixel_values.shape), tuple(batch.input_ids.shape)
        ((2, 1, 56, 56), (2, 12))
        >>> sorted(batch.object_labels.flatten().tolist())  # each image once per epoch
        [0, 1, 2, 3, 4, 5, 6, 7]
        >>> vocab.decode(batch.labels[0]) == caption_for(batch.object_labels[0])
        True
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        vocabulary: WordVocabulary,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(seed=seed, rank=rank, world_size=world_size)
        if images.dim() != 4 or images.shape[-2:] != (TILE, TILE):
            raise ValueError(f"images must be (N, C, {TILE}, {TILE}); got {tuple(images.shape)}")
        if labels.shape != images.shape[:1] or len(images) < 4:
            raise ValueError(
                f"need >= 4 images with labels (N,); got {tuple(images.shape)} and "
                f"{tuple(labels.shape)}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.vocabulary = batch_size, vocabulary

    def _fingerprint(self) -> str:
        return fingerprint((len(self.images), self.batch_size))

    def _plan(self, epoch: int) -> list[np.ndarray]:
        order = epoch_rng(self.seed, epoch).permutation(len(self.images))
        groups = order[: len(order) // 4 * 4].reshape(-1, 4)
        size = self.batch_size
        batches = [groups[i : i + size] for i in range(0, len(groups), size)]
        return shard_round_robin(batches, self.rank, self.world_size)

    def _build(self, item: np.ndarray, epoch: int, position: int) -> CaptionBatch:
        sources = torch.from_numpy(item)
        tiles = self.images[sources.flatten()].reshape(len(item), 4, *self.images.shape[1:])
        return make_caption_batch(compose_mosaics(tiles), self.labels[sources], self.vocabulary)
