"""Blockwise sliding-window attention equals dense attention under the window mask."""

import pytest
import torch

from attnkit.functional import create_sliding_window_mask, scaled_dot_product_attention
from attnkit.functional.local import sliding_window_attention

pytestmark = pytest.mark.usefixtures("single_thread")


def dense(q, k, v, window, causal, padding=None):
    mask = create_sliding_window_mask(q.size(2), window=window, causal=causal)
    if padding is not None:
        mask = mask & padding[:, None, None, :]
    return scaled_dot_product_attention(q, k, v, mask, backend="math")[0]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(("length", "window"), [(16, 4), (13, 4), (7, 16), (20, 1)])
def test_equals_dense_with_the_window_mask_including_gradients(causal, length, window):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, length, 8, requires_grad=True) for _ in range(3))
    padding = torch.ones(2, length, dtype=torch.bool)
    padding[1, length - 3 :] = False
    ours = sliding_window_attention(q, k, v, window=window, causal=causal, key_padding_mask=padding)
    expected = dense(q, k, v, window, causal, padding)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_grouped_query_heads_and_gradcheck():
    torch.manual_seed(1)
    q = torch.randn(1, 4, 9, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 2, 9, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, 9, 4, dtype=torch.float64, requires_grad=True)
    expected = dense(q, k, v, 3, True)
    torch.testing.assert_close(sliding_window_attention(q, k, v, window=3), expected)
    assert torch.autograd.gradcheck(
        lambda a, b, c: sliding_window_attention(a, b, c, window=3, causal=False), (q, k, v)
    )


def test_memory_is_linear_in_length():
    """The largest intermediate is (B, H, T / w, w, 3w): 3w scores per query, not T."""
    q = torch.randn(1, 1, 4096, 8)
    out = sliding_window_attention(q, q, q, window=64, causal=False)
    assert out.shape == q.shape


def test_bad_arguments_are_named():
    q = torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match="window must be >= 1; got 0"):
        sliding_window_attention(q, q, q, window=0)
    with pytest.raises(ValueError, match="over the same T"):
        sliding_window_attention(q, q[:, :, :3], q[:, :, :3], window=2)
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(B, T\) = \(1, 5\)"):
        sliding_window_attention(q, q, q, window=2, key_padding_mask=torch.ones(1, 4))


@pytest.mark.parametrize("causal", [True, False])
def test_module_blockwise_path_equals_its_dense_path_and_the_cache(causal):
    from attnkit.nn import RotaryEmbedding, SlidingWindowAttention

    torch.manual_seed(2)
    module = SlidingWindowAttention(16, 4, window=3, rotary=RotaryEmbedding(4)).eval()
    x = torch.randn(2, 10, 16)
    padding = torch.ones(2, 10, dtype=torch.bool)
    padding[1, 7:] = False
    mask = padding[:, None, None, :]
    blockwise, _ = module(x, mask=mask, is_causal=causal)
    dense, weights = module(x, mask=mask, is_causal=causal, need_weights=True)
    torch.testing.assert_close(blockwise, dense, atol=1e-5, rtol=0)
    assert (weights[0, 0, 9, :6] == 0).all()  # outside the window
    if causal:
        cache = module.new_cache(2, 10, like=x)
        first, _ = module(x[:, :4], is_causal=True, cache=cache)
        rest = [module(x[:, t : t + 1], is_causal=True, cache=cache)[0] for t in range(4, 10)]
        full, _ = module(x, is_causal=True)
        torch.testing.assert_close(torch.cat([first, *rest], dim=1), full, atol=1e-5, rtol=0)
