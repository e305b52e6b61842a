"""Feed-forward, norms, Transformer blocks and stacks, and the scaled dot-product module."""

import math
import re
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnkit.functional import from_torch_mha_masks
from attnkit.nn import (
    FeedForward,
    MultiHeadAttention,
    PositionwiseFeedForward,
    RMSNorm,
    ScaledDotProductAttention,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    make_norm,
)

F64 = dict(atol=1e-10, rtol=1e-10)
F32 = dict(atol=1e-5, rtol=1e-5)


def rand(*shape):
    return torch.randn(*shape, dtype=torch.float64)


# --------------------------------------------------------------------------- feed-forward

MANUAL_ACTIVATIONS = {
    "relu": (lambda h: torch.clamp_min(h, 0), False),
    "gelu": (lambda h: 0.5 * h * (1 + torch.erf(h / math.sqrt(2))), False),
    "gelu_tanh": (
        lambda h: 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3))),
        False,
    ),
    "silu": (lambda h: h * torch.sigmoid(h), False),
    "swiglu": (lambda h: h * torch.sigmoid(h), True),
    "geglu": (lambda h: 0.5 * h * (1 + torch.erf(h / math.sqrt(2))), True),
}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", sorted(MANUAL_ACTIVATIONS))
def test_feed_forward_equals_a_manual_computation(activation, bias):
    ff = FeedForward(6, 10, activation=activation, bias=bias).double()
    act, gated = MANUAL_ACTIVATIONS[activation]
    assert (ff.gate is not None) == gated
    assert (ff.linear1.bias is not None) == bias
    x = rand(2, 3, 6)

    def linear(layer, t):
        out = t @ layer.weight.T
        return out if layer.bias is None else out + layer.bias

    hidden = (
        act(linear(ff.gate, x)) * linear(ff.linear1, x) if gated else act(linear(ff.linear1, x))
    )
    torch.testing.assert_close(ff(x), linear(ff.linear2, hidden), **F64)


def test_positionwise_feed_forward_is_the_same_module():
    assert PositionwiseFeedForward is FeedForward
    ff = PositionwiseFeedForward(4, 8, activation="swiglu")
    assert ff(torch.randn(3, 4)).shape == (3, 4)  # any leading shape


def test_feed_forward_dropout_acts_on_hidden_units_in_training_only():
    ff = FeedForward(4, 64, dropout=0.5)
    x = torch.randn(2, 4)
    ff.eval()
    expected = ff.linear2(F.relu(ff.linear1(x)))
    torch.testing.assert_close(ff(x), expected)
    ff.train()
    assert not torch.allclose(ff(x), expected)


def test_invalid_activation_raises():
    with pytest.raises(
        ValueError, match=r"activation must be one of \[.*'swiglu'.*\] or a callable; got 'tanh'"
    ):
        FeedForward(4, 8, activation="tanh")


# --------------------------------------------------------------------------- norms


def test_rms_norm_equals_the_formula_in_float64():
    norm = RMSNorm(8, eps=1e-6).double()
    with torch.no_grad():
        norm.weight.normal_()
    x = rand(3, 5, 8) * 10
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    out = norm(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, **F64)


def test_rms_norm_eps_matters_for_small_inputs():
    norm = RMSNorm(4, eps=1.0).double()
    x = rand(2, 4) * 1e-3
    torch.testing.assert_close(norm(x), x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1.0), **F64)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rms_norm_in_low_precision(dtype):
    norm = RMSNorm(64)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 64) * 1000  # x**2 overflows float16: the norm must not
    reference = norm(x)
    low = norm.to(dtype)(x.to(dtype))
    assert low.dtype == dtype
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), reference, atol=2e-2, rtol=2e-2)


def test_make_norm():
    layer_norm = make_norm("layernorm", 8, 1e-3)
    assert isinstance(layer_norm, nn.LayerNorm) and layer_norm.eps == 1e-3
    assert layer_norm.bias is not None
    assert make_norm("layernorm", 8, bias=False).bias is None
    rms = make_norm("rmsnorm", 8, 1e-4)
    assert isinstance(rms, RMSNorm) and rms.eps == 1e-4 and rms.weight.shape == (8,)
    with pytest.raises(
        ValueError, match=re.escape("norm must be 'layernorm' or 'rmsnorm'; got 'batchnorm'")
    ):
        make_norm("batchnorm", 8)


# --------------------------------------------------------------------------- vs torch blocks


def randomize(module):
    """Random values for every parameter (torch starts biases at 0 and norms at 1)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3)


def copy_attention(theirs: nn.MultiheadAttention, ours: MultiHeadAttention) -> None:
    with torch.no_grad():
        for proj, w, b in zip(
            (ours.q_proj, ours.k_proj, ours.v_proj),
            theirs.in_proj_weight.chunk(3),
            theirs.in_proj_bias.chunk(3),
            strict=True,
        ):
            proj.weight.copy_(w)
            proj.bias.copy_(b)
    ours.out_proj.load_state_dict(theirs.out_proj.state_dict())


def copy_encoder_layer(theirs: nn.TransformerEncoderLayer, ours: TransformerEncoderLayer) -> None:
    copy_attention(theirs.self_attn, ours.self_attn)
    ours.feed_forward.linear1.load_state_dict(theirs.linear1.state_dict())
    ours.feed_forward.linear2.load_state_dict(theirs.linear2.state_dict())
    ours.attn_block.norm.load_state_dict(theirs.norm1.state_dict())
    ours.ff_block.norm.load_state_dict(theirs.norm2.state_dict())


def copy_decoder_layer(theirs: nn.TransformerDecoderLayer, ours: TransformerDecoderLayer) -> None:
    copy_attention(theirs.self_attn, ours.self_attn)
    copy_attention(theirs.multihead_attn, ours.cross_attn)
    ours.feed_forward.linear1.load_state_dict(theirs.linear1.state_dict())
    ours.feed_forward.linear2.load_state_dict(theirs.linear2.state_dict())
    ours.self_attn_block.norm.load_state_dict(theirs.norm1.state_dict())
    ours.cross_attn_block.norm.load_state_dict(theirs.norm2.state_dict())
    ours.ff_block.norm.load_state_dict(theirs.norm3.state_dict())


def encoder_pair(norm_first, activation="relu"):
    theirs = nn.TransformerEncoderLayer(
        16, 4, 24, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).double()
    randomize(theirs)
    ours = TransformerEncoderLayer(16, 4, 24, 0.0, activation, norm_first).double()
    copy_encoder_layer(theirs, ours)
    return theirs, ours


def decoder_pair(norm_first, activation="relu"):
    theirs = nn.TransformerDecoderLayer(
        16, 4, 24, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).double()
    randomize(theirs)
    ours = TransformerDecoderLayer(16, 4, 24, 0.0, activation, norm_first).double()
    copy_decoder_layer(theirs, ours)
    return theirs, ours


PADDED = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])  # torch: True = padding
CAUSAL_BLOCKED = torch.ones(6, 6, dtype=torch.bool).triu(1)  # torch: True = blocked


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("masking", ["none", "padding", "causal"])
def test_encoder_layer_matches_torch(norm_first, activation, masking):
    theirs, ours = encoder_pair(norm_first, activation)
    x = rand(2, 6, 16)
    if masking == "padding":
        expected = theirs(x, src_key_padding_mask=PADDED)
        out = ours(x, from_torch_mha_masks(key_padding_mask=PADDED))
    elif masking == "causal":
        expected = theirs(x, src_mask=CAUSAL_BLOCKED, is_causal=True)
        out = ours(x, is_causal=True)
    else:
        expected, out = theirs(x), ours(x)
    torch.testing.assert_close(out, expected, **F64)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_torch_fast_path(norm_first):
    """torch's fused encoder kernel (eval, no autograd) agrees too."""
    theirs, ours = encoder_pair(norm_first)
    theirs.eval()
    x = rand(2, 6, 16)
    native = torch._transformer_encoder_layer_fwd
    with torch.no_grad(), mock.patch("torch._transformer_encoder_layer_fwd", wraps=native) as fast:
        expected = theirs(x)
        assert fast.call_count == 1, "torch's fast path was not exercised"
        torch.testing.assert_close(ours(x), expected, **F64)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("masking", ["none", "padding"])
def test_decoder_layer_matches_torch(norm_first, masking):
    theirs, ours = decoder_pair(norm_first, "gelu")
    tgt, memory = rand(2, 6, 16), rand(2, 5, 16)
    memory_padded = torch.tensor([[False] * 5, [False, False, True, True, True]])
    if masking == "padding":
        expected = theirs(
            tgt,
            memory,
            tgt_mask=CAUSAL_BLOCKED,
            tgt_is_causal=True,
            tgt_key_padding_mask=PADDED,
            memory_key_padding_mask=memory_padded,
        )
        out = ours(
            tgt,
            memory,
            from_torch_mha_masks(key_padding_mask=PADDED),
            from_torch_mha_masks(key_padding_mask=memory_padded),
            is_causal=True,
        )
    else:
        expected = theirs(tgt, memory, tgt_mask=CAUSAL_BLOCKED, tgt_is_causal=True)
        out = ours(tgt, memory, is_causal=True)
    torch.testing.assert_close(out, expected, **F64)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_stack_matches_torch(norm_first):
    theirs_layer, _ = encoder_pair(norm_first)
    theirs = nn.TransformerEncoder(
        theirs_layer, 2, norm=nn.LayerNorm(16), enable_nested_tensor=False
    ).double()
    randomize(theirs)
    ours = TransformerEncoder(
        TransformerEncoderLayer(16, 4, 24, 0.0, norm_first=norm_first), 2, norm=nn.LayerNorm(16)
    ).double()
    for their_layer, our_layer in zip(theirs.layers, ours.layers, strict=True):
        copy_encoder_layer(their_layer, our_layer)
    ours.norm.load_state_dict(theirs.norm.state_dict())
    x = rand(2, 6, 16)
    mask = from_torch_mha_masks(key_padding_mask=PADDED)
    torch.testing.assert_close(ours(x, mask), theirs(x, src_key_padding_mask=PADDED), **F64)


# --------------------------------------------------------------------------- weights, injection


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_returns_attention_weights(norm_first):
    layer = TransformerEncoderLayer(16, 4, 24, 0.0, norm_first=norm_first).double()
    x = rand(2, 6, 16)
    out, weights = layer(x, is_causal=True, need_weights=True)
    torch.testing.assert_close(out, layer(x, is_causal=True), **F64)
    h = layer.attn_block.norm(x) if norm_first else x
    _, expected = layer.self_attn(h, is_causal=True, need_weights=True)
    assert weights.shape == (2, 4, 6, 6)
    torch.testing.assert_close(weights, expected, **F64)


def test_decoder_layer_returns_self_and_cross_weights():
    layer = TransformerDecoderLayer(16, 4, 24, 0.0).double()
    tgt, memory = rand(2, 6, 16), rand(2, 5, 16)
    memory_mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])[:, None, None, :]
    out, (self_w, cross_w) = layer(
        tgt, memory, None, memory_mask, is_causal=True, need_weights=True
    )
    torch.testing.assert_close(out, layer(tgt, memory, None, memory_mask, is_causal=True), **F64)
    assert self_w.shape == (2, 4, 6, 6) and cross_w.shape == (2, 4, 6, 5)
    assert torch.all(self_w.triu(1) == 0)
    assert torch.all(cross_w[1, ..., 2:] == 0)
    torch.testing.assert_close(cross_w.sum(-1), torch.ones(2, 4, 6, dtype=torch.float64), **F64)


class ZeroAttention(nn.Module):
    """Attention test double: outputs zeros, records its inputs, returns a marker as weights."""

    def __init__(self):
        super().__init__()
        self.calls = []
        self.marker = torch.tensor(42.0)

    def forward(self, query, key, value, mask=None, **kwargs):
        self.calls.append(dict(query=query, key=key, mask=mask, **kwargs))
        return torch.zeros_like(query), self.marker


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_uses_injected_modules(norm_first):
    attention, feed_forward = ZeroAttention(), nn.Linear(8, 8)
    layer = TransformerEncoderLayer(
        8,
        2,
        dropout=0.0,
        norm_first=norm_first,
        self_attention=attention,
        feed_forward=feed_forward,
    )
    assert layer.self_attn is attention and layer.feed_forward is feed_forward
    x = torch.randn(2, 3, 8)
    mask = torch.ones(2, 1, 1, 3, dtype=torch.bool)
    out, weights = layer(x, mask, is_causal=True, need_weights=True)
    assert weights is attention.marker
    (call,) = attention.calls
    assert call["mask"] is mask and call["is_causal"] and call["need_weights"]
    norm1, norm2 = layer.attn_block.norm, layer.ff_block.norm
    if norm_first:
        torch.testing.assert_close(call["query"], norm1(x))
        expected = x + feed_forward(norm2(x))
    else:
        torch.testing.assert_close(call["query"], x)
        h = norm1(x)
        expected = norm2(h + feed_forward(h))
    torch.testing.assert_close(out, expected)


def test_decoder_layer_uses_injected_modules():
    self_attention, cross_attention = ZeroAttention(), ZeroAttention()
    feed_forward = nn.Linear(8, 8)
    layer = TransformerDecoderLayer(
        8,
        2,
        dropout=0.0,
        norm_first=True,
        self_attention=self_attention,
        cross_attention=cross_attention,
        feed_forward=feed_forward,
    )
    x, memory = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    out = layer(x, memory, is_causal=True)
    assert self_attention.calls[0]["is_causal"]
    assert cross_attention.calls[0]["key"] is memory
    torch.testing.assert_close(out, x + feed_forward(layer.ff_block.norm(x)))


def test_blocks_build_rmsnorm_and_swiglu_on_request():
    layer = TransformerEncoderLayer(8, 2, 16, activation="swiglu", norm="rmsnorm", bias=False)
    assert isinstance(layer.attn_block.norm, RMSNorm) and isinstance(layer.ff_block.norm, RMSNorm)
    assert layer.feed_forward.gate is not None
    assert all("bias" not in name for name, _ in layer.named_parameters())
    assert layer(torch.randn(2, 3, 8)).shape == (2, 3, 8)


# --------------------------------------------------------------------------- stacks


def test_encoder_clones_independent_deep_copies():
    layer = TransformerEncoderLayer(8, 2, 16, dropout=0.0)
    encoder = TransformerEncoder(layer, 3)
    assert len(encoder.layers) == 3
    assert all(copy is not layer for copy in encoder.layers)
    first, second = encoder.layers[0], encoder.layers[1]
    torch.testing.assert_close(first.self_attn.q_proj.weight, layer.self_attn.q_proj.weight)
    with torch.no_grad():
        first.self_attn.q_proj.weight.add_(1.0)
    torch.testing.assert_close(second.self_attn.q_proj.weight, layer.self_attn.q_proj.weight)
    pointers = {p.data_ptr() for p in encoder.parameters()}
    assert len(pointers) == 3 * len(list(layer.parameters()))


@pytest.mark.parametrize("container", [list, nn.ModuleList])
def test_encoder_uses_given_layers(container):
    layers = [TransformerEncoderLayer(8, 2, 16, dropout=0.0) for _ in range(2)]
    norm = nn.LayerNorm(8)
    encoder = TransformerEncoder(container(layers), norm=norm)
    assert len(encoder.layers) == 2
    assert all(a is b for a, b in zip(encoder.layers, layers, strict=True))
    x = torch.randn(2, 4, 8)
    torch.testing.assert_close(encoder(x), norm(layers[1](layers[0](x))))
    out, weights = encoder(x, need_weights=True)
    assert len(weights) == 2 and weights[0].shape == (2, 2, 4, 4)
    torch.testing.assert_close(out, encoder(x))


def test_stacks_reject_bad_combinations():
    layer = TransformerEncoderLayer(8, 2, 16)
    with pytest.raises(ValueError, match="num_layers is required"):
        TransformerEncoder(layer)
    with pytest.raises(ValueError, match="num_layers must be None when a list of layers is given"):
        TransformerEncoder([layer, layer], 2)
    with pytest.raises(ValueError, match="num_layers is required"):
        TransformerDecoder(TransformerDecoderLayer(8, 2, 16))


def make_decoder(norm_first=False, num_kv_heads=None):
    def layer():
        return TransformerDecoderLayer(
            16,
            4,
            32,
            dropout=0.0,
            norm_first=norm_first,
            self_attention=MultiHeadAttention(16, 4, num_kv_heads=num_kv_heads),
        )

    return TransformerDecoder([layer(), layer()], norm=nn.LayerNorm(16)).eval()


@pytest.mark.parametrize(("norm_first", "num_kv_heads"), [(False, None), (True, 2)])
def test_decoder_step_decoding_equals_full_causal_decoding(norm_first, num_kv_heads):
    decoder = make_decoder(norm_first, num_kv_heads)
    tgt, memory = torch.randn(3, 6, 16), torch.randn(3, 5, 16)
    memory_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] * 5])[:, None, None]
    full = decoder(tgt, memory, memory_mask=memory_mask, is_causal=True)

    cache = decoder.new_cache(3, 6, like=tgt)
    assert len(cache.layers) == 2 and cache.length == 0
    assert cache.layers[0].self_attn.key.shape == (3, num_kv_heads or 4, 6, 4)
    outs = [decoder(tgt[:, :2], memory, memory_mask=memory_mask, is_causal=True, cache=cache)]
    for t in range(2, 6):
        step = tgt[:, t : t + 1]
        outs.append(decoder(step, memory, memory_mask=memory_mask, is_causal=True, cache=cache))
    assert cache.length == 6
    assert all(layer.cross_attn.ready for layer in cache.layers)
    torch.testing.assert_close(torch.cat(outs, 1), full, **F32)


def test_decoder_weights_and_cache_reorder():
    decoder = make_decoder()
    tgt, memory = torch.randn(3, 4, 16), torch.randn(3, 5, 16)
    full, self_w, cross_w = decoder(tgt, memory, is_causal=True, need_weights=True)
    assert len(self_w) == len(cross_w) == 2
    assert self_w[0].shape == (3, 4, 4, 4) and cross_w[1].shape == (3, 4, 4, 5)
    torch.testing.assert_close(full, decoder(tgt, memory, is_causal=True))

    rows = torch.tensor([1, 1, 0])
    cache = decoder.new_cache(3, 4, like=tgt)
    decoder(tgt[:, :2], memory, is_causal=True, cache=cache)
    cache.reorder(rows)
    out = decoder(tgt[rows, 2:], memory[rows], is_causal=True, cache=cache)
    torch.testing.assert_close(out, decoder(tgt[rows], memory[rows], is_causal=True)[:, 2:], **F32)


# --------------------------------------------------------------------------- SDPA module


def manual_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(-1)
    return weights @ v, weights


def test_sdpa_module_single_head():
    q, k, v = rand(2, 3, 4), rand(2, 5, 4), rand(2, 5, 6)
    mask = torch.rand(2, 3, 5) > 0.4
    mask[..., 0] = True
    out, weights = ScaledDotProductAttention()(q, k, v, mask)
    expected, expected_w = manual_attention(q, k, v, mask)
    assert out.shape == (2, 3, 6) and weights.shape == (2, 3, 5)
    torch.testing.assert_close(out, expected, **F64)
    torch.testing.assert_close(weights, expected_w, **F64)


def test_sdpa_module_multi_head_and_causal():
    q, k, v = rand(2, 3, 4, 8), rand(2, 3, 4, 8), rand(2, 3, 4, 8)
    module = ScaledDotProductAttention()
    out, weights = module(q, k, v)
    expected, expected_w = manual_attention(q, k, v)
    assert weights.shape == (2, 3, 4, 4)
    torch.testing.assert_close(out, expected, **F64)
    torch.testing.assert_close(weights, expected_w, **F64)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    out, weights = module(q, k, v, is_causal=True)
    expected, expected_w = manual_attention(q, k, v, causal)
    torch.testing.assert_close(out, expected, **F64)
    torch.testing.assert_close(weights, expected_w, **F64)


def test_sdpa_module_without_weights_may_use_any_backend():
    q, k, v = rand(2, 3, 4), rand(2, 5, 4), rand(2, 5, 4)
    out, weights = ScaledDotProductAttention(backend="fused", need_weights=False)(q, k, v)
    assert weights is None
    torch.testing.assert_close(out, manual_attention(q, k, v)[0], **F64)


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (((5, 4), (5, 4), (5, 4)), "query must have shape (B, T, D) or (B, H, T, D); got (5, 4)"),
        (((2, 3, 4), (5, 4), (5, 4)), "key must have query's rank 3 (B, T, D); got (5, 4)"),
        (((2, 2, 3, 4), (2, 5, 4), (2, 2, 5, 4)), "key must have query's rank 4 (B, H, T, D)"),
        (((2, 3, 4), (2, 5, 4), (2, 2, 5, 4)), "value must have query's rank 3"),
    ],
)
def test_sdpa_module_rejects_bad_ranks(shapes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ScaledDotProductAttention()(*(torch.randn(s) for s in shapes))


def test_whole_modules_pickle_with_every_activation(tmp_path):
    import io

    from attnkit.nn import FeedForward
    from attnkit.nn.layers.feedforward import ACTIVATIONS

    for name in ACTIVATIONS:
        module = FeedForward(8, 16, activation=name).eval()
        buffer = io.BytesIO()
        torch.save(module, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        x = torch.randn(2, 8)
        torch.testing.assert_close(loaded(x), module(x))


def test_encoder_layer_takes_a_callable_activation_as_torch_does():
    import torch.nn.functional as F

    from attnkit.nn import TransformerEncoderLayer

    torch.manual_seed(0)
    by_name = TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu").eval()
    by_function = TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation=F.gelu).eval()
    by_function.load_state_dict(by_name.state_dict())
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(by_function(x), by_name(x))
    with pytest.raises(ValueError, match=r"activation must be one of .* or a callable"):
        TransformerEncoderLayer(8, 2, 16, activation="gelu_fast")


def test_num_kv_heads_must_be_positive():
    from attnkit.models import GPTConfig
    from attnkit.nn import MultiHeadAttention

    for bad in (0, -2):
        with pytest.raises(ValueError, match=rf"num_kv_heads must be >= 1 .*got {bad}"):
            MultiHeadAttention(16, 4, num_kv_heads=bad)
        with pytest.raises(ValueError, match=rf"num_kv_heads must be >= 1 .*got {bad}"):
            GPTConfig(vocab_size=10, d_model=16, num_heads=4, num_kv_heads=bad)
