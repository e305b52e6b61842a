"""Steps every recipe takes the same way, kept in one place.

A recipe dataclass inherits :class:`RunRecipe` for its run directory and its
``to_dict``, and checks its ``model`` section with :func:`reject_derived_fields`
(fields filled from the data, vocabulary or environment). Its ``train_*`` function
calls :func:`prepare_run_dir`, :func:`fit_recipe` (Trainer, time limit, early return
on non-main ranks or a signal stop, best-else-latest weights, else the run's own),
:func:`run_timings` and :func:`write_results` around its own data, model and
evaluation; loaders of a finished run use :func:`load_run_recipe` and
:func:`best_or_latest`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
import yaml

from attnkit.recipes.schema import ConfigError, from_dict, to_dict
from attnkit.train import (
    Callback,
    EvaluateFn,
    TimeLimit,
    TrainConfig,
    Trainer,
    TrainSummary,
    list_checkpoints,
    load_model_weights,
)

__all__ = [
    "RunRecipe",
    "best_or_latest",
    "fit_recipe",
    "load_run_recipe",
    "load_selected_weights",
    "prepare_run_dir",
    "reject_derived_fields",
    "run_timings",
    "selected_scores",
    "time_limit",
    "with_vocabulary",
    "write_results",
]

R = TypeVar("R")


class RunRecipe:
    """Mixin of the recipe dataclasses: the run directory and the YAML-ready dict.

    Expects the fields ``name`` and ``output_dir``, and optionally ``train``
    (a :class:`TrainConfig`, whose checkpoints and logs then go to the run directory).
    """

    name: str
    output_dir: str | None

    def _set_output_dir(self) -> None:
        """Default ``output_dir`` to ``runs/NAME`` and point the train section at it."""
        self.output_dir = self.output_dir or f"runs/{self.name}"
        train = getattr(self, "train", None)
        if isinstance(train, TrainConfig):
            train.output_dir = self.output_dir

    def to_dict(self) -> dict:
        """The recipe as a plain dict (as written to ``recipe.yaml``)."""
        data = to_dict(self)
        train = getattr(self, "train", None)
        if isinstance(train, TrainConfig):
            data["train"] = train.to_dict()
        return data


class _Vocabulary(Protocol):
    vocab_size: int
    pad_id: int


def reject_derived_fields(
    model: Mapping[str, Any], names: Iterable[str], source: str, remedy: str = ""
) -> None:
    """Raise :class:`ConfigError` if the ``model`` section sets a field that ``source`` fills.

    Example: ``model.vocab_size is set from the tokenizer; remove it`` for
    ``source="the tokenizer", remedy="; remove it"``.
    """
    given = sorted(set(names) & set(model))
    if given:
        raise ConfigError(f"model.{given[0]} is set from {source}{remedy}")


def with_vocabulary(vocabulary: _Vocabulary, model: Mapping[str, Any]) -> dict[str, Any]:
    """``model`` fields plus ``vocab_size`` and ``pad_id`` taken from ``vocabulary``."""
    return {"vocab_size": vocabulary.vocab_size, "pad_id": vocabulary.pad_id, **model}


def prepare_run_dir(recipe: Any) -> Path:
    """Create the recipe's run directory and write the resolved ``recipe.yaml`` into it."""
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    return out


def time_limit(max_minutes: float | None) -> list[Callback]:
    """A :class:`TimeLimit` callback when ``max_minutes`` is set, else none."""
    return [TimeLimit(max_minutes)] if max_minutes else []


def fit_recipe(
    model: torch.nn.Module,
    loss_fn: Callable[..., Any],
    source: Any,
    recipe: Any,
    *,
    evaluate_fn: EvaluateFn | None = None,
    resume: bool = False,
    load_selected: bool = True,
) -> tuple[TrainSummary, bool]:
    """Train ``model`` with the recipe's ``train`` section and ``max_minutes`` limit.

    With ``load_selected``, a process that goes on to report then loads the run's best
    (else latest) checkpoint weights into ``model``; when the run saved none
    (``save_final: false`` and no best or periodic checkpoint), ``model`` keeps the weights
    that the run evaluates: the trained ones, or their moving average with ``ema_decay``.

    Returns:
        The summary, and whether this process goes on to test and report: not on a
        non-main rank, nor after a stop by signal (an interrupted run exits promptly;
        ``attnkit train --resume`` continues it).
    """
    trainer = Trainer(
        model,
        loss_fn,
        source,
        recipe.train,
        evaluate_fn=evaluate_fn,
        callbacks=time_limit(recipe.max_minutes),
    )
    summary = trainer.fit(resume=resume)
    report = trainer.is_main and summary.stop_reason != "signal"
    if report and load_selected:
        if _has_checkpoint(recipe.output_dir):
            load_selected_weights(model, recipe.output_dir)
        elif trainer.evaluated_module is not model:  # the moving average, not saved
            model.load_state_dict(trainer.evaluated_module.state_dict())
    return summary, report


def _has_checkpoint(run_dir: str | Path) -> bool:
    """Whether the run directory holds a best or a step checkpoint."""
    return bool(list_checkpoints(run_dir)) or (Path(run_dir) / "checkpoints" / "best").is_dir()


def training_order_seed(recipe: Any) -> int:
    """The seed of the training batches' order: ``train.seed`` (so that a seed study
    varies the data order, as ``run_recipe`` promises), else ``data.seed``."""
    seed = recipe.train.seed
    return recipe.data.seed if seed is None else seed


def best_or_latest(run_dir: str | Path) -> str:
    """``"best"`` when the run kept a best checkpoint, else ``"latest"``."""
    return "best" if (Path(run_dir) / "checkpoints" / "best").is_dir() else "latest"


def load_selected_weights(model: torch.nn.Module, run_dir: str | Path) -> None:
    """Load the run's best (else latest) checkpoint weights into ``model``."""
    load_model_weights(model, run_dir, best_or_latest(run_dir))


def selected_scores(
    summary: TrainSummary, model: torch.nn.Module, evaluate: EvaluateFn
) -> dict[str, float]:
    """Validation scores of the selected weights, now in ``model``.

    When the best step is the run's last, its last evaluation scored these very weights
    on the recipe's fixed validation data, so the record is returned instead of
    evaluating them again; otherwise ``evaluate(model)``.
    """
    if summary.last_eval and summary.best_step is not None and summary.best_step == summary.steps:
        return dict(summary.last_eval)
    return evaluate(model)


def load_run_recipe(run_dir: Path, recipe_type: type[R], kind: str = "a run directory") -> R:
    """The recipe saved in ``run_dir/recipe.yaml``; a missing file is reported as ``run_dir``
    not being ``kind``, a run of another task as ``run_dir`` not being a run of
    ``recipe_type``'s task (e.g. ``runs/x is not a translation run (task: language_model)``).
    """
    recipe_file = run_dir / "recipe.yaml"
    if not recipe_file.is_file():
        raise FileNotFoundError(f"{run_dir} is not {kind}: {recipe_file} is missing")
    data = yaml.safe_load(recipe_file.read_text())
    expected = getattr(recipe_type, "task", None)  # the dataclass default, e.g. "translation"
    task = data.get("task") if isinstance(data, dict) else None
    if expected is not None and task is not None and task != expected:
        raise ValueError(f"{run_dir} is not a {expected} run (task: {task})")
    return from_dict(recipe_type, data)


def run_timings(summary: TrainSummary, started: float) -> dict[str, Any]:
    """``train_wall_s``, ``total_wall_s`` (since ``started``, a monotonic time) and the
    summary, for results.json."""
    return {
        "train_wall_s": summary.elapsed_s,
        "total_wall_s": time.monotonic() - started,
        "summary": summary.to_dict(),
    }


def write_results(run_dir: str | Path, results: dict[str, Any]) -> dict[str, Any]:
    """Write ``results`` to ``run_dir/results.json``; returns them."""
    (Path(run_dir) / "results.json").write_text(json.dumps(results, indent=2))
    return results
