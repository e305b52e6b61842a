"""Absolute positional encodings: sinusoidal (against the paper's formula) and learned."""

import math
import re

import pytest
import torch

from attnkit.nn import LearnedPositionalEncoding, PositionalEncoding, sinusoidal_table


def paper_formula(pos: int, dim: int, d_model: int) -> float:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))."""
    two_i = dim - dim % 2
    angle = pos / 10000 ** (two_i / d_model)
    return math.sin(angle) if dim % 2 == 0 else math.cos(angle)


POSITIONS = [0, 1, 2, 7, 63, 499]


# --------------------------------------------------------------------------- sinusoidal


@pytest.mark.parametrize("d_model", [16, 7])
def test_sinusoidal_table_matches_the_paper_formula(d_model):
    table = sinusoidal_table(500, d_model, dtype=torch.float64)
    assert table.shape == (500, d_model) and table.dtype == torch.float64
    dims = sorted({0, 1, 2, 3, d_model - 2, d_model - 1})
    for pos in POSITIONS:
        for dim in dims:
            assert table[pos, dim].item() == pytest.approx(
                paper_formula(pos, dim, d_model), abs=1e-12
            )


def test_positional_encoding_values_match_the_paper_formula():
    pe = PositionalEncoding(16, max_len=500)
    encoding = pe.get_positional_encoding(500)
    assert encoding.shape == (500, 16)
    for pos in POSITIONS:
        for dim in (0, 1, 2, 3, 10, 14, 15):
            # the buffer is float32: compare at float32 precision
            assert encoding[pos, dim].item() == pytest.approx(paper_formula(pos, dim, 16), abs=1e-6)


def test_positional_encoding_is_added_to_the_input():
    pe = PositionalEncoding(8, max_len=20)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(pe(x), x + sinusoidal_table(5, 8))


@pytest.mark.parametrize("seq_len", [1, 6, 20])
def test_get_positional_encoding_shape(seq_len):
    assert PositionalEncoding(8, max_len=20).get_positional_encoding(seq_len).shape == (seq_len, 8)


def test_positional_encoding_offset():
    pe = PositionalEncoding(8, max_len=20)
    torch.testing.assert_close(
        pe.get_positional_encoding(3, offset=5), pe.get_positional_encoding(8)[5:]
    )
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(pe(x, offset=5), x + sinusoidal_table(8, 8)[5:])
    # the last positions fit exactly
    assert pe.get_positional_encoding(4, offset=16).shape == (4, 8)


def test_positional_encoding_keeps_the_input_dtype():
    pe = PositionalEncoding(8, max_len=10)
    assert pe(torch.randn(1, 4, 8, dtype=torch.float64)).dtype == torch.float64
    assert pe(torch.randn(1, 4, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_positional_encoding_dropout_only_in_training():
    pe = PositionalEncoding(8, max_len=10, dropout=0.5)
    x = torch.randn(4, 6, 8)
    pe.eval()
    torch.testing.assert_close(pe(x), x + sinusoidal_table(6, 8))
    pe.train()
    out = pe(x)
    dropped = out == 0
    assert dropped.any() and not dropped.all()
    torch.testing.assert_close(out[~dropped], 2 * (x + sinusoidal_table(6, 8))[~dropped])


def test_positional_encoding_has_no_parameters():
    pe = PositionalEncoding(8, max_len=10)
    assert list(pe.parameters()) == []
    assert "pe" not in pe.state_dict()  # recomputed, not saved


# --------------------------------------------------------------------------- learned


def test_learned_encoding_adds_table_rows():
    pe = LearnedPositionalEncoding(8, max_len=12)
    x = torch.randn(2, 5, 8)
    table = pe.embedding.weight
    assert table.shape == (12, 8)
    torch.testing.assert_close(pe.get_positional_encoding(5), table[:5])
    torch.testing.assert_close(pe(x), x + table[:5])
    torch.testing.assert_close(pe(x, offset=7), x + table[7:12])


def test_learned_encoding_gradient_reaches_the_used_rows_only():
    pe = LearnedPositionalEncoding(8, max_len=12)
    x = torch.randn(2, 3, 8, requires_grad=True)
    weights = torch.randn(2, 3, 8)
    (pe(x, offset=4) * weights).sum().backward()
    grad = pe.embedding.weight.grad
    torch.testing.assert_close(grad[4:7], weights.sum(0))  # summed over the batch
    assert torch.all(grad[:4] == 0) and torch.all(grad[7:] == 0)
    torch.testing.assert_close(x.grad, weights)


def test_learned_encoding_can_learn_a_target():
    pe = LearnedPositionalEncoding(4, max_len=6)
    target = torch.randn(6, 4)
    optimizer = torch.optim.SGD(pe.parameters(), lr=0.25)
    x = torch.zeros(1, 6, 4)
    for _ in range(30):
        optimizer.zero_grad()
        loss = ((pe(x) - target) ** 2).sum()
        loss.backward()
        optimizer.step()
    assert loss.item() < 1e-4


# --------------------------------------------------------------------------- shared errors


@pytest.mark.parametrize("cls", [PositionalEncoding, LearnedPositionalEncoding])
def test_sequence_longer_than_max_len_raises(cls):
    pe = cls(8, max_len=10)
    with pytest.raises(ValueError, match=re.escape("max_len=10")):
        pe.get_positional_encoding(11)
    with pytest.raises(ValueError, match=r"max_len=10.*length 11 at offset 0"):
        pe(torch.randn(1, 11, 8))
    with pytest.raises(ValueError, match=r"max_len=10.*length 3 at offset 8"):
        pe(torch.randn(1, 3, 8), offset=8)
    with pytest.raises(ValueError, match=re.escape(cls.__name__)):
        pe.get_positional_encoding(1, offset=-1)
    assert pe(torch.randn(1, 10, 8)).shape == (1, 10, 8)


@pytest.mark.parametrize("cls", [PositionalEncoding, LearnedPositionalEncoding])
@pytest.mark.parametrize("shape", [(5, 8), (2, 5, 7), (1, 2, 5, 8)])
def test_wrong_input_shape_raises(cls, shape):
    with pytest.raises(ValueError, match=re.escape(f"x must have shape (B, T, 8); got {shape}")):
        cls(8, max_len=10)(torch.randn(shape))
