"""Image classification with ViT on Fashion-MNIST, from one YAML recipe.

Trains on the 60,000 training images (a held-out slice of them, ``valid_size``,
selects the best checkpoint), then reports accuracy on the 10,000 test images.
``runs/NAME/results.json`` holds test accuracy, wall time and the summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from attnkit.data.images import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    ImageBatch,
    ImageBatcher,
    load_fashion_mnist,
)
from attnkit.models import ViT, ViTConfig
from attnkit.recipes.common import (
    RunRecipe,
    fit_recipe,
    prepare_run_dir,
    run_timings,
    write_results,
)
from attnkit.recipes.schema import ConfigError, from_dict
from attnkit.train import LossOutput, TrainConfig

__all__ = ["ImageClassificationRecipe", "ImageData", "train_image_classification"]

FASHION_MEAN, FASHION_STD = FASHION_MNIST_MEAN, FASHION_MNIST_STD


@dataclass
class ImageData:
    """Fashion-MNIST (``root``: its folder; default the data root or Debian's copy)."""

    dataset: Literal["fashion_mnist"] = "fashion_mnist"
    root: str | None = None
    batch_size: int = 128
    valid_size: int = 5000
    augment: bool = True
    limit_train: int | None = None
    limit_test: int | None = None


@dataclass
class ImageClassificationRecipe(RunRecipe):
    """A ViT image-classification experiment; ``model`` holds :class:`ViTConfig` fields."""

    name: str = "image_classification"
    task: Literal["image_classification"] = "image_classification"
    output_dir: str | None = None
    data: ImageData = field(default_factory=ImageData)
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_epochs=10))
    label_smoothing: float = 0.0
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        defaults = {"image_size": 28, "num_channels": 1, "num_labels": 10}
        from_dict(ViTConfig, {**defaults, **self.model}, prefix="model")
        if self.data.valid_size < 1:
            raise ConfigError(f"data.valid_size must be >= 1; got {self.data.valid_size}")
        self._set_output_dir()


def build_model(recipe: ImageClassificationRecipe) -> ViT:
    defaults = {"image_size": 28, "num_channels": 1, "num_labels": 10}
    return ViT(ViTConfig(**{**defaults, **recipe.model}))


def image_loss(smoothing: float):
    """Summed cross-entropy of a batch (``label_smoothing`` as in torch)."""

    def loss_fn(model: torch.nn.Module, batch: ImageBatch) -> LossOutput:
        logits = model(batch.pixel_values).logits
        loss = F.cross_entropy(
            logits.float(), batch.labels, reduction="sum", label_smoothing=smoothing
        )
        accuracy = (logits.argmax(-1) == batch.labels).float().mean()
        return LossOutput(loss, batch.labels.numel(), {"accuracy": accuracy})

    return loss_fn


def accuracy(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int
) -> float:
    """Top-1 accuracy of ``model`` over normalised ``(N, C, H, W)`` images, in batches."""
    source = ImageBatcher(
        images, labels, batch, seed=0, shuffle=False, mean=FASHION_MEAN, std=FASHION_STD
    )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for item in source:
            logits = model(item.pixel_values.to(device)).logits
            correct += int((logits.argmax(-1).cpu() == item.labels).sum())
    model.train(was_training)
    return correct / len(labels)


def _splits(data: ImageData):
    images, labels = load_fashion_mnist("train", data.root)
    test_images, test_labels = load_fashion_mnist("test", data.root)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    valid, train = order[: data.valid_size], order[data.valid_size :]
    if data.limit_train is not None:
        train = train[: data.limit_train]
    if data.limit_test is not None:
        test_images, test_labels = test_images[: data.limit_test], test_labels[: data.limit_test]
    return (
        (images[train], labels[train]),
        (images[valid], labels[valid]),
        (test_images, test_labels),
    )


def train_image_classification(
    recipe: ImageClassificationRecipe, *, resume: bool = False
) -> dict[str, Any]:
    """Train ViT, select on validation accuracy, report test accuracy."""
    started = time.monotonic()
    train, valid, test = _splits(recipe.data)
    out = prepare_run_dir(recipe)
    model = build_model(recipe)
    source = ImageBatcher(
        *train,
        recipe.data.batch_size,
        seed=recipe.train.seed or 0,
        mean=FASHION_MEAN,
        std=FASHION_STD,
        augment=recipe.data.augment,
    )

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return {"valid_accuracy": accuracy(model, *valid, recipe.data.batch_size)}

    loss_fn = image_loss(recipe.label_smoothing)
    summary, report = fit_recipe(
        model, loss_fn, source, recipe, evaluate_fn=evaluate, resume=resume
    )
    if not report:
        return {"summary": summary.to_dict()}
    test_accuracy = accuracy(model, *test, recipe.data.batch_size)
    results = write_results(
        out,
        {
            "test_accuracy": test_accuracy,
            "test_images": len(test[1]),
            **run_timings(summary, started),
        },
    )
    print(f"test accuracy {100 * test_accuracy:.2f}% on {len(test[1])} images")
    return results
