"""``attnkit bench scaling``: arguments and what it runs.

The arguments are the attention benchmark's (:func:`~attnkit.bench.commands_common.
add_attention_arguments`) with this benchmark's implementations, lengths and
``B = 1``; :mod:`attnkit.bench.commands` registers it in its ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from attnkit.bench import scaling
from attnkit.bench.arguments import names_from
from attnkit.bench.commands_common import (
    add_attention_arguments,
    attention_progress_line,
    attention_settings,
    run_with_progress,
)
from attnkit.bench.environment import describe
from attnkit.bench.report_scaling import STEM, write_scaling_report

scaling_impl_list = names_from(scaling.IMPLEMENTATIONS)
scaling_impl_list.__doc__ = "argparse type: comma-separated scaling implementation names."


def configure_scaling(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``attnkit bench scaling``."""
    add_attention_arguments(
        parser,
        seq_lens=scaling.DEFAULT_SEQ_LENS,
        impls=scaling.DEFAULT_IMPLS,
        impl_type=scaling_impl_list,
        batch=1,
        output_files=f"{STEM}.json, {STEM}.md and {STEM}.png",
    )


def run_scaling_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the scaling benchmark, write JSON, markdown and plot, print the markdown.

    Returns 1 if a case failed (skipped ones are fine), else 0.
    """
    del parser
    settings = attention_settings(args)
    records = run_with_progress(
        "scaling",
        len(settings.seq_lens) * len(settings.impls),
        args.output / f"{STEM}.json",
        lambda on_record: scaling.run_scaling(settings, on_record),
        partial(attention_progress_line, "scaling"),
    )
    markdown = write_scaling_report(records, settings, describe(settings.device), args.output)
    print(markdown)
    written = ", ".join(str(args.output / f"{STEM}.{ext}") for ext in ("json", "md", "png"))
    print(f"wrote {written}", file=sys.stderr)
    return 1 if any(r["status"] == "error" for r in records) else 0
