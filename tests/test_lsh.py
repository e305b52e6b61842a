"""Reformer LSH attention: with one bucket and one chunk it is full shared-QK attention."""

import pytest
import torch
import torch.nn.functional as F

from attnkit.functional.lsh import lsh_attention, lsh_buckets, random_rotations

pytestmark = pytest.mark.usefixtures("single_thread")


def shared_qk_reference(qk, v, causal, padding):
    """Dense attention with unit-norm keys; a position attends to itself only if alone."""
    T = qk.size(2)
    scores = qk @ F.normalize(qk, dim=-1).transpose(-1, -2) / qk.size(-1) ** 0.5
    visible = padding[:, None, None, :].expand(-1, 1, T, -1)
    if causal:
        visible = visible & torch.ones(T, T, dtype=torch.bool).tril()
    others = visible & ~torch.eye(T, dtype=torch.bool)
    visible = torch.where(others.any(-1, keepdim=True), others, visible)
    weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    return weights @ v


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("rounds", [1, 3])
def test_one_bucket_one_chunk_is_full_attention_with_gradients(causal, rounds):
    torch.manual_seed(0)
    qk = torch.randn(2, 2, 10, 8, requires_grad=True)
    v = torch.randn(2, 2, 10, 6, requires_grad=True)
    padding = torch.ones(2, 10, dtype=torch.bool)
    padding[1, -3:] = False
    rotations = random_rotations(8, rounds, 1)
    ours = lsh_attention(qk, v, rotations, num_buckets=1, chunk_size=16, causal=causal,
                         key_padding_mask=padding)  # fmt: skip
    expected = shared_qk_reference(qk, v, causal, padding)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    grads = torch.autograd.grad(ours.square().sum(), (qk, v))
    expected_grads = torch.autograd.grad(expected.square().sum(), (qk, v))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_buckets_hide_other_buckets_and_stay_finite():
    torch.manual_seed(1)
    qk, v = torch.randn(1, 2, 33, 8, requires_grad=True), torch.randn(1, 2, 33, 8)
    rotations = random_rotations(8, 2, 4, generator=torch.Generator().manual_seed(0))
    out = lsh_attention(qk, v, rotations, num_buckets=4, chunk_size=8, causal=True)
    assert out.shape == (1, 2, 33, 8) and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(qk.grad).all()
    buckets = lsh_buckets(qk.detach(), rotations, 4)
    assert buckets.shape == (1, 2, 2, 33) and buckets.max() < 4
    # A vector and its negation hash to opposite buckets (argmax over [xR, -xR]).
    flipped = lsh_buckets(-qk.detach(), rotations, 4)
    assert ((flipped - buckets).abs() == 2).all()


def test_gradcheck_and_bad_buckets():
    qk = torch.randn(1, 1, 6, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 1, 6, 3, dtype=torch.float64, requires_grad=True)
    rotations = random_rotations(4, 2, 2, generator=torch.Generator().manual_seed(2)).double()
    assert torch.autograd.gradcheck(
        lambda a, b: lsh_attention(a, b, rotations, num_buckets=2, chunk_size=3), (qk, v)
    )
    with pytest.raises(ValueError, match="num_buckets must be 1 or even; got 3"):
        random_rotations(4, 1, 3)


def test_module_cache_matches_full_coverage_and_models_select_it():
    from attnkit.models import GPT, GPTConfig
    from attnkit.nn import LSHAttention

    torch.manual_seed(3)
    module = LSHAttention(16, 2, num_hashes=2, num_buckets=1, chunk_size=16).eval()
    assert not any("k_proj" in name for name, _ in module.named_parameters())
    x = torch.randn(2, 9, 16)
    full, _ = module(x, is_causal=True)
    cache = module.new_cache(2, 9, like=x)
    steps = [module(x[:, :4], is_causal=True, cache=cache)[0]] + [
        module(x[:, t : t + 1], is_causal=True, cache=cache)[0] for t in range(4, 9)
    ]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
    options = {"num_buckets": 2, "chunk_size": 4}
    gpt = GPT(GPTConfig(vocab_size=20, max_len=32, d_model=16, num_heads=2, num_layers=1,
                        attention="lsh", attention_options=options))  # fmt: skip
    assert isinstance(gpt.layers[0].self_attn, LSHAttention)
    ids = torch.randint(0, 20, (2, 12))
    loss = gpt(ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="lsh attention takes no 'rotary' positions"):
        GPT(GPTConfig(vocab_size=20, d_model=16, num_heads=2, num_layers=1, attention="lsh",
                      positional="rotary"))  # fmt: skip


def test_dropout_drops_weights_in_training_only(monkeypatch):
    import attnkit.nn.attention.lsh as lsh_module
    from attnkit.nn import LSHAttention

    received = []
    real = lsh_module.lsh_attention

    def recording(*args, **kwargs):
        received.append(kwargs["dropout_p"])
        return real(*args, **kwargs)

    monkeypatch.setattr(lsh_module, "lsh_attention", recording)
    module = LSHAttention(8, 2, dropout=0.5, num_buckets=2, chunk_size=4)
    x = torch.randn(2, 8, 8)
    module.train()(x)
    module.eval()(x)
    assert received == [0.5, 0.0]
    qk = torch.randn(1, 2, 8, 4)
    rotations = random_rotations(4, 1, 2, generator=torch.Generator().manual_seed(0))
    kwargs = {"num_buckets": 2, "chunk_size": 4}
    plain = lsh_attention(qk, qk, rotations, **kwargs)
    torch.manual_seed(0)
    dropped = lsh_attention(qk, qk, rotations, dropout_p=0.5, **kwargs)
    assert not torch.allclose(plain, dropped) and torch.isfinite(dropped).all()
