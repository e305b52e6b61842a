"""Report of ``attnkit bench scaling``: JSON, markdown tables with ratios and log-log
slopes, and a two-panel log-log plot (time and peak memory against ``T``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from attnkit.bench.attention import AttentionSettings
from attnkit.bench.report import (
    DASH,
    MIB,
    Lookup,
    _header,
    _noise_note,
    _notes,
    _section,
    _shown_impls,
    _table,
    write_results,
)
from attnkit.bench.scaling import IMPLEMENTATIONS

STEM = "scaling"
RATIO_PAIR = ("sliding_window", "dense_math")  # numerator, denominator of the ratios line
TIME_KEY = "fwd_bwd_s"
MEMORY_KEY = "peak_mem_bytes"


def log_log_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``log y`` against ``log x``: 1 for linear growth, 2 for
    quadratic. Points with ``x <= 0`` or ``y <= 0`` are left out; None when fewer than
    two distinct ``x`` remain."""
    logs = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len({x for x, _ in logs}) < 2:
        return None
    mean_x = sum(x for x, _ in logs) / len(logs)
    mean_y = sum(y for _, y in logs) / len(logs)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in logs)
    variance = sum((x - mean_x) ** 2 for x, _ in logs)
    return covariance / variance


def measured(records: Sequence[dict], impl: str, key: str) -> list[tuple[int, float]]:
    """``(T, record[key])`` of ``impl``'s successful records, by increasing ``T``."""
    points = [
        (r["T"], r[key])
        for r in records
        if r["impl"] == impl and r["status"] == "ok" and r.get(key) is not None
    ]
    return sorted(points)


def slopes(records: Sequence[dict], impl: str) -> dict[str, float | None]:
    """Log-log slopes of ``impl``'s peak memory and time against ``T``."""
    return {
        "memory": log_log_slope(measured(records, impl, MEMORY_KEY)),
        "time": log_log_slope(measured(records, impl, TIME_KEY)),
    }


def ratios_line(lookup: Lookup, seq_lens: Sequence[int]) -> str:
    """Sliding window against dense math at the largest ``T`` where both ran."""
    num, den = RATIO_PAIR
    both = [
        t
        for t in seq_lens
        if all(lookup.get((name, t), {}).get("status") == "ok" for name in (num, den))
    ]
    if not both:
        return f"- ratios: {num} / {den}: {DASH} (no length where both ran)"
    t = max(both)
    a, b = lookup[(num, t)], lookup[(den, t)]
    parts = [
        f"{label} {a[key] / b[key]:.2f}x" if b.get(key) else f"{label} {DASH}"
        for label, key in (("fwd+bwd time", TIME_KEY), ("peak memory", MEMORY_KEY))
    ]
    return f"- ratios: {num} / {den} at T={t} (the largest length where both ran): " + ", ".join(
        parts
    )


def _slope_cell(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def slopes_table(records: Sequence[dict], impls: Sequence[str]) -> str:
    """One row per implementation: memory and time slopes, and the lengths they use."""
    lines = [
        "| impl | peak memory slope | time slope | measured T |",
        "|---|---:|---:|---|",
    ]
    for impl in impls:
        fitted = slopes(records, impl)
        lengths = ", ".join(str(t) for t, _ in measured(records, impl, TIME_KEY)) or DASH
        cells = [_slope_cell(fitted["memory"]), _slope_cell(fitted["time"]), lengths]
        lines.append(f"| {impl} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _implementations(impls: Sequence[str]) -> list[str]:
    lines = ["## Implementations", ""]
    lines += [f"- `{name}`: {IMPLEMENTATIONS[name].description}" for name in impls]
    lines.append(
        "- window, block and chunk sizes above shrink to T // 2 where T is shorter than "
        "twice the size"
    )
    return [*lines, ""]


def render_scaling_markdown(records: Sequence[dict], settings: AttentionSettings, env: dict) -> str:
    """The full markdown report of ``attnkit bench scaling``."""
    lookup: Lookup = {(r["impl"], r["T"]): r for r in records}
    impls = _shown_impls(records, settings.impls)

    def table(key: str, unit: float) -> str:
        return _table(lookup, impls, settings.seq_lens, key, unit)

    lines = _header(records, settings, env, title="attnkit scaling benchmark")
    lines += _implementations(impls)
    lines += _section("Forward + backward time (ms)", table(TIME_KEY, 1e-3))
    lines += _section("Peak memory, forward + backward (MiB)", table(MEMORY_KEY, MIB))
    scaling = "\n".join(
        [
            ratios_line(lookup, settings.seq_lens),
            "- slopes: least-squares slope of log(value) against log(T) over the measured "
            "lengths (1: linear growth, 2: quadratic); fixed overheads flatten it at short T",
            "",
            slopes_table(records, impls),
            "",
            f"![forward+backward time and peak memory against T]({STEM}.png)",
        ]
    )
    lines += _section("Scaling", scaling)
    notes = _notes(records) + _noise_note(records)
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)


def _panel(axes, records: Sequence[dict], impls: Sequence[str], key: str, unit: float) -> None:
    """One log-log panel: ``record[key] / unit`` against ``T`` for each implementation,
    with the measured lengths as the x ticks and plain numbers on both axes."""
    from matplotlib.ticker import LogFormatter, NullLocator

    lengths: set[int] = set()
    for impl in impls:
        points = [(t, value / unit) for t, value in measured(records, impl, key) if value > 0]
        if points:
            axes.plot([t for t, _ in points], [y for _, y in points], marker="o", label=impl)
            lengths.update(t for t, _ in points)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    if lengths:
        axes.set_xticks(sorted(lengths), labels=[str(t) for t in sorted(lengths)])
        axes.xaxis.set_minor_locator(NullLocator())
    axes.yaxis.set_major_formatter(LogFormatter())
    axes.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    axes.set_xlabel("sequence length T")
    axes.grid(alpha=0.3, which="both")


def plot_scaling(records: Sequence[dict], impls: Sequence[str], path: Path, title: str) -> Path:
    """Save the two-panel log-log plot (time, peak memory against ``T``) as a PNG.

    Rendered with matplotlib's Agg canvas (headless; no global backend state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    time_axes, memory_axes = figure.subplots(1, 2)
    _panel(time_axes, records, impls, TIME_KEY, 1e-3)
    time_axes.set_ylabel("forward + backward time (ms)")
    _panel(memory_axes, records, impls, MEMORY_KEY, MIB)
    memory_axes.set_ylabel("peak memory, forward + backward (MiB)")
    if time_axes.get_legend_handles_labels()[0]:
        time_axes.legend(fontsize="small")
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def _plot_title(settings: AttentionSettings, env: dict) -> str:
    causal = "causal" if settings.causal else "not causal"
    return (
        f"attnkit scaling: B={settings.batch}, H={settings.heads}, Dh={settings.head_dim}, "
        f"{causal}, {settings.dtype}, {settings.device} ({env.get('cpu', 'unknown CPU')})"
    )


def write_scaling_report(
    records: Sequence[dict], settings: AttentionSettings, env: dict, output: Path
) -> str:
    """Write ``scaling.json``, ``scaling.md`` and ``scaling.png`` into ``output``;
    return the markdown."""
    markdown = write_results(records, render_scaling_markdown(records, settings, env), output, STEM)
    impls = _shown_impls(records, settings.impls)
    plot_scaling(records, impls, output / f"{STEM}.png", _plot_title(settings, env))
    return markdown
