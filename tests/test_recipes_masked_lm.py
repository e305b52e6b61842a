"""The shakespeare_char_mlm recipe on a slice: dense and Longformer encoders learn masked
characters, the masked batches resume exactly, bad settings are named."""

import json
from pathlib import Path

import pytest
import torch

from attnkit.cli import main
from attnkit.data import CharTokenizer, TokenStream
from attnkit.recipes import ConfigError, load_recipe
from attnkit.recipes.masked_language_model import MaskedWindowSource, build_model

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "shakespeare_char_mlm.yaml"
TINY = [
    "data.limit_chars=30000",
    "data.block_size=128",
    "data.batch_size=8",
    "model.d_model=32",
    "model.num_heads=2",
    "model.num_layers=1",
    "model.d_ff=64",
    "train.max_steps=60",
    "train.eval_every=30",
    "train.checkpoint_every=30",
    "train.warmup_steps=5",
    "train.lr=5e-3",
    "eval_batches=5",
]
LONGFORMER = [
    "model.attention=block_sparse",
    "model.attention_options.pattern=longformer",
    "model.attention_options.block_size=32",
    "model.attention_options.global_blocks=[0]",
]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["dense", "longformer"])
def test_encoder_learns_masked_characters(variant, tmp_path):
    run = tmp_path / variant
    extra = LONGFORMER if variant == "longformer" else []
    assert main(["train", str(CONFIG), f"output_dir={run}", *TINY, *extra]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["summary"]["steps"] == 60
    # ~60 symbols: a uniform guess costs ln(60) = 4.1 nats; 60 steps learn the frequencies
    # (measured here: about 3.1 for both).
    assert results["val_loss"] < 3.4, results["val_loss"]
    if variant == "longformer":
        recipe = load_recipe(run / "recipe.yaml")
        assert recipe.model["attention"] == "block_sparse"


def test_masked_batches_resume_exactly_and_follow_bert_masking(tmp_path):
    recipe = load_recipe(CONFIG, ["data.block_size=64", "data.batch_size=16"])
    text = "To be, or not to be, that is the question. " * 100
    tokenizer = CharTokenizer.train([text])
    stream = TokenStream.build(tokenizer.encode(text), tmp_path / "ids.bin")
    source = MaskedWindowSource(stream, recipe, tokenizer)
    first = next(iter(source))
    resumed = MaskedWindowSource(stream, recipe, tokenizer)
    resumed.load_state_dict(source.state_dict())
    second, again = next(iter(source)), next(iter(resumed))
    assert torch.equal(second.input_ids, again.input_ids)
    assert torch.equal(second.labels, again.labels)
    assert not torch.equal(first.labels, second.labels)
    picked = first.labels != -100
    assert 0.08 < picked.float().mean().item() < 0.22  # 15% of 1,024 characters
    mask_id = tokenizer.vocab_size  # one past the tokenizer's ids, as the model knows
    assert (first.input_ids[picked] == mask_id).float().mean() > 0.6
    assert (first.input_ids[~picked] != mask_id).all()
    assert build_model(recipe, tokenizer).config.vocab_size == tokenizer.vocab_size + 1


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match=r"mask_probability must be in \(0, 1\); got 1.5"):
        load_recipe(CONFIG, ["mask_probability=1.5"])
    with pytest.raises(ConfigError, match=r"model\.vocab_size is set from the tokenizer"):
        load_recipe(CONFIG, ["model.vocab_size=10"])
    with pytest.raises(ConfigError, match="model"):
        load_recipe(CONFIG, ["model.attention=spiral"])
