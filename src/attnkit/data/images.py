"""Image classification data: IDX files (MNIST / Fashion-MNIST) and resumable image batches.

The IDX format (LeCun et al.) is a big-endian header — two zero bytes, a type
code (``0x08`` = unsigned byte), the number of dimensions — then one 32-bit
size per dimension and the raw values. Fashion-MNIST ships four of them,
gzipped; they are read from ``$ATTNKIT_DATA/fashion-mnist`` or, where Debian's
``dataset-fashion-mnist`` package is installed, from
``/usr/share/datasets/fashion-mnist``.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from attnkit.data.datasets import data_root
from attnkit.data.resumable import ResumableBatches, epoch_rng, fingerprint, shard_round_robin

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "FashionMNISTHoldout",
    "ImageBatch",
    "ImageBatcher",
    "fashion_mnist_dir",
    "load_fashion_mnist",
    "load_fashion_mnist_holdout",
    "normalize_pixels",
    "read_idx",
    "write_idx",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Fashion-MNIST pixel statistics (of pixel / 255 over the training set).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The unsigned-byte array stored in an IDX file (``.gz`` or plain)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (the first two bytes must be zero)")
    if data[2] != 0x08:
        raise ValueError(f"{path}: IDX type code {data[2]:#04x}; only 0x08 (ubyte) is supported")
    dims = data[3]
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    expected = int(np.prod(shape)) if shape else 0
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({expected} values), file holds "
            f"{len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write an unsigned-byte ``array`` (any shape) as an IDX file; ``read_idx`` reads it back.

    Useful for subsets and stand-in data sets in the Fashion-MNIST layout.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> import numpy as np
        >>> from attnkit.data.images import read_idx, write_idx
        >>> images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
        >>> path = write_idx(Path(tempfile.mkdtemp()) / "tiny-images-idx3-ubyte", images)
        >>> np.array_equal(read_idx(path), images)
        True
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"IDX files here hold unsigned bytes; got dtype {array.dtype}")
    sizes = b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path = Path(path)
    path.write_bytes(bytes([0, 0, 0x08, array.ndim]) + sizes + array.tobytes())
    return path


def fashion_mnist_dir(root: str | os.PathLike | None = None) -> Path:
    """Where the Fashion-MNIST files are: ``root`` or the data root, else Debian's copy."""
    candidates = [Path(root) if root else data_root() / "fashion-mnist", SYSTEM_FASHION_MNIST]
    for candidate in candidates:
        if (candidate / f"{_FILES['train'][0]}.gz").is_file() or (
            candidate / _FILES["train"][0]
        ).is_file():
            return candidate
    raise FileNotFoundError(
        f"Fashion-MNIST not found in {[str(c) for c in candidates]} (expected "
        f"{_FILES['train'][0]}.gz and friends)"
    )


def _idx_file(directory: Path, stem: str) -> Path:
    gz = directory / f"{stem}.gz"
    return gz if gz.is_file() else directory / stem


def load_fashion_mnist(split: str, root: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """``(images (N, 1, 28, 28) uint8, labels (N,) int64)`` of ``split`` (``train``/``test``)."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    directory = fashion_mnist_dir(root)
    image_stem, label_stem = _FILES[split]
    images = read_idx(_idx_file(directory, image_stem))
    labels = read_idx(_idx_file(directory, label_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{directory}: {split} images {images.shape} and labels {labels.shape} do not match"
        )
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def normalize_pixels(
    images: Tensor, mean: float = FASHION_MNIST_MEAN, std: float = FASHION_MNIST_STD
) -> Tensor:
    """uint8 ``images`` (any shape) as float ``(pixel / 255 - mean) / std``."""
    return (images.float() / 255.0 - mean) / std


@dataclass
class FashionMNISTHoldout:
    """Both official splits, with a seeded hold-out of train-split images for validation.

    Attributes:
        images, labels: the whole train split, ``(60000, 1, 28, 28)`` uint8 and ``(60000,)``.
        valid_indices, train_indices: disjoint indices into it (held out / for training).
        test_images, test_labels: the whole test split.
    """

    images: Tensor
    labels: Tensor
    valid_indices: Tensor
    train_indices: Tensor
    test_images: Tensor
    test_labels: Tensor


def load_fashion_mnist_holdout(
    root: str | os.PathLike | None,
    *,
    rng_key: Sequence[int],
    valid_images: int,
    limit_train_images: int | None = None,
) -> FashionMNISTHoldout:
    """Load both splits and hold out ``valid_images`` train-split images, drawn by a
    permutation from ``numpy.random.default_rng(rng_key)``; ``limit_train_images`` keeps
    that many of the others for training."""
    images, labels = load_fashion_mnist("train", root)
    test_images, test_labels = load_fashion_mnist("test", root)
    order = torch.from_numpy(np.random.default_rng(list(rng_key)).permutation(len(images)))
    valid_indices, train_indices = order[:valid_images], order[valid_images:]
    if limit_train_images is not None:
        train_indices = train_indices[:limit_train_images]
    return FashionMNISTHoldout(
        images, labels, valid_indices, train_indices, test_images, test_labels
    )


@dataclass
class ImageBatch:
    """``pixel_values (B, C, H, W)`` float, ``labels (B,)``."""

    pixel_values: Tensor
    labels: Tensor

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> ImageBatch:
        return ImageBatch(
            self.pixel_values.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
        )

    @property
    def num_tokens(self) -> int:
        """Images in the batch (what the loss averages over)."""
        return self.labels.numel()


class ImageBatcher(ResumableBatches[list[int], ImageBatch]):
    """Shuffled image batches, normalised, optionally augmented; resumable and shardable.

    Args:
        images: ``(N, C, H, W)`` uint8; ``labels``: ``(N,)``.
        batch_size: images per batch; ``seed``/``shuffle`` as for the other batchers.
        mean, std: normalisation of ``pixel / 255``.
        augment: random shifts by up to ``pad`` pixels (zero-padded crop) and
            horizontal flips, drawn from ``(seed, epoch, position)`` so a resumed
            run sees the same batches.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        seed: int,
        shuffle: bool = True,
        mean: float = 0.0,
        std: float = 1.0,
        augment: bool = False,
        pad: int = 2,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(seed=seed, rank=rank, world_size=world_size)
        if images.dim() != 4 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"images must be (N, C, H, W) with labels (N,); got {tuple(images.shape)} and "
                f"{tuple(labels.shape)}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle = batch_size, shuffle
        self.mean, self.std = mean, std
        self.augment, self.pad = augment, pad

    def _fingerprint(self) -> str:
        settings = (len(self.images), self.batch_size, self.shuffle, self.augment, self.pad)
        return fingerprint(settings)

    def _plan(self, epoch: int) -> Sequence[list[int]]:
        n = len(self.images)
        order = epoch_rng(self.seed, epoch).permutation(n) if self.shuffle else np.arange(n)
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        return shard_round_robin(batches, self.rank, self.world_size)

    def _build(self, item: list[int], epoch: int, position: int) -> ImageBatch:
        pixels = self.images[item].float().div_(255.0)
        if self.augment:
            pixels = self._augment(pixels, epoch_rng(self.seed, epoch, position, self.rank))
        pixels = (pixels - self.mean) / self.std
        return ImageBatch(pixels, self.labels[item])

    def _augment(self, pixels: Tensor, rng: np.random.Generator) -> Tensor:
        """Random shift (zero-pad by ``pad``, crop back) and horizontal flip per image."""
        n, _, height, width = pixels.shape
        padded = torch.nn.functional.pad(pixels, (self.pad,) * 4).permute(0, 2, 3, 1)
        dy = torch.from_numpy(rng.integers(0, 2 * self.pad + 1, n))
        dx = torch.from_numpy(rng.integers(0, 2 * self.pad + 1, n))
        flips = torch.from_numpy(rng.random(n) < 0.5)
        rows = (dy[:, None] + torch.arange(height))[:, :, None]  # (n, H, 1)
        cols = (dx[:, None] + torch.arange(width))[:, None, :]  # (n, 1, W)
        crops = padded[torch.arange(n)[:, None, None], rows, cols].permute(0, 3, 1, 2)
        return torch.where(flips[:, None, None, None], crops.flip(-1), crops)
