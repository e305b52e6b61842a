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
    after the current step. Hooks run on every rank.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attnkit.train import Callback, LossOutput, TrainConfig, Trainer
        >>> class StopAt(Callback):
        ...     def __init__(self, last: int) -> None:
        ...         self.last, self.steps = last, []
        ...     def on_step_end(self, trainer, metrics):
        ...         self.steps.append(metrics["step"])
        ...         if metrics["step"] >= self.last:
        ...             trainer.request_stop(f"reached step {self.last}")
        >>> def mse(model, batch):  # a LossFn: summed loss and how many terms
        ...     x, y = batch
        ...     return LossOutput(((model(x) - y) ** 2).sum(), y.numel())
        >>> batches = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(10)]
        >>> config = TrainConfig(max_steps=10, output_dir=None, progress=False)
        >>> stop = StopAt(3)
        >>> summary = Trainer(nn.Linear(4, 1), mse, batches, config, callbacks=[stop]).fit()
        >>> stop.steps, summary.stop_reason, summary.message
        ([1, 2, 3], 'callback', 'stop requested (reached step 3)')
    """

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
    since ``fit`` started, periodic evaluation included.

    The final evaluation and checkpoint still run after the stop, so leave them
    some time when ``minutes`` is a hard budget.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attnkit.train import LossOutput, TimeLimit, TrainConfig, Trainer
        >>> def mse(model, batch):
        ...     x, y = batch
        ...     return LossOutput(((model(x) - y) ** 2).sum(), y.numel())
        >>> batches = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(10)]
        >>> config = TrainConfig(max_steps=1000, output_dir=None, progress=False)
        >>> trainer = Trainer(nn.Linear(4, 1), mse, batches, config, callbacks=[TimeLimit(0)])
        >>> summary = trainer.fit()  # a budget of 0 minutes: stops after the first step
        >>> summary.steps, summary.message
        (1, 'stop requested (time limit of 0 minutes)')
    """

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60.0
        self.start = 0.0

    def on_fit_start(self, trainer: Any) -> None:
        self.start = time.monotonic()

    def on_step_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
        if time.monotonic() - self.start >= self.seconds:
            trainer.request_stop(f"time limit of {self.seconds / 60:g} minutes")
