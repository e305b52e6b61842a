"""attnkit's CPU dropout: torch's distribution, gradients through the mask, dtypes, errors."""

import pytest
import torch

from attnkit.functional import dropout
from attnkit.nn import Dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keeps_one_minus_p_and_scales_the_rest(p):
    x = torch.ones(500, 400)
    y = dropout(x, p)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=0.005)
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # expectation preserved


def test_gradient_is_the_same_mask_and_scale():
    x = torch.randn(64, 64, requires_grad=True)
    y = dropout(x, 0.3)
    y.sum().backward()
    keep_probability = 1 - round(0.3 * 2**15) / 2**15  # p on the 2**-15 grid
    expected = (y != 0).float() / keep_probability
    torch.testing.assert_close(x.grad, expected)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.9])
def test_every_lane_of_a_random_word_keeps_one_minus_p(p):
    # Four elements share one int64 draw; the top lane has 15 bits, the others 16.
    kept = dropout(torch.ones(200_000, 4), p) != 0
    per_lane = kept.float().mean(0)
    torch.testing.assert_close(per_lane, torch.full((4,), 1 - p), atol=0.005, rtol=0)
    # Lanes of one word are independent: two dropped together as often as p**2.
    both = (~kept[:, 0] & ~kept[:, 3]).float().mean().item()
    assert both == pytest.approx(p * p, abs=0.005)


@pytest.mark.parametrize("count", [1, 3, 5, 1001])
def test_sizes_not_a_multiple_of_four(count):
    y = dropout(torch.ones(count), 0.5)
    assert y.shape == (count,)
    assert set(y.tolist()) <= {0.0, 2.0}


def test_p_on_the_grid_scales_exactly_and_small_p_uses_floats():
    x = torch.ones(10_000)
    on_grid = dropout(x, 0.125)  # 4096 / 2**15: no rounding
    kept = on_grid[on_grid != 0]
    assert torch.equal(kept, torch.full_like(kept, 1 / 0.875))
    small = dropout(x, 0.001)  # rounding would move it by 0.7%: float uniforms
    kept = small[small != 0]
    assert torch.equal(kept, torch.full_like(kept, 1 / 0.999))


def test_identity_in_eval_or_at_zero_and_zeros_at_one():
    x = torch.randn(8, 8)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    module = Dropout(0.5).eval()
    assert module(x) is x


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_keeps_the_dtype(dtype):
    x = torch.ones(100, 100, dtype=dtype)
    y = dropout(x, 0.25)
    assert y.dtype == dtype
    assert (y != 0).float().mean().item() == pytest.approx(0.75, abs=0.02)


def test_seeded_like_torch():
    torch.manual_seed(3)
    first = dropout(torch.ones(10, 10), 0.5)
    torch.manual_seed(3)
    assert torch.equal(first, dropout(torch.ones(10, 10), 0.5))


def test_is_a_torch_dropout_and_rejects_bad_p():
    assert isinstance(Dropout(0.1), torch.nn.Dropout)
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\]; got 1.5"):
        dropout(torch.ones(2), 1.5)
