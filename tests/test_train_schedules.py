"""Learning-rate schedules: the Noam formula, warm-up shapes, and the LambdaLR wiring."""

import itertools
import math

import pytest
import torch

from attnkit.train import TrainConfig, build_scheduler
from attnkit.train.schedules import constant_factor, cosine_factor, linear_factor, noam_factor


def _noam_reference(step: int, d_model: int, warmup: int) -> float:
    """Vaswani et al. (2017), eq. 3: d^-0.5 * min(step^-0.5, step * warmup^-1.5)."""
    return d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


@pytest.mark.parametrize("step", [1, 2, 100, 3999, 4000, 4001, 10_000, 100_000])
def test_noam_matches_the_paper(step):
    expected = _noam_reference(step, 512, 4000)
    assert noam_factor(step, d_model=512, warmup_steps=4000) == pytest.approx(expected, rel=1e-12)
    assert noam_factor(step, d_model=512, warmup_steps=4000, factor=2.0) == pytest.approx(
        2 * expected, rel=1e-12
    )


def test_noam_peaks_at_warmup():
    values = [noam_factor(s, d_model=512, warmup_steps=400) for s in range(1, 2000)]
    assert max(range(len(values)), key=values.__getitem__) + 1 == 400
    assert values[399] == pytest.approx(512**-0.5 * 400**-0.5)


def test_warmup_is_linear_then_constant():
    assert [constant_factor(s, warmup_steps=4) for s in range(1, 7)] == [0.25, 0.5, 0.75, 1, 1, 1]
    assert constant_factor(1, warmup_steps=0) == 1.0


def test_linear_decay_shape():
    values = [linear_factor(s, warmup_steps=2, total_steps=10, min_ratio=0.1) for s in range(1, 11)]
    assert values[:2] == [0.5, 1.0]
    assert values[-1] == pytest.approx(0.1)
    decay = values[1:]
    steps = [b - a for a, b in itertools.pairwise(decay)]
    assert all(d == pytest.approx(steps[0]) for d in steps)  # constant slope
    assert linear_factor(50, warmup_steps=2, total_steps=10, min_ratio=0.1) == pytest.approx(0.1)


def test_cosine_decay_shape():
    kwargs = dict(warmup_steps=10, total_steps=110, min_ratio=0.0)
    assert cosine_factor(5, **kwargs) == 0.5
    assert cosine_factor(10, **kwargs) == 1.0
    assert cosine_factor(60, **kwargs) == pytest.approx(0.5)  # half-way through the decay
    assert cosine_factor(110, **kwargs) == pytest.approx(0.0, abs=1e-12)
    expected = 0.5 * (1 + math.cos(math.pi * 25 / 100))
    assert cosine_factor(35, **kwargs) == pytest.approx(expected)
    floor = cosine_factor(110, warmup_steps=10, total_steps=110, min_ratio=0.2)
    assert floor == pytest.approx(0.2)


def _lrs(config: TrainConfig, steps: int, **kwargs) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = build_scheduler(optimizer, config, **kwargs)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_scheduler_applies_the_factor_of_the_1_based_step():
    config = TrainConfig(max_steps=8, lr=1.0, schedule="noam", warmup_steps=3)
    lrs = _lrs(config, 8, d_model=64)
    assert lrs == pytest.approx([_noam_reference(s, 64, 3) for s in range(1, 9)], rel=1e-12)
    config = TrainConfig(max_steps=8, lr=0.1, schedule="cosine", warmup_steps=2)
    lrs = _lrs(config, 8, total_steps=8)
    assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.1)
    assert lrs[2:] == sorted(lrs[2:], reverse=True)
    assert lrs[-1] == pytest.approx(0.1 * cosine_factor(8, warmup_steps=2, total_steps=8))


def test_schedule_errors_are_clear():
    with pytest.raises(ValueError, match="noam_d_model"):
        _lrs(TrainConfig(max_steps=2, schedule="noam", warmup_steps=2), 1)
    with pytest.raises(ValueError, match="total number of steps"):
        _lrs(TrainConfig(max_epochs=2, schedule="cosine"), 1)
    with pytest.raises(ValueError, match="warmup_steps >= 1"):
        TrainConfig(max_steps=2, schedule="noam")
    with pytest.raises(ValueError, match="schedule must be one of"):
        TrainConfig(max_steps=2, schedule="exponential")


def test_noam_d_model_zero_is_an_error_not_unset():
    config = TrainConfig(max_steps=2, schedule="noam", warmup_steps=2, noam_d_model=4)
    config.noam_d_model = 0  # set after TrainConfig's own check
    with pytest.raises(ValueError, match=r"needs d_model >= 1 \(an int\); got 0"):
        _lrs(config, 1, d_model=16)
    with pytest.raises(ValueError, match="noam_d_model must be an int >= 1 or None; got 0"):
        TrainConfig(max_steps=2, schedule="noam", warmup_steps=2, noam_d_model=0)
