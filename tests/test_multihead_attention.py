"""MultiHeadAttention against torch.nn.MultiheadAttention, by hand, and across backends."""

import math
import re
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnkit.functional import create_causal_mask, from_torch_mha_masks
from attnkit.nn import KVCache, MultiHeadAttention

F64 = dict(atol=1e-10, rtol=1e-10)


# --------------------------------------------------------------------------- helpers


def copy_torch_mha_weights(theirs: nn.MultiheadAttention, ours: MultiHeadAttention) -> None:
    """Load ``theirs``' projections into ``ours``.

    With ``kdim == vdim == embed_dim`` torch packs q/k/v in ``in_proj_weight`` (three row
    chunks, in that order); otherwise it keeps ``q/k/v_proj_weight``. The biases are always
    packed in ``in_proj_bias``.
    """
    if theirs._qkv_same_embed_dim:
        w_q, w_k, w_v = theirs.in_proj_weight.chunk(3)
    else:
        w_q, w_k, w_v = theirs.q_proj_weight, theirs.k_proj_weight, theirs.v_proj_weight
    with torch.no_grad():
        for proj, weight in zip(
            (ours.q_proj, ours.k_proj, ours.v_proj), (w_q, w_k, w_v), strict=True
        ):
            proj.weight.copy_(weight)
        ours.out_proj.weight.copy_(theirs.out_proj.weight)
        if theirs.in_proj_bias is None:
            assert ours.q_proj.bias is None and ours.out_proj.bias is None
            return
        for proj, bias in zip(
            (ours.q_proj, ours.k_proj, ours.v_proj), theirs.in_proj_bias.chunk(3), strict=True
        ):
            proj.bias.copy_(bias)
        ours.out_proj.bias.copy_(theirs.out_proj.bias)


def make_pair(d_model=16, num_heads=4, *, bias=True, kdim=None, vdim=None):
    """A float64 torch MHA with random (also nonzero bias) weights and our copy of it."""
    theirs = nn.MultiheadAttention(
        d_model, num_heads, dropout=0.0, bias=bias, kdim=kdim, vdim=vdim, batch_first=True
    ).double()
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "bias" in name:  # torch initialises biases to zero, which would hide bugs
                p.normal_(0.0, 0.5)
    ours = MultiHeadAttention(d_model, num_heads, bias=bias, kdim=kdim, vdim=vdim).double()
    copy_torch_mha_weights(theirs, ours)
    return theirs, ours


def torch_mha(theirs, query, key, value, path, **kwargs):
    """Run torch's MHA on its ``"slow"`` (Python) or ``"fast"`` (native kernel) path.

    The fast path is taken in eval mode without autograd for self-attention with biases;
    the patched counter proves which path ran.
    """
    native = torch._native_multi_head_attention
    with mock.patch("torch._native_multi_head_attention", wraps=native) as fast_calls:
        if path == "fast":
            theirs.eval()
            with torch.no_grad():
                result = theirs(query, key, value, average_attn_weights=False, **kwargs)
            assert fast_calls.call_count == 1, "torch's fast path was not exercised"
        else:
            theirs.train()  # dropout is 0, so training mode only disables the fast path
            result = theirs(query, key, value, average_attn_weights=False, **kwargs)
            assert fast_calls.call_count == 0, "torch's slow path was not exercised"
    return result


def split_heads(x, heads):
    """``(B, T, heads * Dh)`` -> ``(B, heads, T, Dh)``."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def by_hand(mha, query, key, value, mask=None, bias=None):
    """softmax(Q K^T / sqrt(Dh) + bias, masked) V from ``mha``'s weights; returns (out, w)."""
    q = split_heads(F.linear(query, mha.q_proj.weight, mha.q_proj.bias), mha.num_heads)
    k = split_heads(F.linear(key, mha.k_proj.weight, mha.k_proj.bias), mha.num_kv_heads)
    v = split_heads(F.linear(value, mha.v_proj.weight, mha.v_proj.bias), mha.num_kv_heads)
    rep = mha.num_heads // mha.num_kv_heads
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(-1)
    out = (weights @ v).transpose(1, 2).flatten(2)
    return F.linear(out, mha.out_proj.weight, mha.out_proj.bias), weights


def rand(*shape):
    return torch.randn(*shape, dtype=torch.float64)


# --------------------------------------------------------------------------- vs torch MHA


# torch's fast path needs biases, so bias=False is only checked on the slow path
@pytest.mark.parametrize(("path", "bias"), [("slow", True), ("slow", False), ("fast", True)])
def test_self_attention_matches_torch(path, bias):
    theirs, ours = make_pair(bias=bias)
    x = rand(3, 5, 16)
    expected, expected_w = torch_mha(theirs, x, x, x, path, need_weights=True)
    out, weights = ours(x, need_weights=True)
    assert weights.shape == (3, 4, 5, 5)
    torch.testing.assert_close(out, expected, **F64)
    torch.testing.assert_close(weights, expected_w, **F64)


@pytest.mark.parametrize("bias", [True, False])
def test_cross_attention_matches_torch(bias):
    theirs, ours = make_pair(bias=bias)
    query, memory = rand(2, 3, 16), rand(2, 7, 16)
    expected, expected_w = torch_mha(theirs, query, memory, memory, "slow", need_weights=True)
    out, weights = ours(query, memory, memory, need_weights=True)
    assert out.shape == (2, 3, 16) and weights.shape == (2, 4, 3, 7)
    torch.testing.assert_close(out, expected, **F64)
    torch.testing.assert_close(weights, expected_w, **F64)


def test_distinct_key_and_value_match_torch():
    theirs, ours = make_pair()
    query, key, value = rand(2, 3, 16), rand(2, 6, 16), rand(2, 6, 16)
    expected, _ = torch_mha(theirs, query, key, value, "slow")
    torch.testing.assert_close(ours(query, key, value)[0], expected, **F64)


@pytest.mark.parametrize("path", ["slow", "fast"])
def test_key_padding_matches_torch(path):
    theirs, ours = make_pair()
    x = rand(3, 6, 16)
    lengths = torch.tensor([6, 4, 1])
    padded = torch.arange(6)[None, :] >= lengths[:, None]  # torch: True = padding
    expected, expected_w = torch_mha(
        theirs, x, x, x, path, key_padding_mask=padded, need_weights=True
    )
    mask = from_torch_mha_masks(key_padding_mask=padded)  # ours: True = real token
    out, weights = ours(x, mask=mask, need_weights=True)
    torch.testing.assert_close(out, expected, **F64)
    torch.testing.assert_close(weights, expected_w, **F64)
    assert torch.all(weights[2, :, :, 1:] == 0)


def test_cross_attention_key_padding_matches_torch():
    theirs, ours = make_pair()
    query, memory = rand(2, 4, 16), rand(2, 5, 16)
    padded = torch.tensor([[False] * 5, [False, False, True, True, True]])
    expected, expected_w = torch_mha(
        theirs, query, memory, memory, "slow", key_padding_mask=padded, need_weights=True
    )
    out, weights = ours(
        query, memory, memory, from_torch_mha_masks(key_padding_mask=padded), need_weights=True
    )
    torch.testing.assert_close(out, expected, **F64)
    torch.testing.assert_close(weights, expected_w, **F64)


@pytest.mark.parametrize("path", ["slow", "fast"])
def test_causal_matches_torch(path):
    theirs, ours = make_pair()
    x = rand(2, 6, 16)
    blocked = torch.ones(6, 6, dtype=torch.bool).triu(1)  # torch: True = may not attend
    expected, expected_w = torch_mha(theirs, x, x, x, path, attn_mask=blocked, need_weights=True)
    out, weights = ours(x, is_causal=True, need_weights=True)
    torch.testing.assert_close(out, expected, **F64)
    torch.testing.assert_close(weights, expected_w, **F64)
    # the converted torch mask says the same thing as is_causal
    out_from_mask, _ = ours(x, mask=from_torch_mha_masks(attn_mask=blocked))
    torch.testing.assert_close(out_from_mask, expected, **F64)


def test_causal_and_key_padding_match_torch():
    theirs, ours = make_pair()
    x = rand(2, 5, 16)
    blocked = torch.ones(5, 5, dtype=torch.bool).triu(1)
    padded = torch.tensor([[False] * 5, [False, False, False, True, True]])
    expected, expected_w = torch_mha(
        theirs, x, x, x, "slow", attn_mask=blocked, key_padding_mask=padded, need_weights=True
    )
    out, weights = ours(
        x, mask=from_torch_mha_masks(key_padding_mask=padded), is_causal=True, need_weights=True
    )
    torch.testing.assert_close(out, expected, **F64)
    torch.testing.assert_close(weights, expected_w, **F64)


@pytest.mark.parametrize("bias", [True, False])
def test_kdim_vdim_match_torch(bias):
    theirs, ours = make_pair(12, 3, bias=bias, kdim=5, vdim=7)
    assert not theirs._qkv_same_embed_dim  # separate q/k/v_proj_weight are what we copied
    assert ours.k_proj.in_features == 5 and ours.v_proj.in_features == 7
    query, key, value = rand(2, 4, 12), rand(2, 6, 5), rand(2, 6, 7)
    expected, expected_w = torch_mha(theirs, query, key, value, "slow", need_weights=True)
    out, weights = ours(query, key, value, need_weights=True)
    torch.testing.assert_close(out, expected, **F64)
    torch.testing.assert_close(weights, expected_w, **F64)


def test_weight_copy_is_checked_by_the_comparison():
    """A deliberately wrong copy (k and v chunks swapped) must be caught."""
    theirs, ours = make_pair()
    with torch.no_grad():
        ours.k_proj.weight.copy_(theirs.in_proj_weight.chunk(3)[2])
    x = rand(2, 4, 16)
    expected, _ = torch_mha(theirs, x, x, x, "slow")
    assert not torch.allclose(ours(x)[0], expected)


# --------------------------------------------------------------------------- by hand


@pytest.mark.parametrize("num_kv_heads", [4, 2, 1])
def test_weights_and_output_equal_a_hand_computation(num_kv_heads):
    mha = MultiHeadAttention(16, 4, num_kv_heads=num_kv_heads).double()
    query, memory = rand(2, 3, 16), rand(2, 5, 16)
    mask = torch.rand(2, 1, 3, 5) > 0.3
    mask[..., 0] = True  # every query sees a key
    expected, expected_w = by_hand(mha, query, memory, memory, mask)
    out, weights = mha(query, memory, memory, mask, need_weights=True)
    torch.testing.assert_close(weights, expected_w, **F64)
    torch.testing.assert_close(out, expected, **F64)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 3, dtype=torch.float64), **F64)


def test_weights_without_need_weights_are_none():
    mha = MultiHeadAttention(8, 2)
    out, weights = mha(torch.randn(1, 3, 8))
    assert weights is None and out.shape == (1, 3, 8)


def test_attn_bias_is_added_to_the_scores():
    mha = MultiHeadAttention(8, 2).double()
    x = rand(2, 4, 8)
    bias = rand(1, 2, 4, 4)
    expected, expected_w = by_hand(mha, x, x, x, bias=bias)
    out, weights = mha(x, attn_bias=bias, need_weights=True)
    torch.testing.assert_close(out, expected, **F64)
    torch.testing.assert_close(weights, expected_w, **F64)


def test_head_dim_can_differ_from_d_model_over_heads():
    mha = MultiHeadAttention(8, 2, head_dim=6).double()
    assert mha.q_proj.out_features == 12 and mha.out_proj.in_features == 12
    x = rand(2, 3, 8)
    expected, _ = by_hand(mha, x, x, x)
    torch.testing.assert_close(mha(x)[0], expected, **F64)


# --------------------------------------------------------------------------- GQA / MQA


def expand_to_full_mha(gqa: MultiHeadAttention) -> MultiHeadAttention:
    """A plain MHA whose k/v projections repeat each kv head's rows for its query group."""
    full = MultiHeadAttention(gqa.d_model, gqa.num_heads).to(gqa.q_proj.weight.dtype)
    rep = gqa.num_heads // gqa.num_kv_heads

    def repeat_rows(t):  # (Hkv * Dh, ...) -> (H * Dh, ...), kv head j serves heads j*rep..
        return (
            t.unflatten(0, (gqa.num_kv_heads, gqa.head_dim)).repeat_interleave(rep, 0).flatten(0, 1)
        )

    with torch.no_grad():
        for name in ("q_proj", "out_proj"):
            getattr(full, name).load_state_dict(getattr(gqa, name).state_dict())
        for name in ("k_proj", "v_proj"):
            src, dst = getattr(gqa, name), getattr(full, name)
            dst.weight.copy_(repeat_rows(src.weight))
            dst.bias.copy_(repeat_rows(src.bias))
    return full


@pytest.mark.parametrize("num_kv_heads", [2, 1])
@pytest.mark.parametrize("is_causal", [False, True])
def test_grouped_query_attention_equals_repeated_kv_heads(num_kv_heads, is_causal):
    gqa = MultiHeadAttention(16, 4, num_kv_heads=num_kv_heads).double()
    assert gqa.k_proj.out_features == num_kv_heads * 4
    full = expand_to_full_mha(gqa)
    x = rand(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])[:, None, None, :]
    out, weights = gqa(x, mask=mask, is_causal=is_causal, need_weights=True)
    expected, expected_w = full(x, mask=mask, is_causal=is_causal, need_weights=True)
    torch.testing.assert_close(out, expected, **F64)
    torch.testing.assert_close(weights, expected_w, **F64)
    # and the query heads of one group really share keys: not all heads are the same
    assert not torch.allclose(weights[:, 0], weights[:, 1])


def test_grouped_query_cross_attention_equals_repeated_kv_heads():
    gqa = MultiHeadAttention(16, 4, num_kv_heads=2).double()
    full = expand_to_full_mha(gqa)
    query, memory = rand(2, 3, 16), rand(2, 6, 16)
    torch.testing.assert_close(gqa(query, memory)[0], full(query, memory)[0], **F64)


# --------------------------------------------------------------------------- backends


@pytest.mark.parametrize("num_kv_heads", [4, 2])
@pytest.mark.parametrize("backend", ["fused", "chunked", "auto"])
def test_backends_agree_with_math(backend, num_kv_heads):
    reference = MultiHeadAttention(16, 4, num_kv_heads=num_kv_heads, backend="math").double()
    other = MultiHeadAttention(16, 4, num_kv_heads=num_kv_heads, backend=backend).double()
    other.load_state_dict(reference.state_dict())
    query, memory = rand(2, 5, 16), rand(2, 7, 16)
    padding = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])[:, None, None, :]
    cases = [
        dict(query=query),
        dict(query=query, is_causal=True),
        dict(query=query, key=memory, value=memory, mask=padding),
        dict(query=query, mask=padding[..., :5], is_causal=True),
    ]
    for kwargs in cases:
        expected, _ = reference(**kwargs)
        out, _ = other(**kwargs)
        torch.testing.assert_close(out, expected, **F64)


def test_backend_is_forwarded_to_the_functional_entry_point():
    mha = MultiHeadAttention(8, 2, backend="fused")
    with pytest.raises(ValueError, match="backend 'fused' cannot return attention weights"):
        mha(torch.randn(1, 3, 8), need_weights=True)
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        MultiHeadAttention(8, 2, backend="nope")(torch.randn(1, 3, 8))


def test_dropout_applies_only_in_training():
    mha = MultiHeadAttention(8, 2, dropout=0.5, backend="math")
    x = torch.randn(2, 6, 8)
    mha.eval()
    torch.testing.assert_close(mha(x)[0], mha(x)[0])
    without = MultiHeadAttention(8, 2, backend="math")
    without.load_state_dict(mha.state_dict())
    torch.testing.assert_close(mha(x)[0], without(x)[0])
    mha.train()
    assert not torch.allclose(mha(x)[0], without(x)[0])


# --------------------------------------------------------------------------- injection points


class PositionScale(nn.Module):
    """Test double for a rotary module: scales position ``p`` by ``1 + p / 4``."""

    def __init__(self):
        super().__init__()
        self.offsets = []

    @staticmethod
    def factor(start, length, dtype):
        return 1.0 + torch.arange(start, start + length, dtype=dtype)[:, None] / 4

    def forward(self, query, key, *, offset, positions=None):
        self.offsets.append(offset)
        return (
            query * self.factor(offset, query.size(2), query.dtype),
            key * self.factor(offset, key.size(2), key.dtype),
        )


class TableBias(nn.Module):
    """Test double for a score bias: a fixed per-head table indexed by absolute position."""

    def __init__(self, num_heads, max_len):
        super().__init__()
        self.register_buffer("table", torch.randn(num_heads, max_len, max_len, dtype=torch.float64))
        self.calls = []

    def forward(self, query_len, key_len, *, offset):
        self.calls.append((query_len, key_len, offset))
        return self.table[:, offset : offset + query_len, :key_len]


def test_rotary_transforms_projected_queries_and_keys():
    rotary = PositionScale()
    mha = MultiHeadAttention(8, 2, rotary=rotary).double()
    x = rand(2, 5, 8)
    out, weights = mha(x, need_weights=True)
    assert rotary.offsets == [0]

    q = split_heads(mha.q_proj(x), 2) * PositionScale.factor(0, 5, x.dtype)
    k = split_heads(mha.k_proj(x), 2) * PositionScale.factor(0, 5, x.dtype)
    v = split_heads(mha.v_proj(x), 2)
    expected_w = (q @ k.transpose(-2, -1) / math.sqrt(4)).softmax(-1)
    expected = mha.out_proj((expected_w @ v).transpose(1, 2).flatten(2))
    torch.testing.assert_close(weights, expected_w, **F64)
    torch.testing.assert_close(out, expected, **F64)


def test_score_bias_is_added_to_the_scores():
    score_bias = TableBias(2, 8)
    mha = MultiHeadAttention(8, 2, score_bias=score_bias).double()
    query, memory = rand(2, 3, 8), rand(2, 5, 8)
    extra = rand(2, 1, 3, 5)
    out, weights = mha(query, memory, memory, attn_bias=extra, need_weights=True)
    assert score_bias.calls == [(3, 5, 0)]
    expected, expected_w = by_hand(
        mha, query, memory, memory, bias=score_bias.table[:, :3, :5] + extra
    )
    torch.testing.assert_close(weights, expected_w, **F64)
    torch.testing.assert_close(out, expected, **F64)


def test_injected_modules_see_cache_lengths_as_offsets():
    rotary, score_bias = PositionScale(), TableBias(4, 8)
    mha = MultiHeadAttention(16, 4, num_kv_heads=2, rotary=rotary, score_bias=score_bias)
    mha = mha.double()
    x = rand(2, 7, 16)
    full, _ = mha(x, is_causal=True)
    rotary.offsets.clear()
    score_bias.calls.clear()

    cache = mha.new_cache(2, 8, like=x)
    chunks = [(0, 3), (3, 4), (4, 5), (5, 7)]
    outs = [mha(x[:, a:b], cache=cache, is_causal=True)[0] for a, b in chunks]
    assert rotary.offsets == [0, 3, 4, 5]
    assert score_bias.calls == [(3, 3, 0), (1, 4, 3), (1, 5, 4), (2, 7, 5)]
    torch.testing.assert_close(torch.cat(outs, dim=1), full, **F64)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (((2, 3, 15), None, None), "query must have shape (B, T, 16); got (2, 3, 15)"),
        (((3, 16), None, None), "query must have shape (B, T, 16); got (3, 16)"),
        (((2, 3, 16), (2, 4, 6), (2, 4, 7)), "key must have shape (B, T, 5); got (2, 4, 6)"),
        (((2, 3, 16), (2, 4, 5), (2, 4, 6)), "value must have shape (B, T, 7); got (2, 4, 6)"),
        (((2, 3, 16), (2, 4, 5), (4, 7)), "value must have shape (B, T, 7); got (4, 7)"),
        (((2, 3, 16), (2, 4, 5), (2, 3, 7)), "key and value must share (B, Tk)"),
        (((2, 3, 16), (1, 4, 5), (1, 4, 7)), "key batch size must equal query's 2; got 1"),
    ],
)
def test_bad_input_shapes_name_the_argument(shapes, message):
    mha = MultiHeadAttention(16, 4, kdim=5, vdim=7)
    tensors = [None if s is None else torch.randn(*s) for s in shapes]
    if tensors[1] is None:  # self-attention: key and value default to query
        mha = MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match=re.escape(message)):
        mha(*tensors)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(d_model=10, num_heads=4), "d_model (10) must be divisible by num_heads (4)"),
        (
            dict(d_model=12, num_heads=6, num_kv_heads=4),
            "num_heads (6) must be a multiple of num_kv_heads (4)",
        ),
        (dict(d_model=8, num_heads=2, dropout=1.0), "dropout must be in [0, 1); got 1.0"),
        (dict(d_model=8, num_heads=2, dropout=-0.1), "dropout must be in [0, 1); got -0.1"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MultiHeadAttention(**kwargs)


def test_cache_must_match_the_module():
    mha = MultiHeadAttention(16, 4, num_kv_heads=2)
    wrong = KVCache(2, 4, 8, 4)  # sized for 4 kv heads
    with pytest.raises(ValueError, match="key must have shape"):
        mha(torch.randn(2, 1, 16), cache=wrong)


def test_mask_must_broadcast_to_the_scores():
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=re.escape("(B, H, Tq, Tk) = (2, 2, 3, 3)")):
        mha(torch.randn(2, 3, 8), mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask must be a bool tensor"):
        mha(torch.randn(2, 3, 8), mask=create_causal_mask(3).float())
