"""Benchmark results as JSON (a list of records) and as markdown reports (attention, train)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from attnkit.bench.attention import IMPLEMENTATIONS, AttentionSettings
from attnkit.bench.train import BASELINE as TRAIN_BASELINE
from attnkit.bench.train import IMPLEMENTATIONS as TRAIN_IMPLEMENTATIONS
from attnkit.bench.train import TrainSettings, best_records

GIB = 2**30
MIB = 2**20
DASH = "—"

Lookup = dict[tuple[str, int], dict]


def write_json(records: Sequence[dict], path: Path) -> None:
    """Write the records as an indented JSON list."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(records), indent=2) + "\n")


def write_results(records: Sequence[dict], markdown: str, output: Path, stem: str) -> str:
    """Write ``{stem}.json`` and ``{stem}.md`` into ``output``; return the markdown."""
    write_json(records, output / f"{stem}.json")
    (output / f"{stem}.md").write_text(markdown)
    return markdown


def _number(value: float) -> str:
    """About three significant digits, never in exponent notation."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _cell(record: dict | None, key: str, unit: float) -> str:
    if record is None:
        return DASH
    if record["status"] == "skipped":
        return "skipped"
    if record["status"] != "ok" or record.get(key) is None:
        return "error"
    return _number(record[key] / unit)


def _table(
    lookup: Lookup, impls: Sequence[str], seq_lens: Sequence[int], key: str, unit: float
) -> str:
    """Markdown table: one row per implementation, one column per sequence length."""
    lines = [
        "| impl | " + " | ".join(f"T={t}" for t in seq_lens) + " |",
        "|---|" + "---:|" * len(seq_lens),
    ]
    for impl in impls:
        cells = [_cell(lookup.get((impl, t)), key, unit) for t in seq_lens]
        lines.append(f"| {impl} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio(lookup: Lookup, num: str, den: str, t: int, key: str) -> str:
    a, b = lookup.get((num, t)), lookup.get((den, t))
    if not a or not b or a["status"] != "ok" or b["status"] != "ok" or not b.get(key):
        return DASH
    return f"{a[key] / b[key]:.2f}"


RATIOS: tuple[tuple[str, str, str, str], ...] = (
    ("attnkit_fused / torch_sdpa, fwd time", "attnkit_fused", "torch_sdpa", "fwd_s"),
    ("attnkit_fused / torch_sdpa, fwd+bwd time", "attnkit_fused", "torch_sdpa", "fwd_bwd_s"),
    ("attnkit_chunked / naive, fwd time", "attnkit_chunked", "naive", "fwd_s"),
    ("attnkit_chunked / naive, fwd+bwd time", "attnkit_chunked", "naive", "fwd_bwd_s"),
    ("attnkit_chunked / naive, fwd+bwd peak memory", "attnkit_chunked", "naive", "peak_mem_bytes"),
    ("attnkit_mha / torch_mha, fwd+bwd time", "attnkit_mha", "torch_mha", "fwd_bwd_s"),
)


def _ratios(lookup: Lookup, seq_lens: Sequence[int]) -> str:
    """Ratios table: one row per comparison, one column per sequence length."""
    lines = [
        "| ratio | " + " | ".join(f"T={t}" for t in seq_lens) + " |",
        "|---|" + "---:|" * len(seq_lens),
    ]
    for label, num, den, key in RATIOS:
        cells = [_ratio(lookup, num, den, t, key) for t in seq_lens]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _shown_impls(records: Sequence[dict], impls: Sequence[str]) -> list[str]:
    """Implementations with at least one record that is not 'unavailable'."""
    shown = {r["impl"] for r in records if r.get("skip_reason") != "unavailable"}
    return [impl for impl in impls if impl in shown]


def _notes(records: Sequence[dict]) -> list[str]:
    """One line per skipped or failed case (one per unavailable implementation)."""
    notes, unavailable = [], set()
    for r in records:
        if r["status"] == "ok":
            continue
        if r.get("skip_reason") == "unavailable":
            if r["impl"] not in unavailable:
                unavailable.add(r["impl"])
                notes.append(f"- {r['impl']}: left out: {r['message']}")
            continue
        notes.append(f"- {r['impl']} T={r['T']}: {r['status']}: {r['message']}")
    return notes


NOISY_SPREAD = 1.5


def _noise_note(records: Sequence[dict]) -> list[str]:
    """A note when repeats of a case disagree a lot (slowest / fastest > 1.5)."""
    spreads = []
    for r in records:
        for phase in ("fwd", "fwd_bwd"):
            times = r.get(f"{phase}_times_s") or []
            if len(times) > 1 and min(times) > 0:
                spreads.append((max(times) / min(times), f"{r['impl']} T={r['T']} {phase}"))
    noisy = [s for s in spreads if s[0] > NOISY_SPREAD]
    if not noisy:
        return []
    worst = max(noisy)
    return [
        f"- timing noise: in {len(noisy)} of {len(spreads)} timed phases the slowest repeat "
        f"took over {NOISY_SPREAD}x the fastest (worst {worst[0]:.1f}x, {worst[1]}); "
        "medians there are unreliable (busy or throttled machine?)"
    ]


def _threads(records: Sequence[dict]) -> str:
    threads = sorted({r["threads"] for r in records if r.get("threads")})
    return ", ".join(map(str, threads)) or "unknown"


def _mem_methods(records: Sequence[dict]) -> str:
    return ", ".join(sorted({r["mem_method"] for r in records if r.get("mem_method")})) or "n/a"


def _header(
    records: Sequence[dict],
    settings: AttentionSettings,
    env: dict,
    title: str = "attnkit attention benchmark",
) -> list[str]:
    """Title, date, machine, software, device, case settings, timing and memory method."""
    ram = f"{env['ram_bytes'] / GIB:.1f} GiB RAM" if env.get("ram_bytes") else "RAM unknown"
    device = settings.device
    if env.get("gpu"):
        device += f" ({env['gpu']}, {env['gpu_memory_bytes'] / GIB:.1f} GiB, CUDA {env['cuda']})"
    t = settings.timing
    return [
        f"# {title}",
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {env['cpu']}, {env['cores']} usable cores "
        f"({env['logical_cpus']} logical), {ram}; {env['platform']}",
        f"- software: torch {env['torch']}, python {env['python']}",
        f"- device: {device}; dtype: {settings.dtype}; torch threads: {_threads(records)}",
        f"- settings: {'causal' if settings.causal else 'not causal'}, B={settings.batch}, "
        f"H={settings.heads}, Dh={settings.head_dim} "
        f"(d_model={settings.heads * settings.head_dim}), "
        f"T in {', '.join(map(str, settings.seq_lens))}",
        f"- timing: {t.warmup} warm-up run, then repeats until {t.min_time:g} s or "
        f"{t.max_repeats} runs (at least 1); median reported. Each case in a fresh process.",
        f"- memory: peak above the baseline taken after creating the inputs "
        f"({_mem_methods(records)}); budget {settings.memory_budget_bytes / GIB:.1f} GiB, "
        "cases estimated above it are skipped",
        "",
    ]


def _implementations(impls: Sequence[str]) -> list[str]:
    lines = ["## Implementations", ""]
    lines += [f"- `{name}`: {IMPLEMENTATIONS[name].description}" for name in impls]
    return [*lines, ""]


def _section(title: str, body: str) -> list[str]:
    return [f"## {title}", "", body, ""]


def render_markdown(records: Sequence[dict], settings: AttentionSettings, env: dict) -> str:
    """The full markdown report."""
    lookup: Lookup = {(r["impl"], r["T"]): r for r in records}
    impls = _shown_impls(records, settings.impls)
    seq_lens = settings.seq_lens

    def table(key: str, unit: float) -> str:
        return _table(lookup, impls, seq_lens, key, unit)

    lines = _header(records, settings, env) + _implementations(impls)
    lines += _section("Forward time (ms)", table("fwd_s", 1e-3))
    lines += _section("Forward + backward time (ms)", table("fwd_bwd_s", 1e-3))
    lines += _section("Peak memory, forward + backward (MiB)", table("peak_mem_bytes", MIB))
    lines += _section("Peak memory, forward only (MiB)", table("fwd_peak_mem_bytes", MIB))
    lines += _section("Ratios (below 1: the first is faster / smaller)", _ratios(lookup, seq_lens))
    notes = _notes(records) + _noise_note(records)
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)


def write_report(
    records: Sequence[dict],
    settings: AttentionSettings,
    env: dict,
    output: Path,
) -> str:
    """Write ``attention.json`` and ``attention.md`` into ``output``; return the markdown."""
    return write_results(records, render_markdown(records, settings, env), output, "attention")


# --------------------------------------------------------------------------- train


def _machine(env: dict) -> str:
    ram = f"{env['ram_bytes'] / GIB:.1f} GiB RAM" if env.get("ram_bytes") else "RAM unknown"
    return (
        f"{env['cpu']}, {env['cores']} usable cores ({env['logical_cpus']} logical), "
        f"{ram}; {env['platform']}"
    )


def _train_software(records: Sequence[dict], env: dict) -> str:
    software = f"torch {env['torch']}, python {env['python']}"
    versions = sorted({r["transformers"] for r in records if r.get("transformers")})
    if versions:
        software += f", transformers {', '.join(versions)}"
    return software


def _train_header(records: Sequence[dict], settings: TrainSettings, env: dict) -> list[str]:
    case = settings.case
    device = case.device
    if env.get("gpu"):
        device += f" ({env['gpu']}, {env['gpu_memory_bytes'] / GIB:.1f} GiB, CUDA {env['cuda']})"
    dtype = "float32" if case.dtype == "float32" else f"{case.dtype} autocast (fp32 weights)"
    return [
        "# attnkit training-throughput benchmark",
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {_machine(env)}",
        f"- software: {_train_software(records, env)}",
        f"- device: {device}; dtype: {dtype}; torch threads: {_threads(records)}",
        f"- model: encoder-decoder, d_model={case.d_model}, heads={case.heads}, "
        f"layers={case.layers}+{case.layers}, d_ff={case.d_ff}, vocab={case.vocab}, "
        f"dropout={case.dropout:g} everywhere",
        f"- batch: B={case.batch}, source and target length {case.seq_len} "
        f"({case.target_tokens:,} target tokens a step); random tokens (seed {settings.seed}), "
        f"each row padded by up to 1/8 of its length; {case.num_batches} batches in turn",
        f"- step: forward, cross-entropy (label smoothing {case.label_smoothing:g}, padding "
        f"ignored), backward, clip_grad_norm_({case.clip_norm:g}), AdamW step, zero_grad",
        f"- timing: {settings.warmup} warm-up step(s) (torch.compile compiles there; not timed), "
        f"then {settings.steps} timed steps; median reported; target tokens/s = "
        f"B·T / median step time. Each implementation in a fresh process, {settings.rounds} "
        "round(s). CPU ms: median process CPU time of a step, summed over threads (with one "
        "thread it does not grow while the process waits for a busy CPU; with more, threads "
        "spinning at barriers count too)",
        "- memory: peak over the timed steps above the baseline taken after building the "
        f"model ({_mem_methods(records)}): gradients, optimizer state and one step's "
        "activations; 'step' is what one step allocates and frees again",
        "",
    ]


def _train_implementations(best: dict[str, dict], impls: Sequence[str]) -> list[str]:
    lines = ["## Implementations", ""]
    for name in impls:
        line = f"- `{name}`: {TRAIN_IMPLEMENTATIONS[name].description}"
        record = best.get(name, {})
        facts = [record[k] for k in ("optimizer", "compiled") if record.get(k)]
        if facts:
            line += f" [ran with: {'; '.join(facts)}]"
        lines.append(line)
    return [*lines, ""]


def _train_ratio(record: dict, baseline: dict | None) -> str:
    if record["status"] != "ok" or not baseline or baseline.get("status") != "ok":
        return DASH
    return f"{record['tokens_per_s'] / baseline['tokens_per_s']:.2f}x"


def _train_table(best: dict[str, dict], impls: Sequence[str]) -> str:
    baseline = best.get(TRAIN_BASELINE)
    lines = [
        f"| impl | target tokens/s | vs {TRAIN_BASELINE} | step ms (median) | step ms (min–max) "
        "| CPU ms | peak MiB | step MiB | parameters | warm-up s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in impls:
        r = best[name]
        if r["status"] != "ok":
            lines.append(f"| {name} | {r['status']} |" + f" {DASH} |" * 8)
            continue
        spread = f"{_number(r['step_min_s'] * 1e3)}–{_number(r['step_max_s'] * 1e3)}"
        cells = [
            f"{r['tokens_per_s']:,.0f}",
            _train_ratio(r, baseline),
            _number(r["step_s"] * 1e3),
            spread,
            _number(r["step_cpu_s"] * 1e3) if r.get("step_cpu_s") is not None else DASH,
            _number(r["peak_mem_bytes"] / MIB),
            _number(r["step_mem_bytes"] / MIB),
            f"{r['parameters']:,}",
            _number(r["warmup_s"]),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _train_notes(records: Sequence[dict], best: dict[str, dict], rounds: int) -> list[str]:
    notes, unavailable = [], set()
    for r in records:
        if r.get("skip_reason") == "unavailable":
            if r["impl"] not in unavailable:
                unavailable.add(r["impl"])
                notes.append(f"- {r['impl']}: left out: {r['message']}")
        elif r["status"] != "ok":
            where = f" (round {r.get('round', 0) + 1})" if rounds > 1 else ""
            notes.append(f"- {r['impl']}{where}: {r['status']}: {r['message']}")
    if rounds > 1:
        notes.append(
            f"- rounds: every implementation ran {rounds} times, round-robin; each row is its "
            "fastest round (all rounds are in train.json). Target tokens/s by round:"
        )
        for name, record in best.items():
            if record["status"] != "ok":
                continue
            per_round = [
                f"{r['tokens_per_s']:,.0f}" if r["status"] == "ok" else r["status"]
                for r in records
                if r["impl"] == name
            ]
            notes.append(f"  - {name}: {' / '.join(per_round)}")
    for r in best.values():
        if r["status"] == "ok" and r.get("compiled") and r.get("first_step_s") is not None:
            notes.append(
                f"- {r['impl']}: the first warm-up step (compilation included) took "
                f"{r['first_step_s']:.1f} s"
            )
    spreads = [
        (max(r["step_times_s"]) / min(r["step_times_s"]), r["impl"])
        for r in best.values()
        if r["status"] == "ok" and len(r.get("step_times_s") or []) > 1 and r["step_min_s"] > 0
    ]
    noisy = [s for s in spreads if s[0] > NOISY_SPREAD]
    if noisy:
        worst = max(noisy)
        notes.append(
            f"- timing noise: in {len(noisy)} of {len(spreads)} implementations the slowest "
            f"step took over {NOISY_SPREAD}x the fastest (worst {worst[0]:.1f}x, {worst[1]}); "
            "the medians are less reliable (busy or throttled machine?)"
        )
    return notes


def render_train_markdown(records: Sequence[dict], settings: TrainSettings, env: dict) -> str:
    """The full markdown report of ``attnkit bench train`` (the best round of each
    implementation when there are several)."""
    best = best_records(list(records))
    impls = [
        name
        for name in settings.impls
        if name in best and best[name].get("skip_reason") != "unavailable"
    ]
    lines = _train_header(records, settings, env) + _train_implementations(best, impls)
    above = f"above 1: faster than {TRAIN_BASELINE}"
    lines += _section(f"Training throughput ({above})", _train_table(best, impls))
    notes = _train_notes(records, best, settings.rounds)
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)


def write_train_report(
    records: Sequence[dict], settings: TrainSettings, env: dict, output: Path
) -> str:
    """Write ``train.json`` and ``train.md`` into ``output``; return the markdown."""
    return write_results(records, render_train_markdown(records, settings, env), output, "train")
