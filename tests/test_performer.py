"""FAVOR+: orthogonal features, error against softmax attention falling with more features."""

import itertools

import pytest
import torch

from attnkit.functional import create_causal_mask, scaled_dot_product_attention
from attnkit.functional.performer import orthogonal_random_features, performer_attention

pytestmark = pytest.mark.usefixtures("single_thread")


def test_features_are_orthogonal_within_a_block():
    w = orthogonal_random_features(16, 8, generator=torch.Generator().manual_seed(0)).double()
    block = w[:8] / w[:8].norm(dim=1, keepdim=True)
    torch.testing.assert_close(
        block @ block.T, torch.eye(8, dtype=torch.float64), atol=1e-6, rtol=0
    )
    assert w.shape == (16, 8)


def _error(num_features: int, causal: bool, seeds: range) -> float:
    errors = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        q, k, v = (torch.randn(1, 2, 32, 16, generator=generator) * 0.5 for _ in range(3))
        mask = create_causal_mask(32, 32) if causal else None
        exact = scaled_dot_product_attention(q, k, v, mask, backend="math")[0]
        projection = orthogonal_random_features(num_features, 16, generator=generator)
        approx = performer_attention(q, k, v, projection, causal=causal, chunk_size=8)
        errors.append((approx - exact).abs().mean().item())
    return sum(errors) / len(errors)


@pytest.mark.parametrize("causal", [False, True])
def test_error_falls_as_the_number_of_features_grows(causal):
    errors = [_error(m, causal, range(6)) for m in (8, 32, 128, 512)]
    assert errors[-1] < 0.5 * errors[0], errors
    assert all(later < earlier * 1.1 for earlier, later in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.05, errors


def test_random_directions_are_unbiased():
    """QR returns a Q with a sign convention (diag(R) > 0): unless undone, the first
    direction of every block leans one way and the estimate of exp(q.k) stays biased."""
    generator = torch.Generator().manual_seed(0)
    blocks = torch.stack(
        [orthogonal_random_features(8, 8, generator=generator) for _ in range(400)]
    )
    first_negative = (blocks[:, 0, 0] < 0).float().mean().item()
    assert 0.4 < first_negative < 0.6, first_negative
    assert blocks.mean(dim=0).abs().max() < 0.25


def test_gradients_flow_and_padding_drops_keys():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 6, 4, requires_grad=True) for _ in range(3))
    projection = orthogonal_random_features(64, 4)
    padding = torch.tensor([[True, True, True, True, False, False]])
    out = performer_attention(q, k, v, projection, key_padding_mask=padding)
    out.sum().backward()
    assert k.grad[0, :, 4:].abs().max() == 0 and v.grad[0, :, 4:].abs().max() == 0
    assert q.grad.abs().sum() > 0


def test_module_cache_redraw_and_config_selection():
    from attnkit.models import GPT, GPTConfig
    from attnkit.nn import PerformerAttention

    torch.manual_seed(4)
    module = PerformerAttention(16, 2, num_features=32).eval()
    x = torch.randn(1, 7, 16)
    full, weights = module(x, is_causal=True, need_weights=True)
    assert weights.shape == (1, 2, 7, 7) and weights.triu(1).abs().max() == 0
    cache = module.new_cache(1, 7, like=x)
    steps = [module(x[:, :3], is_causal=True, cache=cache)[0]] + [
        module(x[:, t : t + 1], is_causal=True, cache=cache)[0] for t in range(3, 7)
    ]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(module(x, is_causal=True)[0], full, atol=1e-5, rtol=1e-4)
    before = module.projection.clone()
    module.redraw_features(torch.Generator().manual_seed(9))
    assert not torch.equal(before, module.projection)
    assert "projection" in module.state_dict()
    gpt = GPT(GPTConfig(vocab_size=20, max_len=16, d_model=16, num_heads=2, num_layers=1,
                        positional="rotary", attention="performer",
                        attention_options={"num_features": 16}))  # fmt: skip
    assert isinstance(gpt.layers[0].self_attn, PerformerAttention)
    assert gpt(torch.randint(0, 20, (2, 9))).logits.shape == (2, 9, 20)
