"""The shakespeare_char recipe end to end on a slice: train, learn, resume, generate."""

import dataclasses
import io
import json
from pathlib import Path

import pytest

from attnkit.cli import main
from attnkit.recipes import ConfigError, load_recipe, run_recipe
from attnkit.recipes.language_model import generate_text, load_language_model

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


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A language-model run of 3 steps (the recipe samples with temperature 0.8, top_k 200)."""
    run = tmp_path_factory.mktemp("lm") / "run"
    overrides = [*TINY, f"output_dir={run}", "train.max_steps=3", "eval_batches=2"]
    run_recipe(load_recipe(CONFIG, [*overrides, "train.progress=false"]))
    return run


def _generate(run: Path, options: list[str], monkeypatch, capsys, prompt: str = "ROMEO:") -> str:
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO(prompt + "\n"))
    assert main(["generate", "--checkpoint", str(run), *options]) == 0
    return capsys.readouterr().out.removesuffix("\n")  # the newline print adds


def _direct(run: Path, **settings) -> str:
    """generate_text with the run's model and sample settings, some replaced."""
    model, tokenizer, recipe = load_language_model(run)
    return generate_text(model, tokenizer, dataclasses.replace(recipe.sample, **settings))


def test_generate_keeps_the_run_sample_settings_unless_given(tiny_run, monkeypatch, capsys):
    recipe = load_language_model(tiny_run)[2]
    assert (recipe.sample.temperature, recipe.sample.top_k) == (0.8, 200)
    out = _generate(tiny_run, [], monkeypatch, capsys)
    assert len(out) == len("ROMEO:") + 20  # the recipe's sample.max_new_tokens
    assert out == _direct(tiny_run, prompt="ROMEO:")
    given = ["--temperature", "1.5", "--top-k", "0", "--seed", "3", "--max-new-tokens", "9"]
    out = _generate(tiny_run, given, monkeypatch, capsys)
    expected = _direct(
        tiny_run, prompt="ROMEO:", temperature=1.5, top_k=None, seed=3, max_new_tokens=9
    )
    assert out == expected


def test_generate_passes_top_p_and_repetition_penalty(tiny_run, monkeypatch, capsys):
    greedy = _generate(tiny_run, ["--top-k", "1"], monkeypatch, capsys)
    assert _generate(tiny_run, ["--top-p", "0.01"], monkeypatch, capsys) == greedy
    assert _generate(tiny_run, ["--top-p", "1"], monkeypatch, capsys) != greedy
    penalised = _generate(
        tiny_run, ["--top-k", "1", "--repetition-penalty", "50"], monkeypatch, capsys
    )
    assert penalised == _direct(tiny_run, prompt="ROMEO:", top_k=1, repetition_penalty=50.0)
    assert penalised != greedy


def test_sample_settings_are_checked_when_the_recipe_loads(tiny_run, monkeypatch, capsys):
    with pytest.raises(ConfigError, match=r"sample: top_p must be in \(0, 1\]; got 1.5"):
        load_recipe(CONFIG, ["sample.top_p=1.5"])
    with pytest.raises(ConfigError, match="sample: repetition_penalty must be a finite number > 0"):
        load_recipe(CONFIG, ["sample.repetition_penalty=0"])
    assert load_recipe(CONFIG, ["sample.top_p=0.9"]).sample.top_p == 0.9
    monkeypatch.setattr("sys.stdin", io.StringIO("ROMEO:\n"))
    assert main(["generate", "--checkpoint", str(tiny_run), "--top-p", "2"]) == 2
    assert "attnkit generate: error: top_p must be in (0, 1]; got 2.0" in capsys.readouterr().err


def test_loading_a_run_of_another_task_names_both_tasks(tmp_path):
    (tmp_path / "recipe.yaml").write_text("task: translation\nname: x\n")
    with pytest.raises(ValueError, match=r"is not a language_model run \(task: translation\)"):
        load_language_model(tmp_path)
