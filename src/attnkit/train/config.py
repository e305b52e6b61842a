"""``TrainConfig``: every knob of the :class:`~attnkit.train.Trainer` in one dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["PRECISIONS", "SCHEDULES", "TrainConfig"]

SCHEDULES = ("constant", "linear", "cosine", "noam")
PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adafactor")
DISTRIBUTED = ("auto", "none", "ddp", "fsdp")


@dataclass
class TrainConfig:
    """Settings of one training run.

    Length: ``max_steps`` optimizer steps and/or ``max_epochs`` passes over the
    batch source (at least one of them). One optimizer step consumes
    ``accumulation_steps`` micro-batches (per process).

    Learning rate: ``lr`` scaled by the ``schedule`` factor at step ``t`` (1-based):

    - ``constant``: linear warm-up over ``warmup_steps`` to 1, then 1;
    - ``linear``: warm-up, then linear decay to ``min_lr_ratio`` at the last step;
    - ``cosine``: warm-up, then half-cosine decay to ``min_lr_ratio``;
    - ``noam``: ``noam_factor * d^-0.5 * min(t^-0.5, t * warmup^-1.5)`` with
      ``d = noam_d_model`` (default: the model's ``config.d_model``). With
      ``lr=1`` this is exactly the schedule of "Attention Is All You Need".

    Optimizer: AdamW (``betas``, ``eps``, ``weight_decay``); norms, biases and
    embeddings are not decayed unless ``decay_embeddings`` (GPT-2 / nanoGPT decay
    their embedding matrices). ``optimizer="adafactor"`` is T5's optimizer
    (``torch.optim.Adafactor``: steps relative to each parameter's scale, no
    momentum; ``lr`` caps the relative step size, ``betas`` and ``eps`` are unused).
    ``layer_lr_decay < 1`` (layer-wise learning-rate decay, for fine-tuning a
    pretrained stack) scales layer ``i`` of ``L`` by ``layer_lr_decay ** (L - i)``
    and the embeddings by ``layer_lr_decay ** (L + 1)``; the head keeps ``lr``.
    ``ema_decay`` keeps an exponential moving average of the weights
    (``torch.optim.swa_utils.AveragedModel``, updated after every step):
    evaluation, the best checkpoint and every checkpoint's ``model.safetensors``
    use the averaged weights; the trained ones travel in the trainer state.

    Precision: ``fp32``; ``bf16`` (autocast); ``fp16`` (autocast + gradient scaler).
    Evaluation every ``eval_every`` steps and at the end; ``best_metric`` /
    ``best_mode`` choose the best checkpoint and ``patience`` evaluations
    without improvement stop the run. ``max_bad_steps`` consecutive non-finite
    losses stop it too.

    Distributed (under ``torchrun``): ``distributed="auto"`` uses DDP when
    ``WORLD_SIZE > 1``; ``"fsdp"`` shards parameters with FSDP2 ``fully_shard``
    on every module whose class name is in ``fsdp_units`` (default: names ending
    in ``Layer`` or ``Block``), then on the root. ``shard_source`` gives each rank
    every ``world_size``-th batch of the source (default: unless the source has
    its own ``world_size`` attribute, i.e. already shards).

    Example:
        >>> from attnkit.train import TrainConfig
        >>> config = TrainConfig(max_steps=2000, lr=1e-3, schedule="cosine", warmup_steps=100,
        ...                      min_lr_ratio=0.1, eval_every=250, best_metric="val_loss")
        >>> config.betas, config.grad_clip, config.precision
        ((0.9, 0.98), 1.0, 'fp32')
    """

    # length
    max_steps: int | None = None
    max_epochs: int | None = None
    accumulation_steps: int = 1
    # optimizer
    optimizer: str = "adamw"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    weight_decay: float = 0.01
    decay_embeddings: bool = False
    layer_lr_decay: float = 1.0
    ema_decay: float | None = None
    # schedule
    schedule: str = "constant"
    warmup_steps: int = 0
    noam_d_model: int | None = None
    noam_factor: float = 1.0
    min_lr_ratio: float = 0.0
    # step
    grad_clip: float | None = 1.0
    precision: str = "fp32"
    compile: bool | str = False
    max_bad_steps: int = 10
    # evaluation and early stopping
    eval_every: int | None = None
    best_metric: str | None = None
    best_mode: str = "min"
    patience: int | None = None
    min_delta: float = 0.0
    # output
    output_dir: str | Path | None = "runs/train"
    log_every: int = 10
    checkpoint_every: int | None = None
    keep_last: int = 3
    save_final: bool = True
    plot: bool = True
    tensorboard: bool = False
    progress: bool = True
    # environment
    seed: int | None = 0
    device: str = "auto"
    distributed: str = "auto"
    shard_source: bool | None = None
    find_unused_parameters: bool = False
    fsdp_units: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # YAML gives lists
        self.fsdp_units = tuple(self.fsdp_units)
        self._check_choices()
        self._check_positive()
        if self.max_steps is None and self.max_epochs is None:
            raise ValueError("give max_steps or max_epochs (or both); got neither")
        if self.schedule == "noam" and self.warmup_steps < 1:
            raise ValueError(f"schedule 'noam' needs warmup_steps >= 1; got {self.warmup_steps}")
        if self.patience is not None and self.best_metric is None:
            raise ValueError("patience (early stopping) needs best_metric; got best_metric=None")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None; got {self.ema_decay}")
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ValueError(f"layer_lr_decay must be in (0, 1]; got {self.layer_lr_decay}")

    def _check_choices(self) -> None:
        choices = {
            "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES,
            "precision": PRECISIONS,
            "best_mode": ("min", "max"),
            "distributed": DISTRIBUTED,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {getattr(self, name)!r}")

    def _check_positive(self) -> None:
        for name in ("max_steps", "max_epochs", "eval_every", "checkpoint_every", "patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None; got {value}")
        for name in ("accumulation_steps", "log_every", "keep_last", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.weight_decay < 0:
            raise ValueError(
                "lr must be > 0, warmup_steps and weight_decay >= 0; got "
                f"lr={self.lr}, warmup_steps={self.warmup_steps}, "
                f"weight_decay={self.weight_decay}"
            )
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or None; got {self.grad_clip}")

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-friendly dict (paths as strings, tuples as lists)."""
        data = asdict(self)
        data["betas"] = list(self.betas)
        data["fsdp_units"] = list(self.fsdp_units)
        if self.output_dir is not None:
            data["output_dir"] = str(self.output_dir)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict (e.g. a recipe's YAML ``train:`` section); unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown TrainConfig field(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**data)
