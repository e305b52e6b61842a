"""`attnkit visualize` on tiny checkpoints: Hugging Face directories and training runs.

The weights in the page are checked against an independent source: ``transformers``'
own ``output_attentions`` (Hugging Face directories) or the model's ``return_attention``
/ ``output_attentions`` path (run directories).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import yaml

from attnkit.cli import main
from attnkit.data import CharTokenizer, SubwordTokenizer
from attnkit.generation import greedy_decode
from attnkit.recipes.language_model import LanguageModelData, LanguageModelRecipe
from attnkit.recipes.language_model import build_model as build_language_model
from attnkit.recipes.translation import TranslationRecipe
from attnkit.recipes.translation import build_model as build_translation_model
from attnkit.train.checkpoint import save_checkpoint
from explorer_helpers import read_explorer_data

transformers = pytest.importorskip("transformers")
logging.getLogger("transformers").setLevel(logging.ERROR)
pytestmark = pytest.mark.usefixtures("single_thread")

WORDS = (  # noqa: SIM905 (a sentence reads better than a list of quoted words)
    "the cat sat on mat because it was tired . a dog runs through snow "
    "ein hund läuft durch den schnee eine katze"
).split()
ATOL = 5e-5 + 1e-5  # page rounding (4 decimals) + float32 differences


def word_tokenizer(specials: list[str], unk: str, template: str | None = None):
    """A whitespace word-level ``tokenizers.Tokenizer``: ``specials`` first, then WORDS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate([*specials, *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if template is not None:
        used = [(token, vocab[token]) for token in specials if token in template]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=used
        )
    return tokenizer


def save(model, tokenizer, directory):
    model.save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    return model.eval(), directory


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A random BertModel whose tokenizer pads every text to 16 tokens (as MiniLM's does)."""
    tokenizer = word_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], "[UNK]", "[CLS] $A [SEP]")
    tokenizer.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    config = transformers.BertConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
        attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(1)
    return save(transformers.BertModel(config), tokenizer, tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    tokenizer = word_tokenizer(["<|endoftext|>", "<unk>"], "<unk>")
    config = transformers.GPT2Config(
        vocab_size=tokenizer.get_vocab_size(), n_positions=32, n_embd=16, n_layer=2, n_head=2,
        bos_token_id=0, eos_token_id=0, attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(2)
    return save(transformers.GPT2LMHeadModel(config), tokenizer, tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    tokenizer = word_tokenizer(["<pad>", "</s>", "<unk>"], "<unk>", "$A </s>")
    config = transformers.T5Config(
        vocab_size=tokenizer.get_vocab_size(), d_model=16, d_kv=8, d_ff=32, num_layers=2,
        num_decoder_layers=2, num_heads=2, relative_attention_num_buckets=8,
        relative_attention_max_distance=16, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0, attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(3)
    model = transformers.T5ForConditionalGeneration(config)
    return save(model, tokenizer, tmp_path_factory.mktemp("t5"))


def visualize(checkpoint, tmp_path, *options: str) -> tuple[int, dict | None]:
    out = tmp_path / "page.html"
    code = main(["visualize", "--checkpoint", str(checkpoint), "--out", str(out), *options])
    return code, read_explorer_data(out) if out.is_file() else None


def assert_layers_close(view: dict, reference) -> None:
    """``view["layers"]`` (L, H, Tq, Tk) against per-layer ``(1, H, Tq, Tk)`` tensors."""
    expected = np.stack([layer[0].detach().double().numpy() for layer in reference])
    np.testing.assert_allclose(np.array(view["layers"]), expected, rtol=0, atol=ATOL)


def test_bert_directory_gives_the_weights_of_transformers(bert_dir, tmp_path, capsys):
    hf, directory = bert_dir
    png = tmp_path / "heat.png"
    code, data = visualize(
        directory, tmp_path, "--text", "the cat sat", "--png", str(png), "--layer", "1"
    )
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {tmp_path / 'page.html'}",
        f"wrote {png}",
    ]
    assert png.stat().st_size > 1000
    assert data["order"] == ["encoder_self"]
    view = data["kinds"]["encoder_self"]
    assert view["queries"] == view["keys"] == ["[CLS]", "the", "cat", "sat", "[SEP]"]  # no padding
    ids = torch.tensor([[2, 4, 5, 6, 3]])
    with torch.no_grad():
        assert_layers_close(view, hf(ids, output_attentions=True).attentions)


def test_gpt2_directory_gives_causal_weights_of_transformers(gpt2_dir, tmp_path):
    hf, directory = gpt2_dir
    code, data = visualize(directory, tmp_path, "--text", "a dog runs through snow")
    assert code == 0
    assert data["order"] == ["decoder_self"]
    view = data["kinds"]["decoder_self"]
    assert view["queries"] == ["a", "dog", "runs", "through", "snow"]
    ids = torch.tensor([[2 + WORDS.index(word) for word in view["queries"]]])
    with torch.no_grad():
        assert_layers_close(view, hf(ids, output_attentions=True).attentions)
    assert np.all(np.triu(np.array(view["layers"]), k=1) == 0)


def test_t5_directory_with_a_target_is_teacher_forced(t5_dir, tmp_path):
    hf, directory = t5_dir
    code, data = visualize(
        directory, tmp_path, "--text", "ein hund läuft", "--target", "a dog runs"
    )
    assert code == 0
    assert data["order"] == ["encoder_self", "decoder_self", "cross"]
    cross = data["kinds"]["cross"]
    assert cross["keys"] == ["ein", "hund", "läuft", "</s>"]
    assert cross["queries"] == ["<pad>", "a", "dog", "runs"]  # start token, then the target
    src = torch.tensor([[3 + WORDS.index(w) for w in ("ein", "hund", "läuft")] + [1]])
    tgt = torch.tensor([[0] + [3 + WORDS.index(w) for w in ("a", "dog", "runs")]])
    with torch.no_grad():
        out = hf(input_ids=src, decoder_input_ids=tgt, output_attentions=True)
    assert_layers_close(data["kinds"]["encoder_self"], out.encoder_attentions)
    assert_layers_close(data["kinds"]["decoder_self"], out.decoder_attentions)
    assert_layers_close(cross, out.cross_attentions)


def test_t5_directory_without_a_target_uses_the_greedy_output(t5_dir, tmp_path):
    hf, directory = t5_dir
    code, data = visualize(directory, tmp_path, "--text", "eine katze")
    assert code == 0
    src = torch.tensor([[3 + WORDS.index("eine"), 3 + WORDS.index("katze"), 1]])
    max_new = int(1.5 * 3 + 10)
    with torch.no_grad():
        generated = hf.generate(src, max_new_tokens=max_new, do_sample=False, num_beams=1)[0]
    ids = generated.tolist()
    ids = ids[: ids.index(1)] if 1 in ids else ids  # start token + output, without </s>
    vocabulary = ["<pad>", "</s>", "<unk>", *WORDS]
    assert data["kinds"]["cross"]["queries"] == [vocabulary[i] for i in ids]
    assert len(data["kinds"]["cross"]["layers"][0][0]) == len(ids)


# ---------------------------------------------------------------- run directories

SENTENCES = [
    "ein hund läuft durch den schnee .",
    "a dog runs through the snow .",
    "eine katze sitzt auf der matte .",
    "a cat sits on the mat .",
]


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory):
    """A run directory as `attnkit train` leaves it: recipe, tokenizer, one checkpoint."""
    run = tmp_path_factory.mktemp("runs") / "tiny_de_en"
    tokenizer = SubwordTokenizer.train(SENTENCES, kind="bpe", vocab_size=300, min_frequency=1)
    options = {"d_model": 16, "num_heads": 2, "num_encoder_layers": 1, "d_ff": 32}
    recipe = TranslationRecipe(
        name="tiny_de_en",
        output_dir=str(run),
        model={**options, "num_decoder_layers": 2, "dropout": 0.0},
    )
    torch.manual_seed(4)
    model = build_translation_model(recipe, tokenizer).eval()
    write_run(run, recipe, tokenizer, model)
    return run, model, tokenizer


@pytest.fixture(scope="module")
def language_model_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny_lm"
    tokenizer = CharTokenizer.train(SENTENCES)
    recipe = LanguageModelRecipe(
        name="tiny_lm",
        output_dir=str(run),
        data=LanguageModelData(block_size=32),
        model={"d_model": 16, "num_heads": 2, "num_layers": 2, "dropout": 0.0},
    )
    torch.manual_seed(5)
    model = build_language_model(recipe, tokenizer).eval()
    write_run(run, recipe, tokenizer, model)
    return run, model, tokenizer


def write_run(run, recipe, tokenizer, model) -> None:
    save_checkpoint(run / "checkpoints" / "step_00000001", model.state_dict(), meta={"step": 1})
    tokenizer.save(run)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))


def test_translation_run_with_a_target(translation_run, tmp_path):
    run, model, tokenizer = translation_run
    code, data = visualize(run, tmp_path, "--text", "ein hund sitzt .", "--target", "a dog runs .")
    assert code == 0
    src_ids = tokenizer.encode("ein hund sitzt .")
    tgt_ids = [tokenizer.bos_id, *tokenizer.encode("a dog runs .")]
    cross = data["kinds"]["cross"]
    assert cross["keys"] == [tokenizer.decode([i]) for i in src_ids]
    assert cross["queries"] == ["<bos>"] + [tokenizer.decode([i]) for i in tgt_ids[1:]]
    assert "".join(cross["keys"]) == "ein hund sitzt ."
    with torch.no_grad():
        _, attention = model(
            torch.tensor([src_ids]), torch.tensor([tgt_ids]), return_attention=True
        )
    assert_layers_close(data["kinds"]["encoder_self"], attention.encoder_self)
    assert_layers_close(data["kinds"]["decoder_self"], attention.decoder_self)
    assert_layers_close(cross, attention.cross)


def test_translation_run_without_a_target_translates_greedily(translation_run, tmp_path):
    run, model, tokenizer = translation_run
    code, data = visualize(run, tmp_path, "--text", "eine katze sitzt .")
    assert code == 0
    src_ids = tokenizer.encode("eine katze sitzt .")
    max_new = int(1.5 * len(src_ids) + 10)
    generated = greedy_decode(
        model, torch.tensor([src_ids]), max_new_tokens=max_new, bos_id=1, eos_id=2, pad_id=0
    )[0].tolist()
    output = generated[: generated.index(2)] if 2 in generated else generated
    queries = data["kinds"]["cross"]["queries"]
    assert queries == ["<bos>"] + [tokenizer.decode([i]) for i in output]
    assert data["kinds"]["decoder_self"]["queries"] == queries


def test_language_model_run_shows_characters(language_model_run, tmp_path):
    run, model, tokenizer = language_model_run
    code, data = visualize(run, tmp_path, "--text", "a cat", "--which", "latest")
    assert code == 0
    view = data["kinds"]["decoder_self"]
    assert data["order"] == ["decoder_self"]
    assert view["queries"] == view["keys"] == ["a", " ", "c", "a", "t"]
    with torch.no_grad():
        out = model(torch.tensor([tokenizer.encode("a cat")]), output_attentions=True)
    assert_layers_close(view, out.attentions)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("checkpoint", "options", "message"),
    [
        ("bert", ["--target", "a dog"], "--target is for encoder-decoder models"),
        ("bert", ["--png", "heat.png", "--layer", "2"], "--layer must be in [0, 2) for "),
        ("bert", ["--png", "heat.png", "--head", "5"], "--head must be in [0, 2) for "),
        ("bert", ["--png", "heat.png", "--kind", "cross"], "--kind must be one of ['encoder_"),
        ("t5", ["--png", "heat.png", "--layer", "7"], "--layer must be in [0, 2) for cross"),
        ("lm", ["--target", "a dog"], "holds a GPT"),
        ("empty", [], "neither a Hugging Face model directory (config.json) nor an"),
    ],
)
def test_bad_requests_are_reported_without_writing(
    checkpoint, options, message, bert_dir, t5_dir, language_model_run, tmp_path, capsys
):
    directories = {
        "bert": bert_dir[1],
        "t5": t5_dir[1],
        "lm": language_model_run[0],
        "empty": tmp_path,
    }
    options = [str(tmp_path / o) if o.endswith(".png") else o for o in options]
    code, data = visualize(directories[checkpoint], tmp_path, "--text", "a dog", *options)
    assert code == 2 and data is None
    assert not (tmp_path / "heat.png").exists()
    error = capsys.readouterr().err
    assert error.startswith("attnkit visualize: error: ") and message in error
