"""``attnkit bench scaling``: builds every variant at short lengths, runs end to end,
fits log-log slopes, skips over the memory budget, rejects bad input.

Numbers are not asserted beyond being present and sane: speed and memory are
recorded by benchmark runs, never by timed assertions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from attnkit.bench import main
from attnkit.bench.attention import AttentionSettings, Case
from attnkit.bench.report_scaling import (
    log_log_slope,
    ratios_line,
    render_scaling_markdown,
    slopes,
)
from attnkit.bench.scaling import (
    DEFAULT_IMPLS,
    IMPLEMENTATIONS,
    lsh_buckets_for,
    prepare,
    run_scaling,
    scaled,
)

TINY = ["--heads", "2", "--head-dim", "16", "--min-time", "0.001", "--max-repeats", "1"]
TINY += ["--threads", "1"]
MIB = 2**20
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ENV = {
    "cpu": "Test CPU",
    "cores": 2,
    "logical_cpus": 2,
    "platform": "Linux",
    "python": "3.11",
    "torch": "2.x",
    "ram_bytes": 16 * 2**30,
}


def _run(out: Path, *args: str) -> tuple[int, list[dict], str]:
    """Run the benchmark into ``out``; return the exit code, JSON records and markdown."""
    code = main(["scaling", *TINY, "--output", str(out), *args])
    records = json.loads((out / "scaling.json").read_text())
    return code, records, (out / "scaling.md").read_text()


# --------------------------------------------------------------------------- builders


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("seq_len", [1, 16, 64, 100])
@pytest.mark.parametrize("impl", DEFAULT_IMPLS)
def test_every_variant_runs_forward_and_backward_at_short_lengths(impl, seq_len, causal):
    """Sizes shrink to T // 2, so even the worker's 16-position warm-up case runs."""
    case = {"seq_len": seq_len, "batch": 1, "heads": 2, "head_dim": 8, "causal": causal}
    prepared = prepare(impl, case)
    inputs = tuple(t.detach().requires_grad_() for t in prepared.inputs)
    out = prepared.fn(*inputs)
    assert out.shape == (1, 2, seq_len, 8) == prepared.grad_output.shape
    grads = torch.autograd.grad(out, inputs, prepared.grad_output)
    assert all(torch.isfinite(t).all() for t in (out, *grads))


def test_sizes_adapt_to_short_sequences():
    assert scaled(256, 16384) == 256 and scaled(256, 300) == 150 and scaled(64, 1) == 1
    assert [lsh_buckets_for(t) for t in (16, 128, 192, 1024, 16384)] == [2, 2, 4, 16, 256]


def test_estimates_grow_quadratically_only_for_dense_math():
    """Not causal, so block-sparse uses the banded (linear) layout."""

    def growth(name: str) -> float:
        estimate = IMPLEMENTATIONS[name].estimate
        return estimate(Case(16384, batch=1, causal=False)) / estimate(
            Case(8192, batch=1, causal=False)
        )

    assert growth("dense_math") > 3.5
    for name in DEFAULT_IMPLS:
        if name != "dense_math":
            assert growth(name) < 2.2, name


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_tiny_run_writes_json_markdown_and_plot(tmp_path, capsys):
    impls = "dense_math,sliding_window,lsh"
    code, records, markdown = _run(tmp_path, "--seq-lens", "64,128", "--impls", impls)
    assert code == 0
    assert capsys.readouterr().out.startswith(markdown)
    assert [(r["impl"], r["T"]) for r in records] == [
        (impl, t) for t in (64, 128) for impl in impls.split(",")
    ]
    for r in records:
        assert r["status"] == "ok", r
        assert r["B"] == 1 and r["H"] == 2 and r["causal"] is True
        assert r["fwd_bwd_s"] > 0 and r["threads"] == 1
        assert isinstance(r["peak_mem_bytes"], int) and r["peak_mem_bytes"] >= 0
    assert (tmp_path / "scaling.png").read_bytes().startswith(PNG_MAGIC)
    for title in ("Forward + backward time (ms)", "Peak memory, forward + backward (MiB)"):
        assert f"## {title}" in markdown
    assert "# attnkit scaling benchmark" in markdown and "| impl | T=64 | T=128 |" in markdown
    assert "- ratios: sliding_window / dense_math at T=128" in markdown
    assert "| lsh | " in markdown and "![" in markdown and "(scaling.png)" in markdown


@pytest.mark.slow
def test_every_variant_runs_in_its_worker(tmp_path):
    code, records, _ = _run(tmp_path, "--seq-lens", "64", "--no-causal")
    assert code == 0
    assert [r["impl"] for r in records] == list(DEFAULT_IMPLS)
    assert all(r["status"] == "ok" and r["causal"] is False for r in records), records


def test_cases_over_the_memory_budget_are_skipped(tmp_path, capsys):
    """Everything estimated over 0.1 GiB is skipped without starting a worker."""
    args = ("--seq-lens", "8192", "--impls", "dense_math,linear", "--memory-budget-gb", "0.1")
    code, records, markdown = _run(tmp_path, *args)
    assert code == 0
    capsys.readouterr()
    for r in records:
        assert r["status"] == "skipped" and r["skip_reason"] == "memory_budget"
        assert r["est_peak_mem_bytes"] > 0.1 * 2**30
        assert "exceeds the memory budget 0.1 GiB" in r["message"]
    assert "| dense_math | skipped |" in markdown
    assert "dense_math T=8192: skipped: estimated peak" in markdown
    assert "(no length where both ran)" in markdown
    assert (tmp_path / "scaling.png").read_bytes().startswith(PNG_MAGIC)


def test_the_default_lengths_skip_dense_math_first():
    """Under a 2 GiB budget dense math is skipped at T=16384 while the sliding window
    fits; the skipped case starts no worker."""
    budget = 2 * 2**30
    long = Case(16384, batch=1)
    assert IMPLEMENTATIONS["dense_math"].estimate(long) > budget
    assert IMPLEMENTATIONS["sliding_window"].estimate(long) < budget
    settings = AttentionSettings(
        seq_lens=(16384,), batch=1, impls=("dense_math",), memory_budget_bytes=budget
    )
    [record] = run_scaling(settings)
    assert record["status"] == "skipped" and record["skip_reason"] == "memory_budget"


# --------------------------------------------------------------------------- slopes, report


def _record(impl: str, t: int, seconds: float, peak: float, status: str = "ok") -> dict:
    return {
        "impl": impl,
        "T": t,
        "status": status,
        "message": "" if status == "ok" else "boom",
        "fwd_bwd_s": seconds,
        "peak_mem_bytes": int(peak),
        "threads": 2,
        "mem_method": "rss_vmhwm",
    }


LENGTHS = (512, 1024, 2048, 4096)


def _made_up_records() -> list[dict]:
    """dense_math: quadratic time and memory; sliding_window: linear, failing at T=4096."""
    records = [_record("dense_math", t, 1e-8 * t**2, 16 * t**2) for t in LENGTHS]
    records += [_record("sliding_window", t, 2e-6 * t, 3e4 * t) for t in LENGTHS[:-1]]
    records.append(_record("sliding_window", 4096, 0.0, 0, status="error"))
    return records


def test_log_log_slope_on_power_laws():
    assert log_log_slope([(t, 3.0 * t**2) for t in LENGTHS]) == pytest.approx(2.0)
    assert log_log_slope([(t, 5.0 * t) for t in LENGTHS]) == pytest.approx(1.0)
    noisy = [(512, 1.0), (1024, 2.2), (2048, 3.9)]
    expected = math.log(3.9) / math.log(4)  # least squares through three points
    assert log_log_slope(noisy) == pytest.approx(expected, rel=0.05)
    assert log_log_slope([(512, 1.0)]) is None
    assert log_log_slope([(512, 1.0), (512, 2.0)]) is None
    assert log_log_slope([(512, 0.0), (1024, 4.0), (2048, 16.0)]) == pytest.approx(2.0)


def test_slopes_use_only_successful_records():
    records = _made_up_records()
    assert slopes(records, "dense_math") == pytest.approx({"memory": 2.0, "time": 2.0})
    assert slopes(records, "sliding_window") == pytest.approx({"memory": 1.0, "time": 1.0})
    assert slopes(records, "lsh") == {"memory": None, "time": None}


def test_report_gives_ratios_at_the_largest_common_length_and_slopes():
    records = _made_up_records()
    settings = AttentionSettings(seq_lens=LENGTHS, batch=1, impls=DEFAULT_IMPLS)
    markdown = render_scaling_markdown(records, settings, ENV)
    lookup = {(r["impl"], r["T"]): r for r in records}
    t = 2048
    time_ratio = (2e-6 * t) / (1e-8 * t**2)
    memory_ratio = int(3e4 * t) / (16 * t**2)
    line = ratios_line(lookup, LENGTHS)
    assert line.startswith("- ratios: sliding_window / dense_math at T=2048")
    assert f"fwd+bwd time {time_ratio:.2f}x, peak memory {memory_ratio:.2f}x" in line
    assert line in markdown
    assert "| dense_math | 2.00 | 2.00 | 512, 1024, 2048, 4096 |" in markdown
    assert "| sliding_window | 1.00 | 1.00 | 512, 1024, 2048 |" in markdown
    assert "| sliding_window | 1.02 | 2.05 | 4.10 | error |" in markdown
    assert "| lsh |" not in markdown  # no record at all
    assert "sliding_window T=4096: error: boom" in markdown
    assert "Test CPU, 2 usable cores" in markdown and "B=1, H=8, Dh=64" in markdown


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--seq-lens", "64,abc"], "--seq-lens: expected comma-separated"),
        (["--seq-lens", "0"], "--seq-lens"),
        (["--impls", "attnkit_fused"], "--impls: expected comma-separated names from dense_fused"),
        (["--impls", ""], "--impls: expected comma-separated names"),
        (["--memory-budget-gb", "0"], "--memory-budget-gb: expected a positive"),
        (["--max-repeats", "0"], "--max-repeats: expected a positive integer"),
        (["--min-time", "-1"], "--min-time: expected a number >= 0"),
        (["--timeout", "0"], "--timeout: expected a positive number"),
        (["--threads", "two"], "--threads: expected a positive integer"),
        (["--dtype", "int8"], "--dtype: expected one of fp32, bf16, fp16"),
    ],
)
def test_bad_arguments_give_a_clear_error(argv, expected, capsys):
    assert main(["scaling", *argv]) == 2
    err = capsys.readouterr().err
    assert "usage: attnkit bench scaling" in err
    assert expected in err


def test_help_lists_the_options(capsys):
    assert main(["scaling", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--seq-lens", "--impls", "--no-causal", "--memory-budget-gb", "--output"):
        assert option in out
    assert "512,1024,2048,4096,8192,16384" in out and "scaling.png" in out
