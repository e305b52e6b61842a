"""Hooks into the training loop; subclass :class:`Callback` and override what you need."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attnkit.train.trainer import Trainer, TrainSummary

__all__ = ["Callback", "TimeLimit"]


class Callback:
    """Every hook receives the Trainer; ``trainer.request_stop(reason)`` ends the run
    after the current step. Hooks run on every rank."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first step (after a checkpoint was resumed)."""

    def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        """After each applied optimizer step: ``step``, ``loss``, ``lr``, ``grad_norm``,
        ``tokens``, ``epoch`` and the loss function's logs."""

    def on_evaluate(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        """After each evaluation."""

    def on_checkpoint(self, trainer: Trainer, path: Path | None) -> None:
        """After a checkpoint was written (``path`` is ``None`` except on the main process)."""

    def on_fit_end(self, trainer: Trainer, summary: TrainSummary) -> None:
        """After the run ended, with its summary."""


class TimeLimit(Callback):
    """Stop the run (after the current step) once ``minutes`` of wall time have passed
    since ``fit`` started, periodic evaluation included."""

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60.0
        self.start = 0.0

    def on_fit_start(self, trainer: Any) -> None:
        self.start = time.monotonic()

    def on_step_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
        if time.monotonic() - self.start >= self.seconds:
            trainer.request_stop(f"time limit of {self.seconds / 60:g} minutes")
