"""``attnkit bench gpt-train`` and ``attnkit bench generate``: arguments and what they run.

:mod:`attnkit.bench.commands` registers both in its ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from attnkit.bench import gpt
from attnkit.bench.arguments import (
    COMPILE_BACKENDS,
    COMPILE_MODES,
    device_name,
    names_from,
    positive_float,
    positive_int,
)
from attnkit.bench.commands_common import add_run_arguments, run_with_progress
from attnkit.bench.environment import describe
from attnkit.bench.report_gpt import write_generate_report, write_gpt_train_report

SIZE_CHOICES = (*gpt.SIZES, "both")
OVERRIDES = ("layers", "heads", "d_model", "block", "batch")

gpt_train_impl_list = names_from(gpt.TRAIN_IMPLEMENTATIONS)
gpt_train_impl_list.__doc__ = "argparse type: comma-separated GPT training implementation names."
generate_impl_list = names_from(gpt.GENERATE_IMPLEMENTATIONS)
generate_impl_list.__doc__ = "argparse type: comma-separated generation implementation names."


def _add_common(parser: argparse.ArgumentParser, output_files: str) -> None:
    """--device, --threads, --timeout, --seed and --output, as ``bench train`` has them."""
    parser.add_argument(
        "--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N (default: cpu)"
    )
    add_run_arguments(parser, output_files, worker="implementation", seed_of="weights and data")


def _finish(records: list[dict], markdown: str, output: Path, stem: str) -> int:
    """Print the report and where it went; the exit code: 1 if a record is an error."""
    print(markdown)
    print(f"wrote {output / (stem + '.json')} and {output / (stem + '.md')}", file=sys.stderr)
    return 1 if any(r["status"] == "error" for r in records) else 0


# --------------------------------------------------------------------------- gpt-train


def configure_gpt_train(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``attnkit bench gpt-train``."""
    add = parser.add_argument
    sizes = "; ".join(
        f"{name}: {s.layers} layers, {s.heads} heads, d_model {s.d_model}, block {s.block}, "
        f"batch {s.batch}"
        for name, s in gpt.SIZES.items()
    )
    add(
        "--size",
        choices=SIZE_CHOICES,
        default="both",
        help=f"model and batch size ({sizes}; default: %(default)s)",
    )
    add("--vocab", type=positive_int, default=65, help="vocabulary (default: %(default)s)")
    for name in OVERRIDES:
        add(
            f"--{name.replace('_', '-')}",
            type=positive_int,
            default=None,
            help=f"override the size's {name}",
        )
    add(
        "--steps",
        type=positive_int,
        default=gpt.GPTTrainSettings.steps,
        help="timed training steps per implementation (default: %(default)s)",
    )
    add(
        "--warmup",
        type=int,
        default=gpt.GPTTrainSettings.warmup,
        help="untimed warm-up steps, where torch.compile compiles (default: %(default)s; "
        "at least 1 for attnkit_compiled)",
    )
    add(
        "--rounds",
        type=positive_int,
        default=gpt.GPTTrainSettings.rounds,
        help="run every implementation this many times, round-robin, and report each "
        "one's fastest round (default: %(default)s; more on a busy machine)",
    )
    add(
        "--impls",
        type=gpt_train_impl_list,
        default=tuple(gpt.TRAIN_IMPLEMENTATIONS),
        metavar="NAME,...",
        help=f"implementations (default: all of {', '.join(gpt.TRAIN_IMPLEMENTATIONS)})",
    )
    add(
        "--compile-mode",
        choices=COMPILE_MODES,
        default="default",
        help="torch.compile mode of attnkit_compiled (default: %(default)s)",
    )
    add(
        "--compile-backend",
        choices=COMPILE_BACKENDS,
        default="inductor",
        help="torch.compile backend of attnkit_compiled (default: %(default)s)",
    )
    _add_common(parser, "gpt_train.json and gpt_train.md")


def _train_cases(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[gpt.GPTTrainCase, ...]:
    """One case per selected size, with the overrides given on the command line."""
    sizes = tuple(gpt.SIZES) if args.size == "both" else (args.size,)
    overrides = {name: getattr(args, name) for name in OVERRIDES if getattr(args, name)}
    settings = {
        "vocab": args.vocab,
        "device": args.device,
        "compile_mode": args.compile_mode,
        "compile_backend": args.compile_backend,
    }
    cases = []
    for size in sizes:
        fields = {**asdict(gpt.SIZES[size]), **overrides}
        if fields["d_model"] % fields["heads"] != 0:
            parser.error(
                f"--d-model ({fields['d_model']}) must be divisible by --heads "
                f"({fields['heads']}) (size {size})"
            )
        cases.append(gpt.train_case(size, **overrides, **settings))
    return tuple(cases)


def gpt_train_settings(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> gpt.GPTTrainSettings:
    """Parsed arguments -> :class:`~attnkit.bench.gpt.GPTTrainSettings`; bad combinations
    end in ``parser.error`` (exit code 2) naming the problem."""
    if args.warmup < 0:
        parser.error(f"--warmup: expected an integer >= 0; got {args.warmup}")
    if args.warmup == 0 and "attnkit_compiled" in args.impls:
        parser.error("--warmup: attnkit_compiled needs at least 1 warm-up step (it compiles there)")
    if args.vocab < gpt.MIN_VOCAB:
        parser.error(f"--vocab: expected at least {gpt.MIN_VOCAB}; got {args.vocab}")
    return gpt.GPTTrainSettings(
        cases=_train_cases(args, parser),
        impls=args.impls,
        steps=args.steps,
        warmup=args.warmup,
        rounds=args.rounds,
        threads=args.threads,
        seed=args.seed,
        timeout_s=args.timeout,
    )


def _gpt_train_line(record: dict) -> str:
    head = f"gpt-train {record['size']:<5} {record['impl']:<16} round {record['round'] + 1}"
    if record["status"] != "ok":
        return f"{head} {record['status']}: {record['message']}"
    return (
        f"{head} {record['tokens_per_s']:9,.0f} tok/s  step {record['step_s'] * 1e3:8.1f} ms"
        f"  {record['parameters']:,} parameters  warm-up {record['warmup_s']:6.1f} s"
    )


def run_gpt_train_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the GPT training-throughput benchmark, write the results, print the markdown."""
    try:
        settings = gpt_train_settings(args, parser)
    except SystemExit as exit_:  # parser.error: the usage message is printed, code 2
        return exit_.code if isinstance(exit_.code, int) else 2
    available = [n for n in settings.impls if not gpt.TRAIN_IMPLEMENTATIONS[n].available()]
    per_round = len(settings.cases)
    total = per_round * (len(settings.impls) + (settings.rounds - 1) * len(available))
    records = run_with_progress(
        "gpt-train",
        total,
        args.output / "gpt_train.json",
        lambda on_record: gpt.run_gpt_train(settings, on_record),
        _gpt_train_line,
    )
    device = settings.cases[0].device
    markdown = write_gpt_train_report(records, settings, describe(device), args.output)
    return _finish(records, markdown, args.output, "gpt_train")


# --------------------------------------------------------------------------- generate


def configure_generate(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``attnkit bench generate``."""
    default = gpt.GenerateCase()
    add = parser.add_argument
    numbers = {
        "new_tokens": "new tokens per generation",
        "prompt_len": "prompt length",
        "layers": "layers",
        "heads": "heads",
        "d_model": "width",
        "vocab": "vocabulary",
        "block": "longest sequence (n_positions); prompt + new tokens must fit",
        "repeats": "timed generations per implementation, after one warm-up",
    }
    for name, text in numbers.items():
        add(
            f"--{name.replace('_', '-')}",
            type=positive_int,
            default=getattr(default, name),
            help=f"{text} (default: %(default)s)",
        )
    add(
        "--init-std",
        type=positive_float,
        default=default.init_std,
        help="standard deviation of the random weights (default: %(default)s, GPT-2's; "
        "larger makes the greedy tokens more varied and the same-tokens check stronger)",
    )
    add(
        "--impls",
        type=generate_impl_list,
        default=tuple(gpt.GENERATE_IMPLEMENTATIONS),
        metavar="NAME,...",
        help=f"implementations (default: all of {', '.join(gpt.GENERATE_IMPLEMENTATIONS)})",
    )
    _add_common(parser, "generate.json and generate.md")


def generate_settings(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> gpt.GenerateSettings:
    """Parsed arguments -> :class:`~attnkit.bench.gpt.GenerateSettings`; bad combinations
    end in ``parser.error`` (exit code 2)."""
    if args.d_model % args.heads != 0:
        parser.error(f"--d-model ({args.d_model}) must be divisible by --heads ({args.heads})")
    if args.vocab < gpt.MIN_VOCAB:
        parser.error(f"--vocab: expected at least {gpt.MIN_VOCAB}; got {args.vocab}")
    if args.prompt_len + args.new_tokens > args.block:
        parser.error(
            f"--prompt-len + --new-tokens must fit in --block ({args.block}); "
            f"got {args.prompt_len} + {args.new_tokens}"
        )
    fields = ("vocab", "d_model", "heads", "layers", "block", "prompt_len", "new_tokens")
    case = gpt.GenerateCase(
        **{name: getattr(args, name) for name in fields},
        repeats=args.repeats,
        init_std=args.init_std,
        device=args.device,
    )
    return gpt.GenerateSettings(
        case=case, impls=args.impls, threads=args.threads, seed=args.seed, timeout_s=args.timeout
    )


def _generate_line(record: dict) -> str:
    head = f"generate {record['impl']:<16}"
    if record["status"] != "ok":
        return f"{head} {record['status']}: {record['message']}"
    return (
        f"{head} {record['new_tokens_per_s']:9,.1f} new tok/s  {record['ms_per_token']:7.2f} "
        f"ms/token  {record['parameters']:,} parameters"
    )


def run_generate_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the generation benchmark, write the results, print the markdown."""
    try:
        settings = generate_settings(args, parser)
    except SystemExit as exit_:  # parser.error: the usage message is printed, code 2
        return exit_.code if isinstance(exit_.code, int) else 2
    records = run_with_progress(
        "generate",
        len(settings.impls),
        args.output / "generate.json",
        lambda on_record: gpt.run_generate(settings, on_record),
        _generate_line,
    )
    env = describe(settings.case.device)
    markdown = write_generate_report(records, settings, env, args.output)
    return _finish(records, markdown, args.output, "generate")
