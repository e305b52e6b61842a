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
    ``"callback"``; ``message`` says it in words. ``checkpoint`` and
    ``best_checkpoint`` are the last and best checkpoint directories written (if
    any); :meth:`to_dict` turns them into strings for ``results.json``.

    Example:
        >>> import json
        >>> from pathlib import Path
        >>> from attnkit.train import TrainSummary
        >>> summary = TrainSummary(steps=500, epochs=2, tokens=64_000, stop_reason="max_steps",
        ...                        message="reached max_steps=500", final_loss=1.25,
        ...                        checkpoint=Path("runs/copy/checkpoints/step_00000500"))
        >>> record = summary.to_dict()
        >>> record["checkpoint"], record["best_checkpoint"]
        ('runs/copy/checkpoints/step_00000500', None)
        >>> json.loads(json.dumps(record))["final_loss"]
        1.25
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
    consecutive_overflows: int = 0
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
    lists, tuples and dataclasses; anything else unchanged.

    Example:
        >>> import torch
        >>> from attnkit.train import move_to_device
        >>> batch = {"input_ids": torch.ones(2, 3), "lengths": (torch.zeros(2), 3), "name": "x"}
        >>> moved = move_to_device(batch, torch.device("cpu"))
        >>> lengths, count = moved["lengths"]
        >>> moved["input_ids"].device.type, lengths.device.type, count, moved["name"]
        ('cpu', 'cpu', 3, 'x')
    """
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
