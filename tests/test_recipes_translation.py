"""End to end through the CLI: train a tiny Multi30k model, resume, translate, evaluate."""

import io
import json
from pathlib import Path

import pytest

from attnkit.cli import main
from translation_helpers import CONFIGS, TINY_RUN, train_tiny, translate_stdin

CONFIG = CONFIGS / "multi30k_de_en.yaml"
TINY = [
    *TINY_RUN,
    "model.d_model=32",
    "model.num_heads=2",
    "model.num_encoder_layers=1",
    "model.num_decoder_layers=1",
    "model.d_ff=64",
    "train.progress=false",
]


def _steps(run: Path) -> list[int]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return sorted({r["step"] for r in records if "loss" in r})


@pytest.mark.slow
def test_train_resume_translate_evaluate(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    results = train_tiny(CONFIG, run, TINY)
    assert "nrefs:1" in results["test"]["bleu_signature"]
    assert len((run / "test.hyp.txt").read_text().splitlines()) == 30
    assert (run / "tokenizer.json").is_file() and (run / "recipe.yaml").is_file()

    args = ["train", str(CONFIG), f"output_dir={run}", *TINY]
    assert main([*args, "train.max_steps=9", "--resume"]) == 0
    assert json.loads((run / "results.json").read_text())["summary"]["steps"] == 9
    assert _steps(run)[-1] == 9

    text = "Ein Hund läuft.\nZwei Männer spielen.\n"
    assert len(translate_stdin(run, text, monkeypatch, capsys).splitlines()) == 2

    assert (
        main(["evaluate", "--checkpoint", str(run), "--split", "test", "--strategy", "greedy"]) == 0
    )
    scores = json.loads(capsys.readouterr().out)
    assert scores["sentences"] == 30 and "bleu_signature" in scores


def test_bad_config_keys_and_values_are_reported(tmp_path, capsys):
    assert main(["train", str(CONFIG), "model.d_modle=64"]) == 2
    assert "unknown key(s) ['model.d_modle']" in capsys.readouterr().err
    assert main(["train", str(CONFIG), "train.lr=fast"]) == 2
    assert "train.lr must be float; got str 'fast'" in capsys.readouterr().err
    assert main(["train", str(CONFIG), "data.tokenizer=spaces"]) == 2
    assert (
        "data.tokenizer must be one of ['bpe', 'wordpiece', 'unigram']" in capsys.readouterr().err
    )
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_missing_run_directory_is_reported(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path)]) == 2
    assert "is not a translation run" in capsys.readouterr().err


T5_CONFIG = CONFIG.with_name("multi30k_t5_de_en.yaml")
T5_TINY = [
    *TINY_RUN,
    "train.progress=false",
    "model.d_model=32",
    "model.d_kv=16",
    "model.num_heads=2",
    "model.num_layers=1",
    "model.d_ff=64",
]


@pytest.mark.slow
def test_t5_recipe_trains_and_translates_with_its_task_prefix(tmp_path, monkeypatch, capsys):
    from attnkit.models import T5
    from attnkit.recipes.translation import load_translator

    run = tmp_path / "t5"
    train_tiny(T5_CONFIG, run, T5_TINY)
    translator = load_translator(run)
    assert isinstance(translator.model, T5)
    assert translator.source_prefix == "translate German to English: "
    assert len(translate_stdin(run, "Ein Hund läuft.\n", monkeypatch, capsys).splitlines()) == 1


def test_t5_recipe_config_errors_are_named():
    from attnkit.recipes import ConfigError, load_recipe

    with pytest.raises(ConfigError, match=r"model\.vocab_size is set from the tokenizer"):
        load_recipe(T5_CONFIG, ["model.vocab_size=100"])
    with pytest.raises(ConfigError, match=r"model\.architecture must be one of"):
        load_recipe(T5_CONFIG, ["model.architecture=lstm"])
    with pytest.raises(ConfigError, match=r"activation must be .relu., .gelu."):
        load_recipe(T5_CONFIG, ["model.activation=swish"])


def test_translations_stay_on_one_line():
    from attnkit.recipes.translation import one_line

    assert one_line("a dog\nruns\r\x0b fast ") == "a dog runs fast"
    assert one_line("") == ""


@pytest.mark.parametrize("command", ["evaluate", "translate"])
def test_a_run_of_another_task_is_named(command, tmp_path, monkeypatch, capsys):
    (tmp_path / "recipe.yaml").write_text("task: language_model\nname: lm\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    assert main([command, "--checkpoint", str(tmp_path)]) == 2
    expected = f"{tmp_path} is not a translation run (task: language_model)"
    assert capsys.readouterr().err == f"attnkit {command}: error: {expected}\n"
