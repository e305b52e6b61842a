"""Shared pieces of the translation recipe tests (Transformer, T5, RNN): the overrides of
a tiny run, training it through the CLI and translating stdin with the trained run."""

import io
import json
from pathlib import Path

from attnkit.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Data, validation and decoding of a run that takes seconds; each test adds its model's size.
TINY_RUN = [
    "data.limit_train=300",
    "data.limit_valid=30",
    "data.limit_test=30",
    "data.vocab_size=400",
    "data.max_tokens=800",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "train.warmup_steps=2",
    "valid_bleu_sentences=10",
    "decode.beam_size=2",
    "decode.max_len_b=5",
]


def train_tiny(config: Path, run: Path, options: list[str], steps: int = 6) -> dict:
    """Train ``config`` with ``options`` for ``steps`` steps into ``run``; returns its
    results.json after checking the step count and that test BLEU is a percentage."""
    args = ["train", str(config), f"output_dir={run}", *options, f"train.max_steps={steps}"]
    assert main(args) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["summary"]["steps"] == steps and 0.0 <= results["test"]["bleu"] <= 100.0
    return results


def translate_stdin(run: Path, text: str, monkeypatch, capsys) -> str:
    """``attnkit translate --beam-size 2`` of the run on the lines of ``text``; its stdout."""
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert main(["translate", "--checkpoint", str(run), "--beam-size", "2"]) == 0
    return capsys.readouterr().out
