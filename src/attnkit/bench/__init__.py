"""Benchmark harness: ``attnkit bench <benchmark> [options]``.

Each case runs in its own fresh worker process so that peak memory means
something; results are written as JSON (a list of records) and markdown.
Benchmarks: ``attention`` (:mod:`attnkit.bench.attention`), ``train``
(:mod:`attnkit.bench.train`), ``gpt-train`` and ``generate`` (:mod:`attnkit.bench.gpt`),
``scaling`` (:mod:`attnkit.bench.scaling`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``attnkit bench`` parser with one subcommand per benchmark."""
    from attnkit.bench.commands import COMMANDS

    parser = argparse.ArgumentParser(
        prog="attnkit bench",
        description="Benchmark attnkit: time and peak memory, each case in a fresh process.",
    )
    subparsers = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        command.configure(sub)
        sub.set_defaults(_command=command, _parser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``attnkit bench`` with ``argv`` (without the program name); returns the exit code.

    Bad arguments print a usage message naming the problem and return 2.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exit_:  # argparse's --help (0) and usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    return args._command.run(args, args._parser)
