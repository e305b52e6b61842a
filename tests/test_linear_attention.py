"""Linear attention: the chunked causal and the factorised forms equal the quadratic formula."""

import pytest
import torch

from attnkit.functional.linear import linear_attention, linear_attention_quadratic

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("length", "chunk"), [(16, 4), (13, 4), (5, 64), (9, 1)])
def test_equals_the_quadratic_formula_with_gradients(causal, length, chunk):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, length, 8, requires_grad=True) for _ in range(3))
    padding = torch.ones(2, length, dtype=torch.bool)
    padding[1, length - 2 :] = False
    ours = linear_attention(q, k, v, causal=causal, key_padding_mask=padding, chunk_size=chunk)
    expected = linear_attention_quadratic(q, k, v, causal=causal, key_padding_mask=padding)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(ours.sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.sum(), (q, k, v))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_quadratic_form_is_the_kernelised_attention_by_hand():
    q, k, v = torch.randn(1, 1, 3, 2), torch.randn(1, 1, 3, 2), torch.randn(1, 1, 3, 4)
    phi = lambda x: torch.nn.functional.elu(x) + 1  # noqa: E731
    similarity = phi(q[0, 0]) @ phi(k[0, 0]).T
    expected = (similarity @ v[0, 0]) / similarity.sum(-1, keepdim=True)
    torch.testing.assert_close(
        linear_attention_quadratic(q, k, v)[0, 0], expected, atol=1e-5, rtol=0
    )


def test_gradcheck_causal_chunked():
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 2, 7, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(
        lambda a, b, c: linear_attention(a, b, c, causal=True, chunk_size=3), (q, k, v)
    )


def test_bad_arguments_are_named():
    q = torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match="chunk_size must be >= 1; got 0"):
        linear_attention(q, q, q, chunk_size=0)
    with pytest.raises(ValueError, match="over the same T"):
        linear_attention(q, q[:, :, :3], q[:, :, :3])
