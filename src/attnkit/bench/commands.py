"""``attnkit bench`` subcommands: their arguments and what they run.

Each subcommand is a :class:`Command` in :data:`COMMANDS` (``attention``,
``train``, ``gpt-train`` and ``generate`` from :mod:`attnkit.bench.commands_gpt`, and
``scaling`` from :mod:`attnkit.bench.commands_scaling`);
a new benchmark adds one entry with a ``configure`` and a ``run`` function.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from attnkit.bench import train
from attnkit.bench.arguments import (
    COMPILE_BACKENDS,
    COMPILE_MODES,
    device_name,
    dtype_name,
    names_from,
    positive_int,
)
from attnkit.bench.attention import DEFAULT_IMPLS, DEFAULT_SEQ_LENS, IMPLEMENTATIONS, run_attention
from attnkit.bench.commands_common import (
    add_attention_arguments,
    add_run_arguments,
    attention_progress_line,
    attention_settings,
    run_with_progress,
)
from attnkit.bench.commands_gpt import (
    configure_generate,
    configure_gpt_train,
    run_generate_command,
    run_gpt_train_command,
)
from attnkit.bench.commands_scaling import configure_scaling, run_scaling_command
from attnkit.bench.environment import describe
from attnkit.bench.report import write_report, write_train_report


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
    add_attention_arguments(
        parser,
        seq_lens=DEFAULT_SEQ_LENS,
        impls=DEFAULT_IMPLS,
        impl_type=impl_list,
        batch=2,
        output_files="attention.json and attention.md",
    )


def run_attention_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the attention benchmark, write the results, print the markdown."""
    del parser
    settings = attention_settings(args)
    records = run_with_progress(
        "attention",
        len(settings.seq_lens) * len(settings.impls),
        args.output / "attention.json",
        lambda on_record: run_attention(settings, on_record),
        partial(attention_progress_line, "attention"),
    )
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
    add_run_arguments(
        parser, "train.json and train.md", worker="implementation", seed_of="weights and batches"
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
    available = [name for name in settings.impls if not train.IMPLEMENTATIONS[name].available()]
    total = len(settings.impls) + (settings.rounds - 1) * len(available)
    records = run_with_progress(
        "train",
        total,
        args.output / "train.json",
        partial(train.run_train, settings),
        _train_progress_line,
    )
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
    "scaling": Command(
        help="time and peak memory of forward+backward as the sequence grows, for dense, "
        "chunked, sliding-window, block-sparse, linear, Performer and LSH attention",
        configure=configure_scaling,
        run=run_scaling_command,
    ),
}
