"""Bahdanau, the three Luong scores and AttentionLayer against float64 loops by hand."""

import math

import pytest
import torch

from attnkit.nn import AttentionLayer, BahdanauAttention, LuongAttention

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = dict(atol=1e-10, rtol=1e-10)
B, TQ, TK, DQ, DK, DV = 3, 4, 5, 6, 7, 8
# Example 0 sees every key, example 1 the first three, example 2 only the first.
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)


def _randomize(module: torch.nn.Module) -> torch.nn.Module:
    """Float64 with every parameter (biases included) drawn at random: zeros hide bugs."""
    module = module.double()
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0.0, 0.5)
    return module


def _modules() -> dict[str, torch.nn.Module]:
    return {
        "bahdanau": _randomize(BahdanauAttention(DQ, DK, hidden_dim=9)),
        "dot": _randomize(LuongAttention(DK, DK, "dot")),
        "general": _randomize(LuongAttention(DQ, DK, "general")),
        "concat": _randomize(LuongAttention(DQ, DK, "concat", hidden_dim=9)),
    }


def _score(name: str, module: torch.nn.Module, q: torch.Tensor, k: torch.Tensor) -> float:
    """One query vector against one key vector, written out from the papers."""
    if name == "bahdanau":
        hidden = module.query_proj.weight @ q + module.key_proj.weight @ k + module.key_proj.bias
        return float(module.energy.weight[0] @ torch.tanh(hidden))
    if name == "dot":
        return float(q @ k)
    if name == "general":
        return float(q @ (module.weight.weight @ k))
    return float(module.energy.weight[0] @ torch.tanh(module.weight.weight @ torch.cat([q, k])))


def _attend_by_hand(scores: list[float], visible: list[bool], values: torch.Tensor):
    """Masked softmax over the visible scores and the weighted sum of ``values (Tk, Dv)``."""
    weights = torch.zeros(len(scores), dtype=torch.float64)
    if any(visible):
        top = max(s for s, v in zip(scores, visible, strict=True) if v)
        exps = [math.exp(s - top) if v else 0.0 for s, v in zip(scores, visible, strict=True)]
        weights = torch.tensor(exps, dtype=torch.float64) / sum(exps)
    return weights @ values, weights


@torch.no_grad()
def _reference(name, module, query, keys, values, mask):
    """Loops over examples, queries and keys. ``query (B, Tq, Dq)``, ``mask (B, Tq, Tk)``."""
    contexts = torch.zeros(query.size(0), query.size(1), values.size(-1), dtype=torch.float64)
    weights = torch.zeros(query.size(0), query.size(1), keys.size(1), dtype=torch.float64)
    for b in range(query.size(0)):
        for t in range(query.size(1)):
            scores = [_score(name, module, query[b, t], keys[b, s]) for s in range(keys.size(1))]
            visible = [bool(mask[b, t, s]) for s in range(keys.size(1))]
            contexts[b, t], weights[b, t] = _attend_by_hand(scores, visible, values[b])
    return contexts, weights


def _inputs(query_dim: int, steps: int | None = TQ):
    shape = (B, query_dim) if steps is None else (B, steps, query_dim)
    query = torch.randn(shape, dtype=torch.float64)
    keys = torch.randn(B, TK, DK, dtype=torch.float64)
    values = torch.randn(B, TK, DV, dtype=torch.float64)
    return query, keys, values


NAMES = ["bahdanau", "dot", "general", "concat"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("with_values", [False, True])
def test_several_queries_match_the_hand_computed_reference(name, with_values):
    module = _modules()[name]
    query, keys, values = _inputs(module.query_dim)
    values = values if with_values else None
    context, weights = module(query, keys, values, MASK)
    memory = keys if values is None else values
    expected = _reference(name, module, query, keys, memory, MASK[:, None].expand(B, TQ, TK))
    torch.testing.assert_close(context, expected[0], **F64)
    torch.testing.assert_close(weights, expected[1], **F64)
    assert context.shape == (B, TQ, DK if values is None else DV)


@pytest.mark.parametrize("name", NAMES)
def test_one_step_query_and_precomputed_keys_match_the_reference(name):
    """A ``(B, Dq)`` query (one decoder step) with keys projected once beforehand."""
    module = _modules()[name]
    query, keys, values = _inputs(module.query_dim, steps=None)
    projected = module.project_keys(keys)
    context, weights = module(query, keys, values, MASK, projected_keys=projected)
    expected = _reference(name, module, query[:, None], keys, values, MASK[:, None])
    assert context.shape == (B, DV) and weights.shape == (B, TK)
    torch.testing.assert_close(context, expected[0][:, 0], **F64)
    torch.testing.assert_close(weights, expected[1][:, 0], **F64)
    # The same numbers as projecting inside the call.
    torch.testing.assert_close(module(query, keys, values, MASK)[0], context, **F64)


@pytest.mark.parametrize("name", NAMES)
def test_masked_keys_get_exactly_zero_and_an_all_masked_row_gives_zeros(name):
    module = _modules()[name]
    query, keys, values = _inputs(module.query_dim)
    mask = MASK[:, None].repeat(1, TQ, 1)
    mask[1, 2] = False  # example 1, query 2: nothing visible
    context, weights = module(query, keys, values, mask)
    assert bool((weights[~mask] == 0).all())
    assert bool(torch.isfinite(context).all()) and bool(torch.isfinite(weights).all())
    assert bool((context[1, 2] == 0).all()) and bool((weights[1, 2] == 0).all())
    sums = weights.sum(-1)[mask.any(-1)]
    torch.testing.assert_close(sums, torch.ones_like(sums), **F64)
    # Values at masked positions cannot matter (including huge ones).
    values2 = values.masked_fill(~MASK[..., None], 1e30)
    context2, _ = module(query, keys, values2, MASK)
    torch.testing.assert_close(context2, module(query, keys, values, MASK)[0], **F64)


@pytest.mark.parametrize("name", NAMES)
def test_all_masked_row_has_finite_gradients(name):
    module = _modules()[name]
    query, keys, values = _inputs(module.query_dim, steps=None)
    query.requires_grad_(True)
    mask = MASK.clone()
    mask[2] = False
    context, _ = module(query, keys, values, mask)
    context.sum().backward()
    assert bool(torch.isfinite(query.grad).all()) and bool((query.grad[2] == 0).all())


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name):
    module = _modules()[name]
    query, keys, values = (t.requires_grad_(True) for t in _inputs(module.query_dim, steps=2))
    assert torch.autograd.gradcheck(
        lambda q, k, v: module(q, k, v, MASK)[0], (query, keys, values), eps=1e-6, atol=1e-5
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_finite_outputs(name, dtype):
    module = _modules()[name].to(dtype)
    query, keys, values = (t.to(dtype) for t in _inputs(module.query_dim))
    # Dot products of this size overflow fp16 (max 65504) if scored in fp16.
    query, keys = query * 120, keys * 120
    if name == "dot" and dtype == torch.float16:
        assert not bool(torch.isfinite(query @ keys.transpose(1, 2)).all())
    context, weights = module(query, keys, values, MASK)
    assert context.dtype == dtype and weights.dtype == dtype
    assert bool(torch.isfinite(context).all()) and bool(torch.isfinite(weights).all())
    assert bool((weights[~MASK[:, None].expand_as(weights)] == 0).all())


# --------------------------------------------------------------------------- AttentionLayer


@torch.no_grad()
def _layer_reference(layer: AttentionLayer, x, context, mask):
    """softmax(Q K^T / sqrt(d)) V, one query at a time."""
    d = layer.output_dim
    out = torch.zeros(x.size(0), x.size(1), d, dtype=torch.float64)
    weights = torch.zeros(x.size(0), x.size(1), context.size(1), dtype=torch.float64)
    for b in range(x.size(0)):
        keys = [layer.key.weight @ c + layer.key.bias for c in context[b]]
        vals = torch.stack([layer.value.weight @ c + layer.value.bias for c in context[b]])
        for t in range(x.size(1)):
            q = layer.query.weight @ x[b, t] + layer.query.bias
            scores = [float(q @ k) / math.sqrt(d) for k in keys]
            visible = [bool(mask[b, t, s]) for s in range(context.size(1))]
            out[b, t], weights[b, t] = _attend_by_hand(scores, visible, vals)
    return out, weights


def test_attention_layer_self_and_cross_attention_match_the_reference():
    layer = _randomize(AttentionLayer(DQ, 4))
    x = torch.randn(B, TK, DQ, dtype=torch.float64)
    out, weights = layer(x, MASK)
    expected = _layer_reference(layer, x, x, MASK[:, None].expand(B, TK, TK))
    torch.testing.assert_close(out, expected[0], **F64)
    torch.testing.assert_close(weights, expected[1], **F64)

    memory = torch.randn(B, TK, DQ, dtype=torch.float64)
    queries = torch.randn(B, TQ, DQ, dtype=torch.float64)
    causal_like = torch.rand(B, TQ, TK) > 0.4
    causal_like[0, 1] = False  # one all-masked query: zeros, no NaN
    out, weights = layer(queries, causal_like, context=memory)
    expected = _layer_reference(layer, queries, memory, causal_like)
    torch.testing.assert_close(out, expected[0], **F64)
    torch.testing.assert_close(weights, expected[1], **F64)
    assert bool((out[0, 1] == 0).all()) and bool((weights[~causal_like] == 0).all())


def test_attention_layer_gradcheck_and_half_precision():
    layer = _randomize(AttentionLayer(DQ, 4))
    x = torch.randn(2, 3, DQ, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda t: layer(t, mask)[0], (x,), eps=1e-6, atol=1e-5)
    for dtype in (torch.float16, torch.bfloat16):
        out, weights = layer.to(dtype)(x.detach().to(dtype) * 30, mask)
        assert bool(torch.isfinite(out).all()) and bool(torch.isfinite(weights).all())


# --------------------------------------------------------------------------- errors


def test_constructor_errors_are_clear():
    with pytest.raises(ValueError, match=r"score must be one of \('dot', 'general', 'concat'\)"):
        LuongAttention(4, 4, "bilinear")
    with pytest.raises(ValueError, match=r"dot score needs query_dim == key_dim; got 4 and 6"):
        LuongAttention(4, 6, "dot")


@pytest.mark.parametrize("name", NAMES)
def test_shape_errors_say_what_was_expected(name):
    module = _modules()[name]
    query, keys, values = _inputs(module.query_dim, steps=None)
    with pytest.raises(ValueError, match=rf"query must have shape \(B, {module.query_dim}\) or"):
        module(query[:, :-1], keys)
    with pytest.raises(ValueError, match=r"query must have shape"):
        module(query[0], keys)
    with pytest.raises(ValueError, match=rf"keys must have shape \(B, T, {DK}\); got"):
        module(query, keys[..., :-1])
    with pytest.raises(ValueError, match=r"keys must have shape \(B, Tk, D\) with B = 3"):
        module(query, keys[:1])
    with pytest.raises(ValueError, match=r"keys must have shape \(B, Tk, D\) with B = 1"):
        module(query[:1], keys)  # a batch-1 query must not broadcast over every source
    with pytest.raises(ValueError, match=r"values must have shape \(B, Tk, D\) with \(B, Tk\)"):
        module(query, keys, values[:, :-1])
    with pytest.raises(ValueError, match=r"projected_keys must have shape"):
        module(query, keys, projected_keys=module.project_keys(keys)[:, :-1])
    with pytest.raises(ValueError, match=r"mask must be bool"):
        module(query, keys, mask=MASK.float())
    with pytest.raises(ValueError, match=r"mask must have shape \(B, Tk\) = \(3, 5\)"):
        module(query, keys, mask=MASK[:, :-1])
    with pytest.raises(ValueError, match=r"broadcast to \(B, Tq, Tk\) = \(3, 1, 5\)"):
        module(query, keys, mask=MASK[:, None, :-1])


def test_attention_layer_shape_errors():
    layer = AttentionLayer(DQ, 4)
    x = torch.randn(2, 3, DQ)
    with pytest.raises(ValueError, match=rf"x must have shape \(B, T, {DQ}\); got \(2, 3, 5\)"):
        layer(x[..., :-1])
    with pytest.raises(ValueError, match=r"context must have shape \(B, Tk, D\) with B = 2"):
        layer(x, context=torch.randn(3, 4, DQ))
    with pytest.raises(ValueError, match=r"mask must have shape \(B, Tk\) = \(2, 3\)"):
        layer(x, torch.ones(2, 4, dtype=torch.bool))
