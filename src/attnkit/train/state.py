"""The Trainer's bookkeeping: run counters (checkpointed), the log window, the run's
summary, and moving batches to a device."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["LogWindow", "TrainCounters", "TrainSummary", "move_to_device"]


@dataclass
class TrainSummary:
    """What :meth:`Trainer.fit` did.

    ``stop_reason``: ``"max_steps"``, ``"max_epochs"``, ``"early_stopping"``,
    ``"non_finite_loss"``, ``"signal"`` (SIGINT/SIGTERM; ``signal`` names it) or
    ``"callback"``; ``message`` says it in words.
    """

    steps: int
    epochs: int
    tokens: int
    stop_reason: str
    message: str
    bad_steps: int = 0
    overflow_steps: int = 0
    final_loss: float | None = None
    best_metric: str | None = None
    best_value: float | None = None
    best_step: int | None = None
    last_eval: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    signal: str | None = None
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("checkpoint", "best_checkpoint"):
            data[key] = None if data[key] is None else str(data[key])
        return data


@dataclass
class TrainCounters:
    """Progress that a checkpoint carries over to a resumed run."""

    step: int = 0
    epochs_completed: int = 0
    tokens: int = 0
    bad_steps: int = 0
    consecutive_bad: int = 0
    overflow_steps: int = 0
    best_value: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    last_eval_step: int = -1
    grad_divisor: float = 1.0


@dataclass
class LogWindow:
    """Sums over the steps since the last train log record."""

    steps: int = 0
    loss_sum: float = 0.0
    tokens: float = 0.0
    batch_tokens: float = 0.0
    seconds: float = 0.0
    grad_norm: float = 0.0
    lr: float = 0.0
    logs: dict[str, float] = field(default_factory=dict)


def move_to_device(batch: Any, device: torch.device) -> Any:
    """``batch.to(device)`` if it has one, else its tensors moved inside mappings,
    lists, tuples and dataclasses; anything else unchanged."""
    if callable(getattr(batch, "to", None)):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return type(batch)({key: move_to_device(value, device) for key, value in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(value, device) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(value, device) for value in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {
            f.name: move_to_device(getattr(batch, f.name), device)
            for f in dataclasses.fields(batch)
            if f.init
        }
        return dataclasses.replace(batch, **changes)
    return batch
