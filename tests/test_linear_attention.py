"""Linear attention: the chunked causal and the factorised forms equal the quadratic formula."""

import pytest
import torch

from attnkit.functional.linear import linear_attention, linear_attention_quadratic

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("length", "chunk"), [(16, 4), (13, 4), (5, 64), (9, 1)])
def test_equals_the_quadratic_formula_with_gradients(causal, length, chunk):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, length, 8, requires_grad=True) for _ in range(3))
    padding = torch.ones(2, length, dtype=torch.bool)
    padding[1, length - 2 :] = False
    ours = linear_attention(q, k, v, causal=causal, key_padding_mask=padding, chunk_size=chunk)
    expected = linear_attention_quadratic(q, k, v, causal=causal, key_padding_mask=padding)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(ours.sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.sum(), (q, k, v))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_quadratic_form_is_the_kernelised_attention_by_hand():
    q, k, v = torch.randn(1, 1, 3, 2), torch.randn(1, 1, 3, 2), torch.randn(1, 1, 3, 4)
    phi = lambda x: torch.nn.functional.elu(x) + 1  # noqa: E731
    similarity = phi(q[0, 0]) @ phi(k[0, 0]).T
    expected = (similarity @ v[0, 0]) / similarity.sum(-1, keepdim=True)
    torch.testing.assert_close(
        linear_attention_quadratic(q, k, v)[0, 0], expected, atol=1e-5, rtol=0
    )


def test_gradcheck_causal_chunked():
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 2, 7, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(
        lambda a, b, c: linear_attention(a, b, c, causal=True, chunk_size=3), (q, k, v)
    )


def test_bad_arguments_are_named():
    q = torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match="chunk_size must be >= 1; got 0"):
        linear_attention(q, q, q, chunk_size=0)
    with pytest.raises(ValueError, match="over the same T"):
        linear_attention(q, q[:, :, :3], q[:, :, :3])


def test_module_cached_decoding_and_weights_agree_with_the_full_forward():
    from attnkit.nn import LinearAttention, RotaryEmbedding

    torch.manual_seed(3)
    module = LinearAttention(16, 4, rotary=RotaryEmbedding(4), chunk_size=3).eval()
    x = torch.randn(2, 9, 16)
    full, _ = module(x, is_causal=True)
    cache = module.new_cache(2, 9, like=x)
    first, _ = module(x[:, :4], is_causal=True, cache=cache)
    rest = [module(x[:, t : t + 1], is_causal=True, cache=cache)[0] for t in range(4, 9)]
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), full, atol=1e-5, rtol=1e-5)
    again, weights = module(x, is_causal=True, need_weights=True)
    torch.testing.assert_close(again, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 9), atol=1e-4, rtol=0)
    assert weights.triu(1).abs().max() == 0


def test_module_rejects_what_the_kernel_cannot_do():
    from attnkit.nn import ALiBi, LinearAttention

    module = LinearAttention(8, 2)
    x = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match=r"key-padding mask of shape \(B, 1, 1, T_total\)"):
        module(x, mask=torch.ones(1, 1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="no scores to bias"):
        LinearAttention(8, 2, score_bias=ALiBi(2))


@pytest.mark.parametrize(
    "name",
    ["LinearAttention", "PerformerAttention", "LSHAttention", "SlidingWindowAttention",
     "BlockSparseAttention"],
)  # fmt: skip
def test_self_attention_modules_refuse_a_separate_key_or_value(name):
    import attnkit.nn

    module = getattr(attnkit.nn, name)(8, 2)
    x = torch.randn(1, 4, 8)
    module(x, x, x)  # the query itself is fine
    for args in ((x, torch.randn(1, 4, 8)), (x, None, torch.randn(1, 4, 8))):
        with pytest.raises(ValueError, match=r"is self-attention .* got a separate (key|value)"):
            module(*args)


def test_selectable_in_every_model():
    from attnkit.models import GPT, T5, BertConfig, BertModel, GPTConfig, T5Config, Transformer

    options = {"attention": "linear", "attention_options": {"chunk_size": 4}}
    gpt = GPT(GPTConfig(vocab_size=30, max_len=16, d_model=16, num_heads=2, num_layers=1,
                        positional="rotary", **options)).eval()  # fmt: skip
    ids = torch.randint(0, 30, (2, 10))
    full = gpt(ids).logits
    cache = gpt.new_cache(2, 10)
    steps = [gpt(ids[:, :6], cache=cache).logits] + [
        gpt(ids[:, t : t + 1], cache=cache).logits for t in range(6, 10)
    ]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    bert = BertModel(BertConfig(vocab_size=30, d_model=16, num_heads=2, num_layers=1, d_ff=32,
                                max_len=16, **options))  # fmt: skip
    assert bert(ids).last_hidden_state.shape == (2, 10, 16)
    t5 = T5(T5Config(vocab_size=30, d_model=16, d_kv=8, num_heads=2, num_layers=1, d_ff=32,
                     positional="none", **options))  # fmt: skip
    assert t5(ids, labels=ids[:, :5]).logits.shape == (2, 5, 30)
    model = Transformer(vocab_size=30, d_model=16, num_heads=2, num_layers=1, d_ff=32, **options)
    assert model(ids, ids[:, :4]).shape == (2, 4, 30)
    with pytest.raises(ValueError, match="linear attention has no scores for 't5' biases"):
        T5(T5Config(vocab_size=30, d_model=16, d_kv=8, num_heads=2, num_layers=1, **options))
