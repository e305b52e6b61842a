"""RNN encoder-decoder with attention: shapes, masking, padding, decoding, learning, recipe."""

import json

import pytest
import torch
import torch.nn.functional as F

from attnkit.cli import main
from attnkit.generation import RNNSeq2SeqAdapter, beam_search, generate, greedy_decode
from attnkit.models import RNNSeq2Seq, RNNSeq2SeqConfig, build_rnn_seq2seq
from translation_helpers import CONFIGS, TINY_RUN, train_tiny, translate_stdin

pytestmark = pytest.mark.usefixtures("single_thread")

PAD, BOS, EOS = 0, 1, 2
V_SRC, V_TGT = 11, 13
F64 = dict(atol=1e-10, rtol=1e-10)
VARIANTS = [
    ("gru", "bahdanau", "general"),
    ("gru", "luong", "dot"),
    ("gru", "luong", "general"),
    ("gru", "luong", "concat"),
    ("lstm", "bahdanau", "general"),
    ("lstm", "luong", "dot"),
    ("lstm", "luong", "general"),
    ("lstm", "luong", "concat"),
]


def make_model(cell="gru", attention="bahdanau", score="general", *, layers=2, **options):
    """A small float64 model in eval mode (no dropout) with a learned eos bias."""
    config = RNNSeq2SeqConfig(
        V_SRC,
        V_TGT,
        cell=cell,
        attention=attention,
        luong_score=score,
        embedding_dim=6,
        encoder_hidden_size=5,
        decoder_hidden_size=10,
        num_encoder_layers=layers,
        num_decoder_layers=layers,
        dropout=0.0,
        **options,
    )
    model = build_rnn_seq2seq(config).double().eval()
    with torch.no_grad():
        model.output_projection.bias.normal_()
    return model


def padded_sources() -> torch.Tensor:
    """Three right-padded sources of lengths 5, 3 and 1."""
    return torch.tensor([[3, 4, 5, 6, 7], [8, 9, 10, PAD, PAD], [4, PAD, PAD, PAD, PAD]])


def targets() -> torch.Tensor:
    return torch.tensor([[BOS, 3, 4, 5], [BOS, 6, PAD, PAD], [BOS, 7, 8, PAD]])


# --------------------------------------------------------------------------- shapes and masks


@pytest.mark.parametrize(("cell", "attention", "score"), VARIANTS)
def test_shapes_and_attention_weights_with_zero_weight_on_padding(cell, attention, score):
    model = make_model(cell, attention, score)
    src, tgt = padded_sources(), targets()
    logits, weights = model(src, tgt, return_attention=True)
    assert logits.shape == (3, 4, V_TGT) and weights.shape == (3, 4, 5)
    assert bool(torch.isfinite(logits).all())
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, dtype=torch.float64), **F64)
    padding = (src == PAD)[:, None, :].expand_as(weights)
    assert bool((weights[padding] == 0).all()) and bool((weights[~padding] > 0).all())
    torch.testing.assert_close(model(src, tgt), logits, **F64)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_padded_batch_equals_unpadded_single_examples(cell, attention):
    """Packing keeps source padding out of the encoder; the causal decoder keeps target
    padding out of the real positions."""
    model = make_model(cell, attention)
    src, tgt = padded_sources(), targets()
    logits, weights = model(src, tgt, return_attention=True)
    for row in range(3):
        s, t = int((src[row] != PAD).sum()), int((tgt[row] != PAD).sum())
        alone, alone_weights = model(
            src[row : row + 1, :s], tgt[row : row + 1, :t], return_attention=True
        )
        torch.testing.assert_close(logits[row, :t], alone[0], **F64)
        torch.testing.assert_close(weights[row, :t, :s], alone_weights[0], **F64)


def test_padding_contents_do_not_leak_through_an_explicit_mask():
    model = make_model("lstm", "luong", "concat")
    src, tgt = padded_sources(), targets()
    mask = src != PAD
    noisy = src.masked_fill(~mask, 9)  # real-looking ids at the padded positions
    torch.testing.assert_close(model(noisy, tgt, mask), model(src, tgt), **F64)


def test_a_source_without_real_tokens_gets_a_zero_context_and_no_nan():
    model = make_model()
    src = torch.tensor([[3, 4], [PAD, PAD]])
    logits, weights = model(src, targets()[:2], return_attention=True)
    assert bool(torch.isfinite(logits).all()) and bool((weights[1] == 0).all())
    encoded = model.encode(src)
    assert bool((encoded.memory[1] == 0).all())


def test_shared_and_tied_embeddings():
    config = dict(embedding_dim=6, encoder_hidden_size=5, decoder_hidden_size=10)
    model = RNNSeq2Seq(RNNSeq2SeqConfig(9, 9, share_embeddings=True, tie_output=True, **config))
    assert model.src_embedding is model.tgt_embedding
    assert model.output_projection.weight is model.tgt_embedding.weight
    assert model.config.attentional_size == 6 and model.combine.out_features == 6
    untied = RNNSeq2Seq(RNNSeq2SeqConfig(9, 10, **config))
    assert untied.src_embedding is not untied.tgt_embedding
    assert untied.output_projection.weight.shape == (10, 10)  # from Hd = 10
    assert bool((untied.src_embedding.weight[PAD] == 0).all())


def test_an_injected_attention_module_is_used():
    from dataclasses import replace

    from attnkit.nn import LuongAttention

    sizes = dict(embedding_dim=6, encoder_hidden_size=5, decoder_hidden_size=10, dropout=0.0)
    config = RNNSeq2SeqConfig(V_SRC, V_TGT, attention="bahdanau", **sizes)
    attention = LuongAttention(10, 10, "dot")
    injected = RNNSeq2Seq(config, attention=attention).double()
    assert injected.attention is attention
    built = RNNSeq2Seq(replace(config, attention="luong", luong_score="dot")).double()
    built.load_state_dict(injected.state_dict())  # the dot score has no parameters
    src, tgt = padded_sources(), targets()
    torch.testing.assert_close(injected(src, tgt), built(src, tgt), **F64)


# --------------------------------------------------------------------------- decoding


def hand_greedy(model: RNNSeq2Seq, src: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Teacher-forced argmax, one full forward pass per token, row by row."""
    rows = []
    for row in src:
        real = row[row != PAD][None]
        prefix = torch.tensor([[BOS]])
        generated: list[int] = []
        while len(generated) < max_new_tokens and (not generated or generated[-1] != EOS):
            token = int(model(real, prefix)[0, -1].argmax())
            generated.append(token)
            prefix = torch.cat([prefix, torch.tensor([[token]])], dim=1)
        rows.append(generated)
    width = max(len(r) for r in rows)
    return torch.tensor([r + [PAD] * (width - len(r)) for r in rows])


@pytest.mark.parametrize(("cell", "attention", "score"), VARIANTS[::3])
def test_greedy_decoding_equals_a_hand_loop_of_teacher_forced_argmax(cell, attention, score):
    torch.manual_seed(3)
    model = make_model(cell, attention, score)
    with torch.no_grad():
        model.output_projection.bias[EOS] += 1.5  # some rows end early, some do not
    src = padded_sources()
    out = greedy_decode(model, src, max_new_tokens=8, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    expected = hand_greedy(model, src, 8)
    assert torch.equal(out, expected)
    assert torch.equal(
        generate(model, src, "greedy", max_new_tokens=8, bos_id=BOS, eos_id=EOS), out
    )


def test_beam_search_with_beam_one_equals_greedy():
    model = make_model("lstm", "bahdanau")
    src = padded_sources()
    greedy = greedy_decode(model, src, max_new_tokens=7, bos_id=BOS, eos_id=EOS)
    beam = generate(model, src, "beam", beam_size=1, max_new_tokens=7, bos_id=BOS, eos_id=EOS)
    sequences = beam.sequences[:, 0]
    width = max(sequences.size(1), greedy.size(1))
    padded = [F.pad(x, (0, width - x.size(1)), value=PAD) for x in (sequences, greedy)]
    assert torch.equal(*padded)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_beam_scores_equal_teacher_forced_log_probabilities(cell):
    """Reordering the recurrent state with the beams: every returned hypothesis must
    score exactly what the teacher-forced model gives it."""
    torch.manual_seed(1)
    model = make_model(cell, "luong", "general")
    with torch.no_grad():  # long hypotheses (beams reordered at every step), some short ones
        model.output_projection.bias[EOS] += 0.3
    src = padded_sources()
    special = dict(bos_id=BOS, eos_id=EOS, max_new_tokens=6)
    result = beam_search(
        model, src, beam_size=4, num_return_sequences=4, length_penalty=0.7, **special
    )
    for b in range(3):
        real = src[b : b + 1][src[b : b + 1] != PAD][None]
        for k in range(4):
            length = int(result.lengths[b, k])
            tokens = result.sequences[b, k, :length]
            tgt_in = torch.cat([torch.tensor([BOS]), tokens[:-1]])[None]
            log_probs = model(real, tgt_in).log_softmax(-1)[0]
            total = log_probs.gather(1, tokens[:, None]).sum()
            torch.testing.assert_close(result.scores[b, k], total / length**0.7, **F64)
    assert bool((result.scores[:, :-1] >= result.scores[:, 1:]).all())
    assert int(result.lengths.max()) == 6


def test_keys_are_projected_once_per_source_not_per_step(monkeypatch):
    model = make_model()
    calls = []
    original = model.attention.project_keys
    monkeypatch.setattr(
        model.attention, "project_keys", lambda k: calls.append(k.shape) or original(k)
    )
    beam_search(model, padded_sources(), beam_size=3, max_new_tokens=6, bos_id=BOS, eos_id=EOS)
    assert calls == [torch.Size([3, 5, 10])]  # once, for B = 3 sources (before the beams)


def test_decode_step_continues_exactly_like_the_teacher_forced_forward():
    model = make_model("lstm", "luong", "concat")
    src, tgt = padded_sources(), targets()[:, :3]
    logits, weights = model(src, torch.tensor([[BOS, 3, 4]] * 3), return_attention=True)
    state = model.init_decoder_state(model.encode(src))
    for step in range(3):
        step_logits, step_weights, state = model.decode_step(
            torch.tensor([BOS, 3, 4])[step].repeat(3), state
        )
        torch.testing.assert_close(step_logits, logits[:, step], **F64)
        torch.testing.assert_close(step_weights, weights[:, step], **F64)
    assert tgt.shape == (3, 3)


# --------------------------------------------------------------------------- learning


def reversal_batch(gen: torch.Generator, size: int, vocab: int = 12):
    """Sources of 3..7 tokens in 3..vocab-1; targets are the sources reversed."""
    lengths = torch.randint(3, 8, (size,), generator=gen)
    longest = int(lengths.max())
    src = torch.full((size, longest), PAD)
    tgt_in = torch.full((size, longest + 1), PAD)
    tgt_out = torch.full((size, longest + 1), PAD)
    for i, length in enumerate(lengths.tolist()):
        tokens = torch.randint(3, vocab, (length,), generator=gen)
        src[i, :length] = tokens
        tgt_in[i, 0], tgt_in[i, 1 : length + 1] = BOS, tokens.flip(0)
        tgt_out[i, :length], tgt_out[i, length] = tokens.flip(0), EOS
    return src, tgt_in, tgt_out


@pytest.mark.parametrize(
    ("cell", "attention", "steps"), [("gru", "bahdanau", 300), ("lstm", "luong", 200)]
)
def test_learns_to_reverse_sequences(cell, attention, steps):
    torch.manual_seed(0)
    sizes = dict(embedding_dim=32, encoder_hidden_size=32, decoder_hidden_size=64)
    config = RNNSeq2SeqConfig(12, 12, cell=cell, attention=attention, dropout=0.0, **sizes)
    model = RNNSeq2Seq(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        src, tgt_in, tgt_out = reversal_batch(gen, 64)
        logits = model(src, tgt_in)
        loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    src, _, tgt_out = reversal_batch(torch.Generator().manual_seed(123), 200)
    out = greedy_decode(model, src, max_new_tokens=tgt_out.size(1), bos_id=BOS, eos_id=EOS)
    out = F.pad(out, (0, tgt_out.size(1) - out.size(1)), value=PAD)
    assert (out == tgt_out).all(dim=1).float().mean() >= 0.9


# --------------------------------------------------------------------------- errors


def test_bad_inputs_get_clear_errors():
    model = make_model()
    src, tgt = padded_sources(), targets()
    with pytest.raises(ValueError, match=r"src ids must be in \[0, 11\); got range \[0, 11\]"):
        model(src.masked_fill(src == 10, V_SRC), tgt)
    with pytest.raises(ValueError, match=r"tgt ids must be in \[0, 13\); got range \[-1, 8\]"):
        model(src, tgt.masked_fill(tgt == PAD, -1))
    with pytest.raises(ValueError, match=r"src must be integer token ids of shape \(B, T\)"):
        model(src.double(), tgt)
    with pytest.raises(ValueError, match=r"src must be integer token ids of shape \(B, T\)"):
        model(src[0], tgt)
    with pytest.raises(ValueError, match=r"same batch size; got 3 and 2"):
        model(src, tgt[:2])
    with pytest.raises(ValueError, match=r"tgt must have at least one position"):
        model(src, tgt[:, :0])
    with pytest.raises(ValueError, match=r"right-padded"):
        model(src.flip(1), tgt)  # left padding would be read as real tokens by packing
    with pytest.raises(ValueError, match=r"src_mask must be bool of the shape of src \(3, 5\)"):
        model(src, tgt, (src != PAD)[:, :4])
    with pytest.raises(ValueError, match=r"src_mask must be bool .*; got True"):
        model(src, tgt, True)
    state = model.init_decoder_state(model.encode(src))
    with pytest.raises(ValueError, match=r"tokens must have shape \(N,\) = \(3,\)"):
        model.decode_step(torch.tensor([BOS, BOS]), state)
    with pytest.raises(ValueError, match=r"tokens ids must be in \[0, 13\)"):
        model.decode_step(torch.tensor([BOS, BOS, 13]), state)


def test_decoding_errors_are_clear():
    model = make_model()
    src = padded_sources()
    with pytest.raises(ValueError, match=r"src \(B, S\) is required to decode with an RNN"):
        greedy_decode(model, None, max_new_tokens=3, bos_id=BOS, eos_id=EOS)
    with pytest.raises(ValueError, match=r"bos_id is required"):
        greedy_decode(model, src, max_new_tokens=3, eos_id=EOS)
    with pytest.raises(ValueError, match=r"src must have shape \(B, S\); got \(5,\)"):
        RNNSeq2SeqAdapter(model, src[0])
    with pytest.raises(ValueError, match=r"src_mask must be bool \(B, S\) = \(3, 5\)"):
        greedy_decode(model, src, max_new_tokens=3, bos_id=BOS, src_mask=torch.ones(3, 4).bool())
    # A Transformer-style (B, 1, 1, S) mask is accepted and gives the same tokens.
    four_d = (src != PAD)[:, None, None]
    kwargs = dict(max_new_tokens=4, bos_id=BOS, eos_id=EOS)
    assert torch.equal(
        greedy_decode(model, src, src_mask=four_d, **kwargs), greedy_decode(model, src, **kwargs)
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(cell="rnn"), r"cell must be one of \('gru', 'lstm'\); got 'rnn'"),
        (dict(attention="dot"), r"attention must be one of \('bahdanau', 'luong'\)"),
        (dict(attention="luong", luong_score="cosine"), r"luong_score must be one of"),
        (
            dict(attention="luong", luong_score="dot", decoder_hidden_size=64),
            r"needs decoder_hidden_size == 2 \* encoder_hidden_size .*got 64 and 2 \* 256",
        ),
        (dict(src_vocab_size=9, share_embeddings=True), r"share_embeddings needs src_vocab"),
        (dict(pad_id=20), r"pad_id must be a valid token id; got 20"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\); got 1.0"),
        (dict(num_decoder_layers=0), r"num_decoder_layers must be >= 1; got 0"),
        (dict(attention_hidden_size=0), r"attention_hidden_size must be >= 1 or None; got 0"),
    ],
)
def test_config_errors_name_the_field(options, message):
    with pytest.raises(ValueError, match=message):
        RNNSeq2SeqConfig(**{"src_vocab_size": 10, "tgt_vocab_size": 10, **options})


# --------------------------------------------------------------------------- recipe

CONFIG = CONFIGS / "multi30k_rnn_de_en.yaml"
TINY = [
    *TINY_RUN,
    "model.embedding_dim=16",
    "model.encoder_hidden_size=16",
    "model.decoder_hidden_size=32",
    "model.attention_hidden_size=16",
]


@pytest.mark.slow
def test_recipe_trains_translates_and_evaluates_on_a_tiny_slice(tmp_path, monkeypatch, capsys):
    from attnkit.recipes.translation import load_translator

    run = tmp_path / "rnn"
    results = train_tiny(CONFIG, run, TINY)
    assert results["decode"]["beam_size"] == 2
    assert results["test"]["sentences"] == 30 and (run / "test.hyp.txt").is_file()
    translator = load_translator(run)
    assert isinstance(translator.model, RNNSeq2Seq)
    assert translator.model.config.cell == "gru" and translator.model.config.tie_output
    # An empty line is a source without tokens: translated, not an error. (The untrained
    # model's byte-level output may hold control characters, so lines are not counted.)
    text = "Ein Hund läuft.\n\nZwei Männer spielen.\n"
    assert translate_stdin(run, text, monkeypatch, capsys).strip()
    assert main(["evaluate", "--checkpoint", str(run), "--strategy", "greedy"]) == 0
    assert json.loads(capsys.readouterr().out)["sentences"] == 30


def test_recipe_config_errors_are_named():
    from attnkit.recipes import ConfigError, load_recipe

    recipe = load_recipe(CONFIG)
    assert recipe.model["architecture"] == "rnn" and recipe.max_minutes == 60
    with pytest.raises(ConfigError, match=r"model\.src_vocab_size is set from the tokenizer"):
        load_recipe(CONFIG, ["model.src_vocab_size=100"])
    with pytest.raises(ConfigError, match=r"cell must be one of"):
        load_recipe(CONFIG, ["model.cell=rnn"])
    with pytest.raises(ConfigError, match=r"unknown key"):
        load_recipe(CONFIG, ["model.d_model=64"])
