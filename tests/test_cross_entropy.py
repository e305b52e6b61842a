"""attnkit's cross-entropy: torch's values and gradients, its edge cases and errors."""

import pytest
import torch
import torch.nn.functional as F

from attnkit.functional import cross_entropy


def _batch(rows=37, classes=11, scale=3.0, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, classes, generator=generator) * scale).to(dtype)
    targets = torch.randint(0, classes, (rows,), generator=generator)
    targets[::5] = -100  # some ignored rows
    return logits.requires_grad_(), targets


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("scale", [1.0, 40.0])  # 40: confident rows, tiny probabilities
def test_values_and_gradients_equal_torch(reduction, smoothing, scale):
    logits, targets = _batch(scale=scale)
    ours = cross_entropy(logits, targets, label_smoothing=smoothing, reduction=reduction)
    theirs = F.cross_entropy(logits, targets, label_smoothing=smoothing, reduction=reduction)
    torch.testing.assert_close(ours, theirs)
    upstream = torch.randn_like(ours)  # a weighted 'none' checks per-row gradients too
    (ours_grad,) = torch.autograd.grad(ours, logits, upstream)
    (theirs_grad,) = torch.autograd.grad(theirs, logits, upstream)
    torch.testing.assert_close(ours_grad, theirs_grad)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_gradient_matches_finite_differences_in_float64(smoothing):
    # torch.autograd.gradcheck runs backward twice on one graph, which this
    # loss refuses (its backward reuses the saved probabilities): central
    # differences over every logit instead, a fresh graph for the gradient.
    logits, targets = _batch(rows=6, classes=5, dtype=torch.float64)
    weights = torch.randn(6, dtype=torch.float64)

    def loss_of(x):
        return (
            cross_entropy(x, targets, label_smoothing=smoothing, reduction="none") * weights
        ).sum()

    (analytic,) = torch.autograd.grad(loss_of(logits), logits)
    numeric = torch.zeros_like(analytic)
    step = 1e-6
    with torch.no_grad():
        for index in range(logits.numel()):
            delta = torch.zeros(logits.numel(), dtype=torch.float64)
            delta[index] = step
            delta = delta.view_as(logits)
            numeric.view(-1)[index] = (loss_of(logits + delta) - loss_of(logits - delta)) / (
                2 * step
            )
    torch.testing.assert_close(analytic, numeric, atol=1e-7, rtol=1e-6)


def test_ignore_index_is_any_value_and_ignored_rows_get_no_gradient():
    logits, targets = _batch()
    targets = targets.masked_fill(targets == -100, 0)
    loss = cross_entropy(logits, targets, ignore_index=0, label_smoothing=0.1)
    torch.testing.assert_close(
        loss, F.cross_entropy(logits, targets, ignore_index=0, label_smoothing=0.1)
    )
    loss.backward()
    assert torch.all(logits.grad[targets == 0] == 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_logits_are_computed_in_float32(dtype):
    logits, targets = _batch(dtype=dtype)
    loss = cross_entropy(logits, targets, label_smoothing=0.1)
    assert loss.dtype == torch.float32
    expected = F.cross_entropy(logits.float(), targets, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad.dtype == dtype


def test_all_rows_ignored_gives_nan_mean_like_torch_and_zero_sum():
    logits = torch.randn(3, 4)
    targets = torch.full((3,), -100)
    assert torch.isnan(cross_entropy(logits, targets))
    assert torch.isnan(F.cross_entropy(logits, targets))
    assert cross_entropy(logits, targets, reduction="sum").item() == 0.0


def test_errors_name_what_was_expected():
    logits = torch.randn(4, 6)
    expected_shapes = r"logits \(N, V\) and targets \(N,\); got logits \(2, 2, 6\)"
    with pytest.raises(ValueError, match=expected_shapes):
        cross_entropy(logits.view(2, 2, 6), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"targets must be integer class ids; got torch\.float32"):
        cross_entropy(logits, torch.zeros(4))
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\); got 1.0"):
        cross_entropy(logits, torch.zeros(4, dtype=torch.long), label_smoothing=1.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        cross_entropy(logits, torch.zeros(4, dtype=torch.long), reduction="avg")
    out_of_range = r"targets must be in \[0, 6\) or ignore_index \(-100\); got values from 0 to 6"
    with pytest.raises(IndexError, match=out_of_range):
        cross_entropy(logits, torch.tensor([0, 1, 6, 2]))
    with pytest.raises(IndexError, match=r"got values from -1 to 2"):
        cross_entropy(logits, torch.tensor([0, -1, 2, -100]), label_smoothing=0.1)


def test_a_second_backward_is_refused_not_wrong():
    logits, targets = _batch()
    loss = cross_entropy(logits, targets, label_smoothing=0.1)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward can run once"):
        loss.backward()


def test_compiles_once_whatever_the_number_of_ignored_targets():
    """The range check selects the counted targets (a data-dependent size): under
    torch.compile it broke the graph, and each new count recompiled."""
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    loss = torch.compile(
        lambda logits, t: cross_entropy(logits, t, ignore_index=0, label_smoothing=0.1),
        backend=counter,
    )
    logits = torch.randn(12, 5, requires_grad=True)
    for ignored in (2, 4, 6):
        targets = torch.randint(1, 5, (12,))
        targets[:ignored] = 0
        loss(logits, targets).backward()
    assert counter.frame_count == 1
