"""scaled_dot_product_attention and its backends against a float64 reference."""

import math
import re
from functools import partial
from unittest import mock

import pytest
import torch

from attnkit.functional import (
    AttentionBackend,
    available_backends,
    chunked_attention,
    register_backend,
    scaled_dot_product_attention,
)
from attnkit.functional import attention as attention_module

BACKENDS = ["fused", "math", "chunked", "chunked_small"]
LOW_PRECISION = [torch.float16, torch.bfloat16]
NEG_INF = float("-inf")

pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------------- helpers


def reference_attention(
    query, key, value, attn_mask=None, *, attn_bias=None, is_causal=False, scale=None
):
    """Plain float64 softmax(QK^T * scale + bias, masked) V, written independently.

    Returns ``(output, weights)``; a query with no visible key gets zeros.
    """
    q, k, v = query.double(), key.double(), value.double()
    n_rep = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
    query_len, key_len = q.size(-2), k.size(-2)
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q[..., :, None, :] * k[..., None, :, :]).sum(-1) * scale
    if attn_bias is not None:
        scores = scores + attn_bias.double()
    allowed = torch.ones(scores.shape, dtype=torch.bool)
    if attn_mask is not None:
        allowed = allowed & attn_mask
    if is_causal:
        offset = key_len - query_len if is_causal == "bottom_right" else 0
        for i in range(query_len):
            allowed[..., i, i + offset + 1 :] = False
            if i + offset < 0:
                allowed[..., i, :] = False
    scores = scores.masked_fill(~allowed, NEG_INF)
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # empty rows: NaN -> 0
    return weights @ v, weights


def padding_mask(batch, key_len, lengths=None):
    """(B, 1, 1, Tk) key-padding mask with the given (or random, >= 1) real lengths."""
    if lengths is None:
        lengths = torch.randint(1, key_len + 1, (batch,)).tolist()
    positions = torch.arange(key_len)
    return torch.stack([positions < n for n in lengths])[:, None, None, :]


# Each variant: how to build the inputs. Keys: shapes (Tq, Tk, H, Hkv, Dv), mask, bias, kwargs.
VARIANTS = {
    "plain": {},
    "query_longer": {"query_len": 9, "key_len": 4},
    "single_query": {"query_len": 1, "key_len": 8},
    "padding": {"mask": "padding"},
    "causal_top_left": {"is_causal": True},
    "causal_bottom_right": {"is_causal": "bottom_right"},
    "causal_bottom_right_tall": {"is_causal": "bottom_right", "query_len": 8, "key_len": 5},
    "causal_square": {"is_causal": "bottom_right", "query_len": 6, "key_len": 6},
    "random_mask_and_causal": {"mask": "random", "is_causal": True},
    "bias_full": {"bias": "full"},
    "bias_per_key": {"bias": "per_key"},
    "bias_2d": {"bias": "2d"},
    "bias_mask_causal": {"bias": "batched", "mask": "padding", "is_causal": "bottom_right"},
    "gqa": {"kv_heads": 2},
    "mqa": {"kv_heads": 1, "mask": "padding", "is_causal": True},
    "scale": {"scale": 0.37},
    "value_dim": {"value_dim": 5},
    "noncontiguous": {"noncontiguous": True, "mask": "random"},
    "everything": {
        "kv_heads": 2,
        "value_dim": 3,
        "bias": "per_key",
        "mask": "padding",
        "is_causal": "bottom_right",
        "scale": 0.21,
    },
}


def make_case(
    variant,
    *,
    head_dim=8,
    dtype=torch.float32,
    batch=2,
    heads=4,
    requires_grad=False,
    query_len=5,
    key_len=7,
):
    """Random ``(q, k, v, attn_mask, kwargs)`` for ``VARIANTS[variant]``."""
    spec = VARIANTS[variant]
    query_len = spec.get("query_len", query_len)
    key_len = spec.get("key_len", key_len)
    kv_heads = spec.get("kv_heads", heads)
    value_dim = spec.get("value_dim", head_dim)
    if spec.get("noncontiguous"):
        # the usual (B, T, H, D) -> (B, H, T, D) transpose
        q = torch.randn(batch, query_len, heads, head_dim).transpose(1, 2)
        k = torch.randn(batch, key_len, kv_heads, head_dim).transpose(1, 2)
        v = torch.randn(batch, key_len, kv_heads, value_dim).transpose(1, 2)
        assert not q.is_contiguous()
    else:
        q = torch.randn(batch, heads, query_len, head_dim)
        k = torch.randn(batch, kv_heads, key_len, head_dim)
        v = torch.randn(batch, kv_heads, key_len, value_dim)
    q, k, v = (t.to(dtype).detach().requires_grad_(requires_grad) for t in (q, k, v))

    mask = None
    if spec.get("mask") == "padding":
        mask = padding_mask(batch, key_len, [key_len - 2, key_len][:batch])
    elif spec.get("mask") == "random":
        mask = torch.rand(batch, 1, query_len, key_len) < 0.7
        mask[..., -1] = True  # every query sees at least the last key

    kwargs = {}
    bias_shapes = {
        "full": (1, heads, query_len, key_len),
        "per_key": (1, heads, 1, key_len),
        "2d": (query_len, key_len),
        "batched": (batch, heads, query_len, key_len),
    }
    if "bias" in spec:
        bias = torch.randn(bias_shapes[spec["bias"]]).to(dtype)
        kwargs["attn_bias"] = bias.requires_grad_(requires_grad)
    for name in ("is_causal", "scale"):
        if name in spec:
            kwargs[name] = spec[name]
    return q, k, v, mask, kwargs


def assert_close(actual, expected, tol):
    torch.testing.assert_close(actual, expected.to(actual.dtype), atol=tol, rtol=tol)


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("head_dim", [8, 16, 64, 128])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_backends_agree_in_float32(attend, backend, head_dim, variant):
    q, k, v, mask, kwargs = make_case(variant, head_dim=head_dim)
    out, weights = attend(backend, q, k, v, mask, **kwargs)
    assert weights is None
    assert out.dtype == torch.float32
    assert out.shape == (*q.shape[:3], v.size(-1))
    expected, _ = reference_attention(q, k, v, mask, **kwargs)
    assert_close(out, expected, 1e-5)
    math_out, _ = attend("math", q, k, v, mask, **kwargs)
    assert_close(out, math_out, 1e-5)


@pytest.mark.parametrize(
    ("block_q", "block_k"), [(1, 1), (2, 5), (3, 3), (4, 16), (16, 2), (9, 11)]
)
@pytest.mark.parametrize(
    "variant",
    ["padding", "causal_top_left", "causal_bottom_right_tall", "bias_mask_causal", "everything"],
)
def test_chunked_tile_sizes(attend, block_q, block_k, variant):
    """Tiles that divide the sequence, ragged last tiles, one tile, and single rows/columns."""
    q, k, v, mask, kwargs = make_case(variant, query_len=9, key_len=11)
    out, _ = attend("chunked_small", q, k, v, mask, block_q=block_q, block_k=block_k, **kwargs)
    expected, _ = reference_attention(q, k, v, mask, **kwargs)
    assert_close(out, expected, 1e-5)


def test_chunked_attention_direct_call():
    """The exported backend function with explicit tile sizes (already-validated inputs)."""
    q, k, v = torch.randn(2, 4, 10, 8), torch.randn(2, 2, 13, 8), torch.randn(2, 2, 13, 6)
    mask = padding_mask(2, 13, [13, 6])
    bias = torch.randn(1, 4, 1, 13)
    out, weights = chunked_attention(
        q,
        k,
        v,
        mask=mask,
        bias=bias,
        causal="bottom_right",
        dropout_p=0.0,
        scale=0.3,
        block_q=3,
        block_k=5,
    )
    assert weights is None
    expected, _ = reference_attention(
        q, k, v, mask, attn_bias=bias, is_causal="bottom_right", scale=0.3
    )
    assert_close(out, expected, 1e-5)


@pytest.mark.parametrize("backend", ["fused", "chunked", "chunked_small"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_backends_agree_on_gradients_in_float32(attend, backend, variant):
    q, k, v, mask, kwargs = make_case(variant, head_dim=16, requires_grad=True)
    inputs = [q, k, v] + ([kwargs["attn_bias"]] if "attn_bias" in kwargs else [])
    grad_out = torch.randn(*q.shape[:3], v.size(-1))

    def grads(name):
        out, _ = attend(name, q, k, v, mask, **kwargs)
        return torch.autograd.grad(out, inputs, grad_out)

    for got, expected in zip(grads(backend), grads("math"), strict=True):
        assert got.shape == expected.shape
        assert_close(got, expected, 1e-5)


# --------------------------------------------------------------------------- float64 reference


@pytest.mark.parametrize("backend", ["math", "auto"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_weights_match_float64_reference(attend, backend, variant):
    q, k, v, mask, kwargs = make_case(variant, dtype=torch.float64)
    out, weights = attend(backend, q, k, v, mask, need_weights=True, **kwargs)
    expected_out, expected_weights = reference_attention(q, k, v, mask, **kwargs)
    assert weights.dtype == torch.float64
    assert weights.shape == (*q.shape[:3], k.size(2))
    assert_close(weights, expected_weights, 1e-10)
    assert_close(out, expected_out, 1e-10)
    # rows are distributions (or all zero where nothing is visible)
    row_sums = weights.sum(-1)
    assert torch.all(((row_sums - 1).abs() < 1e-12) | (row_sums == 0))


@pytest.mark.parametrize("backend", ["fused", "chunked", "chunked_small"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_outputs_match_float64_reference(attend, backend, variant):
    q, k, v, mask, kwargs = make_case(variant, dtype=torch.float64)
    out, _ = attend(backend, q, k, v, mask, **kwargs)
    expected, _ = reference_attention(q, k, v, mask, **kwargs)
    assert out.dtype == torch.float64
    assert_close(out, expected, 1e-10)


def _spy_registry():
    """Registry copy whose fused/math backends record that they were called."""
    calls = []
    registry = dict(attention_module._BACKENDS)
    for name in ("fused", "math"):
        original = registry[name]

        def spy(*args, _name=name, _fn=original.fn, **kwargs):
            calls.append(_name)
            return _fn(*args, **kwargs)

        registry[name] = AttentionBackend(name, spy, original.returns_weights, "")
    return registry, calls


def test_auto_uses_fused_without_weights_and_math_with_weights():
    q, k, v, mask, kwargs = make_case("bias_mask_causal")
    registry, calls = _spy_registry()
    with mock.patch.dict(attention_module._BACKENDS, registry):
        out, weights = scaled_dot_product_attention(q, k, v, mask, **kwargs)
        assert calls == ["fused"]
        assert weights is None
        out_w, weights_w = scaled_dot_product_attention(q, k, v, mask, need_weights=True, **kwargs)
        assert calls == ["fused", "math"]
    assert weights_w is not None
    fused_out, _ = scaled_dot_product_attention(q, k, v, mask, backend="fused", **kwargs)
    math_out, math_weights = scaled_dot_product_attention(
        q, k, v, mask, backend="math", need_weights=True, **kwargs
    )
    assert torch.equal(out, fused_out)
    assert torch.equal(out_w, math_out)
    assert torch.equal(weights_w, math_weights)


def test_math_without_need_weights_returns_none():
    q, k, v, mask, _ = make_case("padding")
    out, weights = scaled_dot_product_attention(q, k, v, mask, backend="math")
    assert weights is None
    out_w, weights_w = scaled_dot_product_attention(
        q, k, v, mask, backend="math", need_weights=True
    )
    assert torch.equal(out, out_w)
    assert weights_w.shape == (2, 4, 5, 7)


# --------------------------------------------------------------------------- empty rows


def _empty_row_case(dtype, bias_kind):
    """Mask with two query rows that see no key; the rest see at least one."""
    batch, heads, query_len, key_len = 2, 2, 4, 6
    q, k, v = (torch.randn(batch, heads, n, 8) for n in (query_len, key_len, key_len))
    q, k, v = (t.to(dtype).requires_grad_() for t in (q, k, v))
    mask = torch.rand(batch, 1, query_len, key_len) < 0.6
    mask[..., 2] = True
    mask[0, :, 1] = False
    mask[1, :, 3] = False
    empty = ~mask.any(-1, keepdim=True).expand(batch, heads, query_len, 1)
    bias = None
    if bias_kind != "none":
        bias = torch.randn(batch, heads, query_len, key_len)
        if bias_kind == "with_neg_inf":
            bias[0, :, 1] = NEG_INF  # -inf on every key of a masked row ...
            bias[:, :, 0, :2] = NEG_INF  # ... and on some keys of visible rows
            bias[0, 1, 2, 4:] = NEG_INF
        bias = bias.to(dtype).requires_grad_()
    return q, k, v, mask, bias, empty


@pytest.mark.parametrize("bias_kind", ["none", "finite", "with_neg_inf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_fully_masked_rows_give_zeros_and_finite_gradients(attend, backend, dtype, bias_kind):
    q, k, v, mask, bias, empty = _empty_row_case(dtype, bias_kind)
    out, _ = attend(backend, q, k, v, mask, attn_bias=bias)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    assert torch.all(out.masked_select(empty) == 0)
    assert torch.all(out.abs().sum(-1).masked_select(~empty[..., 0]) > 0)

    tol = 1e-5 if dtype == torch.float32 else 3e-2
    expected, _ = reference_attention(q, k, v, mask, attn_bias=bias)
    assert_close(out, expected, tol)

    inputs = [q, k, v] + ([bias] if bias is not None else [])
    grads = torch.autograd.grad(out, inputs, torch.randn_like(out))
    for grad in grads:
        assert torch.isfinite(grad).all()
    assert torch.all(grads[0].masked_select(empty) == 0)  # an empty row has no dependence on q
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize("bias_kind", ["none", "finite", "with_neg_inf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fully_masked_rows_give_zero_weights(attend, dtype, bias_kind):
    q, k, v, mask, bias, empty = _empty_row_case(dtype, bias_kind)
    _, weights = attend("math", q, k, v, mask, attn_bias=bias, need_weights=True)
    assert weights.dtype == dtype
    assert torch.isfinite(weights).all()
    row_sums = weights.float().sum(-1, keepdim=True)
    assert torch.all(row_sums.masked_select(empty) == 0)
    torch.testing.assert_close(
        row_sums.masked_select(~empty), torch.ones(int((~empty).sum())), atol=1e-2, rtol=0
    )
    assert torch.all(weights.masked_select(~mask) == 0)
    weights.float().square().sum().backward()
    for t in (q, k):
        assert torch.isfinite(t.grad).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_causal_rows_before_the_first_key_are_empty(attend, backend):
    """Bottom-right causal with Tq > Tk: the first Tq - Tk queries see nothing."""
    q = torch.randn(1, 2, 6, 8, requires_grad=True)
    k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    out, _ = attend(backend, q, k, v, is_causal="bottom_right")
    assert torch.all(out[:, :, :2] == 0)
    assert torch.all(out[:, :, 2:].abs().sum(-1) > 0)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()
    assert torch.all(q.grad[:, :, :2] == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_keys_stay_masked_when_visible_keys_have_neg_inf_bias(attend, backend, dtype):
    """Every visible key of query 0 has a -inf bias; masked keys must still get nothing.

    This happens with an additive causal bias (-inf or the dtype's minimum) plus a left-padding
    mask. The bias is clamped to the dtype's minimum, so the visible keys of query 0 keep some
    finite share, the masked keys none, and the weights still sum to one: with equal values
    on the visible keys the output must be exactly that value.
    """
    q = torch.randn(1, 2, 3, 8, dtype=dtype, requires_grad=True)
    k = torch.randn(1, 2, 5, 8, dtype=dtype, requires_grad=True)
    v = torch.full((1, 2, 5, 8), 1000.0)
    v[..., [0, 1, 4], :] = torch.linspace(-1, 1, 8)  # one value vector on every visible key
    v = v.to(dtype).requires_grad_()
    mask = torch.tensor([True, True, False, False, True])  # key padding
    causal_bias = torch.zeros(3, 5).masked_fill(torch.ones(3, 5, dtype=bool).triu(1), NEG_INF)
    causal_bias[0, 1:] = torch.finfo(torch.float32).min  # query 0: -inf or the minimum on
    causal_bias[0, 0] = NEG_INF  # every key, so on each of its visible keys 0, 1, 4
    bias = causal_bias.to(dtype)

    out, _ = attend(backend, q, k, v, mask, attn_bias=bias)
    assert torch.isfinite(out).all()
    expected_first = torch.linspace(-1, 1, 8).to(dtype).expand(2, 8)
    torch.testing.assert_close(out[0, :, 0], expected_first, atol=1e-2, rtol=0)
    # queries 1 and 2 are ordinary
    expected, _ = reference_attention(q, k, v, mask, attn_bias=bias)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert_close(out[:, :, 1:] / 1000, expected[:, :, 1:] / 1000, tol)
    for grad in torch.autograd.grad(out.float().sum(), (q, k, v)):
        assert torch.isfinite(grad).all()
    if backend == "math":
        _, weights = attend(backend, q, k, v, mask, attn_bias=bias, need_weights=True)
        assert torch.all(weights[0, :, 0, 2:4] == 0)
        sum_tol = 1e-6 if dtype == torch.float32 else 1e-2
        torch.testing.assert_close(
            weights.float().sum(-1), torch.ones(1, 2, 3), atol=sum_tol, rtol=0
        )
    if dtype == torch.float32:  # backends agree
        math_out, _ = attend("math", q, k, v, mask, attn_bias=bias)
        assert_close(out, math_out, 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_row_that_neg_inf_bias_blocks_is_uniform_in_every_backend(attend, backend, dtype):
    """No mask: query 0 has -inf bias on every key. The bias is clamped to the dtype's
    minimum, which absorbs the scores: uniform weights, so the row's output is the mean
    value and each value row gets a quarter of its gradient (the fused kernel added the
    bias in float32 in float16, and its backward lost log(4) beside float32's minimum)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, n, 8).to(dtype).requires_grad_() for n in (3, 4, 4))
    bias = torch.randn(1, 2, 3, 4)
    bias[0, :, 0] = NEG_INF
    out, _ = attend(backend, q, k, v, attn_bias=bias.to(dtype))
    tol = 1e-6 if dtype == torch.float32 else 2e-3
    mean = v.detach().float().mean(dim=2)
    torch.testing.assert_close(out[0, :, 0].float(), mean[0], atol=tol, rtol=0)
    expected, _ = reference_attention(q, k, v, None, attn_bias=bias.to(dtype))
    assert_close(out[:, :, 1:], expected[:, :, 1:], 1e-5 if dtype == torch.float32 else 2e-2)
    grad_q, grad_v = torch.autograd.grad(out[0, :, 0].float().sum(), (q, v))
    torch.testing.assert_close(grad_v.float(), torch.full((1, 2, 4, 8), 0.25), atol=tol, rtol=0)
    assert torch.all(grad_q == 0)


# --------------------------------------------------------------------------- gradcheck

GRADCHECK_VARIANTS = [
    "padding",
    "causal_top_left",
    "causal_bottom_right",
    "causal_bottom_right_tall",
    "random_mask_and_causal",
    "gqa",
    "mqa",
    "bias_full",
    "bias_per_key",
    "bias_2d",
    "bias_mask_causal",
    "everything",
]


@pytest.mark.parametrize("backend", ["math", "chunked", "chunked_small"])
@pytest.mark.parametrize("variant", GRADCHECK_VARIANTS)
def test_gradcheck(attend, backend, variant):
    q, k, v, mask, kwargs = make_case(
        variant,
        head_dim=4,
        dtype=torch.float64,
        heads=2,
        batch=2,
        query_len=4,
        key_len=6,
        requires_grad=True,
    )
    bias = kwargs.pop("attn_bias", None)
    inputs = (q, k, v) if bias is None else (q, k, v, bias)

    def fn(*args):
        extra = {} if len(args) == 3 else {"attn_bias": args[3]}
        out, _ = attend(backend, *args[:3], mask, block_q=3, block_k=2, **extra, **kwargs)
        return out

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("backend", ["math", "chunked_small"])
def test_gradcheck_bias_with_neg_inf_and_empty_rows(attend, backend):
    q = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 6, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 1, 6, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    bias[0, 0, 3, :2] = NEG_INF  # query 3 still sees key 3 (mask and causal)
    bias[0, 1, 1, 0] = NEG_INF
    bias.requires_grad_()
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[2] = False  # an empty row
    mask[3, ::2] = False

    def fn(q, k, v, bias):
        return attend(backend, q, k, v, mask, attn_bias=bias, is_causal=True, block_q=2)[0]

    assert torch.autograd.gradcheck(fn, (q, k, v, bias), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("backend", ["math", "chunked", "chunked_small"])
@pytest.mark.parametrize("variant", ["padding", "bias_mask_causal", "everything"])
def test_gradcheck_with_dropout(attend, backend, variant):
    q, k, v, mask, kwargs = make_case(
        variant,
        head_dim=4,
        dtype=torch.float64,
        heads=2,
        batch=1,
        query_len=4,
        key_len=6,
        requires_grad=True,
    )
    bias = kwargs.pop("attn_bias", None)
    inputs = (q, k, v) if bias is None else (q, k, v, bias)

    def fn(*args, dropout_p=0.4):
        torch.manual_seed(1234)  # the same dropout pattern on every evaluation
        extra = {} if len(args) == 3 else {"attn_bias": args[3]}
        out, _ = attend(
            backend,
            *args[:3],
            mask,
            dropout_p=dropout_p,
            block_q=3,
            block_k=2,
            **extra,
            **kwargs,
        )
        return out

    with torch.no_grad():
        assert not torch.allclose(fn(*inputs), fn(*inputs, dropout_p=0.0))  # dropout is active
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


# --------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_changes_output_but_not_its_expectation(attend, backend):
    """Inverted dropout is unbiased: averaged over many draws it gives the plain output."""
    copies = 4000
    q, k, v = torch.randn(1, 2, 6, 8), torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8)
    mask = padding_mask(1, 8, [7])
    kwargs = {"attn_bias": torch.randn(1, 2, 1, 8), "is_causal": "bottom_right"}
    plain, _ = attend(backend, q, k, v, mask, **kwargs)
    qs, ks, vs = (t.expand(copies, -1, -1, -1) for t in (q, k, v))
    dropped, _ = attend(backend, qs, ks, vs, mask, dropout_p=0.3, **kwargs)
    assert dropped.shape == (copies, 2, 6, 8)
    assert not torch.allclose(dropped[0], plain[0], atol=1e-3)
    assert not torch.allclose(dropped[0], dropped[1], atol=1e-3)  # independent draws
    torch.testing.assert_close(dropped.mean(0), plain[0], atol=0.05, rtol=0)


def test_math_weights_are_returned_before_dropout(attend):
    q, k, v, mask, kwargs = make_case("bias_mask_causal")
    out, weights = attend("math", q, k, v, mask, dropout_p=0.5, need_weights=True, **kwargs)
    plain, plain_weights = attend("math", q, k, v, mask, need_weights=True, **kwargs)
    assert torch.equal(weights, plain_weights)
    assert not torch.allclose(out, plain)


@pytest.mark.parametrize("backend", ["chunked", "chunked_small", "math"])
def test_dropout_is_reproducible_with_a_fixed_seed(attend, backend):
    q, k, v, mask, kwargs = make_case("everything", requires_grad=True)

    def run(seed):
        torch.manual_seed(seed)
        out, _ = attend(backend, q, k, v, mask, dropout_p=0.25, **kwargs)
        grads = torch.autograd.grad(out.square().sum(), (q, k, v))
        return out, grads

    out_a, grads_a = run(7)
    out_b, grads_b = run(7)
    out_c, _ = run(8)
    assert torch.equal(out_a, out_b)
    for a, b in zip(grads_a, grads_b, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(out_a, out_c)


def test_chunked_result_does_not_depend_on_tile_size(attend):
    q, k, v, mask, kwargs = make_case("everything")
    a, _ = attend("chunked_small", q, k, v, mask, block_q=2, block_k=3, **kwargs)
    b, _ = attend("chunked_small", q, k, v, mask, block_q=5, block_k=7, **kwargs)
    assert_close(a, b, 1e-6)


# --------------------------------------------------------------------------- low precision


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["plain", "bias_mask_causal", "everything", "mqa"])
def test_low_precision_close_to_float32(attend, backend, dtype, variant):
    q, k, v, mask, kwargs = make_case(variant, dtype=dtype, head_dim=32)
    out, _ = attend(backend, q, k, v, mask, **kwargs)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    kwargs32 = {n: (t.float() if torch.is_tensor(t) else t) for n, t in kwargs.items()}
    expected, _ = attend("math", q.float(), k.float(), v.float(), mask, **kwargs32)
    torch.testing.assert_close(out.float(), expected, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_weights(attend, dtype):
    q, k, v, mask, kwargs = make_case("bias_mask_causal", dtype=dtype, head_dim=32)
    _, weights = attend("math", q, k, v, mask, need_weights=True, **kwargs)
    assert weights.dtype == dtype
    kwargs32 = {n: (t.float() if torch.is_tensor(t) else t) for n, t in kwargs.items()}
    _, expected = reference_attention(q, k, v, mask, **kwargs32)
    torch.testing.assert_close(weights.float(), expected.float(), atol=1e-2, rtol=1e-2)


# --------------------------------------------------------------------------- bad input


def _qkv(batch=2, heads=4, kv_heads=4, query_len=5, key_len=7, head_dim=8, **overrides):
    q = torch.randn(batch, heads, query_len, head_dim)
    k = torch.randn(batch, kv_heads, key_len, head_dim)
    v = torch.randn(batch, kv_heads, key_len, head_dim)
    return {"query": q, "key": k, "value": v, **overrides}


BAD_INPUTS = {
    "query_rank_3": (
        lambda: _qkv(query=torch.randn(2, 5, 8)),
        r"query must have rank 4 \(B, H, T, D\); got rank 3 with shape \(2, 5, 8\)",
    ),
    "key_rank_5": (
        lambda: _qkv(key=torch.randn(1, 2, 4, 7, 8)),
        r"key must have rank 4 \(B, H, T, D\); got rank 5 with shape \(1, 2, 4, 7, 8\)",
    ),
    "value_rank_2": (
        lambda: _qkv(value=torch.randn(7, 8)),
        r"value must have rank 4 \(B, H, T, D\); got rank 2 with shape \(7, 8\)",
    ),
    "query_not_a_tensor": (
        lambda: _qkv(query=[[1.0]]),
        r"query must be a torch.Tensor; got list",
    ),
    "integer_query": (
        lambda: _qkv(query=torch.ones(2, 4, 5, 8, dtype=torch.long)),
        r"query must be a floating-point tensor; got torch.int64",
    ),
    "mask_not_broadcastable": (
        lambda: _qkv(attn_mask=torch.ones(2, 7, dtype=torch.bool)),
        r"attn_mask must broadcast to \(B, H, Tq, Tk\) = \(2, 4, 5, 7\); got \(2, 7\)",
    ),
    "mask_wrong_key_len": (
        lambda: _qkv(attn_mask=torch.ones(2, 1, 1, 6, dtype=torch.bool)),
        r"attn_mask must broadcast to \(B, H, Tq, Tk\) = \(2, 4, 5, 7\); got \(2, 1, 1, 6\)",
    ),
    "mask_rank_5": (
        lambda: _qkv(attn_mask=torch.ones(1, 2, 4, 5, 7, dtype=torch.bool)),
        r"attn_mask must broadcast to \(B, H, Tq, Tk\) = \(2, 4, 5, 7\); got \(1, 2, 4, 5, 7\)",
    ),
    "mask_not_a_tensor": (
        lambda: _qkv(attn_mask=[[True] * 7] * 5),
        r"attn_mask must be a torch.Tensor; got list",
    ),
    "float_mask": (
        lambda: _qkv(attn_mask=torch.zeros(5, 7)),
        r"attn_mask must be a bool tensor \(True = may attend\); got torch.float32.*attn_bias",
    ),
    "bias_not_broadcastable": (
        lambda: _qkv(attn_bias=torch.zeros(1, 3, 5, 7)),
        r"attn_bias must broadcast to \(B, H, Tq, Tk\) = \(2, 4, 5, 7\); got \(1, 3, 5, 7\)",
    ),
    "bias_transposed": (
        lambda: _qkv(attn_bias=torch.zeros(7, 5)),
        r"attn_bias must broadcast to \(B, H, Tq, Tk\) = \(2, 4, 5, 7\); got \(7, 5\)",
    ),
    "bias_integer": (
        lambda: _qkv(attn_bias=torch.zeros(5, 7, dtype=torch.long)),
        r"attn_bias must be a floating-point tensor; got torch.int64",
    ),
    "bias_not_a_tensor": (
        lambda: _qkv(attn_bias=0.5),
        r"attn_bias must be a torch.Tensor; got float",
    ),
    "key_dtype": (
        lambda: _qkv(key=torch.randn(2, 4, 7, 8, dtype=torch.float64)),
        r"key dtype must match query dtype torch.float32; got torch.float64",
    ),
    "value_dtype": (
        lambda: _qkv(value=torch.randn(2, 4, 7, 8, dtype=torch.float16)),
        r"value dtype must match query dtype torch.float32; got torch.float16",
    ),
    "key_device": (
        lambda: _qkv(key=torch.empty(2, 4, 7, 8, device="meta")),
        r"key device must match query device cpu; got meta",
    ),
    "value_device": (
        lambda: _qkv(value=torch.empty(2, 4, 7, 8, device="meta")),
        r"value device must match query device cpu; got meta",
    ),
    "mask_device": (
        lambda: _qkv(attn_mask=torch.empty(5, 7, dtype=torch.bool, device="meta")),
        r"attn_mask device must match query device cpu; got meta",
    ),
    "bias_device": (
        lambda: _qkv(attn_bias=torch.empty(5, 7, device="meta")),
        r"attn_bias device must match query device cpu; got meta",
    ),
    "head_dim": (
        lambda: _qkv(key=torch.randn(2, 4, 7, 6)),
        r"key head dim must equal query head dim 8; got key \(2, 4, 7, 6\), query \(2, 4, 5, 8\)",
    ),
    "key_value_length": (
        lambda: _qkv(value=torch.randn(2, 4, 6, 8)),
        r"value must have key's \(B, Hkv, Tk\) = \(2, 4, 7\); got \(2, 4, 6\)",
    ),
    "key_value_heads": (
        lambda: _qkv(value=torch.randn(2, 2, 7, 8)),
        r"value must have key's \(B, Hkv, Tk\) = \(2, 4, 7\); got \(2, 2, 7\)",
    ),
    "batch": (
        lambda: _qkv(key=torch.randn(3, 4, 7, 8), value=torch.randn(3, 4, 7, 8)),
        r"key and value batch size must equal query's 2; got key \(3, 4, 7, 8\)",
    ),
    "heads_not_divisible": (
        lambda: _qkv(kv_heads=3),
        r"query heads \(4\) must be a multiple of key/value heads \(3\)",
    ),
    "dropout_negative": (
        lambda: _qkv(dropout_p=-0.1),
        r"dropout_p must be in \[0, 1\); got -0.1",
    ),
    "dropout_one": (
        lambda: _qkv(dropout_p=1.0),
        r"dropout_p must be in \[0, 1\); got 1.0",
    ),
    "dropout_nan": (
        lambda: _qkv(dropout_p=float("nan")),
        r"dropout_p must be in \[0, 1\); got nan",
    ),
    "unknown_backend": (
        lambda: _qkv(backend="flash"),
        r"backend must be 'auto' or one of \[.*'chunked'.*'fused'.*'math'.*\]; got 'flash'",
    ),
    "weights_from_fused": (
        lambda: _qkv(backend="fused", need_weights=True),
        r"backend 'fused' cannot return attention weights; use 'auto' or one of \[.*'math'.*\]",
    ),
    "weights_from_chunked": (
        lambda: _qkv(backend="chunked", need_weights=True),
        r"backend 'chunked' cannot return attention weights; use 'auto' or one of \[.*'math'",
    ),
    "is_causal_string": (
        lambda: _qkv(is_causal="lower_right"),
        r"is_causal must be a bool, 'top_left' or 'bottom_right'; got 'lower_right'",
    ),
    "is_causal_int": (
        lambda: _qkv(is_causal=2),
        r"is_causal must be a bool, 'top_left' or 'bottom_right'; got 2",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_value_error_saying_what_expected_got(case):
    make_kwargs, pattern = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=pattern):
        scaled_dot_product_attention(**make_kwargs())


def test_none_mask_and_false_causal_are_accepted():
    out, _ = scaled_dot_product_attention(**_qkv(attn_mask=None, is_causal=None))
    assert out.shape == (2, 4, 5, 8)


# --------------------------------------------------------------------------- registry


@pytest.fixture
def restore_registry():
    saved = dict(attention_module._BACKENDS)
    yield
    attention_module._BACKENDS.clear()
    attention_module._BACKENDS.update(saved)


def test_builtin_backends_are_registered():
    backends = available_backends()
    assert {"fused", "math", "chunked"} <= set(backends)
    assert "auto" not in backends
    assert backends["math"].returns_weights
    assert not backends["fused"].returns_weights
    assert not backends["chunked"].returns_weights
    assert backends["chunked"].fn is chunked_attention
    for name, backend in backends.items():
        assert backend.name == name


def test_available_backends_is_a_copy(restore_registry):
    available_backends().pop("math")
    assert "math" in available_backends()


def test_registered_backend_is_selectable(restore_registry):
    calls = []

    def doubled(query, key, value, **kwargs):
        calls.append(kwargs)
        out, _ = attention_module._BACKENDS["math"].fn(query, key, value, **kwargs)
        return 2 * out, None

    register_backend("doubled", doubled, description="math times two")
    assert available_backends()["doubled"].description == "math times two"
    q, k, v, mask, kwargs = make_case("everything")
    out, weights = scaled_dot_product_attention(q, k, v, mask, backend="doubled", **kwargs)
    assert weights is None
    expected, _ = scaled_dot_product_attention(q, k, v, mask, backend="math", **kwargs)
    torch.testing.assert_close(out, 2 * expected)
    (seen,) = calls
    assert seen["mask"].shape == (2, 1, 1, 7)  # validated and made rank 4
    assert seen["bias"].shape == (1, 4, 1, 7)
    assert seen["causal"] == "bottom_right"
    assert seen["scale"] == pytest.approx(0.21)
    assert seen["dropout_p"] == 0.0
    assert seen["need_weights"] is False
    # it cannot return weights unless it says so
    with pytest.raises(ValueError, match=r"backend 'doubled' cannot return attention weights"):
        scaled_dot_product_attention(q, k, v, backend="doubled", need_weights=True)


def test_registered_backend_with_weights_and_replacement(restore_registry):
    math_fn = attention_module._BACKENDS["math"].fn
    register_backend("mine", partial(chunked_attention, block_q=2, block_k=2))
    q, k, v, mask, _ = make_case("padding")
    out, _ = scaled_dot_product_attention(q, k, v, mask, backend="mine")
    register_backend("mine", math_fn, returns_weights=True)  # replaces the first
    assert available_backends()["mine"].returns_weights
    out_w, weights = scaled_dot_product_attention(q, k, v, mask, backend="mine", need_weights=True)
    assert weights is not None
    assert_close(out, out_w, 1e-5)
    # a weights-capable backend is offered in the error message for incapable ones (other
    # tests in this process, e.g. a doctest, may have registered more of them)
    capable = sorted(name for name, b in available_backends().items() if b.returns_weights)
    assert {"math", "mine"} <= set(capable)
    with pytest.raises(ValueError, match=re.escape(f"use 'auto' or one of {capable}")):
        scaled_dot_product_attention(q, k, v, backend="fused", need_weights=True)


def test_auto_cannot_be_registered(restore_registry):
    with pytest.raises(ValueError, match=r"'auto' is reserved"):
        register_backend("auto", attention_module._BACKENDS["math"].fn)
    assert "auto" not in available_backends()
