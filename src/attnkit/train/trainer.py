"""The :class:`Trainer`: one training loop for every attnkit model that returns a loss.

Each optimizer step pulls ``accumulation_steps`` micro-batches from the batch
source, runs ``loss_fn(model, batch) -> LossOutput`` under the configured
precision and back-propagates each micro-batch's *summed* loss divided by a
fixed divisor ``c`` (the previous step's tokens per micro-batch, which keeps
fp16 gradients in range). Once the step's token count ``T`` (summed over
micro-batches and ranks) is known, the gradients are scaled by
``c * world_size / T`` — DDP averages over ranks — so a DDP run, an
accumulated run and a single big batch give the same update: the gradient of
the mean loss per token of the global batch. Then: gradient clipping, an AdamW
step and the schedule.

A batch source is any iterable: ``iter(source)`` yields the current epoch's
batches from the saved position, and a resumable source also has
``state_dict()`` / ``load_state_dict()`` recording the position, which the
checkpoints store. Batches with a ``.to(device)`` are moved with it (mappings,
sequences and dataclasses of tensors are moved item by item); a batch's
``num_tokens`` counts its tokens for the throughput.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from attnkit.train.callbacks import Callback
from attnkit.train.checkpoint import (
    CheckpointError,
    CheckpointManager,
    check_model_state,
    list_checkpoints,
    read_checkpoint,
    resolve_checkpoint,
)
from attnkit.train.config import TrainConfig
from attnkit.train.distributed import (
    DistributedContext,
    ShardedBatchSource,
    all_gather_object,
    all_reduce_sum,
    barrier,
    broadcast_object,
    init_distributed,
    is_fsdp,
    no_sync,
    resolve_device,
    wrap_model,
)
from attnkit.train.logging import (
    METRICS_FILE,
    PLOT_FILE,
    MetricsLogger,
    ProgressBar,
    peak_memory_mb,
    plot_loss_curve,
)
from attnkit.train.losses import LossFn, LossOutput, model_output_loss
from attnkit.train.optim import build_optimizer
from attnkit.train.rng import capture_rng_state, restore_rng_state, seed_everything
from attnkit.train.schedules import build_scheduler
from attnkit.train.signals import StopSignals
from attnkit.train.state import LogWindow, TrainCounters, TrainSummary, move_to_device

__all__ = ["EvaluateFn", "Trainer"]

logger = logging.getLogger("attnkit.train")

EvaluateFn = Callable[[nn.Module], Mapping[str, float]]
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Trainer:
    """Trains ``model`` on ``train_source`` with ``loss_fn`` as ``config`` says.

    Args:
        model: any ``nn.Module``; moved to the configured device (and wrapped in
            DDP/FSDP under ``torchrun``; the original stays ``trainer.module``).
        loss_fn: ``loss_fn(model, batch) -> LossOutput`` (sum over tokens and
            their count); ``None`` uses the model's own ``output.loss``
            (:func:`~attnkit.train.losses.model_output_loss`).
        train_source: the batch source (see the module docstring).
        config: a :class:`TrainConfig`.
        evaluate_fn: ``evaluate_fn(model) -> {name: value}``, called every
            ``eval_every`` steps and at the end, in eval mode under
            ``torch.no_grad()``, on every rank (rank 0's result is used).
        callbacks: :class:`~attnkit.train.callbacks.Callback` hooks.

    ``fit()`` trains and returns a :class:`TrainSummary`; ``fit(resume=True)``
    continues from the latest checkpoint in ``output_dir`` (if any) and
    ``fit(resume_from=path)`` from a given one (``"latest"``/``"best"`` name
    those of ``output_dir``). A fresh ``fit()`` refuses an ``output_dir`` that
    holds an earlier run's checkpoints. A run resumed from step ``S`` removes the
    step checkpoints above ``S`` (the run it branches from went on without it),
    and one that had already stopped early stays stopped.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from attnkit.models import GPT, GPTConfig
        >>> from attnkit.train import TrainConfig, Trainer
        >>> gpt = GPT(GPTConfig(vocab_size=20, max_len=16, d_model=32, num_heads=4, num_layers=1))
        >>> windows = torch.randint(0, 20, (8, 4, 16))  # 8 batches of (B, T) = (4, 16)
        >>> batches = [{"input_ids": ids, "labels": ids} for ids in windows]
        >>> config = TrainConfig(max_steps=10, lr=1e-3, output_dir=tempfile.mkdtemp(),
        ...                      progress=False, plot=False)
        >>> summary = Trainer(gpt, None, batches, config).fit()  # None: the model's own loss
        >>> summary.steps, summary.stop_reason
        (10, 'max_steps')
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn | None,
        train_source: Iterable[Any],
        config: TrainConfig,
        *,
        evaluate_fn: EvaluateFn | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.config = config
        self.context = self._init_distributed()
        self.device = resolve_device(config.device, self.context.local_rank)
        self.module = model.to(self.device)
        self.ema = self._build_ema()
        if config.compile:
            self.module.compile(backend="inductor" if config.compile is True else config.compile)
        self.model = wrap_model(
            self.module,
            self._strategy(),
            self.device,
            find_unused_parameters=config.find_unused_parameters,
            fsdp_units=config.fsdp_units,
        )
        self.loss_fn = loss_fn or model_output_loss
        self.source = self._shard(train_source)
        self.evaluate_fn = evaluate_fn
        self.callbacks = list(callbacks)
        self.optimizer = build_optimizer(self.model, config)
        d_model = getattr(getattr(self.module, "config", None), "d_model", None)
        self.scheduler = build_scheduler(
            self.optimizer, config, total_steps=self.total_steps(), d_model=d_model
        )
        self.scaler = self._grad_scaler()
        self.counters = TrainCounters()
        self.losses: list[float] = []
        self.last_eval: dict[str, float] = {}
        self.checkpoints = (
            CheckpointManager(config.output_dir, config.keep_last) if config.output_dir else None
        )
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self._reset_run_state()

    # ------------------------------------------------------------ set-up

    def _build_ema(self) -> AveragedModel | None:
        """The moving average of the weights (and float buffers) for ``config.ema_decay``."""
        decay = self.config.ema_decay
        if decay is None:
            return None
        if self._strategy() == "fsdp":
            raise ValueError(
                "ema_decay needs whole weights on every process; FSDP shards them "
                "(got distributed='fsdp'): use DDP or leave ema_decay unset"
            )
        return AveragedModel(
            self.module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True
        )

    def _init_distributed(self) -> DistributedContext:
        if self.config.distributed == "none":
            return DistributedContext()
        explicit = self.config.distributed in ("ddp", "fsdp")
        return init_distributed(self.config.device, force=explicit)

    def _strategy(self) -> str:
        """``ddp``/``fsdp`` when asked for inside a process group (even of one), ``auto``:
        DDP when there are several processes."""
        wanted = self.config.distributed
        if wanted == "none" or self.context.backend is None:
            return "none"
        if wanted == "auto":
            return "ddp" if self.context.world_size > 1 else "none"
        return wanted

    def _shard(self, source: Iterable[Any]) -> Iterable[Any]:
        world = self.context.world_size
        shard = self.config.shard_source
        if shard is None:
            shard = getattr(source, "world_size", 1) in (None, 1)
        if world > 1 and shard:
            return ShardedBatchSource(source, self.context.rank, world)
        return source

    def _grad_scaler(self) -> torch.amp.GradScaler | None:
        precision = self.config.precision
        cuda = self.device.type == "cuda"
        if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
            raise ValueError("precision 'bf16' is not supported by this GPU; use 'fp16'")
        if precision != "fp16":
            return None
        try:
            return torch.amp.GradScaler(self.device.type)
        except (RuntimeError, ValueError, TypeError, AttributeError) as error:
            raise ValueError(
                f"precision 'fp16' needs a gradient scaler for {self.device.type}, which this "
                f"torch lacks ({error}); use precision 'bf16'"
            ) from error

    def total_steps(self) -> int | None:
        """Optimizer steps the run will take, if known (for decaying schedules)."""
        config = self.config
        steps = config.max_steps
        if config.max_epochs is None:
            return steps
        try:
            micro_batches = len(self.source) * config.max_epochs
        except TypeError:  # epoch length unknown
            return steps
        per_epochs = math.ceil(micro_batches / config.accumulation_steps)
        return per_epochs if steps is None else min(steps, per_epochs)

    def _reset_run_state(self) -> None:
        self._iterator: Iterator[Any] | None = None
        self._empty_passes = 0
        self._stop_reason: str | None = None
        self._stop_message = ""
        self._stop_requested: str | None = None
        self._signals: StopSignals | None = None
        self._signal_name: str | None = None
        self._last_saved_step: int | None = None
        self._last_checkpoint: Path | None = None
        self._window = LogWindow()
        self._log_keys: list[str] | None = None

    @property
    def is_main(self) -> bool:
        return self.context.is_main

    @property
    def evaluated_module(self) -> nn.Module:
        """The module evaluation runs: the weight average with ``ema_decay``, else ``module``."""
        return self.ema.module if self.ema is not None else self.module

    @property
    def step(self) -> int:
        """Optimizer steps applied so far."""
        return self.counters.step

    def request_stop(self, reason: str = "callback") -> None:
        """End the run after the current step (e.g. from a callback)."""
        self._stop_requested = reason

    # ------------------------------------------------------------ fit

    def fit(self, *, resume: bool = False, resume_from: str | Path | None = None) -> TrainSummary:
        """Train until a stop condition; returns a :class:`TrainSummary`.

        Args:
            resume: continue from the latest step checkpoint in ``output_dir``,
                else from its ``best/`` one, when there is one (else start fresh).
            resume_from: a checkpoint directory or run directory, or
                ``"latest"`` / ``"best"`` of ``output_dir``; it must exist.
        """
        started = time.perf_counter()
        self._reset_run_state()
        config = self.config
        self._logger = MetricsLogger(
            config.output_dir, tensorboard=config.tensorboard, enabled=self.is_main
        )
        self._bar: ProgressBar | None = None
        try:
            self._start(resume, resume_from)
            with StopSignals() as signals:
                self._signals = signals
                self._bar = ProgressBar(
                    self.total_steps(), self.step, enabled=config.progress and self.is_main
                )
                for callback in self.callbacks:
                    callback.on_fit_start(self)
                self._loop()
                self._finish()
        finally:
            if self._bar is not None:
                self._bar.close()
            self._logger.close()
        summary = self._summary(time.perf_counter() - started)
        self._logger.log("event", self.step, {"event": "stop", **summary.to_dict()})
        for callback in self.callbacks:
            callback.on_fit_end(self, summary)
        return summary

    def _start(self, resume: bool, resume_from: str | Path | None) -> None:
        path = self._resume_path(resume, resume_from)
        if path is not None:
            self._load(path)
            self._discard_abandoned_checkpoints()
            if self._patience_exhausted():  # the run had stopped early: nothing to do
                message = self._early_stopping_message()
                self._stop("early_stopping", f"{message}; already stopped at step {self.step}")
            return
        self._check_fresh_output_dir()
        if self.config.seed is not None:
            seed_everything(self.config.seed + self.context.rank)
        self._logger.log("event", 0, {"event": "start", "config": self.config.to_dict()})

    def _resume_path(self, resume: bool, resume_from: str | Path | None) -> Path | None:
        """The checkpoint to resume from, as rank 0 resolves it."""
        path = self._find_resume_path(resume, resume_from) if self.is_main else None
        return broadcast_object(path)

    def _find_resume_path(self, resume: bool, resume_from: str | Path | None) -> Path | None:
        if resume_from is not None:
            if str(resume_from) in ("latest", "best"):
                if self.config.output_dir is None:
                    raise ValueError(f"resume_from={resume_from!r} needs config.output_dir")
                return resolve_checkpoint(self.config.output_dir, str(resume_from))
            return resolve_checkpoint(resume_from)
        if resume and self.checkpoints is not None:
            return self.checkpoints.latest() or self.checkpoints.best()
        return None

    def _check_fresh_output_dir(self) -> None:
        """A fresh run must not mix with an earlier run's step or best checkpoints."""
        if self.config.output_dir is None:
            return
        found = self._earlier_checkpoints() if self.is_main else []
        found = broadcast_object(found)
        if found:
            raise FileExistsError(
                f"{self.config.output_dir} already holds checkpoints of an earlier run "
                f"({', '.join(found)}); pass resume=True to continue that run, or use an "
                "empty output_dir"
            )
        if self.is_main:
            (Path(self.config.output_dir) / METRICS_FILE).unlink(missing_ok=True)

    def _earlier_checkpoints(self) -> list[str]:
        """Names of the checkpoints in ``output_dir``: the latest step's, then ``best``."""
        steps = list_checkpoints(self.config.output_dir)
        found = [steps[-1][1].name] if steps else []
        if self.checkpoints is not None and self.checkpoints.best() is not None:
            found.append("best")
        return found

    def _discard_abandoned_checkpoints(self) -> None:
        """After resuming from step S, the ``step_*`` checkpoints above S in ``output_dir``
        belong to the abandoned continuation: remove them, so that keep-last pruning and
        ``latest`` follow the resumed run."""
        if self.checkpoints is None or not self.is_main:
            return
        removed = self.checkpoints.discard_after(self.step)
        if removed:
            names = ", ".join(path.name for path in removed)
            self._logger.log("event", self.step, {"event": "discard", "paths": names})
            self._write(
                f"resumed from step {self.step}: removed the later checkpoints {names} "
                "of the run it branches from",
                logging.WARNING,
            )

    def _loop(self) -> None:
        while self._stop_reason is None:
            if self.config.max_steps is not None and self.step >= self.config.max_steps:
                self._stop("max_steps", f"reached max_steps={self.config.max_steps}")
                break
            batches = self._collect_batches()
            if not batches:
                self._stop("max_epochs", f"completed max_epochs={self.config.max_epochs}")
                break
            self._train_step(batches)

    def _stop(self, reason: str, message: str) -> None:
        if self._stop_reason is None:
            self._stop_reason, self._stop_message = reason, message

    # ------------------------------------------------------------ data

    def _collect_batches(self) -> list[Any]:
        batches: list[Any] = []
        while len(batches) < self.config.accumulation_steps:
            batch = self._next_batch()
            if batch is None:
                break
            batches.append(batch)
        return batches

    def _next_batch(self) -> Any | None:
        """The next micro-batch, moving on to the next epoch; ``None`` after ``max_epochs``."""
        while True:
            if self._iterator is None:
                max_epochs = self.config.max_epochs
                if max_epochs is not None and self.counters.epochs_completed >= max_epochs:
                    return None
                self._iterator = iter(self.source)
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._iterator = None
                self.counters.epochs_completed += 1
                self._sync_epoch()
                self._empty_passes += 1
                if self._empty_passes > 1:
                    raise ValueError(
                        "the batch source yielded no batches in a whole epoch"
                    ) from None
                continue
            self._empty_passes = 0
            return batch

    def _sync_epoch(self) -> None:
        """Take the epoch count from the source when it keeps one (``source.epoch``).

        A source that moves to the next epoch as soon as it hands out an epoch's
        last batch is then counted right after a resume, too.
        """
        epoch = getattr(self.source, "epoch", None)
        if isinstance(epoch, int):
            self.counters.epochs_completed = epoch

    def _data_state(self) -> Any:
        state_dict = getattr(self.source, "state_dict", None)
        return state_dict() if callable(state_dict) else None

    # ------------------------------------------------------------ one step

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = _AUTOCAST_DTYPES.get(self.config.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _forward_backward(self, batches: list[Any]) -> tuple[Tensor, list[str]]:
        """Run and back-propagate the micro-batches; returns the packed step sums."""
        acc = torch.float32 if self.device.type == "mps" else torch.float64
        loss_sum = torch.zeros((), dtype=acc, device=self.device)
        tokens = torch.zeros((), dtype=acc, device=self.device)
        batch_tokens = torch.zeros((), dtype=acc, device=self.device)
        logs: dict[str, list[Tensor]] = {}
        for index, batch in enumerate(batches):
            batch = move_to_device(batch, self.device)
            with no_sync(self.model, enabled=index < len(batches) - 1):
                with self._autocast():
                    output = self.loss_fn(self.model, batch)
                self._check_output(output)
                self._backward(output.loss_sum / self.counters.grad_divisor)
            loss_sum += output.loss_sum.detach().to(acc)
            tokens += output.num_tokens
            counted = getattr(batch, "num_tokens", None)
            batch_tokens += output.num_tokens if counted is None else counted
            for key, value in output.logs.items():
                value = torch.as_tensor(value).detach().to(self.device, acc)
                logs.setdefault(key, []).append(value)
        flags = [float(self._signal_pending()), float(self._stop_requested is not None)]
        log_means = [torch.stack(values).mean() for values in logs.values()]
        head = torch.stack([loss_sum, tokens, batch_tokens])
        pack = torch.cat([head, torch.tensor(flags, dtype=acc, device=self.device)])
        if log_means:
            pack = torch.cat([pack, torch.stack(log_means)])
        return pack, list(logs)

    def _check_output(self, output: LossOutput) -> None:
        if not isinstance(output, LossOutput):
            raise TypeError(f"loss_fn must return a LossOutput; got {type(output).__name__}")
        if output.loss_sum.dim() != 0 or not output.loss_sum.requires_grad:
            raise ValueError(
                "LossOutput.loss_sum must be a scalar tensor that requires grad; got shape "
                f"{tuple(output.loss_sum.shape)}, requires_grad={output.loss_sum.requires_grad}"
            )

    def _backward(self, loss: Tensor) -> None:
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward()

    def _signal_pending(self) -> bool:
        return self._signals is not None and self._signals.received is not None

    def _train_step(self, batches: list[Any]) -> None:
        started = time.perf_counter()
        pack, log_keys = self._forward_backward(batches)
        values = all_reduce_sum(pack).tolist()
        loss_sum, tokens, batch_tokens, signalled, requested = values[:5]
        world = self.context.world_size
        logs = {key: value / world for key, value in zip(log_keys, values[5:], strict=True)}
        self._note_stop_flags(signalled, requested)
        divisor = self.counters.grad_divisor
        if tokens > 0 and math.isfinite(tokens):  # next step's divisor: tokens per micro-batch
            self.counters.grad_divisor = max(tokens / (world * len(batches)), 1.0)
        if tokens <= 0:  # nothing to learn from (all padding): drop quietly
            self.optimizer.zero_grad(set_to_none=True)
            self._logger.log("event", self.step, {"event": "empty_step"})
            return
        if not math.isfinite(loss_sum):
            self._skip_step(loss_sum, what="loss")
            return
        grad_norm = self._update(divisor * world / tokens)
        if grad_norm is None:
            return
        seconds = time.perf_counter() - started
        self._after_step(loss_sum, tokens, batch_tokens, grad_norm, seconds, logs)

    def _note_stop_flags(self, signalled: float, requested: float) -> None:
        """Stop after this step if any rank got a signal or a stop request."""
        if signalled > 0:
            self._signal_name = self._signals.received if self._signal_pending() else "signal"
            self._stop("signal", f"stopped by {self._signal_name}")
        elif requested > 0:
            reason = self._stop_requested or "callback"
            self._stop("callback", f"stop requested ({reason})")

    def _update(self, factor: float) -> float | None:
        """Scale the gradients by ``factor`` (to the per-token mean), clip and apply them;
        ``None`` if the step was skipped."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self._params if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, factor)
        grad_norm = self._clip()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if not math.isfinite(grad_norm):
                self._skip_overflow()
                return None
        elif not math.isfinite(grad_norm):
            self._skip_step(float("nan"), what="gradient")
            return None
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _clip(self) -> float:
        max_norm = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(self._params, max_norm, foreach=True)
        if hasattr(norm, "full_tensor"):  # DTensor under FSDP
            norm = norm.full_tensor()
        return float(norm)

    def _skip_step(self, loss_sum: float, *, what: str) -> None:
        """Drop this step's gradients; stop after ``max_bad_steps`` skipped steps in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        counters = self.counters
        counters.bad_steps += 1
        counters.consecutive_bad += 1
        record = {"event": f"non_finite_{what}", "loss": loss_sum}
        self._logger.log("event", self.step, {**record, "in_a_row": counters.consecutive_bad})
        self._write(
            f"step {self.step + 1}: non-finite {what}; step skipped "
            f"({counters.consecutive_bad} in a row, max_bad_steps={self.config.max_bad_steps})",
            logging.WARNING,
        )
        self._stop_after_bad_steps(what, counters.consecutive_bad)

    def _skip_overflow(self) -> None:
        """An fp16 step whose scaled gradients overflowed: the scaler skipped it and halved
        its scale. Usual for a few steps while the scale settles; the run stops after
        ``max_bad_steps`` in a row once the scale is below 1, where the gradients
        overflow (or are NaN) unscaled and no scale can help."""
        self.optimizer.zero_grad(set_to_none=True)
        self.counters.overflow_steps += 1
        self.counters.consecutive_overflows += 1
        if self.counters.consecutive_overflows >= self.config.max_bad_steps:
            scale = self.scaler.get_scale()  # a device sync: only during a long overflow run
            if scale < 1.0:
                what = f"fp16 gradient, with the loss scale down to {scale:g}"
                self._stop_after_bad_steps(what, self.counters.consecutive_overflows)

    def _stop_after_bad_steps(self, what: str, in_a_row: int) -> None:
        """Stop once ``in_a_row`` (non-finite steps, or fp16 overflows, counted apart: a
        settling loss scale must not bring a later NaN step to the limit) reaches
        ``max_bad_steps``."""
        limit = self.config.max_bad_steps
        if in_a_row >= limit:
            self._stop(
                "non_finite_loss",
                f"training stopped: {in_a_row} steps in a row had a non-finite {what} "
                f"(max_bad_steps={limit}); the weights are those after step {self.step}. "
                "Try a lower lr, grad_clip, or bf16 instead of fp16.",
            )

    def _after_step(
        self,
        loss_sum: float,
        tokens: float,
        batch_tokens: float,
        grad_norm: float,
        seconds: float,
        logs: dict[str, float],
    ) -> None:
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.module)
        counters = self.counters
        counters.step += 1
        counters.consecutive_bad = counters.consecutive_overflows = 0
        counters.tokens += int(tokens)
        loss = loss_sum / tokens
        self.losses.append(loss)
        self._accumulate_window(loss_sum, tokens, batch_tokens, grad_norm, lr, seconds, logs)
        metrics = {"step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm}
        metrics.update({"tokens": int(tokens), "epoch": counters.epochs_completed, **logs})
        if self._bar is not None:
            self._bar.update(loss, lr, batch_tokens / seconds if seconds > 0 else None)
        for callback in self.callbacks:
            callback.on_step_end(self, metrics)
        self._periodic()
        if self.context.world_size == 1:  # alone, no need to wait for the next step's flags
            self._note_stop_flags(
                float(self._signal_pending()), float(self._stop_requested is not None)
            )

    def _periodic(self) -> None:
        config, step = self.config, self.step
        if step % config.log_every == 0:
            self._log_train()
        if config.eval_every is not None and step % config.eval_every == 0:
            self._evaluate()
        if config.checkpoint_every is not None and step % config.checkpoint_every == 0:
            self._save()

    # ------------------------------------------------------------ logs

    def _accumulate_window(
        self,
        loss_sum: float,
        tokens: float,
        batch_tokens: float,
        grad_norm: float,
        lr: float,
        seconds: float,
        logs: dict[str, float],
    ) -> None:
        window = self._window
        window.steps += 1
        window.loss_sum += loss_sum
        window.tokens += tokens
        window.batch_tokens += batch_tokens
        window.seconds += seconds
        window.grad_norm = grad_norm
        window.lr = lr
        for key, value in logs.items():
            window.logs[key] = window.logs.get(key, 0.0) + value

    def _log_train(self) -> None:
        window = self._window
        if window.steps == 0:
            return
        record = {
            "loss": window.loss_sum / window.tokens,
            "lr": window.lr,
            "grad_norm": window.grad_norm,
            "tokens_per_s": window.batch_tokens / window.seconds if window.seconds else None,
            "tokens": self.counters.tokens,
            "epoch": self.counters.epochs_completed,
            "peak_memory_mb": peak_memory_mb(self.device),
        }
        record.update({key: total / window.steps for key, total in window.logs.items()})
        self._logger.log("train", self.step, record)
        self._window = LogWindow()

    def _write(self, message: str, level: int = logging.INFO) -> None:
        """Show ``message`` above the progress bar (main process), else log it.

        Warnings always go to the ``attnkit.train`` logger too.
        """
        if not self.is_main:
            return
        shown = self.config.progress and self._bar is not None
        if shown:
            self._bar.write(message)
        if level >= logging.WARNING or not shown:
            logger.log(level, message)

    # ------------------------------------------------------------ evaluation

    def _evaluate(self) -> None:
        if self.evaluate_fn is None:
            return
        model = self.model if is_fsdp(self.model) else self.evaluated_module
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), self._autocast():
                raw = self.evaluate_fn(model)
        finally:
            model.train(was_training)
        metrics = broadcast_object({key: float(value) for key, value in raw.items()})
        self.counters.last_eval_step = self.step
        self.last_eval = metrics
        self._logger.log("eval", self.step, metrics)
        shown = ", ".join(f"{key}={value:.4g}" for key, value in metrics.items())
        self._write(f"step {self.step}: {shown}")
        self._track_best(metrics)
        for callback in self.callbacks:
            callback.on_evaluate(self, metrics)

    def _improved(self, value: float) -> bool:
        best = self.counters.best_value
        if not math.isfinite(value):
            return False
        if best is None:
            return True
        delta = self.config.min_delta
        return value < best - delta if self.config.best_mode == "min" else value > best + delta

    def _track_best(self, metrics: dict[str, float]) -> None:
        name = self.config.best_metric
        if name is None:
            return
        if name not in metrics:
            raise KeyError(
                f"best_metric {name!r} is not among the evaluation metrics {sorted(metrics)}"
            )
        counters = self.counters
        if self._improved(metrics[name]):
            counters.best_value, counters.best_step = metrics[name], self.step
            counters.bad_evals = 0
            if self.checkpoints is not None:
                self._save(best=True)
            return
        counters.bad_evals += 1
        if self._patience_exhausted():
            self._stop("early_stopping", self._early_stopping_message())

    def _patience_exhausted(self) -> bool:
        """Whether ``patience`` evaluations in a row did not improve (also after a resume)."""
        patience = self.config.patience
        return patience is not None and self.counters.bad_evals >= patience

    def _early_stopping_message(self) -> str:
        counters = self.counters
        best = "none" if counters.best_value is None else f"{counters.best_value:.6g}"
        return (
            f"early stopping: {self.config.best_metric} did not improve for "
            f"{self.config.patience} evaluations (best {best} at step {counters.best_step})"
        )

    # ------------------------------------------------------------ checkpoints

    def _state_options(self, *, saving: bool) -> Any:
        """Full (unsharded) state dicts; under FSDP gathered to rank 0's CPU when saving."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=saving and is_fsdp(self.module))

    def _model_state(self) -> dict[str, Tensor]:
        """The weights evaluations use: the moving average when there is one."""
        if self.ema is not None:
            return self.ema.module.state_dict()
        if is_fsdp(self.module):
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            return get_model_state_dict(self.module, options=self._state_options(saving=True))
        return self.module.state_dict()

    def _optimizer_state(self) -> dict[str, Any]:
        """Optimizer state keyed by parameter names: the same for plain, DDP and FSDP runs."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        options = self._state_options(saving=True)
        return get_optimizer_state_dict(self.module, self.optimizer, options=options)

    def _trainer_state(
        self, optimizer_state: dict[str, Any], ranks: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "counters": asdict(self.counters),
            "optimizer": optimizer_state,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ranks": ranks,
            "world_size": self.context.world_size,
            "last_eval": self.last_eval,
            "config": self.config.to_dict(),
            "ema": self._ema_state(),
        }

    def _ema_state(self) -> dict[str, Any] | None:
        """With a moving average, the trained weights (the checkpoint's model weights are
        the average) and how many steps it has averaged."""
        if self.ema is None:
            return None
        return {"weights": self.module.state_dict(), "updates": int(self.ema.n_averaged)}

    def _save(self, *, best: bool = False) -> Path | None:
        """Write a checkpoint (collectively; only rank 0 writes files)."""
        if self.checkpoints is None:
            return None
        model_state = self._model_state()
        optimizer_state = self._optimizer_state()
        ranks = all_gather_object({"rng": capture_rng_state(), "data": self._data_state()})
        path = None
        if self.is_main:
            meta = {
                "epoch": self.counters.epochs_completed,
                "kind": "best" if best else "step",
                "metrics": self.last_eval,
                "best_metric": self.config.best_metric,
                "best_value": self.counters.best_value,
            }
            state = self._trainer_state(optimizer_state, ranks)
            path = self.checkpoints.save(self.step, model_state, state, meta, best=best)
            self._logger.log("event", self.step, {"event": "checkpoint", "path": str(path)})
        if not best:
            self._last_saved_step = self.step
            self._last_checkpoint = path
        barrier()
        for callback in self.callbacks:
            callback.on_checkpoint(self, path)
        return path

    def _load(self, path: Path) -> None:
        """Restore model, optimizer, schedule, scaler, counters, RNG and data position."""
        checkpoint = read_checkpoint(path, map_location="cpu")
        state = checkpoint.trainer_state or {}
        missing = {"counters", "optimizer", "scheduler", "ranks"} - set(state)
        if missing:
            raise CheckpointError(f"{path}: trainer state lacks {sorted(missing)}")
        self._apply_weights(checkpoint.model_state, state, path)
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.counters = TrainCounters(**state["counters"])
        self.last_eval = dict(state.get("last_eval") or {})
        self._restore_rank_state(state["ranks"], path)
        self._last_saved_step = self.step
        self._last_checkpoint = path
        self._logger.truncate_after(self.step)
        self._logger.log("event", self.step, {"event": "resume", "path": str(path)})

    def _apply_weights(
        self, model_state: dict[str, Tensor], state: dict[str, Any], path: Path
    ) -> None:
        """Trained weights and optimizer, then the moving average (the checkpoint's model
        weights when the run keeps one); everything is checked before anything loads."""
        ema = state.get("ema")
        if (ema is None) != (self.ema is None):
            saved = "without" if ema is None else "with"
            raise CheckpointError(
                f"{path} was saved {saved} a weight average; this run has "
                f"ema_decay={self.config.ema_decay}: resume with the run's own ema_decay"
            )
        if self.ema is None:
            self._apply_weights_and_optimizer(model_state, state["optimizer"], path)
            return
        check_model_state(self.ema.module, model_state, source=str(path))
        self._apply_weights_and_optimizer(ema["weights"], state["optimizer"], path)
        self.ema.module.load_state_dict(model_state, strict=True)
        self.ema.n_averaged.fill_(ema["updates"])

    def _apply_weights_and_optimizer(
        self, model_state: dict[str, Tensor], optimizer_state: dict[str, Any], path: Path
    ) -> None:
        """Check the weights, load the optimizer state (which checks itself first), then the
        weights: a checkpoint that does not fit leaves the model untouched."""
        from torch.distributed.checkpoint.state_dict import (
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = self._state_options(saving=False)
        fsdp = is_fsdp(self.module)
        if not fsdp:
            check_model_state(self.module, model_state, source=str(path))
        try:
            set_optimizer_state_dict(self.module, self.optimizer, optimizer_state, options=options)
        except (ValueError, KeyError, RuntimeError) as error:
            raise CheckpointError(f"{path}: optimizer state does not fit: {error}") from None
        if fsdp:
            set_model_state_dict(self.module, model_state, options=options)
        else:
            self.module.load_state_dict(model_state, strict=True)

    def _restore_rank_state(self, ranks: list[dict[str, Any]], path: Path) -> None:
        rank, world = self.context.rank, self.context.world_size
        if len(ranks) != world:
            self._write(
                f"{path} was saved by {len(ranks)} processes, resuming with {world}: "
                "random generators are reseeded and every rank resumes rank 0's data position",
                logging.WARNING,
            )
            if self.config.seed is not None:
                seed_everything(self.config.seed + rank + self.step)
            mine = {"rng": None, "data": ranks[0]["data"]}
        else:
            mine = ranks[rank]
        if mine["rng"] is not None:
            restore_rng_state(mine["rng"])
        loader = getattr(self.source, "load_state_dict", None)
        if mine["data"] is not None and callable(loader):
            loader(mine["data"])
            self._sync_epoch()
        else:
            self._write(
                "the batch source keeps no position (no state_dict/load_state_dict); "
                "it restarts from its beginning",
                logging.WARNING,
            )

    # ------------------------------------------------------------ end

    def _finish(self) -> None:
        reason = self._stop_reason
        self._log_train()
        if (
            reason not in ("signal", "early_stopping")
            and self.evaluate_fn is not None
            and self.counters.last_eval_step != self.step
            and self.step > 0
        ):
            self._evaluate()
        wants_save = self.config.save_final or reason == "signal"
        if wants_save and self._last_saved_step != self.step:
            self._save()
        if reason == "signal":
            where = self._last_checkpoint or "nothing (no output_dir)"
            self._stop_message += f" after step {self.step}; saved {where}"
        if self._stop_message:
            bad = self._stop_reason == "non_finite_loss"
            self._write(self._stop_message, logging.ERROR if bad else logging.INFO)
        if self.is_main and self.config.plot and self.config.output_dir is not None:
            metrics = Path(self.config.output_dir) / METRICS_FILE
            if metrics.is_file():
                plot_loss_curve(metrics, Path(self.config.output_dir) / PLOT_FILE)

    def _summary(self, elapsed: float) -> TrainSummary:
        counters = self.counters
        best = self.checkpoints.best() if self.checkpoints is not None else None
        return TrainSummary(
            steps=counters.step,
            epochs=counters.epochs_completed,
            tokens=counters.tokens,
            stop_reason=self._stop_reason or "max_steps",
            message=self._stop_message,
            bad_steps=counters.bad_steps,
            overflow_steps=counters.overflow_steps,
            final_loss=self.losses[-1] if self.losses else None,
            best_metric=self.config.best_metric,
            best_value=counters.best_value,
            best_step=counters.best_step,
            last_eval=dict(self.last_eval),
            checkpoint=self._last_checkpoint if self.is_main else None,
            best_checkpoint=best if self.is_main else None,
            signal=self._signal_name,
            elapsed_s=elapsed,
        )
