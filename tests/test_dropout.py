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
    expected = (y != 0).float() / 0.7
    torch.testing.assert_close(x.grad, expected)


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
