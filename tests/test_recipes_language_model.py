"""The shakespeare_char recipe end to end on a slice: train, learn, resume, generate."""

import io
import json
from pathlib import Path

import pytest

from attnkit.cli import main
from attnkit.recipes import ConfigError, load_recipe, run_recipe

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "shakespeare_char.yaml"
TINY = [
    "data.limit_chars=20000",
    "data.block_size=32",
    "model.d_model=32",
    "model.num_heads=2",
    "model.num_layers=1",
    "train.eval_every=20",
    "train.checkpoint_every=20",
    "train.warmup_steps=5",
    "train.lr=5e-3",
    "eval_batches=10",
    "sample.max_new_tokens=20",
]


@pytest.mark.slow
def test_train_learns_resumes_and_generates(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    args = ["train", str(CONFIG), f"output_dir={run}", *TINY]
    assert main([*args, "train.max_steps=40"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["summary"]["steps"] == 40
    # 69 symbols: a uniform guess costs ln(69) = 4.23 nats; 40 steps must learn frequencies.
    assert results["val_loss"] < 3.6
    assert results["val_bpc"] == pytest.approx(results["val_loss"] / 0.6931471805599453)
    assert (run / "train.bin").is_file() and (run / "val.bin").is_file()
    assert len(results["sample"]) > 1

    assert main([*args, "train.max_steps=60", "--resume"]) == 0
    assert json.loads((run / "results.json").read_text())["summary"]["steps"] == 60

    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("ROMEO:\n"))
    assert main(["generate", "--checkpoint", str(run), "--max-new-tokens", "15"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and len(out.rstrip("\n")) == len("ROMEO:") + 15


def test_a_seed_reproduces_the_run_initial_weights_included(tmp_path, capsys):
    def final_val_loss(run: str, seed: int) -> float:
        overrides = [*TINY, f"output_dir={tmp_path / run}", f"train.seed={seed}"]
        recipe = load_recipe(CONFIG, [*overrides, "train.max_steps=3", "eval_batches=2"])
        return run_recipe(recipe)["val_loss"]

    first = final_val_loss("a", seed=5)
    assert final_val_loss("b", seed=5) == first
    assert final_val_loss("c", seed=6) != first


def test_config_errors_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.vocab_size is set from the tokenizer"):
        load_recipe(CONFIG, ["model.vocab_size=10"])
    with pytest.raises(ConfigError, match=r"data.train_fraction must be in \(0, 1\); got 1.5"):
        load_recipe(CONFIG, ["data.train_fraction=1.5"])
    with pytest.raises(ConfigError, match="model"):
        load_recipe(CONFIG, ["model.positional=spiral"])


def test_missing_corpus_is_named(tmp_path, capsys):
    args = ["train", str(CONFIG), f"output_dir={tmp_path}", f"data.root={tmp_path}"]
    assert main(args) == 2
    assert "input.txt: corpus not found" in capsys.readouterr().err
