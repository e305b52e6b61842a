"""The classic encoder-decoder Transformer: reference parity, options, masks, cache, errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnkit.functional import create_causal_mask, create_padding_mask
from attnkit.models import Transformer, TransformerConfig, TransformerLoss, build_transformer

D_MODEL, HEADS, D_FF, LAYERS = 16, 4, 32, 2


def _copy_attention(ours, theirs: nn.MultiheadAttention) -> None:
    q, k, v = theirs.in_proj_weight.chunk(3)
    qb, kb, vb = theirs.in_proj_bias.chunk(3)
    for proj, w, b in ((ours.q_proj, q, qb), (ours.k_proj, k, kb), (ours.v_proj, v, vb)):
        proj.weight.data.copy_(w)
        proj.bias.data.copy_(b)
    ours.out_proj.weight.data.copy_(theirs.out_proj.weight)
    ours.out_proj.bias.data.copy_(theirs.out_proj.bias)


def _copy_linear_norm(ours, theirs) -> None:
    ours.weight.data.copy_(theirs.weight)
    ours.bias.data.copy_(theirs.bias)


def _copy_from_torch(model: Transformer, ref: nn.Transformer) -> None:
    for layer, ref_layer in zip(model.encoder.layers, ref.encoder.layers, strict=True):
        _copy_attention(layer.self_attn, ref_layer.self_attn)
        _copy_linear_norm(layer.feed_forward.linear1, ref_layer.linear1)
        _copy_linear_norm(layer.feed_forward.linear2, ref_layer.linear2)
        _copy_linear_norm(layer.attn_block.norm, ref_layer.norm1)
        _copy_linear_norm(layer.ff_block.norm, ref_layer.norm2)
    for layer, ref_layer in zip(model.decoder.layers, ref.decoder.layers, strict=True):
        _copy_attention(layer.self_attn, ref_layer.self_attn)
        _copy_attention(layer.cross_attn, ref_layer.multihead_attn)
        _copy_linear_norm(layer.feed_forward.linear1, ref_layer.linear1)
        _copy_linear_norm(layer.feed_forward.linear2, ref_layer.linear2)
        _copy_linear_norm(layer.self_attn_block.norm, ref_layer.norm1)
        _copy_linear_norm(layer.cross_attn_block.norm, ref_layer.norm2)
        _copy_linear_norm(layer.ff_block.norm, ref_layer.norm3)


def _small(**options) -> Transformer:
    return Transformer(
        11,
        13,
        d_model=D_MODEL,
        num_heads=HEADS,
        num_layers=LAYERS,
        d_ff=D_FF,
        dropout=0.0,
        **options,
    )


def test_post_ln_stack_matches_torch_transformer_float64():
    torch.manual_seed(0)
    model = _small().double().train()
    ref = (
        nn.Transformer(D_MODEL, HEADS, LAYERS, LAYERS, D_FF, dropout=0.0, batch_first=True)
        .double()
        .train()
    )
    # torch.nn.Transformer always ends each stack with a norm; the paper's
    # post-LN model (and ours) does not.
    ref.encoder.norm = None
    ref.decoder.norm = None
    _copy_from_torch(model, ref)

    src = torch.randn(3, 7, D_MODEL, dtype=torch.float64)
    tgt = torch.randn(3, 5, D_MODEL, dtype=torch.float64)
    src_pad = torch.zeros(3, 7, dtype=torch.bool)
    src_pad[1, 4:] = True
    tgt_pad = torch.zeros(3, 5, dtype=torch.bool)
    tgt_pad[2, 3:] = True
    expected = ref(
        src,
        tgt,
        tgt_mask=torch.ones(5, 5, dtype=torch.bool).triu(diagonal=1),
        src_key_padding_mask=src_pad,
        tgt_key_padding_mask=tgt_pad,
        memory_key_padding_mask=src_pad,
    )
    src_mask = ~src_pad[:, None, None, :]
    memory = model.encoder(src, src_mask)
    out = model.decoder(tgt, memory, ~tgt_pad[:, None, None, :], src_mask, is_causal=True)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)


def test_forward_shapes_and_attention_per_layer():
    torch.manual_seed(0)
    model = _small().eval()
    src = torch.randint(3, 11, (2, 6))
    tgt = torch.randint(3, 13, (2, 4))
    logits = model(src, tgt)
    assert logits.shape == (2, 4, 13)
    logits2, attention = model(src, tgt, return_attention=True)
    torch.testing.assert_close(logits, logits2)
    assert len(attention.encoder_self) == len(attention.decoder_self) == len(attention.cross) == 2
    assert attention.encoder_self[0].shape == (2, HEADS, 6, 6)
    assert attention.decoder_self[0].shape == (2, HEADS, 4, 4)
    assert attention.cross[0].shape == (2, HEADS, 4, 6)
    for weights in attention.decoder_self:  # causal: nothing above the diagonal
        assert torch.all(weights.triu(diagonal=1) == 0)
    for weights in attention.encoder_self + attention.cross:
        torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))


def test_source_padding_is_masked_everywhere():
    torch.manual_seed(0)
    model = _small().eval()
    src = torch.randint(3, 11, (1, 6))
    tgt = torch.randint(3, 13, (1, 4))
    padded = torch.cat([src, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    logits, attention = model(padded, tgt, return_attention=True)
    torch.testing.assert_close(logits, model(src, tgt), atol=1e-5, rtol=1e-5)
    assert torch.all(attention.cross[0][..., 6:] == 0)


def test_explicit_tgt_mask_is_combined_with_causal():
    torch.manual_seed(0)
    model = _small().eval()
    src = torch.randint(3, 11, (2, 6))
    tgt = torch.randint(3, 13, (2, 5))
    full_causal = create_causal_mask(5) & create_padding_mask(tgt, 0)
    torch.testing.assert_close(model(src, tgt, tgt_mask=full_causal), model(src, tgt))
    # a mask without the causal part still gives causal attention
    torch.testing.assert_close(
        model(src, tgt, tgt_mask=create_padding_mask(tgt, 0)), model(src, tgt)
    )


def test_future_target_tokens_do_not_change_earlier_logits():
    torch.manual_seed(0)
    model = _small().eval()
    src = torch.randint(3, 11, (2, 6))
    tgt = torch.randint(3, 13, (2, 5))
    changed = tgt.clone()
    changed[:, 3:] = torch.randint(3, 13, (2, 2))
    torch.testing.assert_close(model(src, tgt)[:, :3], model(src, changed)[:, :3])


def test_cached_decoding_equals_full_forward():
    torch.manual_seed(0)
    model = _small(norm_first=True).eval()
    src = torch.randint(3, 11, (3, 7))
    src[1, 4:] = 0
    tgt = torch.randint(3, 13, (3, 6))
    expected = model(src, tgt)
    src_mask = create_padding_mask(src, 0)
    memory = model.encode(src, src_mask)
    cache = model.new_cache(3, 6, like=memory)
    steps = [
        model.project(model.decode(tgt[:, i : i + 1], memory, memory_mask=src_mask, cache=cache))
        for i in range(6)
    ]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, atol=1e-5, rtol=1e-5)


def test_options_share_tie_scale_and_shorthands():
    model = Transformer(
        vocab_size=20,
        d_model=16,
        num_heads=2,
        num_layers=1,
        d_ff=32,
        share_embeddings=True,
        tie_output=True,
    )
    assert model.config.src_vocab_size == model.config.tgt_vocab_size == 20
    assert model.config.num_encoder_layers == model.config.num_decoder_layers == 1
    assert model.src_embedding is model.tgt_embedding
    assert model.output_projection.weight is model.tgt_embedding.weight
    untied = Transformer(20, 30, d_model=16, num_heads=2, num_layers=1, d_ff=32, tie_output=False)
    assert untied.output_projection.weight is not untied.tgt_embedding.weight
    assert untied.src_embedding is not untied.tgt_embedding

    torch.manual_seed(0)
    scaled = _small(positional="learned")
    unscaled = _small(positional="learned", scale_embeddings=False)
    unscaled.load_state_dict(scaled.state_dict())
    for model in (scaled, unscaled):
        model.src_positions.absolute.embedding.weight.data.zero_()
    seen = []
    for model in (scaled, unscaled):
        model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        model.encode(torch.randint(3, 11, (1, 4)).fill_(5))
    torch.testing.assert_close(seen[0], seen[1] * D_MODEL**0.5)


def test_config_builder_and_validation():
    config = TransformerConfig(
        src_vocab_size=10,
        tgt_vocab_size=12,
        d_model=16,
        num_heads=4,
        num_encoder_layers=1,
        num_decoder_layers=2,
        d_ff=32,
    )
    model = build_transformer(config)
    assert len(model.encoder.layers) == 1 and len(model.decoder.layers) == 2
    with pytest.raises(ValueError, match=r"d_model \(10\) must be divisible by num_heads \(4\)"):
        TransformerConfig(src_vocab_size=10, tgt_vocab_size=10, d_model=10, num_heads=4)
    with pytest.raises(ValueError, match="share_embeddings needs src_vocab_size == tgt_vocab_size"):
        TransformerConfig(src_vocab_size=10, tgt_vocab_size=12, share_embeddings=True)
    with pytest.raises(ValueError, match="positional must be one of"):
        TransformerConfig(src_vocab_size=10, tgt_vocab_size=12, positional="spiral")
    with pytest.raises(TypeError, match="unknown option"):
        Transformer(10, 10, colour="blue")
    with pytest.raises(ValueError, match="give src_vocab_size and tgt_vocab_size"):
        Transformer()


def test_bad_token_inputs_are_rejected():
    model = _small()
    with pytest.raises(ValueError, match=r"src must be integer token ids of shape \(B, T\)"):
        model(torch.randn(2, 5), torch.randint(3, 13, (2, 4)))
    with pytest.raises(ValueError, match=r"tgt ids must be in \[0, 13\); got range"):
        model(torch.randint(3, 11, (2, 5)), torch.full((2, 4), 13))
    with pytest.raises(ValueError, match=r"max_len=8"):
        Transformer(11, 13, d_model=16, num_heads=2, num_layers=1, d_ff=32, max_len=8)(
            torch.randint(3, 11, (1, 9)), torch.randint(3, 13, (1, 3))
        )


@pytest.mark.parametrize(
    ("positional", "options"),
    [
        ("rotary", {"base": 500.0}),
        ("alibi", {}),
        ("t5", {"num_buckets": 8, "max_distance": 16}),
        ("none", {}),
        ("learned", {}),
        ("relative", {"max_relative_position": 3}),
        ("sliding_window", {}),
    ],
)
def test_every_positional_scheme_decodes_with_the_cache_as_in_full(positional, options):
    variant = {}
    if positional == "sliding_window":  # local attention with rotary positions
        positional, variant = "rotary", {"attention": "sliding_window",
                                         "attention_options": {"window": 2}}  # fmt: skip
    model = Transformer(
        vocab_size=30,
        d_model=16,
        num_heads=2,
        num_layers=2,
        d_ff=32,
        dropout=0.0,
        positional=positional,
        position_options=options,
        norm_first=True,
        **variant,
    ).eval()
    src, tgt = torch.randint(3, 30, (2, 7)), torch.randint(3, 30, (2, 6))
    memory = model.encode(src)
    full = model.project(model.decode(tgt, memory))
    cache = model.new_cache(2, 6, like=memory)
    steps = [model.project(model.decode(tgt[:, t : t + 1], memory, cache=cache)) for t in range(6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    encoder_attention = model.encoder.layers[0].self_attn
    assert (encoder_attention.rotary is not None) == (positional == "rotary")
    assert (encoder_attention.score_bias is not None) == (positional in ("alibi", "t5"))
    assert model.decoder.layers[0].cross_attn.score_bias is None


def test_position_options_that_do_not_apply_are_named():
    with pytest.raises(ValueError, match=r"position options \['base'\] do not apply to 'alibi'"):
        Transformer(vocab_size=30, d_model=16, num_heads=2, positional="alibi",
                    position_options={"base": 10.0})  # fmt: skip


def test_labels_give_the_summed_loss_of_the_logits_without_holding_them():
    torch.manual_seed(0)
    model = Transformer(vocab_size=40, d_model=16, num_heads=2, num_layers=1, d_ff=32).eval()
    src, tgt = torch.randint(3, 40, (3, 7)), torch.randint(3, 40, (3, 5))
    labels = torch.randint(3, 40, (3, 5))
    labels[0, 3:] = 0  # pad_id 0 is ignored by default
    out = model(src, tgt, labels=labels, label_smoothing=0.1)
    assert isinstance(out, TransformerLoss)
    logits = model(src, tgt)
    expected = F.cross_entropy(
        logits.flatten(0, 1), labels.flatten(), ignore_index=0, label_smoothing=0.1, reduction="sum"
    )
    torch.testing.assert_close(out.loss_sum, expected)
    assert out.num_tokens.item() == 13
    assert out.correct.item() == ((logits.argmax(-1) == labels) & (labels != 0)).sum().item()
    other_ignore = model(src, tgt, labels=labels, ignore_index=-100)
    assert other_ignore.num_tokens.item() == 15
    with pytest.raises(ValueError, match=r"labels must be \(B, T\) = \(3, 5\); got \(3, 4\)"):
        model(src, tgt, labels=labels[:, :4])
    with pytest.raises(ValueError, match="return_attention cannot be combined with labels"):
        model(src, tgt, labels=labels, return_attention=True)


def test_masks_broadcast_as_documented_and_bad_ones_are_named():
    """Key padding is (B, 1, 1, S); a 2-D mask is (Tq, Tk) as torch's src_mask, so a
    (B, S) padding mask with B != S is an error naming src_mask, not a silent misread."""
    torch.manual_seed(0)
    model = _small().eval()
    src = torch.tensor([[3, 4, 5, 6, 7], [3, 4, 0, 0, 0], [7, 8, 9, 0, 0]])
    tgt = torch.tensor([[1, 2, 3], [1, 4, 0], [1, 6, 7]])
    expected = model(src, tgt)
    padding = (src != 0)[:, None, None, :]
    torch.testing.assert_close(model(src, tgt, padding), expected)
    memory = model.encode(src, padding)
    torch.testing.assert_close(model.project(model.decode(tgt, memory, None, padding)), expected)
    with pytest.raises(ValueError, match=r"src_mask must be bool, .* \(3, 1, 5, 5\) .*got torch"):
        model(src, tgt, src != 0)
    with pytest.raises(ValueError, match=r"memory_mask must be bool, .*\(3, 1, 3, 5\)"):
        model.decode(tgt, memory, None, (src != 0)[:, None, :4])


def test_settings_beside_a_config_are_refused():
    config = TransformerConfig(src_vocab_size=11, tgt_vocab_size=13, d_model=16, num_heads=2)
    assert Transformer(config=config).config is config
    with pytest.raises(TypeError, match=r"takes no other settings .*\['d_model', 'norm_first'\]"):
        Transformer(config=config, d_model=64, norm_first=True)
