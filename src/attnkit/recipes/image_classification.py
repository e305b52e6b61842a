"""Image classification with ViT on Fashion-MNIST, from one YAML recipe.

Trains on the 60,000 training images (a held-out slice of them, ``valid_size``,
selects the best checkpoint), then reports accuracy on the 10,000 test images.
``runs/NAME/results.json`` holds test accuracy, wall time and the summary.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import yaml

from attnkit.data.images import ImageBatch, ImageBatcher, load_fashion_mnist
from attnkit.models import ViT, ViTConfig
from attnkit.recipes.schema import ConfigError, from_dict, to_dict
from attnkit.train import LossOutput, TimeLimit, TrainConfig, Trainer, load_model_weights

__all__ = ["ImageClassificationRecipe", "ImageData", "train_image_classification"]

# Fashion-MNIST pixel statistics (of pixel / 255 over the training set).
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


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
class ImageClassificationRecipe:
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
        self.output_dir = self.output_dir or f"runs/{self.name}"
        self.train.output_dir = self.output_dir

    def to_dict(self) -> dict:
        data = to_dict(self)
        data["train"] = self.train.to_dict()
        return data


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
    out = Path(recipe.output_dir)  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
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

    trainer = Trainer(
        model,
        image_loss(recipe.label_smoothing),
        source,
        recipe.train,
        evaluate_fn=evaluate,
        callbacks=[TimeLimit(recipe.max_minutes)] if recipe.max_minutes else [],
    )
    summary = trainer.fit(resume=resume)
    if not trainer.is_main or summary.stop_reason == "signal":
        return {"summary": summary.to_dict()}
    best = (out / "checkpoints" / "best").is_dir()
    load_model_weights(model, out, "best" if best else "latest")
    test_accuracy = accuracy(model, *test, recipe.data.batch_size)
    results = {
        "test_accuracy": test_accuracy,
        "test_images": len(test[1]),
        "train_wall_s": summary.elapsed_s,
        "total_wall_s": time.monotonic() - started,
        "summary": summary.to_dict(),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"test accuracy {100 * test_accuracy:.2f}% on {len(test[1])} images")
    return results
