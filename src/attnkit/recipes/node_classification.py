"""Semi-supervised node classification with GAT on Cora (Planetoid split), from one YAML recipe.

Every step is one full-batch pass over the graph: cross-entropy on the 140 training
nodes plus an L2 penalty on all parameters (``l2_penalty``: the coupled weight decay of
``torch.optim.Adam``, as in the paper; the Trainer's AdamW with ``weight_decay: 0`` and
no gradient clipping is then plain Adam). The validation nodes are evaluated after every
step and the paper's early stopping applies: the run stops once neither validation loss
nor accuracy has improved for ``patience`` epochs, and the weights of the last epoch at
which both were at their best so far are tested on the 1,000 test nodes.

``seeds`` trains one model per seed; ``runs/NAME/results.json`` holds per-seed test
accuracy with its mean and standard deviation (each seed's Trainer logs go to
``runs/NAME/seed_K/``).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from attnkit.data.cora import CoraData, load_cora
from attnkit.models.gat import GAT, GATConfig, build_gat
from attnkit.recipes.common import (
    RunRecipe,
    prepare_run_dir,
    reject_derived_fields,
    time_limit,
    write_results,
)
from attnkit.recipes.schema import ConfigError, from_dict
from attnkit.train import (
    Callback,
    LossOutput,
    TrainConfig,
    Trainer,
    move_to_device,
    seed_everything,
)

__all__ = [
    "GraphData",
    "NodeClassificationRecipe",
    "PaperEarlyStopping",
    "node_loss",
    "train_node_classification",
]

# Filled from the data, never from the recipe.
_FROM_DATA = ("in_features", "num_classes")


@dataclass
class GraphData:
    """Cora's Planetoid files under ``root`` (default: ``data_root() / "cora"``)."""

    dataset: Literal["cora"] = "cora"
    root: str | None = None
    normalize_features: bool = True
    sparse_features: bool = True  # sparse COO features: same model, far fewer FLOPs


def _default_train() -> TrainConfig:
    return TrainConfig(
        max_epochs=100_000,
        lr=0.005,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        grad_clip=None,
        eval_every=1,
        log_every=10,
        save_final=False,
        progress=False,
    )


@dataclass
class NodeClassificationRecipe(RunRecipe):
    """A GAT node-classification experiment; ``model`` holds :class:`GATConfig` fields
    (``in_features`` and ``num_classes`` come from the data).

    ``patience``: epochs without a better validation loss or accuracy before stopping.
    ``l2_penalty``: ``l2_penalty / 2 * sum(theta^2)`` added to the mean training loss.
    ``seeds``: one run per seed (model initialisation and dropout).
    ``max_minutes``: wall-time limit of each seed's run.
    """

    name: str = "node_classification"
    task: Literal["node_classification"] = "node_classification"
    output_dir: str | None = None
    data: GraphData = field(default_factory=GraphData)
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=_default_train)
    l2_penalty: float = 5e-4
    patience: int = 100
    seeds: list[int] = field(default_factory=lambda: [0])
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        reject_derived_fields(self.model, _FROM_DATA, "the data", "; remove it from the recipe")
        from_dict(GATConfig, self.model, prefix="model")
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed; got []")
        if self.patience < 1 or self.l2_penalty < 0:
            raise ConfigError(
                f"patience must be >= 1 and l2_penalty >= 0; got patience={self.patience}, "
                f"l2_penalty={self.l2_penalty}"
            )
        if self.train.eval_every != 1:
            raise ConfigError(
                f"train.eval_every must be 1 (early stopping counts epochs); "
                f"got {self.train.eval_every}"
            )
        if self.train.patience is not None:
            raise ConfigError("set the recipe's patience, not train.patience (GAT's rule)")
        self._set_output_dir()


class PaperEarlyStopping(Callback):
    """GAT's early stopping on validation loss *and* accuracy, with the chosen weights.

    After each evaluation: if accuracy >= the best so far or loss <= the lowest so far, the
    patience counter resets (and when both hold, the weights are kept in memory as the
    model to test); otherwise, after ``patience`` such evaluations in a row, the run stops.
    """

    def __init__(
        self, patience: int, loss_key: str = "valid_loss", accuracy_key: str = "valid_accuracy"
    ) -> None:
        self.patience, self.loss_key, self.accuracy_key = patience, loss_key, accuracy_key
        self.best_loss, self.best_accuracy = math.inf, -math.inf
        self.bad_epochs = 0
        self.state: dict[str, torch.Tensor] | None = None
        self.chosen: dict[str, float] = {}

    def on_evaluate(self, trainer: Any, metrics: dict[str, float]) -> None:
        loss, accuracy = metrics[self.loss_key], metrics[self.accuracy_key]
        better_loss, better_accuracy = loss <= self.best_loss, accuracy >= self.best_accuracy
        if better_loss and better_accuracy:
            state = trainer.evaluated_module.state_dict()
            self.state = {key: value.detach().clone() for key, value in state.items()}
            self.chosen = {"step": trainer.step, **metrics}
        if better_loss or better_accuracy:
            self.best_loss = min(loss, self.best_loss)
            self.best_accuracy = max(accuracy, self.best_accuracy)
            self.bad_epochs = 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            trainer.request_stop(
                f"early stopping: no better {self.loss_key} or {self.accuracy_key} for "
                f"{self.patience} epochs"
            )


def node_loss(l2_penalty: float):
    """Summed cross-entropy over the training nodes plus the L2 penalty.

    The penalty is scaled by the number of training nodes, so that after the Trainer's
    division by that count the gradient is ``mean CE gradient + l2_penalty * theta``.
    """

    def loss_fn(model: nn.Module, graph: CoraData) -> LossOutput:
        logits = model(graph.features, graph.edge_index)[graph.train_mask]
        labels = graph.labels[graph.train_mask]
        cross_entropy = F.cross_entropy(logits.float(), labels, reduction="sum")
        count = labels.numel()
        penalty = sum(param.pow(2).sum() for param in model.parameters() if param.requires_grad)
        loss = cross_entropy + count * 0.5 * l2_penalty * penalty
        accuracy = (logits.argmax(-1) == labels).float().mean()
        logs = {"cross_entropy": cross_entropy.detach() / count, "accuracy": accuracy}
        return LossOutput(loss, count, logs)

    return loss_fn


def split_metrics(model: nn.Module, graph: CoraData, mask: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on the nodes of ``mask`` (no grad)."""
    with torch.no_grad():
        logits = model(graph.features, graph.edge_index)[mask].float()
    labels = graph.labels[mask]
    loss = F.cross_entropy(logits, labels).item()
    return loss, (logits.argmax(-1) == labels).float().mean().item()


def build_model(recipe: NodeClassificationRecipe, graph: CoraData) -> GAT:
    return build_gat(
        GATConfig(**recipe.model, in_features=graph.num_features, num_classes=graph.num_classes)
    )


def _evaluator(graph: CoraData):
    on_device: dict[torch.device, CoraData] = {}

    def evaluate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        if device not in on_device:
            on_device[device] = move_to_device(graph, device)
        loss, accuracy = split_metrics(model, on_device[device], on_device[device].val_mask)
        return {"valid_loss": loss, "valid_accuracy": accuracy}

    return evaluate


def train_one_seed(
    recipe: NodeClassificationRecipe, graph: CoraData, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train and test one model; returns its results and its Trainer summary."""
    started = time.monotonic()
    seed_everything(seed)  # before building: the seed fixes the initial weights too
    model = build_model(recipe, graph)
    config = replace(recipe.train, seed=seed, output_dir=f"{recipe.output_dir}/seed_{seed}")
    stopper = PaperEarlyStopping(recipe.patience)
    callbacks: list[Callback] = [stopper, *time_limit(recipe.max_minutes)]
    source = [graph]
    trainer = Trainer(
        model,
        node_loss(recipe.l2_penalty),
        source,
        config,
        evaluate_fn=_evaluator(graph),
        callbacks=callbacks,
    )
    source[0] = move_to_device(graph, trainer.device)  # once, not at every step
    summary = trainer.fit().to_dict()
    final = trainer.evaluated_module  # the weight average under train.ema_decay
    if stopper.state is not None:
        final.load_state_dict(stopper.state)
    final.eval()
    test_loss, test_accuracy = split_metrics(final, source[0], source[0].test_mask)
    valid_loss, valid_accuracy = split_metrics(final, source[0], source[0].val_mask)
    result = {
        "seed": seed,
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "valid_accuracy": valid_accuracy,
        "valid_loss": valid_loss,
        "chosen_epoch": stopper.chosen.get("step"),
        "epochs": summary["steps"],
        "stop": summary["message"],
        "wall_s": time.monotonic() - started,
    }
    return result, summary


def _aggregate(values: list[float]) -> dict[str, Any]:
    return {
        "per_seed": values,
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def train_node_classification(
    recipe: NodeClassificationRecipe, *, resume: bool = False
) -> dict[str, Any]:
    """Train GAT once per seed, test each on its early-stopping weights, report mean ± std."""
    if resume:
        raise ValueError(
            "node_classification does not resume (a seed trains in seconds); run it again "
            "without --resume"
        )
    started = time.monotonic()
    graph = load_cora(recipe.data.root, normalize=recipe.data.normalize_features)
    if recipe.data.sparse_features:
        graph = replace(graph, features=graph.features.to_sparse())
    out = prepare_run_dir(recipe)
    runs = []
    for seed in recipe.seeds:
        result, summary = train_one_seed(recipe, graph, seed)
        if summary["stop_reason"] == "signal":
            return {"summary": summary, "runs": runs}
        runs.append(result)
        print(
            f"seed {seed}: test accuracy {100 * result['test_accuracy']:.2f}% "
            f"(epoch {result['chosen_epoch']} of {result['epochs']}, {result['wall_s']:.1f} s)"
        )
    accuracy = _aggregate([run["test_accuracy"] for run in runs])
    message = (
        f"test accuracy {100 * accuracy['mean']:.2f}% ± {100 * accuracy['std']:.2f}% "
        f"(mean ± sample std over {len(runs)} seed(s), {int(graph.test_mask.sum())} test nodes)"
    )
    results = write_results(
        out,
        {
            "test_accuracy": accuracy,
            "test_nodes": int(graph.test_mask.sum()),
            "runs": runs,
            "total_wall_s": time.monotonic() - started,
            "summary": {"stop_reason": "completed", "message": message},
        },
    )
    print(message)
    return results
