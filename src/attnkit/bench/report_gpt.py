"""Markdown reports of the GPT benchmarks (``gpt-train``, ``generate``) and their JSON files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from attnkit.bench.gpt import (
    GENERATE_BASELINE,
    GENERATE_IMPLEMENTATIONS,
    TRAIN_BASELINE,
    TRAIN_IMPLEMENTATIONS,
    GenerateSettings,
    GPTTrainSettings,
    best_by_size,
)
from attnkit.bench.report import (
    DASH,
    GIB,
    MIB,
    NOISY_SPREAD,
    _machine,
    _number,
    _section,
    _threads,
    _train_software,
    write_results,
)

TRAIN_COLUMNS = (
    "| impl | tokens/s | vs {base} | step ms (median) | step ms (min–max) | peak MiB "
    "| parameters | warm-up s |"
)
GENERATE_COLUMNS = (
    "| impl | new tokens/s | vs {base} | ms/token | weight GB/s | generation s (median) "
    "| generation s (min–max) | same tokens as {base} | parameters | warm-up s |"
)


def _common_header(title: str, records: Sequence[dict], device: str, env: dict) -> list[str]:
    """Title, date, machine, software, device and threads."""
    if env.get("gpu"):
        device += f" ({env['gpu']}, {env['gpu_memory_bytes'] / GIB:.1f} GiB, CUDA {env['cuda']})"
    return [
        f"# {title}",
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {_machine(env)}",
        f"- software: {_train_software(records, env)}",
        f"- device: {device}; dtype: float32; torch threads: {_threads(records)}",
    ]


def _implementations(registry: dict, records: Sequence[dict], impls: Sequence[str]) -> list[str]:
    """One line per implementation, with the facts its first good record reports."""
    lines = ["## Implementations", ""]
    for name in impls:
        line = f"- `{name}`: {registry[name].description}"
        record = next((r for r in records if r["impl"] == name and r["status"] == "ok"), {})
        facts = [record[k] for k in ("optimizer", "compiled", "weights") if record.get(k)]
        if facts:
            line += f" [ran with: {'; '.join(facts)}]"
        lines.append(line)
    return [*lines, ""]


def _shown(records: Sequence[dict], impls: Sequence[str]) -> list[str]:
    """Implementations with a record that is not 'unavailable', in ``impls`` order."""
    shown = {r["impl"] for r in records if r.get("skip_reason") != "unavailable"}
    return [name for name in impls if name in shown]


def _ratio(record: dict, baseline: dict | None, key: str) -> str:
    if record["status"] != "ok" or not baseline or baseline.get("status") != "ok":
        return DASH
    return f"{record[key] / baseline[key]:.2f}x"


def _spread(low: float, high: float, unit: float) -> str:
    return f"{_number(low / unit)}–{_number(high / unit)}"


def _value_columns(header: str) -> int:
    """Columns after ``impl`` in a table ``header`` (``| impl | a | b |`` -> 2)."""
    return header.count("|") - 2


def _failed_row(name: str, record: dict, header: str) -> str:
    """The status, then a dash in every other value column of ``header``."""
    return f"| {name} | {record['status']} |" + f" {DASH} |" * (_value_columns(header) - 1)


def _problem_notes(records: Sequence[dict], where: Callable[[dict], str]) -> list[str]:
    """One note per unavailable implementation and per failed record."""
    notes, unavailable = [], set()
    for r in records:
        if r.get("skip_reason") == "unavailable":
            if r["impl"] not in unavailable:
                unavailable.add(r["impl"])
                notes.append(f"- {r['impl']}: left out: {r['message']}")
        elif r["status"] != "ok":
            notes.append(f"- {r['impl']}{where(r)}: {r['status']}: {r['message']}")
    return notes


def _noise_note(records: Sequence[dict], key: str, what: str) -> list[str]:
    """A note when the slowest of a record's timed runs took over 1.5x the fastest."""
    spreads = [
        (max(r[key]) / min(r[key]), r["impl"] + (f" ({r['size']})" if "size" in r else ""))
        for r in records
        if r["status"] == "ok" and len(r.get(key) or []) > 1 and min(r[key]) > 0
    ]
    noisy = [s for s in spreads if s[0] > NOISY_SPREAD]
    if not noisy:
        return []
    worst = max(noisy)
    return [
        f"- timing noise: in {len(noisy)} of {len(spreads)} measurements the slowest {what} "
        f"took over {NOISY_SPREAD}x the fastest (worst {worst[0]:.1f}x, {worst[1]}); "
        "the medians are less reliable (busy or throttled machine?)"
    ]


# --------------------------------------------------------------------------- gpt-train


def _train_header(records: Sequence[dict], settings: GPTTrainSettings, env: dict) -> list[str]:
    device = settings.cases[0].device if settings.cases else "cpu"
    lines = _common_header("attnkit GPT training-throughput benchmark", records, device, env)
    return [
        *lines,
        "- step: forward, cross-entropy of every next token (on the logits, outside the "
        "model), backward, clip_grad_norm_(1), AdamW step, zero_grad; dropout 0; random "
        f"tokens (seed {settings.seed})",
        f"- timing: {settings.warmup} warm-up step(s) (torch.compile compiles there; not "
        f"timed), then {settings.steps} timed steps; median reported; tokens/s = B·T / median "
        f"step time. Each implementation in a fresh process, {settings.rounds} round(s), "
        "round-robin; each row is its fastest round",
        "- memory: peak over the timed steps above the baseline taken after building the "
        "model: gradients, optimizer state and one step's activations",
        "",
    ]


def _train_row(name: str, record: dict, baseline: dict | None) -> str:
    if record["status"] != "ok":
        return _failed_row(name, record, TRAIN_COLUMNS)
    cells = [
        f"{record['tokens_per_s']:,.0f}",
        _ratio(record, baseline, "tokens_per_s"),
        _number(record["step_s"] * 1e3),
        _spread(record["step_min_s"], record["step_max_s"], 1e-3),
        _number(record["peak_mem_bytes"] / MIB),
        f"{record['parameters']:,}",
        _number(record["warmup_s"]),
    ]
    return f"| {name} | " + " | ".join(cells) + " |"


def _train_table(best: dict[str, dict], impls: Sequence[str]) -> str:
    separator = "|---|" + "---:|" * _value_columns(TRAIN_COLUMNS)
    lines = [TRAIN_COLUMNS.format(base=TRAIN_BASELINE), separator]
    baseline = best.get(TRAIN_BASELINE)
    lines += [_train_row(name, best[name], baseline) for name in impls if name in best]
    return "\n".join(lines)


def _size_title(record: dict) -> str:
    return (
        f"{record['size']}: layers {record['layers']}, heads {record['heads']}, "
        f"d_model {record['d_model']}, block {record['block']}, batch {record['batch']} "
        f"({record['batch'] * record['block']:,} tokens a step), vocab {record['vocab']}"
    )


def _rounds_notes(records: Sequence[dict], rounds: int) -> list[str]:
    if rounds < 2:
        return []
    notes = [f"- rounds: tokens/s of each of the {rounds} rounds (all are in gpt_train.json):"]
    for size, best in best_by_size(list(records)).items():
        for name, record in best.items():
            if record["status"] != "ok":
                continue
            per_round = [
                f"{r['tokens_per_s']:,.0f}" if r["status"] == "ok" else r["status"]
                for r in records
                if r["impl"] == name and r["size"] == size
            ]
            notes.append(f"  - {size}, {name}: {' / '.join(per_round)}")
    return notes


def render_gpt_train_markdown(
    records: Sequence[dict], settings: GPTTrainSettings, env: dict
) -> str:
    """The markdown report of ``attnkit bench gpt-train``: a table per size."""
    impls = _shown(records, settings.impls)
    lines = _train_header(records, settings, env)
    lines += _implementations(TRAIN_IMPLEMENTATIONS, records, impls)
    above = f"above 1: faster than {TRAIN_BASELINE}"
    by_size = best_by_size(list(records))
    for best in by_size.values():
        title = _size_title(next(iter(best.values())))
        lines += _section(f"{title} ({above})", _train_table(best, impls))
    best_all = [r for best in by_size.values() for r in best.values()]
    notes = _problem_notes(records, lambda r: f" ({r['size']}, round {r['round'] + 1})")
    notes += _rounds_notes(records, settings.rounds)
    notes += _noise_note(best_all, "step_times_s", "step")
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)


def write_gpt_train_report(
    records: Sequence[dict], settings: GPTTrainSettings, env: dict, output: Path
) -> str:
    """Write ``gpt_train.json`` and ``gpt_train.md`` into ``output``; return the markdown."""
    markdown = render_gpt_train_markdown(records, settings, env)
    return write_results(records, markdown, output, "gpt_train")


# --------------------------------------------------------------------------- generate


def _generate_header(records: Sequence[dict], settings: GenerateSettings, env: dict) -> list[str]:
    case = settings.case
    lines = _common_header("attnkit GPT generation benchmark", records, case.device, env)
    parameters = sorted({r["parameters"] for r in records if r.get("parameters")})
    counted = f"{', '.join(f'{p:,}' for p in parameters)} parameters" if parameters else ""
    return [
        *lines,
        f"- model: GPT-2 layout, layers {case.layers}, heads {case.heads}, d_model "
        f"{case.d_model}, block {case.block}, vocab {case.vocab}; {counted}; random weights "
        f"N(0, {case.init_std:g}) (seed {settings.seed}), the same in every implementation",
        f"- decoding: batch 1, a random prompt of {case.prompt_len} tokens, greedy, "
        f"{case.new_tokens} new tokens, no stop token",
        "- timing: one warm-up generation of a few tokens, then "
        f"{case.repeats} timed generations; median reported; new tokens/s = new tokens / "
        "median generation time (prefill included). Each implementation in a fresh process",
        "- weight GB/s: float32 parameter bytes x new tokens / median generation time; at "
        "batch 1 every token reads every weight once, so this is the memory traffic the "
        "speed needs, and `weights_floor` shows what the machine streams at best",
        "",
    ]


def _same_tokens(record: dict) -> str:
    if record["impl"] == GENERATE_BASELINE:
        return "(reference)"
    if record.get("floor"):
        return "(no tokens: a floor)"
    same = record.get("same_tokens_as_hf")
    if same is None:
        return DASH
    return "yes" if same else f"no (from token {record.get('first_difference')})"


def _generate_row(name: str, record: dict, baseline: dict | None) -> str:
    if record["status"] != "ok":
        return _failed_row(name, record, GENERATE_COLUMNS)
    cells = [
        _number(record["new_tokens_per_s"]),
        _ratio(record, baseline, "new_tokens_per_s"),
        _number(record["ms_per_token"]),
        _number(record["weight_gb_per_s"]),
        _number(record["gen_s"]),
        _spread(record["gen_min_s"], record["gen_max_s"], 1.0),
        _same_tokens(record),
        f"{record['parameters']:,}",
        _number(record["warmup_s"]),
    ]
    return f"| {name} | " + " | ".join(cells) + " |"


def _generate_table(records: Sequence[dict], impls: Sequence[str]) -> str:
    by_impl = {r["impl"]: r for r in records}
    separator = "|---|" + "---:|" * _value_columns(GENERATE_COLUMNS)
    lines = [GENERATE_COLUMNS.format(base=GENERATE_BASELINE), separator]
    baseline = by_impl.get(GENERATE_BASELINE)
    lines += [_generate_row(name, by_impl[name], baseline) for name in impls if name in by_impl]
    return "\n".join(lines)


def _distinct_note(records: Sequence[dict]) -> list[str]:
    generated = [r for r in records if not r.get("floor")]
    distinct = sorted({r["distinct_tokens"] for r in generated if r.get("distinct_tokens")})
    if not distinct:
        return []
    return [
        f"- distinct tokens in a generation: {', '.join(map(str, distinct))} (a random model "
        "soon repeats itself; the same-tokens check is as strong as the sequence is varied)"
    ]


def render_generate_markdown(records: Sequence[dict], settings: GenerateSettings, env: dict) -> str:
    """The markdown report of ``attnkit bench generate``."""
    impls = _shown(records, settings.impls)
    lines = _generate_header(records, settings, env)
    lines += _implementations(GENERATE_IMPLEMENTATIONS, records, impls)
    above = f"above 1: faster than {GENERATE_BASELINE}"
    lines += _section(f"Generation speed ({above})", _generate_table(records, impls))
    notes = _problem_notes(records, lambda r: "")
    notes += _distinct_note(records) + _noise_note(records, "gen_times_s", "generation")
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)


def write_generate_report(
    records: Sequence[dict], settings: GenerateSettings, env: dict, output: Path
) -> str:
    """Write ``generate.json`` and ``generate.md`` into ``output``; return the markdown."""
    markdown = render_generate_markdown(records, settings, env)
    return write_results(records, markdown, output, "generate")
