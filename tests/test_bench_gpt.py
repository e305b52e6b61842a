"""``attnkit bench gpt-train`` and ``attnkit bench generate``: end to end on tiny sizes,
the worker hook in process, the reports, the token comparison and bad input.

Only presence and sanity of the numbers are checked: speed is recorded by benchmark
runs (docs/benchmarks.md), never asserted by the test suite.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from attnkit import cli
from attnkit.bench import gpt, main
from attnkit.bench.report_gpt import render_generate_markdown, render_gpt_train_markdown

TINY = ["--size", "tiny", "--d-model", "32", "--heads", "2", "--layers", "1", "--block", "8"]
TINY += ["--batch", "2", "--steps", "2", "--warmup", "1", "--threads", "1"]
TINY_GENERATE = ["--d-model", "32", "--heads", "2", "--layers", "1", "--block", "32"]
TINY_GENERATE += ["--prompt-len", "4", "--new-tokens", "8", "--repeats", "1", "--threads", "1"]
TINY_GENERATE += ["--init-std", "0.5"]  # varied greedy tokens: a stronger comparison
TRAIN_CASE = gpt.train_case("tiny", d_model=32, heads=2, layers=1, block=8, batch=2)
GENERATE_CASE = gpt.GenerateCase(
    d_model=32, heads=2, layers=1, block=32, prompt_len=4, new_tokens=8, repeats=1, init_std=0.5
)
HF = gpt.transformers_available() is None
needs_hf = pytest.mark.skipif(not HF, reason="transformers is not importable")
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


@pytest.mark.slow
def test_gpt_train_runs_through_the_cli_and_writes_json_and_markdown(tmp_path: Path, capsys):
    """One worker (a few seconds); the Hugging Face baseline is built in process below."""
    argv = ["bench", "gpt-train", *TINY, "--impls", "attnkit", "--output", str(tmp_path)]
    code = cli.main(argv)
    records = json.loads((tmp_path / "gpt_train.json").read_text())
    markdown = (tmp_path / "gpt_train.md").read_text()
    assert code == 0, records
    [attnkit] = records
    assert attnkit["status"] == "ok" and attnkit["size"] == "tiny" and attnkit["d_model"] == 32
    assert attnkit["tokens_per_s"] == pytest.approx(2 * 8 / attnkit["step_s"])
    assert attnkit["optimizer"] == "AdamW(fused=True)" and attnkit["threads"] == 1
    assert "| vs hf_gpt2 |" in markdown and "| attnkit | " in markdown
    assert capsys.readouterr().out.startswith(markdown)


@pytest.mark.slow
def test_generate_runs_end_to_end_and_attnkit_matches_hf_tokens(tmp_path: Path):
    impls = "hf_cached,attnkit_cached"
    code = main(["generate", *TINY_GENERATE, "--impls", impls, "--output", str(tmp_path)])
    records = {r["impl"]: r for r in json.loads((tmp_path / "generate.json").read_text())}
    markdown = (tmp_path / "generate.md").read_text()
    assert code == 0, records
    r = records["attnkit_cached"]
    assert r["status"] == "ok", r
    assert len(r["tokens"]) == 8 and r["new_tokens_per_s"] > 0
    assert "| vs hf_cached |" in markdown and "| same tokens as hf_cached |" in markdown
    if HF:
        assert records["attnkit_cached"]["same_tokens_as_hf"] is True
        assert records["attnkit_cached"]["distinct_tokens"] > 1
        assert records["attnkit_cached"]["parameters"] == records["hf_cached"]["parameters"]
        assert "| attnkit_cached | " in markdown and "| yes |" in markdown


@needs_hf
def test_attnkit_generates_the_tokens_of_hf_generate_in_process():
    """The worker hook, without a subprocess: both load the same Hugging Face weights."""
    payload = {"kind": "generate", "case": asdict(GENERATE_CASE), "seed": 1}
    records = [
        {"impl": impl, **gpt.run_worker({**payload, "impl": impl})}
        for impl in gpt.GENERATE_IMPLEMENTATIONS
    ]
    assert all(r["status"] == "ok" for r in records), records
    gpt.compare_tokens(records)
    *generators, floor = records
    for record in generators[1:]:
        assert record["same_tokens_as_hf"] is True and record["first_difference"] is None
    assert records[0]["distinct_tokens"] > 1
    assert records[2]["weights"] == "Hugging Face weights via from_pretrained"
    # the floor streams as many float32 weights per token as the model has, and no tokens
    assert floor["impl"] == "weights_floor" and floor["floor"] is True
    assert "same_tokens_as_hf" not in floor
    assert floor["parameters"] == records[0]["parameters"]
    rate = floor["parameters"] * 4 * GENERATE_CASE.new_tokens / floor["gen_s"] / 1e9
    assert floor["weight_gb_per_s"] == pytest.approx(rate)


@needs_hf
def test_hf_gpt2_train_worker_in_process():
    payload = {"kind": "train", "impl": "hf_gpt2", "case": asdict(TRAIN_CASE)}
    result = gpt.run_worker({**payload, "steps": 2, "warmup": 1})
    assert result["status"] == "ok", result
    assert result["optimizer"] == "AdamW()" and result["attn_implementation"] == "sdpa"
    attnkit = gpt.run_worker({**payload, "impl": "attnkit", "steps": 1, "warmup": 0})
    assert result["parameters"] == attnkit["parameters"]  # same layout: biases, tied output


def test_matmul_floor_multiplies_exactly_the_models_linear_maps():
    """The floor's products cover every weight matrix of the GPT once (the tied output
    head is the token embedding; the position table is a lookup, not a product)."""
    model = gpt._attnkit_train_model(TRAIN_CASE)
    matrices = sum(
        p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "position" not in name
    )
    products = gpt.gpt_products(TRAIN_CASE)
    assert {rows for rows, _, _ in products} == {TRAIN_CASE.tokens}
    assert sum(fan_in * fan_out for _, fan_in, fan_out in products) == matrices
    payload = {"kind": "train", "impl": "matmul_floor", "case": asdict(TRAIN_CASE)}
    result = gpt.run_worker({**payload, "steps": 2, "warmup": 1})
    assert result["status"] == "ok" and result["floor"] is True, result
    assert result["parameters"] == sum(p.numel() for p in model.parameters())
    assert result["tokens_per_s"] == pytest.approx(TRAIN_CASE.tokens / result["step_s"])


def test_train_worker_measures_attnkit_in_process():
    payload = {"kind": "train", "impl": "attnkit", "case": asdict(TRAIN_CASE)}
    result = gpt.run_worker({**payload, "steps": 2, "warmup": 1})
    assert result["status"] == "ok", result
    assert result["tokens_per_s"] == pytest.approx(16 / result["step_s"])
    assert result["first_loss"] > 0 and len(result["step_times_s"]) == 2


def test_worker_errors_become_records():
    payload = {"kind": "train", "impl": "nope", "case": asdict(TRAIN_CASE), "steps": 1}
    result = gpt.run_worker({**payload, "warmup": 1})
    assert result["status"] == "error" and "KeyError" in result["message"]
    assert "kind must be" in gpt.run_worker({"kind": "infer", "impl": "x"})["message"]


def test_compare_tokens_names_the_first_difference():
    records = [
        {"impl": "hf_cached", "status": "ok", "tokens": [1, 2, 3]},
        {"impl": "attnkit_cached", "status": "ok", "tokens": [1, 2, 4]},
        {"impl": "attnkit_uncached", "status": "ok", "tokens": [1, 2, 3]},
        {"impl": "hf_uncached", "status": "error", "message": "x"},
    ]
    gpt.compare_tokens(records)
    assert records[1]["same_tokens_as_hf"] is False and records[1]["first_difference"] == 2
    assert records[2]["same_tokens_as_hf"] is True
    assert "same_tokens_as_hf" not in records[0] and "same_tokens_as_hf" not in records[3]
    alone = [{"impl": "attnkit_cached", "status": "ok", "tokens": [1]}]
    gpt.compare_tokens(alone)
    assert alone[0]["same_tokens_as_hf"] is None


def test_batches_are_seeded_and_shifted_by_one():
    batches = gpt.make_token_batches(TRAIN_CASE, seed=3)
    again = gpt.make_token_batches(TRAIN_CASE, seed=3)
    assert len(batches) == TRAIN_CASE.num_batches
    for batch, same in zip(batches, again, strict=True):
        assert batch.inputs.shape == batch.targets.shape == (2, 8)
        assert (batch.inputs == same.inputs).all()
        assert (batch.inputs[:, 1:] == batch.targets[:, :-1]).all()
        assert int(batch.inputs.max()) < 65


def test_default_sizes():
    tiny, small = gpt.train_case("tiny"), gpt.train_case("small")
    assert (tiny.layers, tiny.heads, tiny.d_model, tiny.block, tiny.batch) == (4, 4, 128, 64, 12)
    assert (small.layers, small.heads, small.d_model, small.block, small.batch) == (
        6,
        6,
        384,
        256,
        8,
    )
    assert tiny.vocab == small.vocab == 65 and tiny.dropout == 0.0
    case = gpt.GenerateCase()
    assert (case.layers, case.heads, case.d_model, case.block, case.vocab) == (6, 6, 384, 512, 65)
    assert (case.prompt_len, case.new_tokens, case.repeats) == (16, 256, 3)


def _ok_train(impl: str, step_s: float, size: str = "tiny", **extra) -> dict:
    return {
        "impl": impl,
        "status": "ok",
        "message": "",
        "round": 0,
        **asdict(gpt.train_case(size)),
        "tokens_per_s": 768 / step_s,
        "step_s": step_s,
        "step_min_s": step_s,
        "step_max_s": step_s,
        "step_times_s": [step_s, step_s],
        "warmup_s": 1.0,
        "peak_mem_bytes": 30 * MIB,
        "parameters": 1000,
        "threads": 2,
        **extra,
    }


def test_train_report_has_a_table_per_size_with_ratios():
    settings = gpt.GPTTrainSettings()
    records = [
        _ok_train("hf_gpt2", 0.100, transformers="9.9"),
        _ok_train("attnkit", 0.080, optimizer="AdamW(fused=True)"),
        {"impl": "attnkit_compiled", "status": "error", "message": "no compiler", "round": 0}
        | asdict(gpt.train_case("tiny")),
        _ok_train("hf_gpt2", 1.0, "small"),
        _ok_train("attnkit", 0.5, "small"),
    ]
    markdown = render_gpt_train_markdown(records, settings, ENV)
    assert "## tiny: layers 4, heads 4, d_model 128, block 64, batch 12" in markdown
    assert "## small: layers 6, heads 6, d_model 384, block 256, batch 8" in markdown
    assert "| impl | tokens/s | vs hf_gpt2 |" in markdown
    assert "| hf_gpt2 | 7,680 | 1.00x | 100 |" in markdown
    assert "| attnkit | 9,600 | 1.25x | 80.0 |" in markdown
    assert "| attnkit | 1,536 | 2.00x | 500 |" in markdown
    assert "| attnkit_compiled | error |" in markdown
    assert "- attnkit_compiled (tiny, round 1): error: no compiler" in markdown
    assert "transformers 9.9" in markdown and "[ran with: AdamW(fused=True)]" in markdown


def test_generate_report_shows_ratio_same_tokens_and_left_out():
    settings = gpt.GenerateSettings()

    def ok(impl: str, seconds: float, **extra) -> dict:
        times = {"gen_s": seconds, "gen_min_s": seconds, "gen_max_s": seconds}
        return {"impl": impl, "status": "ok", "message": "", **times, "gen_times_s": [seconds]} | {
            "new_tokens_per_s": 256 / seconds,
            "ms_per_token": seconds / 256 * 1e3,
            "weight_gb_per_s": 10_869_120 * 4 * 256 / seconds / 1e9,
            "warmup_s": 0.5,
            "parameters": 10_869_120,
            "threads": 2,
            "distinct_tokens": 7,
            **extra,
        }

    records = [
        ok("hf_cached", 2.0),
        {"impl": "hf_uncached", "status": "skipped", "skip_reason": "unavailable", "message": "m"},
        ok("attnkit_cached", 1.0, same_tokens_as_hf=True),
        ok("attnkit_uncached", 4.0, same_tokens_as_hf=False, first_difference=17),
        ok("weights_floor", 0.5, floor=True, distinct_tokens=1),
    ]
    markdown = render_generate_markdown(records, settings, ENV)
    assert "| hf_cached | 128 | 1.00x | 7.81 | 5.56 | 2.00 | 2.00–2.00 | (reference) |" in markdown
    assert "| attnkit_cached | 256 | 2.00x | 3.91 | 11.1 | 1.00 | 1.00–1.00 | yes |" in markdown
    assert "| weights_floor | 512 | 4.00x | 1.95 | 22.3 |" in markdown
    assert "| (no tokens: a floor) |" in markdown
    assert "| attnkit_uncached | 64.0 | 0.50x |" in markdown and "no (from token 17)" in markdown
    assert "| hf_uncached |" not in markdown and "- hf_uncached: left out: m" in markdown
    assert "10,869,120 parameters" in markdown and "distinct tokens in a generation: 7" in markdown


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["gpt-train", "--size", "huge"], "--size: invalid choice"),
        (["gpt-train", "--impls", "attnkit,nope"], "--impls: expected comma-separated names"),
        (["gpt-train", "--d-model", "30", "--heads", "4"], "--d-model (30) must be divisible"),
        (["gpt-train", "--steps", "0"], "--steps: expected a positive integer"),
        (["gpt-train", "--warmup", "-1"], "--warmup: expected an integer >= 0"),
        (["gpt-train", "--warmup", "0"], "attnkit_compiled needs at least 1 warm-up step"),
        (["gpt-train", "--vocab", "1"], "--vocab: expected at least 2"),
        (["gpt-train", "--device", "tpu"], "--device: expected cpu, cuda or cuda:N"),
        (["generate", "--new-tokens", "600"], "--prompt-len + --new-tokens must fit in --block"),
        (["generate", "--d-model", "30", "--heads", "4"], "--d-model (30) must be divisible"),
        (["generate", "--repeats", "0"], "--repeats: expected a positive integer"),
        (["generate", "--impls", "nope"], "--impls: expected comma-separated names"),
        (["generate", "--init-std", "0"], "--init-std: expected a positive number"),
    ],
)
def test_bad_arguments_give_a_usage_error(argv, expected, capsys, tmp_path):
    assert main([*argv, "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"usage: attnkit bench {argv[0]}" in err
    assert expected in err
    assert not list(tmp_path.iterdir())


def test_help_lists_the_options(capsys):
    assert main(["gpt-train", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--size", "--rounds", "--vocab", "--impls", "--threads", "--timeout"):
        assert option in out
    assert main(["generate", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--new-tokens", "--prompt-len", "--block", "--repeats", "--device", "--seed"):
        assert option in out


def test_compiled_worker_in_process_with_aot_eager():
    """aot_eager: dynamo and AOT autograd without code generation, in about a second."""
    case = asdict(gpt.train_case("tiny", d_model=32, heads=2, layers=1, block=8, batch=2))
    payload = {"kind": "train", "impl": "attnkit_compiled", "steps": 1, "warmup": 1}
    result = gpt.run_worker({**payload, "case": {**case, "compile_backend": "aot_eager"}})
    assert result["status"] == "ok", result
    assert result["compiled"] == "torch.compile(forward + loss, backend='aot_eager')"
