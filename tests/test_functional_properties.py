"""Property tests for scaled_dot_product_attention: invariants every backend must keep."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnkit.functional import mask_to_additive

BACKENDS = ["fused", "math", "chunked", "chunked_small"]

pytestmark = pytest.mark.usefixtures("single_thread")

PROPERTY_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same examples on every run
    database=None,
    # the autouse seeding fixture is function-scoped; every example seeds its own generator
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@st.composite
def attention_configs(draw, causal_choices=(False, True, "bottom_right")):
    kv_heads = draw(st.integers(1, 3))
    head_dim = draw(st.sampled_from([1, 3, 8, 16]))
    return {
        "batch": draw(st.integers(1, 2)),
        "heads": kv_heads * draw(st.integers(1, 3)),
        "kv_heads": kv_heads,
        "query_len": draw(st.integers(1, 12)),
        "key_len": draw(st.integers(1, 12)),
        "head_dim": head_dim,
        "value_dim": draw(st.sampled_from([head_dim, 5])),
        "is_causal": draw(st.sampled_from(causal_choices)),
        "mask": draw(st.sampled_from([None, "padding", "random"])),
        "bias": draw(st.sampled_from([None, "full", "per_key", "per_query", "2d", "single"])),
        "scale": draw(st.none() | st.floats(0.05, 2.0)),
        "block_q": draw(st.integers(1, 6)),
        "block_k": draw(st.integers(1, 6)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def build(config, dtype=torch.float32):
    """Random tensors for ``config``: ``(q, k, v, mask, kwargs)``."""
    gen = torch.Generator().manual_seed(config["seed"])
    batch, heads, kv_heads = config["batch"], config["heads"], config["kv_heads"]
    query_len, key_len = config["query_len"], config["key_len"]

    def randn(*shape):
        return torch.randn(shape, generator=gen, dtype=dtype)

    q = randn(batch, heads, query_len, config["head_dim"])
    k = randn(batch, kv_heads, key_len, config["head_dim"])
    v = randn(batch, kv_heads, key_len, config["value_dim"])
    mask = None
    if config["mask"] == "padding":
        lengths = torch.randint(1, key_len + 1, (batch,), generator=gen)
        mask = (torch.arange(key_len) < lengths[:, None])[:, None, None, :]
    elif config["mask"] == "random":  # may leave some query rows with no visible key
        mask = torch.rand(batch, 1, query_len, key_len, generator=gen) < 0.6
    bias_shapes = {
        "full": (batch, heads, query_len, key_len),
        "per_key": (1, heads, 1, key_len),
        "per_query": (batch, 1, query_len, 1),
        "2d": (query_len, key_len),
        "single": (1,),
    }
    kwargs = {"is_causal": config["is_causal"], "scale": config["scale"]}
    if config["bias"] is not None:
        kwargs["attn_bias"] = randn(*bias_shapes[config["bias"]])
    return q, k, v, mask, kwargs


def run(attend, backend, config, q, k, v, mask, **kwargs):
    out, _ = attend(
        backend, q, k, v, mask, block_q=config["block_q"], block_k=config["block_k"], **kwargs
    )
    return out


def close(actual, expected, tol=1e-5):
    torch.testing.assert_close(actual, expected, atol=tol, rtol=tol)


@PROPERTY_SETTINGS
@given(config=attention_configs())
def test_backends_agree_on_random_shapes(attend, config):
    q, k, v, mask, kwargs = build(config)
    q.requires_grad_()
    expected = run(attend, "math", config, q, k, v, mask, **kwargs)
    assert expected.shape == (*q.shape[:3], v.size(-1))
    assert torch.isfinite(expected).all()
    grad_out = torch.randn(expected.shape)
    (expected_grad,) = torch.autograd.grad(expected, q, grad_out)
    for backend in ("fused", "chunked", "chunked_small"):
        out = run(attend, backend, config, q, k, v, mask, **kwargs)
        close(out, expected)
        (grad,) = torch.autograd.grad(out, q, grad_out)
        close(grad, expected_grad)


@pytest.mark.parametrize("backend", BACKENDS)
@PROPERTY_SETTINGS
@given(config=attention_configs())
def test_bool_mask_equals_additive_minimum_bias(attend, backend, config):
    """attn_mask=m gives what attn_bias=(0 where m, finfo.min elsewhere) gives, on visible rows."""
    config = {**config, "mask": "random"}
    q, k, v, mask, kwargs = build(config)
    with_mask = run(attend, backend, config, q, k, v, mask, **kwargs)
    additive = mask_to_additive(mask, q.dtype)
    if "attn_bias" in kwargs:
        additive = additive + kwargs["attn_bias"]
    with_bias = run(attend, backend, config, q, k, v, None, **{**kwargs, "attn_bias": additive})

    visible = mask.expand(*q.shape[:3], k.size(2))
    if kwargs["is_causal"]:
        query_len, key_len = q.size(2), k.size(2)
        offset = key_len - query_len if kwargs["is_causal"] == "bottom_right" else 0
        visible = visible & torch.ones(query_len, key_len, dtype=torch.bool).tril(offset)
    has_keys = visible.any(-1)
    close(with_mask[has_keys], with_bias[has_keys])
    assert torch.all(with_mask[~has_keys] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
@PROPERTY_SETTINGS
@given(config=attention_configs(causal_choices=(False, True)), extra=st.integers(1, 9))
def test_masked_extra_keys_change_nothing(attend, backend, config, extra):
    """Appending keys/values that the mask hides (more padding) leaves the output unchanged."""
    q, k, v, mask, kwargs = build(config)
    out = run(attend, backend, config, q, k, v, mask, **kwargs)

    batch, kv_heads, key_len = k.shape[:3]
    k_long = torch.cat([k, 100 * torch.randn(batch, kv_heads, extra, k.size(-1))], dim=2)
    v_long = torch.cat([v, 100 * torch.randn(batch, kv_heads, extra, v.size(-1))], dim=2)
    base = torch.ones(1, 1, 1, key_len, dtype=torch.bool) if mask is None else mask
    hidden = torch.zeros(*base.shape[:3], extra, dtype=torch.bool)
    mask_long = torch.cat([base, hidden], dim=-1)
    kwargs_long = dict(kwargs)
    bias = kwargs.get("attn_bias")
    if bias is not None and bias.size(-1) == key_len and key_len > 1:
        kwargs_long["attn_bias"] = torch.cat(
            [bias, 100 * torch.randn(*bias.shape[:-1], extra)], dim=-1
        )
    out_long = run(attend, backend, config, q, k_long, v_long, mask_long, **kwargs_long)
    close(out_long, out)


@pytest.mark.parametrize("backend", BACKENDS)
@PROPERTY_SETTINGS
@given(
    config=attention_configs(causal_choices=(True, "bottom_right")),
    cut_fraction=st.floats(0.0, 1.0),
)
def test_causal_outputs_ignore_future_keys(attend, backend, config, cut_fraction):
    """Changing keys/values at positions >= cut leaves every query before cut unchanged."""
    q, k, v, mask, kwargs = build(config)
    query_len, key_len = q.size(2), k.size(2)
    cut = min(int(cut_fraction * key_len), key_len - 1)
    out = run(attend, backend, config, q, k, v, mask, **kwargs)

    k_new, v_new = k.clone(), v.clone()
    k_new[:, :, cut:] = torch.randn_like(k[:, :, cut:])
    v_new[:, :, cut:] = torch.randn_like(v[:, :, cut:]) + 3
    out_new = run(attend, backend, config, q, k_new, v_new, mask, **kwargs)

    offset = key_len - query_len if kwargs["is_causal"] == "bottom_right" else 0
    positions = torch.arange(query_len) + offset
    past = positions < cut
    close(out_new[:, :, past], out[:, :, past], 1e-6)
    # not vacuous: a query that sees a changed, unmasked key does change
    sees_change = positions >= cut
    if mask is None and sees_change.any():
        assert not torch.allclose(out_new[:, :, sees_change], out[:, :, sees_change])
