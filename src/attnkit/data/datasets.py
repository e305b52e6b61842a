"""Readers for the real data sets: line-aligned parallel corpora and labelled-text TSV.

Bad data is never silently misaligned: a missing file raises ``FileNotFoundError`` naming
it; mismatched line counts, malformed rows, bad labels and invalid UTF-8 raise
``ValueError`` naming the file and line; empty lines are either skipped and counted (with
their line numbers, the default) or an error (``on_empty="error"``).

Files may be plain text or gzip (``.gz``); lines are split on ``"\\n"`` only (never on the
other Unicode line breaks ``str.splitlines`` knows, which would shift the alignment) and a
trailing ``"\\r"`` is removed.
"""

from __future__ import annotations

import gzip
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from attnkit.data.tokenizers import TextTokenizer

__all__ = [
    "ClassificationData",
    "ParallelCorpus",
    "data_path",
    "data_root",
    "read_classification_tsv",
    "read_lines",
    "read_parallel",
]

OnEmpty = Literal["skip", "error"]
DEFAULT_DATA_ROOT = "../shared/data"


def data_root() -> Path:
    """Where the shared data sets live: ``$ATTNKIT_DATA``, else ``../shared/data``.

    The default is relative to the *current working directory* (the repository root when
    running tests or the CLI from a checkout), matching the shared-data layout.
    """
    return Path(os.environ.get("ATTNKIT_DATA") or DEFAULT_DATA_ROOT).expanduser()


def data_path(*parts: str) -> Path:
    """``data_root() / parts``; a missing path raises ``FileNotFoundError`` with a hint."""
    path = data_root().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist (data root {data_root()!s} from ATTNKIT_DATA, default "
            f"{DEFAULT_DATA_ROOT} relative to the working directory {Path.cwd()})"
        )
    return path


def read_lines(path: str | os.PathLike) -> list[str]:
    """All lines of a UTF-8 text file (``.gz`` decompressed), without line endings."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not valid UTF-8 ({err.reason})") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start a new one
    return [line.removesuffix("\r") for line in lines]


def _check_on_empty(on_empty: str) -> None:
    if on_empty not in ("skip", "error"):
        raise ValueError(f"on_empty must be 'skip' or 'error'; got {on_empty!r}")


@dataclass
class ParallelCorpus:
    """Aligned ``(src, tgt)`` sentence pairs and a report of the lines that were skipped.

    ``skipped_lines`` are 1-based line numbers (the same in both files) of pairs dropped
    because one side was empty.
    """

    pairs: list[tuple[str, str]]
    src_path: Path
    tgt_path: Path
    num_lines: int
    skipped_lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.pairs)

    def __getitem__(self, index: int) -> tuple[str, str]:
        return self.pairs[index]

    @property
    def sources(self) -> list[str]:
        return [src for src, _ in self.pairs]

    @property
    def targets(self) -> list[str]:
        return [tgt for _, tgt in self.pairs]

    def report(self) -> str:
        """One line: files, lines read, pairs kept, pairs skipped (with the first lines)."""
        shown = ", ".join(map(str, self.skipped_lines[:10]))
        more = ", ..." if len(self.skipped_lines) > 10 else ""
        skipped = f" (lines {shown}{more})" if self.skipped_lines else ""
        return (
            f"{self.src_path} | {self.tgt_path}: {self.num_lines} lines, {len(self.pairs)} "
            f"pairs, {len(self.skipped_lines)} skipped for an empty side{skipped}"
        )

    def encode(
        self, src_tokenizer: TextTokenizer, tgt_tokenizer: TextTokenizer | None = None
    ) -> list[tuple[list[int], list[int]]]:
        """``(src_ids, tgt_ids)`` without bos/eos, ready for ``TokenBudgetBatcher``."""
        tgt_tokenizer = tgt_tokenizer or src_tokenizer
        sources = src_tokenizer.encode_batch(self.sources)
        return list(zip(sources, tgt_tokenizer.encode_batch(self.targets), strict=True))


def read_parallel(
    src_path: str | os.PathLike, tgt_path: str | os.PathLike, *, on_empty: OnEmpty = "skip"
) -> ParallelCorpus:
    """Read a line-aligned corpus: line ``i`` of ``src_path`` translates line ``i`` of ``tgt_path``.

    Lines are stripped of surrounding whitespace. Different line counts raise ``ValueError``
    naming both files and counts. A pair with an empty side is skipped and counted in
    ``skipped_lines`` (``on_empty="skip"``) or raises ``ValueError`` naming the file and line.
    """
    _check_on_empty(on_empty)
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    sources, targets = read_lines(src_path), read_lines(tgt_path)
    if len(sources) != len(targets):
        raise ValueError(
            f"parallel files differ in length: {src_path} has {len(sources)} lines, "
            f"{tgt_path} has {len(targets)} lines"
        )
    pairs, skipped = [], []
    for number, (src, tgt) in enumerate(zip(sources, targets, strict=True), start=1):
        src, tgt = src.strip(), tgt.strip()
        if src and tgt:
            pairs.append((src, tgt))
            continue
        if on_empty == "error":
            empty = src_path if not src else tgt_path
            raise ValueError(f"{empty}, line {number}: empty line (pass on_empty='skip' to drop)")
        skipped.append(number)
    return ParallelCorpus(pairs, src_path, tgt_path, len(sources), skipped)


@dataclass
class ClassificationData:
    """Labelled texts from a TSV file; ``skipped_lines`` are 1-based lines with empty text."""

    texts: list[str]
    labels: list[int]
    path: Path
    skipped_lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_classes(self) -> int:
        """``max(label) + 1`` (labels are 0-based class ids)."""
        return max(self.labels) + 1 if self.labels else 0

    def label_counts(self) -> dict[int, int]:
        """Examples per label, sorted by label."""
        return dict(sorted(Counter(self.labels).items()))

    def encode(self, tokenizer: TextTokenizer, **kwargs: bool) -> list[tuple[list[int], int]]:
        """``(ids, label)`` pairs for ``ClassificationBatcher`` (kwargs: ``add_bos``...)."""
        return list(zip(tokenizer.encode_batch(self.texts, **kwargs), self.labels, strict=True))


def read_classification_tsv(
    path: str | os.PathLike,
    text_column: str = "sentence",
    label_column: str = "label",
    *,
    on_empty: OnEmpty = "skip",
) -> ClassificationData:
    """Read a tab-separated file with a header row naming ``text_column`` and ``label_column``.

    Texts are stripped (GLUE puts a space before the tab). Labels must be integers. Rows
    with the wrong number of fields or a non-integer label raise ``ValueError`` naming the
    file and line; empty texts are skipped and counted, or an error with ``on_empty="error"``.
    No quoting is interpreted: GLUE text contains bare ``"`` characters.
    """
    _check_on_empty(on_empty)
    path = Path(path)
    lines = read_lines(path)
    if not lines:
        raise ValueError(f"{path}: empty file, expected a header row")
    header = lines[0].split("\t")
    for column in (text_column, label_column):
        if column not in header:
            raise ValueError(f"{path}, line 1: no column {column!r} in header {header}")
    text_at, label_at = header.index(text_column), header.index(label_column)
    data = ClassificationData([], [], path)
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():  # a blank row counts as an empty text
            _empty_row(data, path, number, on_empty)
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ValueError(
                f"{path}, line {number}: expected {len(header)} tab-separated fields "
                f"{header}, got {len(fields)}"
            )
        label = fields[label_at].strip()
        if not (label.isascii() and label.isdecimal()):  # refuses negatives too: 0-based ids
            raise ValueError(
                f"{path}, line {number}: label {label!r} is not a non-negative integer"
            )
        label_id = int(label)
        text = fields[text_at].strip()
        if not text:
            _empty_row(data, path, number, on_empty)
            continue
        data.texts.append(text)
        data.labels.append(label_id)
    return data


def _empty_row(data: ClassificationData, path: Path, number: int, on_empty: OnEmpty) -> None:
    if on_empty == "error":
        raise ValueError(f"{path}, line {number}: empty text (pass on_empty='skip' to drop)")
    data.skipped_lines.append(number)
