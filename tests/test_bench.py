"""``attnkit bench attention``: runs end to end on tiny sizes, skips, reports, rejects bad input.

The benchmark's numbers are not asserted here beyond being present and sane:
speed and memory are recorded by benchmark runs, never by timed assertions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from attnkit.bench import main
from attnkit.bench.attention import (
    DEFAULT_IMPLS,
    IMPLEMENTATIONS,
    AttentionSettings,
    Case,
    naive_attention,
)
from attnkit.bench.measure import run_in_worker
from attnkit.bench.report import render_markdown

TINY = ["--batch", "1", "--heads", "2", "--head-dim", "8", "--min-time", "0.001"]
TINY += ["--max-repeats", "1", "--threads", "1"]
MIB = 2**20


def _run(out: Path, *args: str) -> tuple[int, list[dict], str]:
    """Run the benchmark into ``out``; return the exit code, JSON records and markdown."""
    code = main(["attention", *TINY, "--output", str(out), *args])
    records = json.loads((out / "attention.json").read_text())
    return code, records, (out / "attention.md").read_text()


def _mha_available() -> bool:
    return IMPLEMENTATIONS["attnkit_mha"].available() is None


@pytest.mark.slow
def test_tiny_run_records_and_reports_every_implementation(tmp_path, capsys):
    """Every implementation at T = 32, 64, one fresh worker process per case."""
    code, records, markdown = _run(tmp_path, "--seq-lens", "32,64")
    assert code == 0
    assert capsys.readouterr().out.startswith(markdown)
    assert {(r["impl"], r["T"]) for r in records} == {
        (impl, t) for impl in DEFAULT_IMPLS for t in (32, 64)
    }
    for r in records:
        if r["impl"] == "attnkit_mha" and not _mha_available():
            assert r["status"] == "skipped" and r["skip_reason"] == "unavailable"
            continue
        assert r["status"] == "ok", r
        assert r["fwd_s"] > 0 and r["fwd_bwd_s"] > 0
        assert r["fwd_repeats"] == r["fwd_bwd_repeats"] == 1
        assert r["threads"] == 1
        for key in ("peak_mem_bytes", "fwd_peak_mem_bytes", "baseline_mem_bytes"):
            assert isinstance(r[key], int) and r[key] >= 0, (key, r)
        assert r["baseline_mem_bytes"] > 0 and r["est_peak_mem_bytes"] > 0

    for title in ("Forward time", "Forward + backward time", "Peak memory", "Ratios"):
        assert f"## {title}" in markdown
    assert "| impl | T=32 | T=64 |" in markdown
    for impl in DEFAULT_IMPLS:
        if impl != "attnkit_mha" or _mha_available():
            assert f"| {impl} |" in markdown
    assert "torch 2." in markdown and "torch threads: 1" in markdown
    assert "attnkit_fused / torch_sdpa" in markdown


@pytest.mark.slow
def test_peak_memory_sees_the_score_matrix(tmp_path):
    """Naive attention holds several (B, H, T, T) matrices; the fused kernel none."""
    code, records, _ = _run(tmp_path, "--seq-lens", "1024", "--impls", "naive,torch_sdpa")
    assert code == 0
    peak = {r["impl"]: r["peak_mem_bytes"] for r in records}
    scores = 1 * 2 * 1024 * 1024 * 4  # B * H * T * T float32
    assert peak["naive"] > 2 * scores
    assert peak["torch_sdpa"] < scores


@pytest.mark.slow
def test_cases_over_the_memory_budget_are_skipped(tmp_path):
    code, records, markdown = _run(
        tmp_path, "--seq-lens", "32,8192", "--impls", "naive", "--memory-budget-gb", "0.5"
    )
    assert code == 0
    by_t = {r["T"]: r for r in records}
    assert by_t[32]["status"] == "ok"
    skipped = by_t[8192]
    assert skipped["status"] == "skipped" and skipped["skip_reason"] == "memory_budget"
    assert skipped["est_peak_mem_bytes"] > 0.5 * 2**30
    assert "exceeds the memory budget 0.5 GiB" in skipped["message"]
    assert "| naive | " in markdown and "skipped" in markdown
    assert "naive T=8192: skipped: estimated peak" in markdown


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "BENCHMARK"),
        (["nonsense"], "invalid choice"),
        (["attention", "--seq-lens", "256,abc"], "--seq-lens: expected comma-separated"),
        (["attention", "--seq-lens", "0"], "--seq-lens"),
        (["attention", "--impls", "fused,nope"], "--impls: expected comma-separated names"),
        (["attention", "--dtype", "int8"], "--dtype: expected one of fp32, bf16, fp16"),
        (["attention", "--max-repeats", "0"], "--max-repeats: expected a positive integer"),
        (["attention", "--min-time", "-1"], "--min-time: expected a number >= 0"),
        (["attention", "--memory-budget-gb", "0"], "--memory-budget-gb: expected a positive"),
        (["attention", "--device", "tpu"], "--device: expected cpu, cuda or cuda:N"),
    ],
)
def test_bad_arguments_give_a_clear_error(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "usage: attnkit bench" in err
    assert expected in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_a_gpu_is_a_clear_error(capsys):
    assert main(["attention", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "attnkit.bench", "attention", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--seq-lens" in proc.stdout and "--memory-budget-gb" in proc.stdout


def test_naive_attention_matches_torch():
    q, k, v = (torch.randn(1, 2, 6, 4, dtype=torch.float64) for _ in range(3))
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(naive_attention(q, k, v, causal), expected)
    torch.testing.assert_close(
        naive_attention(q, k, v, None), F.scaled_dot_product_attention(q, k, v)
    )


def _record(impl: str, t: int, fwd: float, fwd_bwd: float, peak: int, **extra) -> dict:
    return {
        "impl": impl,
        "T": t,
        "status": "ok",
        "message": "",
        "fwd_s": fwd,
        "fwd_bwd_s": fwd_bwd,
        "peak_mem_bytes": peak,
        "fwd_peak_mem_bytes": peak // 2,
        "threads": 4,
        "mem_method": "rss_vmhwm",
        **extra,
    }


def test_report_ratios_and_left_out_rows():
    settings = AttentionSettings(seq_lens=(128,), impls=DEFAULT_IMPLS)
    records = [
        _record("attnkit_fused", 128, 0.011, 0.030, 10 * MIB),
        _record("torch_sdpa", 128, 0.010, 0.030, 10 * MIB, fwd_times_s=[0.010, 0.030]),
        _record("naive", 128, 0.020, 0.040, 40 * MIB),
        _record("attnkit_chunked", 128, 0.030, 0.060, 10 * MIB),
        {"impl": "attnkit_math", "T": 128, "status": "error", "message": "boom"},
        {
            "impl": "attnkit_mha",
            "T": 128,
            "status": "skipped",
            "skip_reason": "unavailable",
            "message": "not importable",
        },
    ]
    env = {
        "cpu": "Test CPU",
        "cores": 4,
        "logical_cpus": 8,
        "platform": "Linux",
        "python": "3.11",
        "torch": "2.x",
        "ram_bytes": 16 * 2**30,
    }
    markdown = render_markdown(records, settings, env)
    assert "| attnkit_fused / torch_sdpa, fwd time | 1.10 |" in markdown
    assert "| attnkit_chunked / naive, fwd+bwd peak memory | 0.25 |" in markdown
    assert "| attnkit_mha / torch_mha, fwd+bwd time | — |" in markdown
    assert "| attnkit_math | error |" in markdown
    assert "| torch_mha | " not in markdown  # no record at all
    assert "| attnkit_mha | " not in markdown  # left out, with a note
    assert "- attnkit_mha: left out: not importable" in markdown
    assert "attnkit_math T=128: error: boom" in markdown
    assert "timing noise: in 1 of 1 timed phases" in markdown
    assert "Test CPU, 4 usable cores" in markdown and "torch threads: 4" in markdown


def test_case_sizes():
    case = Case(seq_len=8, batch=2, heads=3, head_dim=4, dtype="bfloat16")
    assert case.d_model == 12 and case.element_size == 2
    for impl in IMPLEMENTATIONS.values():
        assert impl.estimate(case) > 0


def test_a_failing_worker_becomes_an_error_record():
    payload = {"suite": "attention", "impl": "no_such_impl", "case": {"seq_len": 8}}
    result = run_in_worker({**payload, "timing": {}}, timeout=120)
    assert result["status"] == "error"
    assert "KeyError" in result["message"] and "no_such_impl" in result["message"]
