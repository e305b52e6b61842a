"""Yes/no questions about Fashion-MNIST images, generated from their labels.

Every question is a template with the set of classes for which the answer is
"yes" (:data:`QUESTIONS`): three attribute questions ("is this footwear ?",
"is it worn on the upper body ?", "is it clothing ?") and one identity question
per class ("is this a bag ?", "are these trousers ?", ...). "Upper body" means
T-shirt/top, pullover, dress, coat and shirt (a dress covers the upper body);
"clothing" is everything but footwear and bags.

Sampling is balanced: for each image the answer is yes or no with probability
1/2, then a question with that answer for the image's class is drawn uniformly.
Training questions are asked about train-split images (drawn afresh every
epoch by :class:`QuestionBatcher`), test questions about test-split images
(fixed by the seed, :func:`build_questions`). Words form a closed vocabulary
(:func:`question_vocabulary`, the same :class:`WordVocabulary` as the captions).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from attnkit.data.batching import leading_rows
from attnkit.data.images import load_fashion_mnist_holdout, normalize_pixels
from attnkit.data.mosaics import PIXEL_MEAN, PIXEL_STD, WordVocabulary
from attnkit.data.resumable import ResumableBatches, epoch_rng, fingerprint, shard_round_robin
from attnkit.data.tokenizers import PAD_ID

__all__ = [
    "ANSWERS",
    "QUESTIONS",
    "QuestionBatch",
    "QuestionBatcher",
    "QuestionSplits",
    "QuestionTemplate",
    "VisualQuestions",
    "answer_for",
    "build_questions",
    "load_question_splits",
    "make_question_batch",
    "question_vocabulary",
]

ANSWERS = ("no", "yes")  # answer id 0 = no, 1 = yes


@dataclass(frozen=True)
class QuestionTemplate:
    """A question and the Fashion-MNIST classes for which its answer is "yes"."""

    text: str
    yes_classes: frozenset[int]
    kind: str  # "attribute" or "identity"


def _question(text: str, classes: set[int], kind: str = "identity") -> QuestionTemplate:
    return QuestionTemplate(text, frozenset(classes), kind)


QUESTIONS: tuple[QuestionTemplate, ...] = (
    _question("is this footwear ?", {5, 7, 9}, "attribute"),
    _question("is it worn on the upper body ?", {0, 2, 3, 4, 6}, "attribute"),
    _question("is it clothing ?", {0, 1, 2, 3, 4, 6}, "attribute"),
    _question("is this a t-shirt ?", {0}),
    _question("are these trousers ?", {1}),
    _question("is this a pullover ?", {2}),
    _question("is this a dress ?", {3}),
    _question("is this a coat ?", {4}),
    _question("is this a sandal ?", {5}),
    _question("is this a shirt ?", {6}),
    _question("is this a sneaker ?", {7}),
    _question("is this a bag ?", {8}),
    _question("is this an ankle boot ?", {9}),
)


def question_vocabulary() -> WordVocabulary:
    """The words of every question in :data:`QUESTIONS`, in order of appearance."""
    return WordVocabulary(list(dict.fromkeys(w for q in QUESTIONS for w in q.text.split())))


def answer_for(question: int, label: int) -> int:
    """1 (yes) if question ``question`` (index into :data:`QUESTIONS`) holds for class ``label``."""
    if not 0 <= question < len(QUESTIONS):
        raise ValueError(f"question must be in [0, {len(QUESTIONS)}); got {question}")
    return int(label in QUESTIONS[question].yes_classes)


# Per class: the questions answered yes, and those answered no.
_BY_ANSWER = [
    [np.array([q for q in range(len(QUESTIONS)) if answer_for(q, c) == a]) for a in (0, 1)]
    for c in range(10)
]


def _draw_questions(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One balanced question per label: ``(question ids, answers)``, both ``(N,)``."""
    answers = rng.integers(0, 2, len(labels))
    picks = rng.random(len(labels))
    questions = np.empty(len(labels), dtype=np.int64)
    for i, (label, answer) in enumerate(zip(labels.tolist(), answers.tolist(), strict=True)):
        options = _BY_ANSWER[label][answer]
        questions[i] = options[int(picks[i] * len(options))]
    return questions, answers.astype(np.int64)


@dataclass
class QuestionBatch:
    """Images and questions about them.

    Attributes:
        pixel_values: ``(B, C, 28, 28)`` float, normalised.
        input_ids: ``(B, T)`` question word ids (right-padded); ``attention_mask``
            ``(B, T)`` True at real words.
        labels: ``(B,)`` answers (0 = no, 1 = yes); ``questions``: ``(B,)`` template ids.
    """

    pixel_values: Tensor
    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor
    questions: Tensor

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> QuestionBatch:
        """A copy with every tensor on ``device``."""
        fields = (self.pixel_values, self.input_ids, self.attention_mask, self.labels)
        moved = (t.to(device, non_blocking=non_blocking) for t in (*fields, self.questions))
        return QuestionBatch(*moved)

    @property
    def num_tokens(self) -> int:
        """Questions in the batch (what the loss averages over)."""
        return self.labels.numel()

    def __len__(self) -> int:
        return self.labels.numel()


@functools.cache
def _question_table() -> Tensor:
    """``(len(QUESTIONS), Tmax)`` word ids of every template, right-padded."""
    return question_vocabulary().encode_batch([q.text for q in QUESTIONS])


def make_question_batch(images: Tensor, questions: Tensor, answers: Tensor) -> QuestionBatch:
    """A :class:`QuestionBatch` of uint8 ``images (B, C, 28, 28)`` and template ids ``(B,)``."""
    ids = _question_table()[questions]
    ids = ids[:, : int((ids != PAD_ID).sum(1).max())]
    pixels = normalize_pixels(images, PIXEL_MEAN, PIXEL_STD)
    return QuestionBatch(pixels, ids, ids != PAD_ID, answers, questions)


@dataclass
class VisualQuestions:
    """Fixed questions: ``images (N, C, 28, 28)`` uint8, ``questions``, ``answers``,
    ``image_labels`` and ``sources`` (index in the official ``split``), all ``(N,)``."""

    images: Tensor
    questions: Tensor
    answers: Tensor
    image_labels: Tensor
    sources: Tensor
    split: str

    def __len__(self) -> int:
        return self.answers.numel()

    def texts(self) -> list[str]:
        """The question of every item."""
        return [QUESTIONS[q].text for q in self.questions.tolist()]

    def head(self, count: int | None) -> VisualQuestions:
        """The first ``count`` items (all for ``None``): the same questions the full set
        asks there, since each set is drawn whole."""
        return leading_rows(self, count)

    def batches(self, batch_size: int) -> Iterator[QuestionBatch]:
        """The items in order as :class:`QuestionBatch` objects of ``batch_size`` items."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        for start in range(0, len(self), batch_size):
            part = slice(start, start + batch_size)
            yield make_question_batch(self.images[part], self.questions[part], self.answers[part])


def build_questions(
    images: Tensor,
    labels: Tensor,
    *,
    seed: int,
    split: str,
    per_image: int = 1,
    indices: Sequence[int] | Tensor | None = None,
) -> VisualQuestions:
    """``per_image`` balanced questions about each of ``images`` (or those at ``indices``)."""
    if images.dim() != 4 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"images must be (N, C, H, W) with labels (N,); got {tuple(images.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if split not in ("train", "test") or per_image < 1:
        raise ValueError(
            f"split must be 'train' or 'test' and per_image >= 1; got {split!r}, {per_image}"
        )
    pool = torch.arange(len(images)) if indices is None else torch.as_tensor(indices)
    sources = pool.repeat_interleave(per_image)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, 7])
    questions, answers = _draw_questions(labels[sources].numpy(), rng)
    return VisualQuestions(
        images[sources],
        torch.from_numpy(questions),
        torch.from_numpy(answers),
        labels[sources],
        sources,
        split,
    )


class QuestionBatcher(ResumableBatches[np.ndarray, QuestionBatch]):
    """Training batches: every image once per epoch, with a question drawn from ``(seed, epoch)``.

    Args:
        images: ``(N, C, 28, 28)`` uint8; ``labels``: ``(N,)`` classes.
        batch_size: images (questions) per batch.

    Yields ``QuestionBatch`` with ``pixel_values (B, C, 28, 28)``, ``input_ids`` and
    ``attention_mask (B, T)``, answers ``labels (B,)`` and template ids ``questions (B,)``.

    Example:
        >>> import torch
        >>> from attnkit.data import QuestionBatcher
        >>> from attnkit.data.visual_questions import answer_for
        >>> images = torch.zeros(6, 1, 28, 28, dtype=torch.uint8)
        >>> bags = torch.full((6,), 8)  # class 8 is "bag"
        >>> batcher = QuestionBatcher(images, bags, batch_size=4, seed=0)
        >>> tuple(len(batch) for batch in batcher)
        (4, 2)
        >>> batch = next(iter(batcher))  # epoch 1: new questions about the same images
        >>> asked = zip(batch.questions.tolist(), batch.labels.tolist())  # (template, answer)
        >>> all(answer_for(q, 8) == a for q, a in asked)
        True
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(seed=seed, rank=rank, world_size=world_size)
        if images.dim() != 4 or labels.shape != images.shape[:1] or len(images) < 1:
            raise ValueError(
                f"images must be (N, C, H, W) with labels (N,), N >= 1; got "
                f"{tuple(images.shape)} and {tuple(labels.shape)}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def _fingerprint(self) -> str:
        return fingerprint((len(self.images), self.batch_size))

    def _plan(self, epoch: int) -> list[np.ndarray]:
        rng = epoch_rng(self.seed, epoch)
        order = rng.permutation(len(self.images))
        questions, answers = _draw_questions(self.labels.numpy()[order], rng)
        rows = np.stack([order, questions, answers], axis=1)
        size = self.batch_size
        batches = [rows[i : i + size] for i in range(0, len(rows), size)]
        return shard_round_robin(batches, self.rank, self.world_size)

    def _build(self, item: np.ndarray, epoch: int, position: int) -> QuestionBatch:
        rows = torch.from_numpy(item)
        return make_question_batch(self.images[rows[:, 0]], rows[:, 1], rows[:, 2])


@dataclass
class QuestionSplits:
    """Training images (questions drawn per epoch) and fixed validation and test questions.

    ``train_indices`` and ``valid.sources`` index disjoint parts of the official
    train split; ``test.sources`` index the test split.
    """

    train_images: Tensor
    train_labels: Tensor
    train_indices: Tensor
    valid: VisualQuestions
    test: VisualQuestions


def load_question_splits(
    root: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    valid_images: int = 2000,
    test_per_image: int = 1,
    limit_train_images: int | None = None,
    limit_test_images: int | None = None,
) -> QuestionSplits:
    """Fashion-MNIST questions: a seeded hold-out of ``valid_images`` train-split images
    for validation, the rest for training, and questions on the test-split images.

    ``test_per_image`` questions are asked about each test image (the first
    ``limit_test_images`` of them if given). The IDX files are read from ``root``, else
    ``data_root() / "fashion-mnist"`` (see ``attnkit.data.images``).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> import numpy as np
        >>> from attnkit.data.images import write_idx
        >>> root = Path(tempfile.mkdtemp())  # tiny stand-in files in the Fashion-MNIST layout
        >>> for split, n in (("train", 12), ("t10k", 8)):
        ...     _ = write_idx(root / f"{split}-images-idx3-ubyte", np.zeros((n, 28, 28), np.uint8))
        ...     _ = write_idx(root / f"{split}-labels-idx1-ubyte", np.arange(n, dtype="u1") % 10)
        >>> from attnkit.data import load_question_splits
        >>> splits = load_question_splits(root, valid_images=4, test_per_image=2)
        >>> len(splits.train_images), len(splits.valid), len(splits.test)
        (8, 4, 16)
        >>> set(splits.test.answers.tolist()) <= {0, 1}, splits.test.texts()[0].endswith("?")
        (True, True)
    """
    if valid_images < 1:
        raise ValueError(f"valid_images must be >= 1; got {valid_images}")
    data = load_fashion_mnist_holdout(
        root, rng_key=(seed, 3), valid_images=valid_images, limit_train_images=limit_train_images
    )
    images, labels, train_indices = data.images, data.labels, data.train_indices
    if len(train_indices) < 1:
        raise ValueError("no training images left after the validation hold-out")
    test = build_questions(
        data.test_images, data.test_labels, seed=seed, split="test", per_image=test_per_image
    )
    # Cut the whole test set rather than drawing a smaller one: a draw of N questions
    # differs from the first N of the full draw, and limited runs must ask the same.
    limit = None if limit_test_images is None else limit_test_images * test_per_image
    return QuestionSplits(
        images[train_indices],
        labels[train_indices],
        train_indices,
        build_questions(images, labels, seed=seed, split="train", indices=data.valid_indices),
        test.head(limit),
    )
