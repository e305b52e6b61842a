"""``attnkit bench train``: runs every implementation end to end on tiny sizes, reports,
turns failures into error records and rejects bad input.

Only presence and sanity of the numbers are checked: speed is recorded by benchmark
runs (docs/benchmarks.md), never asserted by the test suite.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from unittest import mock

import pytest
import torch

from attnkit.bench import main
from attnkit.bench import train as train_bench
from attnkit.bench.report import render_train_markdown
from attnkit.bench.train import (
    DEFAULT_IMPLS,
    IMPLEMENTATIONS,
    TrainCase,
    TrainImplementation,
    TrainSettings,
    make_batches,
    run_worker,
)

# aot_eager: dynamo + AOT autograd without code generation, so the compiled path is
# exercised in seconds; the inductor backend is what the real benchmark runs.
TINY = ["--d-model", "32", "--heads", "2", "--layers", "1", "--d-ff", "64", "--vocab", "100"]
TINY += ["--batch", "4", "--seq-len", "8", "--steps", "2", "--warmup", "1", "--threads", "1"]
TINY += ["--compile-backend", "aot_eager"]
TINY_CASE = TrainCase(batch=4, seq_len=8, vocab=100, d_model=32, heads=2, layers=1, d_ff=64)
MIB = 2**20
ENV = {
    "cpu": "Test CPU",
    "cores": 2,
    "logical_cpus": 2,
    "platform": "Linux",
    "python": "3.11",
    "torch": "2.x",
    "ram_bytes": 8 * 2**30,
}


def _available(impl: str) -> bool:
    return IMPLEMENTATIONS[impl].available() is None


@pytest.mark.slow
def test_tiny_run_records_and_reports_every_implementation(tmp_path: Path, capsys):
    """Each implementation in its own worker; JSON and markdown hold all of them."""
    code = main(["train", *TINY, "--output", str(tmp_path)])
    records = json.loads((tmp_path / "train.json").read_text())
    markdown = (tmp_path / "train.md").read_text()
    by_impl = {r["impl"]: r for r in records}
    assert list(by_impl) == list(DEFAULT_IMPLS)
    for impl, r in by_impl.items():
        if not _available(impl):
            assert r["status"] == "skipped" and r["skip_reason"] == "unavailable", r
            assert f"- {impl}: left out:" in markdown
            continue
        if impl == "attnkit_compiled" and r["status"] == "error":
            assert r["message"], r  # a compiler failure is recorded, not raised
            assert f"- {impl}: error: " in markdown
            continue
        assert r["status"] == "ok", r
        assert r["tokens_per_s"] > 0 and r["step_s"] > 0
        assert r["tokens_per_s"] == pytest.approx(4 * 8 / r["step_s"])
        assert len(r["step_times_s"]) == r["steps"] == 2 and r["warmup"] == 1
        assert r["threads"] == 1 and r["parameters"] > 0
        assert r["peak_mem_bytes"] >= r["step_mem_bytes"] >= 0
        assert torch.isfinite(torch.tensor([r["first_loss"], r["last_loss"]])).all()
        assert f"| {impl} | " in markdown
    assert code == (1 if any(r["status"] == "error" for r in records) else 0)
    assert capsys.readouterr().out.startswith(markdown)

    assert by_impl["attnkit"]["optimizer"] == "AdamW(fused=True)"
    assert by_impl["attnkit"]["tie_output"] is True
    assert by_impl["torch_transformer"]["optimizer"] == "AdamW()"
    assert by_impl["torch_transformer"]["parameters"] > by_impl["attnkit"]["parameters"]
    assert "aot_eager" in by_impl["attnkit_compiled"].get("compiled", "aot_eager")
    assert "## Training throughput" in markdown
    assert "| torch_transformer | " in markdown and "| 1.00x |" in markdown
    assert "torch threads: 1" in markdown and "d_model=32" in markdown


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--impls", "attnkit,nope"], "--impls: expected comma-separated names from"),
        (["train", "--d-model", "30", "--heads", "4"], "--d-model (30) must be divisible"),
        (["train", "--dtype", "fp16"], "supports fp32 and bf16"),
        (["train", "--steps", "0"], "--steps: expected a positive integer"),
        (["train", "--rounds", "0"], "--rounds: expected a positive integer"),
        (["train", "--batch", "x"], "--batch: expected a positive integer"),
        (["train", "--vocab", "3"], "--vocab: expected at least 4"),
        (["train", "--warmup", "-1"], "--warmup: expected an integer >= 0"),
        (["train", "--warmup", "0"], "attnkit_compiled needs at least 1 warm-up step"),
        (["train", "--compile-mode", "fast"], "--compile-mode: invalid choice"),
        (["train", "--device", "tpu"], "--device: expected cpu, cuda or cuda:N"),
    ],
)
def test_bad_arguments_give_a_clear_error(argv, expected, capsys, tmp_path):
    assert main([*argv, "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "usage: attnkit bench train" in err
    assert expected in err
    assert not (tmp_path / "train.json").exists()


def test_help_lists_the_options(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--seq-len", "--d-ff", "--impls", "--compile-mode", "--threads", "--dtype"):
        assert option in out


def test_batches_are_seeded_shifted_and_a_little_padded():
    case = TrainCase(batch=16, seq_len=16, vocab=50)
    batches = make_batches(case, seed=3)
    again = make_batches(case, seed=3)
    assert len(batches) == case.num_batches
    for batch, same in zip(batches, again, strict=True):
        for name in ("src", "tgt_in", "tgt_out"):
            tensor = getattr(batch, name)
            assert tensor.shape == (16, 16) and tensor.dtype == torch.int64
            assert torch.equal(tensor, getattr(same, name))
            assert int(tensor.min()) >= 0 and int(tensor.max()) < 50
            # Padding only at the end of a row, at most 1/8 of it.
            pad = tensor == case.pad_id
            assert torch.equal(pad, pad.cummax(dim=1).values)
        assert torch.equal(batch.tgt_in[:, 1:], batch.tgt_out[:, :-1])  # teacher forcing
        assert (batch.src != case.pad_id).sum(1).min() >= 16 - 2
    assert not torch.equal(batches[0].src, make_batches(case, seed=4)[0].src)


def test_case_validation():
    with pytest.raises(ValueError, match=r"d_model \(30\) must be divisible by heads \(4\)"):
        TrainCase(d_model=30, heads=4)
    with pytest.raises(ValueError, match="dtype must be one of"):
        TrainCase(dtype="float16")
    assert TrainCase().target_tokens == 32 * 32


@pytest.mark.parametrize("impl", ["torch_transformer", "attnkit"])
def test_worker_measures_in_process(impl):
    """The worker hook itself (no subprocess): one warm-up and two timed steps."""
    payload = {"impl": impl, "case": asdict(TINY_CASE), "steps": 2, "warmup": 1, "seed": 0}
    result = run_worker(payload)
    assert result["status"] == "ok", result
    assert result["tokens_per_s"] == pytest.approx(32 / result["step_s"])
    assert result["first_loss"] > 0


def test_matmul_floor_multiplies_exactly_the_models_linear_maps():
    """Every weight matrix of attnkit's Transformer once per batch (its output head is tied
    to the target embedding), and the worker times those products alone."""
    model = train_bench._attnkit_transformer(TINY_CASE)
    linear = [p for name, p in model.named_parameters() if p.dim() == 2 and "embedding" not in name]
    head = TINY_CASE.vocab * TINY_CASE.d_model
    products = train_bench.encoder_decoder_products(TINY_CASE)
    assert {rows for rows, _, _ in products} == {TINY_CASE.batch * TINY_CASE.seq_len}
    assert sum(i * o for _, i, o in products) == sum(p.numel() for p in linear) + head
    payload = {"impl": "matmul_floor", "case": asdict(TINY_CASE), "steps": 2, "warmup": 1}
    result = run_worker({**payload, "seed": 0})
    assert result["status"] == "ok" and result["floor"] is True, result
    assert result["parameters"] == sum(p.numel() for p in model.parameters())


def test_matmul_floor_multiplies_in_the_autocast_dtype():
    """Under bf16 autocast the others' products run in bf16: a float32 floor was no floor."""
    case = TrainCase(**{**asdict(TINY_CASE), "dtype": "bfloat16"})
    seen = []
    real_mm = torch.mm

    def recording_mm(left, right):
        seen.append((left.dtype, right.dtype))
        return real_mm(left, right)

    step = IMPLEMENTATIONS["matmul_floor"].build(case)
    with mock.patch.object(torch, "mm", recording_mm):
        step.step(None)
    assert seen and set(seen) == {(torch.bfloat16, torch.bfloat16)}


def test_a_failure_becomes_a_short_error_record():
    def broken(case: TrainCase):
        raise RuntimeError("backend compiler failed\n" + "details\n" * 500 + "last line")

    fake = TrainImplementation("broken", "always fails", broken)
    with mock.patch.dict(IMPLEMENTATIONS, {"broken": fake}):
        result = run_worker({"impl": "broken", "case": asdict(TINY_CASE), "steps": 1, "warmup": 1})
    assert result["status"] == "error"
    assert result["message"].startswith("RuntimeError: backend compiler failed")
    assert result["message"].endswith("last line")
    assert len(result["message"]) <= train_bench.MAX_MESSAGE


def test_unavailable_implementation_is_skipped_without_a_worker():
    fake = TrainImplementation("absent", "needs a library", lambda case: None, lambda: "no lib")
    with mock.patch.dict(IMPLEMENTATIONS, {"absent": fake}):
        record = train_bench.run_impl(TrainSettings(case=TINY_CASE), "absent")
    assert record["status"] == "skipped" and record["skip_reason"] == "unavailable"
    assert record["message"] == "no lib"


def _ok(impl: str, step_s: float, **extra) -> dict:
    return {
        "impl": impl,
        "status": "ok",
        "message": "",
        "tokens_per_s": 1024 / step_s,
        "step_s": step_s,
        "step_min_s": step_s,
        "step_max_s": step_s,
        "step_times_s": [step_s, step_s],
        "warmup_s": 1.0,
        "peak_mem_bytes": 300 * MIB,
        "step_mem_bytes": 100 * MIB,
        "parameters": 1000,
        "threads": 2,
        "mem_method": "rss_vmhwm",
        **extra,
    }


def test_report_ratios_errors_and_left_out_rows():
    settings = TrainSettings(impls=DEFAULT_IMPLS)
    records = [
        _ok("torch_transformer", 0.400, optimizer="AdamW()"),
        {
            "impl": "hf_bart",
            "status": "skipped",
            "skip_reason": "unavailable",
            "message": "transformers is not importable",
        },
        _ok("hf_marian", 0.500, transformers="9.9", step_times_s=[0.5, 1.0]),
        _ok("attnkit", 0.320, optimizer="AdamW(fused=True)"),
        {"impl": "attnkit_compiled", "status": "error", "message": "InductorError: no compiler"},
    ]
    markdown = render_train_markdown(records, settings, ENV)
    assert "| torch_transformer | 2,560 | 1.00x | 400 |" in markdown
    assert "| attnkit | 3,200 | 1.25x | 320 |" in markdown
    assert "| hf_marian | 2,048 | 0.80x |" in markdown
    assert "| attnkit_compiled | error |" in markdown
    assert "- attnkit_compiled: error: InductorError: no compiler" in markdown
    assert "| hf_bart | " not in markdown
    assert "- hf_bart: left out: transformers is not importable" in markdown
    assert "transformers 9.9" in markdown
    assert "[ran with: AdamW(fused=True)]" in markdown
    assert "timing noise: in 1 of 3 implementations" in markdown
    assert "Test CPU, 2 usable cores" in markdown and "torch threads: 2" in markdown


def test_rounds_report_the_fastest_round_of_each_implementation():
    settings = TrainSettings(impls=("torch_transformer", "attnkit"), rounds=2)
    records = [
        _ok("torch_transformer", 0.400, round=0),
        _ok("attnkit", 2.000, round=0),  # a busy spell
        _ok("torch_transformer", 0.500, round=1),
        _ok("attnkit", 0.320, round=1),
    ]
    best = train_bench.best_records(records)
    assert best["torch_transformer"]["round"] == 0 and best["attnkit"]["round"] == 1
    markdown = render_train_markdown(records, settings, ENV)
    assert "| attnkit | 3,200 | 1.25x | 320 |" in markdown
    assert "every implementation ran 2 times" in markdown
    assert "  - attnkit: 512 / 3,200" in markdown

    failed_then_ok = [{"impl": "attnkit", "status": "error", "message": "x", "round": 0}]
    failed_then_ok.append(_ok("attnkit", 0.5, round=1))
    assert train_bench.best_records(failed_then_ok)["attnkit"]["status"] == "ok"
    assert train_bench.best_records(failed_then_ok[:1])["attnkit"]["status"] == "error"
