"""What several ``attnkit bench`` subcommands share.

The attention-level benchmarks (``attention`` and ``scaling``) take the same
arguments (sizes, timing, memory budget, threads, ...) and turn them into one
:class:`~attnkit.bench.attention.AttentionSettings`; every benchmark runs its
cases with a progress bar, saving the records as they arrive.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from attnkit.bench.arguments import (
    device_name,
    dtype_name,
    int_list,
    non_negative_float,
    positive_float,
    positive_int,
)
from attnkit.bench.attention import AttentionSettings
from attnkit.bench.environment import device_memory_bytes
from attnkit.bench.measure import Timing
from attnkit.bench.report import write_json

DEFAULT_BUDGET_FRACTION = 0.6
FALLBACK_BUDGET_BYTES = 8 * 2**30


def add_run_arguments(
    parser: argparse.ArgumentParser, output_files: str, *, worker: str, seed_of: str
) -> None:
    """``--threads``, ``--timeout``, ``--seed`` and ``--output``, shared by every benchmark."""
    add = parser.add_argument
    add(
        "--threads",
        type=positive_int,
        default=None,
        help="torch.set_num_threads in each worker (default: torch's default)",
    )
    add(
        "--timeout",
        type=positive_float,
        default=1800.0,
        help=f"seconds before one {worker}'s worker is stopped (default: %(default)s)",
    )
    add("--seed", type=int, default=0, help=f"random seed of {seed_of} (default: %(default)s)")
    add(
        "--output",
        type=Path,
        default=Path("bench-results"),
        help=f"directory for {output_files} (default: %(default)s)",
    )


def add_attention_arguments(
    parser: argparse.ArgumentParser,
    *,
    seq_lens: Sequence[int],
    impls: Sequence[str],
    impl_type: Callable[[str], tuple[str, ...]],
    batch: int,
    output_files: str,
) -> None:
    """Arguments of an attention-level benchmark, with its defaults and output file names."""
    add = parser.add_argument
    add(
        "--seq-lens",
        type=int_list,
        default=tuple(seq_lens),
        metavar="T,T,...",
        help=f"sequence lengths (default: {','.join(map(str, seq_lens))}; "
        "cases estimated over the memory budget are skipped)",
    )
    add("--batch", type=positive_int, default=batch, help="batch size B (default: %(default)s)")
    add("--heads", type=positive_int, default=8, help="heads H (default: %(default)s)")
    add("--head-dim", type=positive_int, default=64, help="head dim Dh (default: %(default)s)")
    add(
        "--impls",
        type=impl_type,
        default=tuple(impls),
        metavar="NAME,...",
        help=f"implementations (default: all of {', '.join(impls)})",
    )
    add("--no-causal", dest="causal", action="store_false", help="full (non-causal) attention")
    add("--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    add("--dtype", type=dtype_name, default="float32", help="fp32, bf16 or fp16 (default: fp32)")
    _add_run_arguments(parser, output_files)


def _add_run_arguments(parser: argparse.ArgumentParser, output_files: str) -> None:
    """Timing, memory budget, threads, timeout, seed and output directory."""
    add = parser.add_argument
    add(
        "--min-time",
        type=non_negative_float,
        default=1.0,
        help="stop repeating once this many seconds were timed (default: %(default)s)",
    )
    add(
        "--max-repeats",
        type=positive_int,
        default=5,
        help="at most this many timed runs per phase (default: %(default)s)",
    )
    add(
        "--memory-budget-gb",
        type=positive_float,
        default=None,
        help="skip cases whose estimated peak exceeds this many GiB "
        f"(default: {DEFAULT_BUDGET_FRACTION * 100:.0f}%% of the device's total memory)",
    )
    add_run_arguments(parser, output_files, worker="case", seed_of="the inputs")


def memory_budget(args: argparse.Namespace) -> int:
    """Budget in bytes: the user's, else a fraction of the device's memory."""
    if args.memory_budget_gb is not None:
        return int(args.memory_budget_gb * 2**30)
    total = device_memory_bytes(args.device)
    return int(DEFAULT_BUDGET_FRACTION * total) if total else FALLBACK_BUDGET_BYTES


def attention_settings(args: argparse.Namespace) -> AttentionSettings:
    """Parsed arguments (of :func:`add_attention_arguments`) -> :class:`AttentionSettings`."""
    return AttentionSettings(
        seq_lens=args.seq_lens,
        batch=args.batch,
        heads=args.heads,
        head_dim=args.head_dim,
        causal=args.causal,
        device=args.device,
        dtype=args.dtype,
        impls=args.impls,
        timing=Timing(min_time=args.min_time, max_repeats=args.max_repeats),
        memory_budget_bytes=memory_budget(args),
        threads=args.threads,
        seed=args.seed,
        timeout_s=args.timeout,
    )


def attention_progress_line(benchmark: str, record: dict) -> str:
    """One line per attention-level record: its times and peak, or why it has none."""
    head = f"{benchmark} {record['impl']:<16} T={record['T']:<6}"
    if record["status"] != "ok":
        return f"{head} {record['status']}: {record['message']}"
    return (
        f"{head} fwd {record['fwd_s'] * 1e3:9.2f} ms  fwd+bwd {record['fwd_bwd_s'] * 1e3:9.2f} ms"
        f"  peak {record['peak_mem_bytes'] / 2**20:9.1f} MiB"
    )


def run_with_progress(
    name: str,
    total: int,
    json_path: Path,
    run: Callable[[Callable[[dict], None]], list[dict]],
    line: Callable[[dict], str],
) -> list[dict]:
    """Run with a progress bar; every record is printed and saved as it arrives.

    ``run(on_record)`` runs the cases, calling ``on_record`` with each record.
    """
    records: list[dict] = []
    with tqdm(total=total, desc=name, file=sys.stderr, disable=None) as bar:

        def on_record(record: dict) -> None:
            records.append(record)
            write_json(records, json_path)  # partial results survive
            bar.update()
            tqdm.write(line(record), file=sys.stderr)

        run(on_record)
    return records
