"""Learning-rate schedules as multipliers of the base ``lr``.

Every function takes the 1-based number ``step`` of the optimizer step about to
be taken and returns the factor applied to the base learning rate.
:func:`build_scheduler` wraps one in a ``torch.optim.lr_scheduler.LambdaLR``
(whose state is just the step count, so it checkpoints and resumes exactly).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from attnkit.train.config import TrainConfig

__all__ = [
    "build_scheduler",
    "constant_factor",
    "cosine_factor",
    "linear_factor",
    "noam_factor",
    "schedule_function",
]


def noam_factor(step: int, *, d_model: int, warmup_steps: int, factor: float = 1.0) -> float:
    """``factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)`` (Vaswani et al. 2017).

    Rises linearly to its peak at ``step == warmup_steps``, then decays as ``step^-0.5``.

    Example:
        >>> from attnkit.train import noam_factor
        >>> steps = (1000, 4000, 16000)  # the paper's base model: d_model 512, 4000 warm-up steps
        >>> factors = [noam_factor(s, d_model=512, warmup_steps=4000) for s in steps]
        >>> tuple(round(f * 1e4, 2) for f in factors)  # in units of 1e-4: peak at step 4000
        (1.75, 6.99, 3.49)
    """
    step = max(step, 1)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def _warmup(step: int, warmup_steps: int) -> float | None:
    """Linear warm-up factor ``step / warmup`` while warming up, else ``None``."""
    if warmup_steps > 0 and step <= warmup_steps:
        return step / warmup_steps
    return None


def constant_factor(step: int, *, warmup_steps: int = 0) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then 1.

    Example:
        >>> from attnkit.train import constant_factor
        >>> [constant_factor(step, warmup_steps=4) for step in range(1, 7)]  # steps 1 to 6
        [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    """
    warm = _warmup(step, warmup_steps)
    return 1.0 if warm is None else warm


def _progress(step: int, warmup_steps: int, total_steps: int) -> float:
    """Share in ``[0, 1]`` of the post-warm-up steps done at ``step``."""
    span = max(total_steps - warmup_steps, 1)
    return min(max((step - warmup_steps) / span, 0.0), 1.0)


def linear_factor(
    step: int, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> float:
    """Warm-up, then linear decay from 1 to ``min_ratio`` at ``total_steps``.

    Example:
        >>> from attnkit.train import linear_factor
        >>> factors = [linear_factor(s, warmup_steps=2, total_steps=6, min_ratio=0.2)
        ...            for s in range(1, 9)]
        >>> tuple(round(f, 2) for f in factors)  # stays at min_ratio after total_steps
        (0.5, 1.0, 0.8, 0.6, 0.4, 0.2, 0.2, 0.2)
    """
    warm = _warmup(step, warmup_steps)
    if warm is not None:
        return warm
    return 1.0 - (1.0 - min_ratio) * _progress(step, warmup_steps, total_steps)


def cosine_factor(
    step: int, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> float:
    """Warm-up, then half-cosine decay from 1 to ``min_ratio`` at ``total_steps``.

    Example:
        >>> from attnkit.train import cosine_factor
        >>> factors = [cosine_factor(s, warmup_steps=2, total_steps=6) for s in range(1, 7)]
        >>> tuple(round(f, 2) for f in factors)  # steps 1-2 warm up, 3-6 decay to min_ratio 0
        (0.5, 1.0, 0.85, 0.5, 0.15, 0.0)
    """
    warm = _warmup(step, warmup_steps)
    if warm is not None:
        return warm
    cosine = 0.5 * (1.0 + math.cos(math.pi * _progress(step, warmup_steps, total_steps)))
    return min_ratio + (1.0 - min_ratio) * cosine


def schedule_function(
    config: TrainConfig, *, total_steps: int | None = None, d_model: int | None = None
) -> Callable[[int], float]:
    """The 1-based ``step -> factor`` function ``config.schedule`` names.

    ``linear`` and ``cosine`` need ``total_steps``; ``noam`` needs ``d_model``
    (``config.noam_d_model`` wins over the argument).
    """
    warmup = config.warmup_steps
    if config.schedule == "constant":
        return lambda step: constant_factor(step, warmup_steps=warmup)
    if config.schedule == "noam":
        d = d_model if config.noam_d_model is None else config.noam_d_model
        if d is None:
            raise ValueError("schedule 'noam' needs noam_d_model (or a model with config.d_model)")
        if not isinstance(d, int) or isinstance(d, bool) or d < 1:
            raise ValueError(f"schedule 'noam' needs d_model >= 1 (an int); got {d!r}")
        return lambda step: noam_factor(
            step, d_model=d, warmup_steps=warmup, factor=config.noam_factor
        )
    if total_steps is None:
        raise ValueError(
            f"schedule {config.schedule!r} needs the total number of steps: set max_steps, "
            "or max_epochs with a batch source that has len()"
        )
    decay = linear_factor if config.schedule == "linear" else cosine_factor
    ratio = config.min_lr_ratio
    return lambda step: decay(step, warmup_steps=warmup, total_steps=total_steps, min_ratio=ratio)


def build_scheduler(
    optimizer: Optimizer,
    config: TrainConfig,
    *,
    total_steps: int | None = None,
    d_model: int | None = None,
) -> LambdaLR:
    """``LambdaLR`` applying :func:`schedule_function`; call ``.step()`` after each update.

    The learning rate is the optimizer's base ``lr`` times the schedule's factor;
    ``total_steps`` is needed by ``linear`` and ``cosine``, ``d_model`` by ``noam``.

    Example:
        >>> from torch import nn
        >>> from attnkit.train import TrainConfig, build_optimizer, build_scheduler
        >>> config = TrainConfig(max_steps=6, lr=1e-3, schedule="linear", warmup_steps=2)
        >>> optimizer = build_optimizer(nn.Linear(2, 2), config)
        >>> scheduler = build_scheduler(optimizer, config, total_steps=6)
        >>> lrs = []
        >>> for step in range(6):  # training: backward(), optimizer.step(), scheduler.step()
        ...     lrs.append(round(scheduler.get_last_lr()[0], 6))
        ...     optimizer.step()
        ...     scheduler.step()
        >>> lrs
        [0.0005, 0.001, 0.00075, 0.0005, 0.00025, 0.0]
    """
    function = schedule_function(config, total_steps=total_steps, d_model=d_model)
    return LambdaLR(optimizer, lambda index: function(index + 1))
