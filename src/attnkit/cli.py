"""The ``attnkit`` command line."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from attnkit.demo import run_demo

    run_demo(args.output, steps=args.steps)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from attnkit.bench import main as bench_main

    return bench_main(args.bench_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnkit", description="Attention mechanisms and Transformer models."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train a small Transformer on sequence reversal")
    demo.add_argument("--output", default="runs/demo", help="folder for the heatmap and summary")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default 1200)")
    demo.set_defaults(handler=_demo)

    bench = commands.add_parser(
        "bench", help="benchmarks (see `attnkit bench --help`)", add_help=False
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
