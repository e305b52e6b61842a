"""The FlexAttention backend and modifications give the math backend's numbers."""

import pytest
import torch

from attnkit.functional import (
    create_causal_mask,
    create_sliding_window_mask,
    scaled_dot_product_attention,
)
from attnkit.functional.flex import (
    alibi_score_mod,
    document_mask_mod,
    flex_available,
    flex_scaled_dot_product_attention,
    sliding_window_mask_mod,
)
from attnkit.nn import ALiBi, T5RelativePositionBias

pytestmark = pytest.mark.usefixtures("single_thread")


def test_flex_is_available_on_every_supported_torch():
    assert flex_available()  # attnkit requires torch >= 2.5


def math(q, k, v, mask=None, bias=None, causal=False):
    return scaled_dot_product_attention(
        q, k, v, mask, attn_bias=bias, is_causal=causal, backend="math"
    )[0]


def flex(q, k, v, mask=None, bias=None, causal=False):
    return scaled_dot_product_attention(
        q, k, v, mask, attn_bias=bias, is_causal=causal, backend="flex"
    )[0]


@pytest.mark.parametrize("causal", [False, True, "bottom_right"])
def test_backend_with_masks_bias_and_gqa(causal):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 9, 8), torch.randn(2, 2, 9, 8)
    padding = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    padding[1, ..., -4:] = False
    bias = T5RelativePositionBias(4, 8, 16)(6, 9)
    torch.testing.assert_close(
        flex(q, k, v, padding, bias, causal), math(q, k, v, padding, bias, causal), atol=1e-5,
        rtol=0,
    )  # fmt: skip


def test_all_masked_rows_are_zero_not_nan():
    q = torch.randn(1, 1, 3, 4)
    mask = torch.tensor([[True, True, True], [False, False, False], [True, False, True]])
    out = flex(q, q, q, mask[None, None])
    assert torch.isfinite(out).all() and (out[0, 0, 1] == 0).all()
    torch.testing.assert_close(out, math(q, q, q, mask[None, None]), atol=1e-6, rtol=0)


def test_structured_modifications_equal_their_dense_masks_and_biases():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 4, 12, 8) for _ in range(3))
    window = flex_scaled_dot_product_attention(q, k, v, mask_mod=sliding_window_mask_mod(3))
    torch.testing.assert_close(
        window, math(q, k, v, create_sliding_window_mask(12, window=3)), atol=1e-5, rtol=0
    )
    slopes = ALiBi(4).slopes
    alibi = flex_scaled_dot_product_attention(
        q, k, v, mask_mod=lambda b, h, i, j: i >= j, score_mod=alibi_score_mod(slopes)
    )
    expected = math(q, k, v, create_causal_mask(12, 12), ALiBi(4)(12, 12))
    torch.testing.assert_close(alibi, expected, atol=1e-5, rtol=0)
    documents = torch.tensor([[0] * 5 + [1] * 7])
    packed = flex_scaled_dot_product_attention(q, k, v, mask_mod=document_mask_mod(documents))
    same = documents[0][:, None] == documents[0][None, :]
    torch.testing.assert_close(packed, math(q, k, v, same[None, None]), atol=1e-5, rtol=0)


def test_no_dropout_in_flex():
    q = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match="flex backend has no attention dropout"):
        scaled_dot_product_attention(q, q, q, dropout_p=0.1, backend="flex")
