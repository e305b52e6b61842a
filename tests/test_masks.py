"""Masks in attnkit's one convention (bool, True = may attend), checked against torch."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right, causal_upper_left

from attnkit.functional import (
    combine_masks,
    create_causal_mask,
    create_padding_mask,
    create_sliding_window_mask,
    from_torch_mha_masks,
    mask_to_additive,
    scaled_dot_product_attention,
)

pytestmark = pytest.mark.usefixtures("single_thread")

# --------------------------------------------------------------------------- padding


def test_padding_mask_marks_real_tokens():
    tokens = torch.tensor([[5, 6, 7, 0, 0], [0, 1, 2, 3, 4]])
    mask = create_padding_mask(tokens, pad_id=0)
    assert mask.dtype == torch.bool
    assert mask.shape == (2, 1, 1, 5)
    expected = torch.tensor([[True, True, True, False, False], [False, True, True, True, True]])
    assert torch.equal(mask[:, 0, 0], expected)


def test_padding_mask_uses_the_given_pad_id():
    tokens = torch.tensor([[3, 0, 3, 1]])
    mask = create_padding_mask(tokens, pad_id=3)
    assert mask[0, 0, 0].tolist() == [False, True, False, True]


def test_padding_mask_blocks_padded_keys_in_attention():
    tokens = torch.tensor([[4, 4, 4, 9, 9], [4, 4, 9, 9, 9]])
    mask = create_padding_mask(tokens, pad_id=9)
    q, k, v = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 5, 4), torch.randn(2, 2, 5, 4)
    _, weights = scaled_dot_product_attention(q, k, v, mask, need_weights=True)
    assert torch.all(weights[0, ..., 3:] == 0)
    assert torch.all(weights[1, ..., 2:] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 3))


@pytest.mark.parametrize("shape", [(5,), (2, 1, 5)])
def test_padding_mask_rejects_wrong_rank(shape):
    with pytest.raises(
        ValueError, match=r"tokens must have shape \(B, S\); got " + re.escape(str(shape))
    ):
        create_padding_mask(torch.zeros(shape, dtype=torch.long), pad_id=0)


# --------------------------------------------------------------------------- causal


@pytest.mark.parametrize("length", [1, 2, 7])
def test_causal_mask_is_lower_triangular(length):
    mask = create_causal_mask(length)
    assert mask.dtype == torch.bool
    assert mask.shape == (1, 1, length, length)
    expected = torch.ones(length, length, dtype=torch.bool).tril()
    assert torch.equal(mask[0, 0], expected)
    # both alignments agree when Tq == Tk
    assert torch.equal(mask, create_causal_mask(length, alignment="bottom_right"))


@pytest.mark.filterwarnings("ignore:Lower right causal bias will produce NaNs")
@pytest.mark.parametrize(("query_len", "key_len"), [(3, 7), (1, 6), (5, 5), (6, 4)])
def test_causal_alignments_match_torch(query_len, key_len):
    top_left = create_causal_mask(query_len, key_len)
    bottom_right = create_causal_mask(query_len, key_len, alignment="bottom_right")
    assert top_left.shape == bottom_right.shape == (1, 1, query_len, key_len)
    torch_top_left = causal_upper_left(query_len, key_len)._materialize()
    torch_bottom_right = causal_lower_right(query_len, key_len)._materialize()
    assert torch.equal(top_left[0, 0], torch_top_left)
    assert torch.equal(bottom_right[0, 0], torch_bottom_right)
    # explicit positions: query i sits at i (top-left) or key_len - query_len + i
    for i in range(query_len):
        for j in range(key_len):
            assert bool(top_left[0, 0, i, j]) == (j <= i)
            assert bool(bottom_right[0, 0, i, j]) == (j <= key_len - query_len + i)


def test_bottom_right_is_kv_cache_decoding():
    """A single new query at the end of a cache sees every key; top-left sees only key 0."""
    key_len = 6
    bottom_right = create_causal_mask(1, key_len, alignment="bottom_right")
    top_left = create_causal_mask(1, key_len)
    assert bottom_right.all()
    assert top_left[0, 0, 0].tolist() == [True] + [False] * (key_len - 1)


def test_causal_mask_matches_torch_sdpa_is_causal():
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=create_causal_mask(5, 7))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    expected_br = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(5, 7))
    got_br = F.scaled_dot_product_attention(
        q, k, v, attn_mask=create_causal_mask(5, 7, alignment="bottom_right")
    )
    torch.testing.assert_close(got_br, expected_br, atol=1e-6, rtol=1e-6)


def test_causal_mask_rejects_unknown_alignment():
    with pytest.raises(
        ValueError, match=r"alignment must be 'top_left' or 'bottom_right'.*'lower'"
    ):
        create_causal_mask(3, 4, alignment="lower")


# --------------------------------------------------------------------------- sliding window


def _window_reference(query_len, key_len, window, causal, alignment):
    offset = key_len - query_len if alignment == "bottom_right" else 0
    out = torch.zeros(query_len, key_len, dtype=torch.bool)
    for i in range(query_len):
        pos = i + offset
        for j in range(key_len):
            out[i, j] = (pos - window < j <= pos) if causal else abs(pos - j) <= window
    return out


@pytest.mark.parametrize("window", [1, 2, 3, 10])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("alignment", ["top_left", "bottom_right"])
@pytest.mark.parametrize(("query_len", "key_len"), [(6, 6), (3, 8), (7, 5)])
def test_sliding_window_mask_matches_definition(window, causal, alignment, query_len, key_len):
    mask = create_sliding_window_mask(
        query_len, key_len, window=window, causal=causal, alignment=alignment
    )
    assert mask.dtype == torch.bool
    assert mask.shape == (1, 1, query_len, key_len)
    expected = _window_reference(query_len, key_len, window, causal, alignment)
    assert torch.equal(mask[0, 0], expected)


def test_sliding_window_special_cases():
    # window 1 (causal): each position sees only itself
    assert torch.equal(create_sliding_window_mask(5, window=1)[0, 0], torch.eye(5, dtype=bool))
    # a window covering the whole sequence is plain causal attention
    assert torch.equal(
        create_sliding_window_mask(4, 9, window=9),
        create_causal_mask(4, 9, alignment="bottom_right"),
    )
    # a causal window of 2 sees the current and the previous key
    assert create_sliding_window_mask(4, window=2)[0, 0, 3].tolist() == [False, False, True, True]
    # a symmetric window of 1 sees one key on each side
    symmetric = create_sliding_window_mask(5, window=1, causal=False)[0, 0, 2]
    assert symmetric.tolist() == [False, True, True, True, False]


@pytest.mark.parametrize("window", [0, -2])
def test_sliding_window_rejects_small_window(window):
    with pytest.raises(ValueError, match=rf"window must be >= 1; got {window}"):
        create_sliding_window_mask(4, window=window)


def test_sliding_window_rejects_unknown_alignment():
    with pytest.raises(ValueError, match=r"alignment must be 'top_left' or 'bottom_right'.*"):
        create_sliding_window_mask(3, 5, window=2, alignment="bottom-right")


# --------------------------------------------------------------------------- combine


def test_combine_masks_is_logical_and_with_broadcast():
    padding = create_padding_mask(torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]), pad_id=0)
    causal = create_causal_mask(4)
    combined = combine_masks(padding, None, causal)
    assert combined.shape == (2, 1, 4, 4)
    assert combined.dtype == torch.bool
    for b in range(2):
        for i in range(4):
            for j in range(4):
                assert bool(combined[b, 0, i, j]) == (bool(padding[b, 0, 0, j]) and j <= i)


def test_combine_masks_edge_cases():
    assert combine_masks() is None
    assert combine_masks(None, None) is None
    mask = torch.tensor([[True, False]])
    assert torch.equal(combine_masks(None, mask), mask)


def test_combine_masks_rejects_float_mask():
    with pytest.raises(ValueError, match=r"combine_masks expects bool masks; mask 1 has dtype"):
        combine_masks(torch.ones(2, 2, dtype=torch.bool), torch.zeros(2, 2))


# --------------------------------------------------------------------------- torch MHA


def _mha_and_projections(embed_dim=8, num_heads=2, batch=2, query_len=4, key_len=5):
    mha = torch.nn.MultiheadAttention(embed_dim, num_heads, batch_first=True).eval()
    x_q = torch.randn(batch, query_len, embed_dim)
    x_kv = torch.randn(batch, key_len, embed_dim)
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)

    def heads(x, w, b):
        return F.linear(x, w, b).unflatten(-1, (num_heads, -1)).transpose(1, 2)

    qkv = heads(x_q, w_q, b_q), heads(x_kv, w_k, b_k), heads(x_kv, w_v, b_v)
    return mha, x_q, x_kv, qkv


def _blocked_pattern(*shape):
    """Random True = blocked pattern that never blocks key 0 (no fully blocked rows)."""
    blocked = torch.rand(shape) < 0.4
    blocked[..., 0] = False
    return blocked


def _as_additive(blocked):
    return torch.zeros(blocked.shape).masked_fill(blocked, float("-inf"))


@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("which", ["attn_mask_2d", "attn_mask_3d", "key_padding", "both"])
def test_from_torch_mha_masks_matches_multihead_attention(kind, which):
    batch, heads, query_len, key_len = 2, 2, 4, 5
    mha, x_q, x_kv, (q, k, v) = _mha_and_projections(
        num_heads=heads, batch=batch, query_len=query_len, key_len=key_len
    )
    attn_mask = key_padding_mask = None
    if which in ("attn_mask_2d", "both"):
        attn_mask = _blocked_pattern(query_len, key_len)
    if which == "attn_mask_3d":
        attn_mask = _blocked_pattern(batch * heads, query_len, key_len)
    if which in ("key_padding", "both"):
        key_padding_mask = torch.tensor([[False, False, False, True, True], [False] * 5])
    if kind == "float":
        attn_mask = None if attn_mask is None else _as_additive(attn_mask)
        key_padding_mask = None if key_padding_mask is None else _as_additive(key_padding_mask)

    with torch.no_grad():
        _, expected = mha(
            x_q,
            x_kv,
            x_kv,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            need_weights=True,
            average_attn_weights=False,
        )
        mask = from_torch_mha_masks(attn_mask, key_padding_mask, num_heads=heads)
        assert mask.dtype == torch.bool
        assert mask.dim() == 4
        _, weights = scaled_dot_product_attention(q, k, v, mask, need_weights=True)
    torch.testing.assert_close(weights, expected, atol=1e-6, rtol=1e-5)


def test_from_torch_mha_masks_inverts_the_convention():
    blocked = torch.tensor([[False, True], [False, False]])
    assert torch.equal(from_torch_mha_masks(blocked)[0, 0], ~blocked)
    additive = torch.tensor([[0.0, float("-inf")], [float("-inf"), 0.0]])
    assert from_torch_mha_masks(additive)[0, 0].tolist() == [[True, False], [False, True]]
    padding = torch.tensor([[False, False, True]])
    converted = from_torch_mha_masks(key_padding_mask=padding)
    assert converted.shape == (1, 1, 1, 3)
    assert converted[0, 0, 0].tolist() == [True, True, False]
    assert from_torch_mha_masks() is None


def test_from_torch_mha_masks_3d_is_batch_major():
    """MHA's (B * H, Tq, Tk) layout is index b * H + h."""
    batch, heads = 2, 3
    blocked = torch.zeros(batch * heads, 1, 4, dtype=torch.bool)
    for b in range(batch):
        for h in range(heads):
            blocked[b * heads + h, 0, b + h] = True
    mask = from_torch_mha_masks(blocked, num_heads=heads)
    assert mask.shape == (batch, heads, 1, 4)
    for b in range(batch):
        for h in range(heads):
            assert mask[b, h, 0].tolist() == [j != b + h for j in range(4)]


def test_from_torch_mha_masks_matches_torch_sdpa_with_float_mask():
    q, k, v = torch.randn(2, 2, 4, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    blocked = _blocked_pattern(4, 6)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=_as_additive(blocked))
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=from_torch_mha_masks(blocked))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_from_torch_mha_masks_errors():
    with pytest.raises(ValueError, match=r"num_heads is required to convert a 3-D attn_mask"):
        from_torch_mha_masks(torch.zeros(4, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attn_mask must have shape .*; got \(1, 1, 2, 2\)"):
        from_torch_mha_masks(torch.zeros(1, 1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(B, S\); got \(3,\)"):
        from_torch_mha_masks(key_padding_mask=torch.zeros(3, dtype=torch.bool))


def test_from_torch_mha_masks_3d_rejects_indivisible_first_dim():
    with pytest.raises(
        ValueError, match=r"attn_mask.*\(B \* H, Tq, Tk\).*num_heads=2.*\(5, 2, 2\)"
    ):
        from_torch_mha_masks(torch.zeros(5, 2, 2, dtype=torch.bool), num_heads=2)


@pytest.mark.parametrize("value", [-1e9, 0.5, float("inf"), float("nan")])
@pytest.mark.parametrize("argument", ["attn_mask", "key_padding_mask"])
def test_from_torch_mha_masks_rejects_additive_values_it_cannot_represent(value, argument):
    """A float MHA mask other than 0 / -inf is a bias; dropping it would be a silent error."""
    mask = torch.zeros(2, 3)
    mask[1, 2] = value
    with pytest.raises(ValueError, match=rf"{argument}.*0 or -inf.*attn_bias"):
        from_torch_mha_masks(**{argument: mask})


# --------------------------------------------------------------------------- additive


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_mask_to_additive_uses_dtype_minimum(dtype):
    mask = torch.tensor([[True, False, True]])
    additive = mask_to_additive(mask, dtype)
    assert additive.dtype == dtype
    assert additive.shape == mask.shape
    assert additive.tolist() == [[0.0, torch.finfo(dtype).min, 0.0]]
    assert torch.isfinite(additive).all()


def test_mask_to_additive_default_dtype_and_why_not_minus_1e9():
    assert mask_to_additive(torch.tensor([False])).dtype == torch.float32
    # the motivation: -1e9 is not representable in float16
    assert torch.isinf(torch.tensor(-1e9, dtype=torch.float16))
    assert torch.isfinite(mask_to_additive(torch.tensor([False]), torch.float16)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_mask_to_additive_matches_bool_mask_in_torch_sdpa(dtype):
    q, k, v = (torch.randn(2, 2, 5, 8, dtype=dtype) for _ in range(3))
    mask = torch.rand(2, 1, 5, 5) < 0.6
    mask[..., 0] = True
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_to_additive(mask, dtype))
    assert torch.isfinite(got).all()
    tol = 1e-6 if dtype == torch.float32 else 1e-3
    torch.testing.assert_close(got, expected, atol=tol, rtol=tol)


def test_mask_to_additive_rejects_float_mask():
    with pytest.raises(ValueError, match=r"mask must be bool; got torch.float32"):
        mask_to_additive(torch.zeros(2, 2))
