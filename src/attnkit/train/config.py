"""``TrainConfig``: every knob of the :class:`~attnkit.train.Trainer` in one dataclass."""

from __future__ import annotations

import math
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
    embeddings (embedding modules, and tables a model names in its
    ``embedding_parameter_names()``, as ViT does its class token and positions)
    are not decayed unless ``decay_embeddings`` (GPT-2 / nanoGPT decay their
    embedding matrices). ``optimizer="adafactor"`` is T5's optimizer
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
    without improvement stop the run. ``max_bad_steps`` skipped steps in a row
    stop it too: steps with a non-finite loss or gradient; with ``fp16``, steps whose
    scaled gradients overflowed count on their own, and only once the loss scale
    (halved at each) is below 1, where the gradients overflow unscaled.

    Distributed (under ``torchrun``): ``distributed="auto"`` uses DDP when
    ``WORLD_SIZE > 1``; ``"fsdp"`` shards parameters with FSDP2 ``fully_shard``
    on every module whose class name is in ``fsdp_units`` (a name or a list of
    names; default: names ending in ``Layer`` or ``Block``), then on the root.
    ``shard_source`` gives each rank every ``world_size``-th batch of the source
    (default: unless the source has its own ``world_size`` attribute, i.e.
    already shards).

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
        self.betas = _pair("betas", self.betas)  # YAML gives lists
        self.fsdp_units = _names("fsdp_units", self.fsdp_units)
        self._check_choices()
        self._check_counts()
        self._check_reals()
        if self.max_steps is None and self.max_epochs is None:
            raise ValueError("give max_steps or max_epochs (or both); got neither")
        if self.schedule == "noam" and self.warmup_steps < 1:
            raise ValueError(f"schedule 'noam' needs warmup_steps >= 1; got {self.warmup_steps}")
        if self.patience is not None and self.best_metric is None:
            raise ValueError("patience (early stopping) needs best_metric; got best_metric=None")

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

    def _check_counts(self) -> None:
        """Integer fields: ``(name, smallest allowed value, None allowed)``."""
        counts = (
            ("max_steps", 1, True),
            ("max_epochs", 1, True),
            ("eval_every", 1, True),
            ("checkpoint_every", 1, True),
            ("patience", 1, True),
            ("noam_d_model", 1, True),
            ("accumulation_steps", 1, False),
            ("log_every", 1, False),
            ("keep_last", 1, False),
            ("max_bad_steps", 1, False),
            ("warmup_steps", 0, False),
            ("seed", None, True),
        )
        for name, low, optional in counts:
            _check_int(name, getattr(self, name), low, optional=optional)

    def _check_reals(self) -> None:
        """Real-valued fields, each finite and in its interval (``ends``: open or closed)."""
        _check_real("lr", self.lr, 0.0, ends="(")
        _check_real("eps", self.eps, 0.0)
        _check_real("weight_decay", self.weight_decay, 0.0)
        _check_real("noam_factor", self.noam_factor, 0.0, ends="(")
        _check_real("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        _check_real("min_delta", self.min_delta, 0.0)
        _check_real("layer_lr_decay", self.layer_lr_decay, 0.0, 1.0, ends="(]")
        if self.grad_clip is not None:
            _check_real("grad_clip", self.grad_clip, 0.0, ends="(", optional=True)
        if self.ema_decay is not None:
            _check_real("ema_decay", self.ema_decay, 0.0, 1.0, ends="()", optional=True)
        for index, beta in enumerate(self.betas):
            _check_real(f"betas[{index}]", beta, 0.0, 1.0, ends="[)")

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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(name: str, value: Any, low: int | None, *, optional: bool) -> None:
    """Raise unless ``value`` is an int (not a bool) ``>= low`` (or ``None`` if optional)."""
    if value is None and optional:
        return
    if isinstance(value, int) and not isinstance(value, bool) and (low is None or value >= low):
        return
    bound = "an int" if low is None else f"an int >= {low}"
    allowed = f"{bound} or None" if optional else bound
    raise ValueError(f"{name} must be {allowed}; got {value!r} ({type(value).__name__})")


def _check_real(
    name: str,
    value: Any,
    low: float,
    high: float | None = None,
    *,
    ends: str = "[]",
    optional: bool = False,
) -> None:
    """Raise unless ``value`` is a finite number from ``low`` to ``high`` (``None``: no
    upper bound); ``ends`` says which ends are open, e.g. ``"[)"`` for ``[low, high)``.
    The message names the interval: ``betas[1] must be in [0, 1); got 1.5``."""
    low_open, high_open = ends[0] == "(", ends[-1] == ")"
    if high is None:
        wanted = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        wanted = f"in {ends[0]}{low:g}, {high:g}{')' if high_open else ']'}"
    fits = _is_number(value) and math.isfinite(value)
    if fits:
        above = value > low if low_open else value >= low
        below = high is None or (value < high if high_open else value <= high)
        fits = above and below
    if not fits:
        raise ValueError(f"{name} must be {wanted}{' or None' if optional else ''}; got {value!r}")


def _pair(name: str, value: Any) -> tuple[float, float]:
    """Two numbers as a tuple (YAML gives a list)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair of numbers (beta1, beta2); got {value!r}")
    return tuple(value)


def _names(name: str, value: Any) -> tuple[str, ...]:
    """Class names as a tuple; a single name (a string) becomes a one-element tuple."""
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(item, str) and item for item in value
    ):
        raise ValueError(
            f"{name} must be a class name or a list of class names (non-empty strings); "
            f"got {value!r}"
        )
    return tuple(value)
