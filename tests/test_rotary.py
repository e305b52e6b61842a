"""Rotary position embeddings: a rotation, relative in q.k, against a complex-number reference."""

import math

import pytest
import torch

from attnkit.nn import MultiHeadAttention, RotaryEmbedding

pytestmark = pytest.mark.usefixtures("single_thread")


def complex_reference(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """float64 RoPE: pair feature i with i + Dh/2 as a complex number, multiply by e^(i m theta)."""
    half = x.size(-1) // 2
    theta = base ** (-torch.arange(half, dtype=torch.float64) * 2 / x.size(-1))
    z = torch.complex(x[..., :half].double(), x[..., half:].double())
    rotated = z * torch.polar(torch.ones_like(theta), positions.double()[:, None] * theta)
    return torch.cat([rotated.real, rotated.imag], dim=-1)


def test_matches_complex_reference_in_float64():
    rotary = RotaryEmbedding(8, base=100.0)
    q, k = (
        torch.randn(2, 3, 5, 8, dtype=torch.float64),
        torch.randn(2, 3, 5, 8, dtype=torch.float64),
    )
    rq, rk = rotary(q, k, offset=4)
    positions = torch.arange(4, 9)
    # inv_freq is stored in float32 (as Llama/HF do), hence 1e-6 rather than 1e-12.
    torch.testing.assert_close(rq, complex_reference(q, positions, 100.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(rk, complex_reference(k, positions, 100.0), atol=1e-5, rtol=0)


def test_is_a_rotation_norms_are_kept():
    rotary = RotaryEmbedding(16)
    q = torch.randn(2, 4, 10, 16)
    rq, _ = rotary(q, q, offset=123)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))


def test_scores_depend_only_on_the_relative_offset():
    rotary = RotaryEmbedding(8)
    q, k = (
        torch.randn(1, 1, 1, 8, dtype=torch.float64),
        torch.randn(1, 1, 1, 8, dtype=torch.float64),
    )

    def score(m: int, n: int) -> float:
        rq, _ = rotary(q, q, offset=m)
        _, rk = rotary(k, k, offset=n)
        return float((rq * rk).sum())

    assert score(7, 3) == pytest.approx(score(104, 100), abs=1e-5)
    assert score(0, 0) == pytest.approx(float((q * k).sum()), abs=1e-12)
    assert score(7, 3) != pytest.approx(score(7, 4), abs=1e-3)


def test_positions_per_row_equal_offsets():
    rotary = RotaryEmbedding(8)
    q = torch.randn(2, 2, 3, 8)
    positions = torch.tensor([[0, 1, 2], [5, 6, 7]])
    rq, _ = rotary(q, q, positions=positions)
    torch.testing.assert_close(rq[:1], rotary(q[:1], q[:1], offset=0)[0])
    torch.testing.assert_close(rq[1:], rotary(q[1:], q[1:], offset=5)[0])


def test_linear_scaling_divides_positions():
    scaled = RotaryEmbedding(8, scaling="linear", factor=4.0)
    plain = RotaryEmbedding(8)
    cos_s, sin_s = scaled.angles(torch.tensor([8, 12]))
    cos_p, sin_p = plain.angles(torch.tensor([2, 3]))
    torch.testing.assert_close(cos_s, cos_p)
    torch.testing.assert_close(sin_s, sin_p)


def test_ntk_scaling_raises_the_base_and_keeps_the_highest_frequency():
    ntk = RotaryEmbedding(64, base=10000.0, scaling="ntk", factor=8.0)
    assert ntk.base == pytest.approx(10000.0 * 8.0 ** (64 / 62))
    plain = RotaryEmbedding(64)
    assert ntk.inv_freq[0] == plain.inv_freq[0] == 1.0
    # The lowest frequency is stretched by the full factor (up to the exponent's rounding).
    assert plain.inv_freq[-1] / ntk.inv_freq[-1] == pytest.approx(8.0, rel=1e-3)


def test_cached_attention_with_rotary_equals_full_forward():
    attention = MultiHeadAttention(16, 4, num_kv_heads=2, rotary=RotaryEmbedding(4)).eval()
    x = torch.randn(2, 7, 16)
    full, _ = attention(x, is_causal=True)
    cache = attention.new_cache(2, 7, like=x)
    first, _ = attention(x[:, :4], is_causal=True, cache=cache)
    rest = [attention(x[:, t : t + 1], is_causal=True, cache=cache)[0] for t in range(4, 7)]
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), full, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"head_dim": 7}, "head_dim must be a positive even number; got 7"),
        ({"head_dim": 8, "scaling": "yarn"}, "scaling must be one of"),
        ({"head_dim": 8, "scaling": "linear", "factor": 0.5}, "factor must be >= 1; got 0.5"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RotaryEmbedding(**kwargs)


def test_bad_inputs_are_named():
    rotary = RotaryEmbedding(8)
    with pytest.raises(ValueError, match=r"head_dim 8; got \(1, 1, 2, 6\)"):
        rotary(torch.randn(1, 1, 2, 6), torch.randn(1, 1, 2, 6))
    with pytest.raises(ValueError, match="same new tokens; got 2 queries and 3 keys"):
        rotary(torch.randn(1, 1, 2, 8), torch.randn(1, 1, 3, 8))
    with pytest.raises(ValueError, match=r"positions must have shape \(B, 2\); got \(1, 3\)"):
        rotary(torch.randn(1, 1, 2, 8), torch.randn(1, 1, 2, 8), positions=torch.zeros(1, 3))


def test_frequencies_follow_the_paper():
    rotary = RotaryEmbedding(6, base=10000.0)
    expected = [10000.0 ** (-2 * i / 6) for i in range(3)]
    assert rotary.inv_freq.tolist() == pytest.approx(expected)
    assert math.isclose(rotary.base, 10000.0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_frequencies_stay_float32_when_the_module_is_cast(dtype):
    """.to(bf16) would round the frequencies: the angle at position 4000 then drifts."""
    rotary = RotaryEmbedding(64)
    cast = RotaryEmbedding(64).to(dtype)
    assert cast.inv_freq.dtype == torch.float32
    torch.testing.assert_close(cast.inv_freq, rotary.inv_freq, atol=0, rtol=0)
    positions = torch.tensor([4000])
    for expected, got in zip(rotary.angles(positions), cast.angles(positions), strict=True):
        torch.testing.assert_close(got, expected, atol=0, rtol=0)
