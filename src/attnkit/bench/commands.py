"""``attnkit bench`` subcommands: their arguments and what they run.

Each subcommand is a :class:`Command` in :data:`COMMANDS` (``attention``,
``train``, and ``gpt-train`` and ``generate`` from :mod:`attnkit.bench.commands_gpt`);
a new benchmark adds one entry with a ``configure`` and a ``run`` function.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from attnkit.bench import train
from attnkit.bench.arguments import (
    COMPILE_BACKENDS,
    COMPILE_MODES,
    device_name,
    dtype_name,
    int_list,
    names_from,
    non_negative_float,
    positive_float,
    positive_int,
)
from attnkit.bench.attention import (
    DEFAULT_IMPLS,
    DEFAULT_SEQ_LENS,
    IMPLEMENTATIONS,
    AttentionSettings,
    run_attention,
)
from attnkit.bench.commands_gpt import (
    configure_generate,
    configure_gpt_train,
    run_generate_command,
    run_gpt_train_command,
)
from attnkit.bench.environment import describe, device_memory_bytes
from attnkit.bench.measure import Timing
from attnkit.bench.report import write_json, write_report, write_train_report

DEFAULT_BUDGET_FRACTION = 0.6


@dataclass(frozen=True)
class Command:
    """One ``attnkit bench`` subcommand."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, argparse.ArgumentParser], int]


# --------------------------------------------------------------------------- argument types


impl_list = names_from(IMPLEMENTATIONS)
impl_list.__doc__ = "argparse type: comma-separated attention implementation names."
train_impl_list = names_from(train.IMPLEMENTATIONS)
train_impl_list.__doc__ = "argparse type: comma-separated training implementation names."


# --------------------------------------------------------------------------- attention


def configure_attention(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``attnkit bench attention``."""
    add = parser.add_argument
    add(
        "--seq-lens",
        type=int_list,
        default=DEFAULT_SEQ_LENS,
        metavar="T,T,...",
        help=f"sequence lengths (default: {','.join(map(str, DEFAULT_SEQ_LENS))}; "
        "cases estimated over the memory budget are skipped)",
    )
    add("--batch", type=positive_int, default=2, help="batch size B (default: %(default)s)")
    add("--heads", type=positive_int, default=8, help="heads H (default: %(default)s)")
    add("--head-dim", type=positive_int, default=64, help="head dim Dh (default: %(default)s)")
    add(
        "--impls",
        type=impl_list,
        default=DEFAULT_IMPLS,
        metavar="NAME,...",
        help=f"implementations (default: all of {', '.join(DEFAULT_IMPLS)})",
    )
    add("--no-causal", dest="causal", action="store_false", help="full (non-causal) attention")
    add("--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    add("--dtype", type=dtype_name, default="float32", help="fp32, bf16 or fp16 (default: fp32)")
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
        help="seconds before one case's worker is stopped (default: %(default)s)",
    )
    add("--seed", type=int, default=0, help="random seed of the inputs (default: %(default)s)")
    add(
        "--output",
        type=Path,
        default=Path("bench-results"),
        help="directory for attention.json and attention.md (default: %(default)s)",
    )


def _memory_budget(args: argparse.Namespace) -> int:
    """Budget in bytes: the user's, else a fraction of the device's memory."""
    if args.memory_budget_gb is not None:
        return int(args.memory_budget_gb * 2**30)
    total = device_memory_bytes(args.device)
    return int(DEFAULT_BUDGET_FRACTION * total) if total else 8 * 2**30


def attention_settings(args: argparse.Namespace) -> AttentionSettings:
    """Parsed arguments -> :class:`AttentionSettings`."""
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
        memory_budget_bytes=_memory_budget(args),
        threads=args.threads,
        seed=args.seed,
        timeout_s=args.timeout,
    )


def _progress_line(record: dict) -> str:
    head = f"attention {record['impl']:<16} T={record['T']:<6}"
    if record["status"] != "ok":
        return f"{head} {record['status']}: {record['message']}"
    return (
        f"{head} fwd {record['fwd_s'] * 1e3:9.2f} ms  fwd+bwd {record['fwd_bwd_s'] * 1e3:9.2f} ms"
        f"  peak {record['peak_mem_bytes'] / 2**20:9.1f} MiB"
    )


def run_attention_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the attention benchmark, write the results, print the markdown."""
    del parser
    settings = attention_settings(args)
    records: list[dict] = []
    total = len(settings.seq_lens) * len(settings.impls)
    with tqdm(total=total, desc="attention", file=sys.stderr, disable=None) as bar:

        def on_record(record: dict) -> None:
            records.append(record)
            write_json(records, args.output / "attention.json")  # partial results survive
            bar.update()
            tqdm.write(_progress_line(record), file=sys.stderr)

        run_attention(settings, on_record)
    markdown = write_report(records, settings, describe(settings.device), args.output)
    print(markdown)
    print(
        f"wrote {args.output / 'attention.json'} and {args.output / 'attention.md'}",
        file=sys.stderr,
    )
    return 1 if any(r["status"] == "error" for r in records) else 0


# --------------------------------------------------------------------------- train

TRAIN_DTYPES = ("float32", "bfloat16")


def configure_train(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``attnkit bench train``."""
    default = train.TrainCase()
    add = parser.add_argument
    add(
        "--batch",
        type=positive_int,
        default=default.batch,
        help="batch size B (default: %(default)s)",
    )
    add(
        "--seq-len",
        type=positive_int,
        default=default.seq_len,
        help="source and target length S = T (default: %(default)s)",
    )
    add(
        "--vocab",
        type=positive_int,
        default=default.vocab,
        help="vocabulary (default: %(default)s)",
    )
    add(
        "--d-model", type=positive_int, default=default.d_model, help="width (default: %(default)s)"
    )
    add("--heads", type=positive_int, default=default.heads, help="heads (default: %(default)s)")
    add(
        "--layers",
        type=positive_int,
        default=default.layers,
        help="encoder layers and decoder layers, each (default: %(default)s)",
    )
    add(
        "--d-ff",
        type=positive_int,
        default=default.d_ff,
        help="feed-forward width (default: %(default)s)",
    )
    add(
        "--steps",
        type=positive_int,
        default=train.TrainSettings.steps,
        help="timed training steps per implementation (default: %(default)s)",
    )
    add(
        "--warmup",
        type=int,
        default=train.TrainSettings.warmup,
        help="untimed warm-up steps, where torch.compile compiles (default: %(default)s; "
        "at least 1 for attnkit_compiled)",
    )
    add(
        "--rounds",
        type=positive_int,
        default=train.TrainSettings.rounds,
        help="run every implementation this many times, round-robin, and report each "
        "one's fastest round (default: %(default)s; more on a busy machine)",
    )
    add(
        "--impls",
        type=train_impl_list,
        default=train.DEFAULT_IMPLS,
        metavar="NAME,...",
        help=f"implementations (default: all of {', '.join(train.DEFAULT_IMPLS)})",
    )
    add("--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    add(
        "--dtype",
        type=dtype_name,
        default="float32",
        help="fp32, or bf16 (torch.autocast; parameters stay fp32) (default: fp32)",
    )
    add(
        "--compile-mode",
        choices=COMPILE_MODES,
        default=default.compile_mode,
        help="torch.compile mode of attnkit_compiled (default: %(default)s)",
    )
    add(
        "--compile-backend",
        choices=COMPILE_BACKENDS,
        default=default.compile_backend,
        help="torch.compile backend of attnkit_compiled (default: %(default)s; aot_eager "
        "checks the plumbing in seconds, without generating code)",
    )
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
        help="seconds before one implementation's worker is stopped (default: %(default)s)",
    )
    add(
        "--seed",
        type=int,
        default=0,
        help="random seed of weights and batches (default: %(default)s)",
    )
    add(
        "--output",
        type=Path,
        default=Path("bench-results"),
        help="directory for train.json and train.md (default: %(default)s)",
    )


def train_settings(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> train.TrainSettings:
    """Parsed arguments -> :class:`~attnkit.bench.train.TrainSettings`; bad combinations
    end in ``parser.error`` (exit code 2) naming the problem."""
    if args.dtype not in TRAIN_DTYPES:
        parser.error(f"--dtype: the train benchmark supports fp32 and bf16; got {args.dtype}")
    if args.warmup < 0:
        parser.error(f"--warmup: expected an integer >= 0; got {args.warmup}")
    if args.warmup == 0 and "attnkit_compiled" in args.impls:
        parser.error("--warmup: attnkit_compiled needs at least 1 warm-up step (it compiles there)")
    if args.d_model % args.heads != 0:
        parser.error(f"--d-model ({args.d_model}) must be divisible by --heads ({args.heads})")
    if args.vocab < train.MIN_VOCAB:
        parser.error(f"--vocab: expected at least {train.MIN_VOCAB}; got {args.vocab}")
    case = train.TrainCase(
        batch=args.batch,
        seq_len=args.seq_len,
        vocab=args.vocab,
        d_model=args.d_model,
        heads=args.heads,
        layers=args.layers,
        d_ff=args.d_ff,
        dtype=args.dtype,
        device=args.device,
        compile_mode=args.compile_mode,
        compile_backend=args.compile_backend,
    )
    return train.TrainSettings(
        case=case,
        impls=args.impls,
        steps=args.steps,
        warmup=args.warmup,
        threads=args.threads,
        seed=args.seed,
        timeout_s=args.timeout,
        rounds=args.rounds,
    )


def _train_progress_line(record: dict) -> str:
    head = f"train {record['impl']:<18} round {record.get('round', 0) + 1}"
    if record["status"] != "ok":
        return f"{head} {record['status']}: {record['message']}"
    return (
        f"{head} {record['tokens_per_s']:9,.0f} tgt tok/s  step {record['step_s'] * 1e3:8.1f} ms"
        f"  peak {record['peak_mem_bytes'] / 2**20:7.1f} MiB  warm-up {record['warmup_s']:6.1f} s"
    )


def run_train_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the training-throughput benchmark, write the results, print the markdown."""
    try:
        settings = train_settings(args, parser)
    except SystemExit as exit_:  # parser.error: the usage message is printed, code 2
        return exit_.code if isinstance(exit_.code, int) else 2
    records: list[dict] = []
    available = [name for name in settings.impls if not train.IMPLEMENTATIONS[name].available()]
    total = len(settings.impls) + (settings.rounds - 1) * len(available)
    with tqdm(total=total, desc="train", file=sys.stderr, disable=None) as bar:

        def on_record(record: dict) -> None:
            records.append(record)
            write_json(records, args.output / "train.json")  # partial results survive
            bar.update()
            tqdm.write(_train_progress_line(record), file=sys.stderr)

        train.run_train(settings, on_record)
    markdown = write_train_report(records, settings, describe(settings.case.device), args.output)
    print(markdown)
    print(f"wrote {args.output / 'train.json'} and {args.output / 'train.md'}", file=sys.stderr)
    return 1 if any(r["status"] == "error" for r in records) else 0


COMMANDS: dict[str, Command] = {
    "attention": Command(
        help="time and peak memory of attention implementations (attnkit backends, torch, naive)",
        configure=configure_attention,
        run=run_attention_command,
    ),
    "train": Command(
        help="training throughput (target tokens/s) of attnkit's encoder-decoder against "
        "torch.nn.Transformer and Hugging Face BART/Marian",
        configure=configure_train,
        run=run_train_command,
    ),
    "gpt-train": Command(
        help="GPT training throughput (tokens/s) of attnkit's GPT, eager and compiled, "
        "against Hugging Face GPT-2, at nanoGPT's tiny and a small size",
        configure=configure_gpt_train,
        run=run_gpt_train_command,
    ),
    "generate": Command(
        help="greedy generation speed (new tokens/s, batch 1) of attnkit's GPT against "
        "Hugging Face GPT-2 generate, with and without the KV cache, on the same weights",
        configure=configure_generate,
        run=run_generate_command,
    ),
}
