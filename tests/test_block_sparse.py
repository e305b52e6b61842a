"""Block-sparse attention equals dense attention under the equivalent mask; the layouts."""

import pytest
import torch

from attnkit.functional import scaled_dot_product_attention
from attnkit.functional.block_sparse import (
    bigbird_layout,
    block_sparse_attention,
    fixed_layout,
    layout_to_mask,
    longformer_layout,
    sliding_layout,
    strided_layout,
)

pytestmark = pytest.mark.usefixtures("single_thread")

BLOCKS = 5
LAYOUTS = {
    "sliding": (sliding_layout(BLOCKS, 1), False),
    "strided": (strided_layout(BLOCKS, 2, 2), True),
    "fixed": (fixed_layout(BLOCKS, 2), True),
    "longformer": (longformer_layout(BLOCKS, 1, [0]), False),
    "bigbird": (
        bigbird_layout(BLOCKS, 1, [0], 1, seed=0),
        False,
    ),
}


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("length", [20, 18])
def test_equals_dense_with_the_equivalent_mask_including_gradients(name, length):
    layout, causal = LAYOUTS[name]
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, length, 8, requires_grad=True) for _ in range(3))
    padding = torch.ones(2, length, dtype=torch.bool)
    padding[1, -3:] = False
    ours = block_sparse_attention(
        q, k, v, layout, block_size=4, causal=causal, key_padding_mask=padding
    )
    mask = layout_to_mask(layout, 4, length, causal=causal) & padding[:, None, None, :]
    expected = scaled_dot_product_attention(q, k, v, mask, backend="math")[0]
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_gradcheck():
    q, k, v = (torch.randn(1, 1, 7, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    layout = strided_layout(4, 1, 2)
    assert torch.autograd.gradcheck(
        lambda a, b, c: block_sparse_attention(a, b, c, layout, block_size=2, causal=True),
        (q, k, v),
    )


def test_layouts_by_hand():
    assert strided_layout(5, 1, 2).int().tolist() == [
        [1, 0, 0, 0, 0],
        [0, 1, 0, 0, 0],
        [1, 0, 1, 0, 0],
        [0, 1, 0, 1, 0],
        [1, 0, 1, 0, 1],
    ]
    assert fixed_layout(4, 2).int().tolist() == [
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [0, 1, 1, 0],
        [0, 1, 1, 1],
    ]
    longformer = longformer_layout(4, 0, [2])
    assert longformer[2].all() and longformer[:, 2].all() and longformer[0, 1] == 0
    bigbird = bigbird_layout(8, 1, [0], 2, seed=1)
    extra = bigbird & ~longformer_layout(8, 1, [0])
    assert (extra.sum(1) <= 2).all() and extra.sum() > 0
    with pytest.raises(ValueError, match=r"global_blocks must lie in \[0, 4\)"):
        longformer_layout(4, 1, [4])


def test_bigbird_draws_spread_random_blocks_that_a_longer_causal_layout_keeps():
    band = longformer_layout(64, 1, [0])
    extra = bigbird_layout(64, 1, [0], 3, seed=5) & ~band
    assert (extra[1:].sum(1) == 3).all()  # row 0 is global: every other row has room
    assert extra.sum(0).gt(0).sum() > 40  # the picks spread over the columns
    assert not torch.equal(extra, bigbird_layout(64, 1, [0], 3, seed=6) & ~band)
    short, longer = (bigbird_layout(n, 1, [0], 2, seed=5, causal=True) for n in (10, 30))
    later_random = longer & ~longformer_layout(30, 1, [0])
    assert torch.equal(longer[:10, :10], short) and not later_random.triu(1).any()


def test_bad_layout_is_named():
    q = torch.randn(1, 1, 8, 4)
    with pytest.raises(ValueError, match=r"layout must be bool \(nb, nb\) = \(2, 2\)"):
        block_sparse_attention(q, q, q, torch.ones(3, 3, dtype=torch.bool), block_size=4)


@pytest.mark.parametrize(
    ("pattern", "causal"),
    [
        ("strided", True),
        ("fixed", True),
        ("longformer", False),
        ("bigbird", False),
        ("bigbird", True),
    ],
)
def test_module_blockwise_equals_its_dense_path_and_the_cache(pattern, causal):
    from attnkit.nn import BlockSparseAttention

    torch.manual_seed(3)
    module = BlockSparseAttention(
        16, 2, pattern=pattern, block_size=3, local_blocks=1, stride_blocks=2, group_blocks=2,
        window_blocks=1, global_blocks=[0], random_blocks=1,
    ).eval()  # fmt: skip
    x = torch.randn(2, 14, 16)
    mask = torch.ones(2, 1, 1, 14, dtype=torch.bool)
    mask[1, ..., -2:] = False
    blockwise, _ = module(x, mask=mask, is_causal=causal)
    dense, weights = module(x, mask=mask, is_causal=causal, need_weights=True)
    torch.testing.assert_close(blockwise, dense, atol=1e-5, rtol=0)
    assert weights.shape == (2, 2, 14, 14)
    if causal:
        cache = module.new_cache(2, 14, like=x)
        steps = [module(x[:, :5], is_causal=True, cache=cache)[0]] + [
            module(x[:, t : t + 1], is_causal=True, cache=cache)[0] for t in range(5, 14)
        ]
        full, _ = module(x, is_causal=True)
        torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


def test_selectable_by_config():
    from attnkit.models import BertConfig, BertModel
    from attnkit.nn import BlockSparseAttention

    config = BertConfig(vocab_size=30, d_model=16, num_heads=2, num_layers=1, d_ff=32, max_len=32,
                        attention="block_sparse",
                        attention_options={"pattern": "longformer", "block_size": 4,
                                           "global_blocks": [0]})  # fmt: skip
    model = BertModel(config).eval()
    assert isinstance(model.layers[0].self_attn, BlockSparseAttention)
    assert model(torch.randint(1, 30, (2, 18))).last_hidden_state.shape == (2, 18, 16)
    with pytest.raises(ValueError, match="pattern must be one of"):
        BlockSparseAttention(16, 2, pattern="dilated")
