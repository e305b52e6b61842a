"""Shaw et al.'s relative position attention against a float64 loop, gradients, the cache."""

import math

import pytest
import torch

from attnkit.nn import RelativePositionAttention

pytestmark = pytest.mark.usefixtures("single_thread")


def loop_reference(module, x, mask=None, causal=False):
    """The paper's formulas, one query and key at a time (float64)."""
    B, T, _ = x.shape
    H, Dh, k = module.num_heads, module.head_dim, module.max_relative_position
    q = module.q_proj(x).view(B, T, H, Dh)
    kk = module.k_proj(x).view(B, T, H, Dh)
    v = module.v_proj(x).view(B, T, H, Dh)
    wk, wv = module.relative_key.weight, module.relative_value.weight
    out = torch.zeros(B, T, H, Dh, dtype=x.dtype)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                visible = [
                    j for j in range(T)
                    if (mask is None or mask[b, j]) and (not causal or j <= i)
                ]  # fmt: skip
                scores = torch.stack([
                    q[b, i, h] @ (kk[b, j, h] + wk[min(max(j - i, -k), k) + k]) / math.sqrt(Dh)
                    for j in visible
                ])  # fmt: skip
                alpha = torch.softmax(scores, dim=0)
                for a, j in zip(alpha, visible, strict=True):
                    out[b, i, h] += a * (v[b, j, h] + wv[min(max(j - i, -k), k) + k])
    return module.out_proj(out.reshape(B, T, H * Dh))


@pytest.mark.parametrize("causal", [False, True])
def test_matches_the_loop_reference_in_float64(causal):
    torch.manual_seed(0)
    module = RelativePositionAttention(12, 3, max_relative_position=2).double().eval()
    torch.nn.init.normal_(module.relative_key.weight)
    torch.nn.init.normal_(module.relative_value.weight)
    x = torch.randn(2, 6, 12, dtype=torch.float64)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    out, _ = module(x, mask=mask[:, None, None, :], is_causal=causal)
    expected = loop_reference(module, x, mask, causal)
    torch.testing.assert_close(out[mask], expected[mask], atol=1e-10, rtol=0)


def test_gradcheck():
    torch.manual_seed(1)
    module = RelativePositionAttention(8, 2, max_relative_position=3).double()
    x = torch.randn(1, 5, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: module(t, is_causal=True)[0], (x,))


def test_cached_decoding_equals_the_full_forward():
    module = RelativePositionAttention(16, 4, max_relative_position=3, num_kv_heads=2).eval()
    x = torch.randn(2, 8, 16)
    full, weights = module(x, is_causal=True, need_weights=True)
    assert weights.shape == (2, 4, 8, 8) and weights.triu(1).abs().max() == 0
    cache = module.new_cache(2, 8, like=x)
    first, _ = module(x[:, :5], is_causal=True, cache=cache)
    rest = [module(x[:, t : t + 1], is_causal=True, cache=cache)[0] for t in range(5, 8)]
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), full, atol=1e-6, rtol=0)


def test_distances_beyond_k_share_the_end_vectors():
    from attnkit.nn.attention import relative_buckets

    buckets = relative_buckets(1, 7, 3, 2, "cpu")
    assert buckets.tolist() == [[0, 0, 1, 2, 3, 4, 4]]
    with pytest.raises(ValueError, match="max_relative_position must be >= 1; got 0"):
        RelativePositionAttention(8, 2, max_relative_position=0)
