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

    Example:
        >>> import os, tempfile
        >>> from pathlib import Path
        >>> from unittest import mock
        >>> from attnkit.data import data_root
        >>> root = tempfile.mkdtemp()
        >>> with mock.patch.dict(os.environ, {"ATTNKIT_DATA": root}):  # restored afterwards
        ...     print(data_root() == Path(root))
        True
        >>> with mock.patch.dict(os.environ, {"ATTNKIT_DATA": ""}):  # unset or empty: default
        ...     print(data_root().as_posix())
        ../shared/data
    """
    return Path(os.environ.get("ATTNKIT_DATA") or DEFAULT_DATA_ROOT).expanduser()


def data_path(*parts: str) -> Path:
    """``data_root() / parts``; a missing path raises ``FileNotFoundError`` with a hint.

    Example:
        >>> import os, tempfile
        >>> from pathlib import Path
        >>> from unittest import mock
        >>> from attnkit.data import data_path
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "sst2").mkdir()
        >>> with mock.patch.dict(os.environ, {"ATTNKIT_DATA": str(root)}):
        ...     print(data_path("sst2") == root / "sst2")
        True
        >>> with mock.patch.dict(os.environ, {"ATTNKIT_DATA": str(root)}):
        ...     data_path("multi30k", "train.de")
        Traceback (most recent call last):
        ...
        FileNotFoundError: .../multi30k/train.de does not exist (data root ...)
    """
    path = data_root().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist (data root {data_root()!s} from ATTNKIT_DATA, default "
            f"{DEFAULT_DATA_ROOT} relative to the working directory {Path.cwd()})"
        )
    return path


def read_lines(path: str | os.PathLike) -> list[str]:
    r"""All lines of a UTF-8 text file (``.gz`` decompressed), without line endings.

    Lines end at ``"\n"`` only (a trailing ``"\r"`` is removed); a missing file raises
    ``FileNotFoundError`` and invalid UTF-8 ``ValueError`` naming the line.

    Example:
        >>> import gzip, tempfile
        >>> from pathlib import Path
        >>> from attnkit.data import read_lines
        >>> path = Path(tempfile.mkdtemp()) / "notes.txt.gz"
        >>> text = "first\r\nsecond \u2028 still second\n\nfourth\n"
        >>> _ = path.write_bytes(gzip.compress(text.encode("utf-8")))
        >>> lines = read_lines(path)
        >>> len(lines), lines[0], lines[2], lines[3]  # U+2028 does not split a line
        (4, 'first', '', 'fourth')
    """
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

    Example:
        >>> from pathlib import Path
        >>> from attnkit.data import CharTokenizer, ParallelCorpus
        >>> pairs = [("ein hund", "a dog"), ("zwei", "two")]
        >>> corpus = ParallelCorpus(pairs, Path("train.de"), Path("train.en"), 3, [2])
        >>> len(corpus), corpus.sources, corpus[1]
        (2, ['ein hund', 'zwei'], ('zwei', 'two'))
        >>> corpus.report()
        'train.de | train.en: 3 lines, 2 pairs, 1 skipped for an empty side (lines 2)'
        >>> tok = CharTokenizer.train(corpus.sources + corpus.targets)
        >>> [len(src) for src, _ in corpus.encode(tok)]  # one id per character, no bos/eos
        [8, 4]
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
    r"""Read a line-aligned corpus: line ``i`` of ``src_path`` translates that of ``tgt_path``.

    Lines are stripped of surrounding whitespace. Different line counts raise ``ValueError``
    naming both files and counts. A pair with an empty side is skipped and counted in
    ``skipped_lines`` (``on_empty="skip"``) or raises ``ValueError`` naming the file and line.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from attnkit.data import read_parallel
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "train.de").write_text("ein Hund\n\nzwei Katzen\n", encoding="utf-8")
        >>> _ = (folder / "train.en").write_text("a dog\nlost\ntwo cats\n", encoding="utf-8")
        >>> corpus = read_parallel(folder / "train.de", folder / "train.en")
        >>> corpus.pairs, corpus.num_lines, corpus.skipped_lines
        ([('ein Hund', 'a dog'), ('zwei Katzen', 'two cats')], 3, [2])
        >>> read_parallel(folder / "train.de", folder / "train.en", on_empty="error")
        Traceback (most recent call last):
        ...
        ValueError: .../train.de, line 2: empty line (pass on_empty='skip' to drop)
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
    """Labelled texts from a TSV file; ``skipped_lines`` are 1-based lines with empty text.

    Example:
        >>> from pathlib import Path
        >>> from attnkit.data import CharTokenizer, ClassificationData
        >>> data = ClassificationData(["good", "bad", "fine"], [1, 0, 1], Path("train.tsv"))
        >>> len(data), data.num_classes, data.label_counts()
        (3, 2, {0: 1, 1: 2})
        >>> tok = CharTokenizer.train(data.texts)
        >>> data.encode(tok, add_bos=True)[1]  # (ids, label) with <bos>=1 in front
        ([1, 5, 4, 6], 0)
    """

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
    r"""Read a tab-separated file with a header row naming ``text_column`` and ``label_column``.

    Texts are stripped (GLUE puts a space before the tab). Labels must be integers. Rows
    with the wrong number of fields or a non-integer label raise ``ValueError`` naming the
    file and line; empty texts are skipped and counted, or an error with ``on_empty="error"``.
    No quoting is interpreted: GLUE text contains bare ``"`` characters.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from attnkit.data import read_classification_tsv
        >>> path = Path(tempfile.mkdtemp()) / "train.tsv"
        >>> rows = ["sentence\tlabel", "a gripping film \t1", " \t0", 'a "dull" plot\t0']
        >>> _ = path.write_text("\n".join(rows) + "\n", encoding="utf-8")
        >>> data = read_classification_tsv(path)
        >>> data.texts, data.labels, data.skipped_lines  # line 3 has an empty text
        (['a gripping film', 'a "dull" plot'], [1, 0], [3])
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
