"""Fused projection + cross-entropy: torch's values and gradients, chunking, dtypes, errors."""

import sys

import pytest
import torch
import torch.nn.functional as F

from attnkit.functional import linear_cross_entropy


def _problem(rows=37, dim=16, classes=11, dtype=torch.float32, bias=True, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def leaf(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)

    hidden, weight = leaf(rows, dim).requires_grad_(), leaf(classes, dim).requires_grad_()
    bias_ = leaf(classes).requires_grad_() if bias else None
    targets = torch.randint(0, classes, (rows,), generator=generator)
    targets[::4] = -100
    return hidden, weight, bias_, targets


def _inputs(hidden, weight, bias):
    return tuple(t for t in (hidden, weight, bias) if t is not None)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("chunk_rows", [None, 1, 5, 100])  # one chunk, many, a remainder
@pytest.mark.parametrize("with_bias", [True, False])
def test_values_gradients_and_correct_count_equal_torch(
    reduction, smoothing, chunk_rows, with_bias
):
    hidden, weight, bias, targets = _problem(bias=with_bias)
    ours = linear_cross_entropy(
        hidden,
        weight,
        targets,
        bias=bias,
        label_smoothing=smoothing,
        reduction=reduction,
        chunk_rows=chunk_rows,
    )
    logits = F.linear(hidden, weight, bias)
    theirs = F.cross_entropy(logits, targets, label_smoothing=smoothing, reduction=reduction)
    torch.testing.assert_close(ours.loss, theirs)
    counted = targets != -100
    assert ours.correct.item() == ((logits.argmax(1) == targets) & counted).sum().item()
    inputs = _inputs(hidden, weight, bias)
    ours_grads = torch.autograd.grad(ours.loss * 1.7, inputs)  # a non-unit upstream gradient
    theirs_grads = torch.autograd.grad(theirs * 1.7, inputs)
    for mine, reference in zip(ours_grads, theirs_grads, strict=True):
        torch.testing.assert_close(mine, reference)


def test_gradcheck_in_float64():
    hidden, weight, bias, targets = _problem(rows=9, dim=4, classes=5, dtype=torch.float64)

    def loss(h, w, b):
        return linear_cross_entropy(h, w, targets, bias=b, label_smoothing=0.2, chunk_rows=4).loss

    assert torch.autograd.gradcheck(loss, (hidden, weight, bias))


def test_only_the_inputs_that_need_it_get_gradients_and_no_grad_mode_gives_the_loss():
    hidden, weight, _, targets = _problem(bias=False)
    frozen = weight.detach()
    loss = linear_cross_entropy(hidden, frozen, targets, label_smoothing=0.1).loss
    (grad,) = torch.autograd.grad(loss, hidden)
    expected = F.cross_entropy(hidden @ frozen.T, targets, label_smoothing=0.1)
    torch.testing.assert_close(grad, torch.autograd.grad(expected, hidden)[0])
    with torch.no_grad():
        evaluated = linear_cross_entropy(hidden, weight, targets, label_smoothing=0.1).loss
    torch.testing.assert_close(evaluated, expected.detach())
    assert not evaluated.requires_grad


def test_no_grad_mode_computes_no_gradient_products(monkeypatch):
    # Under no_grad a Function still reports needs_input_grad for inputs that
    # require grad; the loss must not pay for the two gradient products then.
    module = sys.modules["attnkit.functional.linear_cross_entropy"]
    products = []
    monkeypatch.setattr(module, "_accumulate_product", lambda *args: products.append(args))
    hidden, weight, _, targets = _problem(bias=False)
    with torch.no_grad():
        linear_cross_entropy(hidden, weight, targets)
    assert products == []
    linear_cross_entropy(hidden, weight, targets, chunk_rows=10)
    assert len(products) == 4  # one per chunk of 37 rows when gradients are tracked


def test_a_tied_weight_adds_the_projection_gradient_to_the_embedding_gradient():
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(11, 16)
    tokens, targets = torch.randint(0, 11, (2, 6)), torch.randint(0, 11, (12,))

    def grad_of(use_fused):
        embedding.zero_grad()
        hidden = torch.tanh(embedding(tokens)).flatten(0, 1)
        if use_fused:
            loss = linear_cross_entropy(hidden, embedding.weight, targets).loss
        else:
            loss = F.cross_entropy(hidden @ embedding.weight.T, targets)
        loss.backward()
        return embedding.weight.grad.clone()

    torch.testing.assert_close(grad_of(True), grad_of(False))


def test_bf16_autocast_runs_the_products_in_bf16_and_scores_in_float32():
    hidden, weight, bias, targets = _problem(rows=64, dim=32, classes=50)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(hidden, weight, targets, bias=bias, label_smoothing=0.1)
        logits = F.linear(hidden, weight, bias)
    assert ours.loss.dtype == torch.float32 and logits.dtype == torch.bfloat16
    expected = F.cross_entropy(logits.float(), targets, label_smoothing=0.1)
    torch.testing.assert_close(ours.loss, expected, atol=2e-2, rtol=1e-2)
    ours.loss.backward()
    assert hidden.grad.dtype == torch.float32 and weight.grad.dtype == torch.float32


def test_a_second_backward_gives_the_same_gradients():
    hidden, weight, bias, targets = _problem()
    loss = linear_cross_entropy(hidden, weight, targets, bias=bias, label_smoothing=0.1).loss
    first = torch.autograd.grad(loss, hidden, retain_graph=True)[0]
    torch.testing.assert_close(torch.autograd.grad(loss, hidden)[0], first)


def test_errors_name_what_was_expected():
    hidden, weight, targets = torch.randn(4, 3), torch.randn(6, 3), torch.tensor([0, 1, 2, 3])
    with pytest.raises(
        ValueError,
        match=r"hidden \(N, D\) and weight \(V, D\); got hidden \(4, 3\) and weight \(6, 2\)",
    ):
        linear_cross_entropy(hidden, torch.randn(6, 2), targets)
    with pytest.raises(ValueError, match=r"targets must be \(N,\) = \(4,\); got \(2, 2\)"):
        linear_cross_entropy(hidden, weight, targets.view(2, 2))
    with pytest.raises(ValueError, match=r"bias must be \(V,\) = \(6,\); got \(5,\)"):
        linear_cross_entropy(hidden, weight, targets, bias=torch.randn(5))
    with pytest.raises(
        ValueError, match="reduction must be one of \\('mean', 'sum'\\); got 'none'"
    ):
        linear_cross_entropy(hidden, weight, targets, reduction="none")
    with pytest.raises(ValueError, match="chunk_rows must be positive; got -1"):
        linear_cross_entropy(hidden, weight, targets, chunk_rows=-1)
    with pytest.raises(ValueError, match="share a dtype outside autocast"):
        linear_cross_entropy(hidden.double(), weight, targets)
    with pytest.raises(IndexError, match=r"targets must be in \[0, 6\)"):
        linear_cross_entropy(hidden, weight, torch.tensor([0, 1, 2, 6]))
