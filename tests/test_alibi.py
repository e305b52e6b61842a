"""ALiBi: the paper's slopes for any head count, the bias matrix by hand, cached decoding."""

import pytest
import torch

from attnkit.nn import ALiBi, MultiHeadAttention
from attnkit.nn.position import alibi_slopes


def test_power_of_two_slopes_are_the_geometric_sequence():
    assert alibi_slopes(8).tolist() == [2.0**-k for k in range(1, 9)]
    assert alibi_slopes(4).tolist() == [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]


def test_other_head_counts_interleave_the_next_power_of_two():
    # 12 heads: the 8 slopes of 8 heads, then slopes 1, 3, 5, 7 (0-based 0, 2, 4, 6) of 16 heads.
    sixteen = [2.0 ** (-0.5 * (k + 1)) for k in range(16)]
    expected = [2.0**-k for k in range(1, 9)] + sixteen[0::2][:4]
    assert alibi_slopes(12).tolist() == pytest.approx(expected)
    assert len(alibi_slopes(5)) == 5 and alibi_slopes(1).tolist() == [2.0**-8]
    with pytest.raises(ValueError, match="num_heads must be >= 1; got 0"):
        alibi_slopes(0)


def test_bias_matrix_by_hand():
    bias = ALiBi(2)(3, 4, offset=1)  # slopes 1/16, 1/256; queries at 1, 2, 3
    distance = torch.tensor([[1, 0, 0, 0], [2, 1, 0, 0], [3, 2, 1, 0]], dtype=torch.float32)
    torch.testing.assert_close(bias[0, 0], -distance / 16)
    torch.testing.assert_close(bias[0, 1], -distance / 256)
    symmetric = ALiBi(2, causal=False)(2, 3)
    torch.testing.assert_close(symmetric[0, 0], -torch.tensor([[0, 1, 2], [1, 0, 1.0]]) / 16)


def test_cached_attention_with_alibi_equals_full_forward():
    attention = MultiHeadAttention(24, 6, score_bias=ALiBi(6)).eval()
    x = torch.randn(2, 9, 24)
    full, _ = attention(x, is_causal=True)
    cache = attention.new_cache(2, 9, like=x)
    first, _ = attention(x[:, :5], is_causal=True, cache=cache)
    rest = [attention(x[:, t : t + 1], is_causal=True, cache=cache)[0] for t in range(5, 9)]
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), full, atol=1e-6, rtol=0)
