"""Data sets: parallel corpora, TSV classification, the memory-mapped token stream, bad data."""

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer

from attnkit.data import (
    CharTokenizer,
    TokenStream,
    data_path,
    data_root,
    read_classification_tsv,
    read_lines,
    read_parallel,
)


def shared(*parts: str) -> Path:
    """A file of the shared data sets (they must be installed: see ATTNKIT_DATA)."""
    path = data_root().joinpath(*parts)
    assert path.exists(), f"shared data not found: {path} (set ATTNKIT_DATA)"
    return path


def write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_bytes(text.encode("utf-8"))
    return path


# -- data root ------------------------------------------------------------------------------


def test_data_root_comes_from_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNKIT_DATA", str(tmp_path))
    assert data_root() == tmp_path
    (tmp_path / "x.txt").write_text("a\n")
    assert data_path("x.txt") == tmp_path / "x.txt"


def test_data_root_defaults_to_shared_data_next_to_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("ATTNKIT_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert data_root().resolve() == (tmp_path.parent / "shared" / "data").resolve()


def test_data_path_missing_names_path_and_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNKIT_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"multi30k.*does not exist.*ATTNKIT_DATA"):
        data_path("multi30k", "train.en.gz")


# -- reading lines --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.txt", "a.txt.gz"])
def test_read_lines_plain_and_gzip(tmp_path, name):
    path = write(tmp_path / name, "one\r\ntwo\n\nfour")
    assert read_lines(path) == ["one", "two", "", "four"]


def test_read_lines_splits_only_on_newline(tmp_path):
    # str.splitlines would also split at U+2028, form feed, U+0085 ... and misalign a corpus
    path = write(tmp_path / "a.txt", "a\u2028b\x0cc\x85d\nnext\n")
    assert read_lines(path) == ["a\u2028b\x0cc\x85d", "next"]


def test_read_lines_empty_file(tmp_path):
    assert read_lines(write(tmp_path / "e.txt", "")) == []


def test_read_lines_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff here\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 3: not valid UTF-8")):
        read_lines(path)


def test_read_lines_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.gz"))):
        read_lines(tmp_path / "nope.gz")


# -- parallel corpora -----------------------------------------------------------------------


def test_read_parallel_pairs_lines_in_order(tmp_path):
    src = write(tmp_path / "x.en.gz", " a dog \nthe cat\n")
    tgt = write(tmp_path / "x.de", "ein Hund\ndie Katze\n")
    corpus = read_parallel(src, tgt)
    assert corpus.pairs == [("a dog", "ein Hund"), ("the cat", "die Katze")]
    assert corpus.num_lines == 2 and corpus.skipped_lines == []
    assert corpus.sources == ["a dog", "the cat"] and corpus.targets == ["ein Hund", "die Katze"]


def test_read_parallel_mismatched_counts_names_both_files_and_counts(tmp_path):
    src = write(tmp_path / "x.en", "a\nb\nc\n")
    tgt = write(tmp_path / "x.de", "A\nB\n")
    with pytest.raises(ValueError, match=re.escape(f"{src} has 3 lines, {tgt} has 2 lines")):
        read_parallel(src, tgt)


def test_read_parallel_skips_and_counts_pairs_with_an_empty_side(tmp_path):
    src = write(tmp_path / "x.en", "a\n\nc\nd\n  \n")
    tgt = write(tmp_path / "x.de", "A\nB\n\nD\nE\n")
    corpus = read_parallel(src, tgt)
    assert corpus.pairs == [("a", "A"), ("d", "D")]  # still aligned after the gaps
    assert corpus.skipped_lines == [2, 3, 5]
    assert "5 lines, 2 pairs, 3 skipped" in corpus.report()
    assert "lines 2, 3, 5" in corpus.report()


def test_read_parallel_empty_line_error_names_file_and_line(tmp_path):
    src = write(tmp_path / "x.en", "a\nb\nc\n")
    tgt = write(tmp_path / "x.de", "A\nB\n\n")
    with pytest.raises(ValueError, match=re.escape(f"{tgt}, line 3: empty line")):
        read_parallel(src, tgt, on_empty="error")
    with pytest.raises(ValueError, match="on_empty must be 'skip' or 'error'; got 'drop'"):
        read_parallel(src, tgt, on_empty="drop")


def test_read_parallel_missing_file_names_path(tmp_path):
    src = write(tmp_path / "x.en", "a\n")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "x.de"))):
        read_parallel(src, tmp_path / "x.de")


def test_parallel_corpus_encode_gives_id_pairs(tmp_path):
    src = write(tmp_path / "x.en", "ab\nba\n")
    tgt = write(tmp_path / "x.de", "c\ncc\n")
    tok = CharTokenizer.train(["abc"])
    assert read_parallel(src, tgt).encode(tok) == [([4, 5], [6]), ([5, 4], [6, 6])]


@pytest.mark.parametrize(("split", "size"), [("train", 29000), ("val", 1014)])
def test_multi30k_reads_whole_and_aligned(split, size):
    corpus = read_parallel(
        shared("multi30k", f"{split}.en.gz"), shared("multi30k", f"{split}.de.gz")
    )
    assert len(corpus) == corpus.num_lines == size
    assert corpus.skipped_lines == []
    if split == "train":
        assert corpus[0][0] == "Two young, White males are outside near many bushes."
        assert corpus[0][1].startswith("Zwei junge weiße Männer")


# -- classification TSV ---------------------------------------------------------------------


def test_sst2_dev_counts_and_stripped_text():
    data = read_classification_tsv(shared("sst2", "dev.tsv"))
    assert len(data) == 872 and data.skipped_lines == []
    assert data.label_counts() == {0: 428, 1: 444}
    assert data.num_classes == 2
    assert data.texts[0] == "it 's a charming and often affecting journey ."
    assert all(text == text.strip() for text in data.texts)


def test_sst2_train_counts():
    data = read_classification_tsv(shared("sst2", "train.tsv"))
    assert data.label_counts() == {0: 29780, 1: 37569}


def test_tsv_columns_by_name_and_quotes_left_alone(tmp_path):
    path = write(tmp_path / "d.tsv", 'label\tid\ttext\n1\t7\t"quoted" text \n0\t8\tplain\n')
    data = read_classification_tsv(path, text_column="text")
    assert data.texts == ['"quoted" text', "plain"] and data.labels == [1, 0]
    tok = CharTokenizer.train(data.texts)
    assert data.encode(tok, add_bos=True)[1] == ([1, *tok.encode("plain")], 0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "a\t1\nb\t1\textra\n",
            r"line 3: expected 2 tab-separated fields \['sentence', 'label'\], got 3",
        ),
        ("a\t1\nno tab here\n", r"line 3: expected 2 tab-separated fields"),
        ("a\t1\nb\tpositive\n", r"line 3: label 'positive' is not a non-negative integer"),
        ("a\t-1\n", r"line 2: label '-1' is not a non-negative integer"),
        ("a\t1.0\n", r"line 2: label '1.0' is not a non-negative integer"),
    ],
)
def test_tsv_malformed_rows_name_file_and_line(tmp_path, body, message):
    path = write(tmp_path / "d.tsv", "sentence\tlabel\n" + body)
    with pytest.raises(ValueError, match=re.escape(f"{path}, ") + message):
        read_classification_tsv(path)


def test_tsv_missing_column_and_empty_file(tmp_path):
    path = write(tmp_path / "d.tsv", "text\tlabel\na\t1\n")
    with pytest.raises(
        ValueError, match=r"line 1: no column 'sentence' in header \['text', 'label'\]"
    ):
        read_classification_tsv(path)
    empty = write(tmp_path / "e.tsv", "")
    with pytest.raises(ValueError, match=re.escape(f"{empty}: empty file, expected a header row")):
        read_classification_tsv(empty)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "none.tsv"))):
        read_classification_tsv(tmp_path / "none.tsv")


def test_tsv_empty_text_skipped_and_counted_or_error(tmp_path):
    path = write(tmp_path / "d.tsv", "sentence\tlabel\na\t1\n \t0\n\nb\t0\n")
    data = read_classification_tsv(path)
    assert data.texts == ["a", "b"] and data.labels == [1, 0]
    assert data.skipped_lines == [3, 4]
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 3: empty text")):
        read_classification_tsv(path, on_empty="error")


# -- memory-mapped token stream -------------------------------------------------------------


def test_token_stream_round_trips_ids_with_the_smallest_dtype(tmp_path):
    ids = np.arange(1000) % 300
    stream = TokenStream.build(ids, tmp_path / "s.bin")
    assert stream.dtype == np.uint16 and isinstance(stream.tokens, np.memmap)
    assert (tmp_path / "s.bin").stat().st_size == 2000
    assert np.array_equal(np.asarray(TokenStream(tmp_path / "s.bin").tokens), ids)
    big = TokenStream.build([0, 70_000, 5], tmp_path / "big.bin")
    assert big.dtype == np.uint32 and big.window(0, 3).tolist() == [0, 70_000, 5]


def test_random_windows_shapes_and_shift_by_one(tmp_path):
    ids = torch.arange(500) * 7 % 1000  # position is recoverable from the id
    stream = TokenStream.build(ids, tmp_path / "s.bin")
    x, y = stream.random_windows(6, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (6, 16) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row_x, row_y in zip(x, y, strict=True):
        start = ids.tolist().index(row_x[0].item())
        assert torch.equal(row_x, ids[start : start + 16])
        assert torch.equal(row_y, ids[start + 1 : start + 17])


def test_random_windows_reach_both_ends_and_depend_only_on_generator(tmp_path):
    stream = TokenStream.build(torch.arange(10), tmp_path / "s.bin")
    x, y = stream.random_windows(200, 4, torch.Generator().manual_seed(1))
    assert set(x[:, 0].tolist()) == set(range(6))  # starts 0..len-block-1
    assert y.max() == 9
    again, _ = stream.random_windows(200, 4, torch.Generator().manual_seed(1))
    assert torch.equal(x, again)


def test_token_stream_from_text_with_tokenizer(tmp_path):
    text = shared("tinyshakespeare", "input.txt").read_text(encoding="utf-8")
    tok = CharTokenizer.train([text])
    assert tok.vocab_size == 65 + 4
    stream = TokenStream.build(text, tmp_path / "train.bin", tokenizer=tok)
    assert len(stream) == 1_115_394
    assert tok.decode(stream.window(0, 14)) == "First Citizen:"


@pytest.mark.parametrize(
    ("ids", "kwargs", "message"),
    [
        ([1, -2], {}, r"ids must lie in \[0, 65535\] for uint16; got \[-2, 1\]"),
        ([1, 70_000], {"dtype": "uint16"}, r"ids must lie in \[0, 65535\] for uint16"),
        ([], {}, "non-empty 1-D"),
        ([[1, 2]], {}, "non-empty 1-D"),
        ([1], {"dtype": "int8"}, "dtype must be 'uint16' or 'uint32'"),
        ("text", {}, "needs tokenizer="),
    ],
)
def test_token_stream_build_rejects_bad_ids(tmp_path, ids, kwargs, message):
    with pytest.raises(ValueError, match=message):
        TokenStream.build(ids, tmp_path / "s.bin", **kwargs)
    assert not (tmp_path / "s.bin").exists()


def test_token_stream_open_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "none.bin"))):
        TokenStream(tmp_path / "none.bin")
    raw = tmp_path / "raw.bin"
    np.arange(5, dtype=np.uint16).tofile(raw)
    with pytest.raises(ValueError, match=r"no raw\.bin\.json sidecar; pass dtype="):
        TokenStream(raw)
    assert TokenStream(raw, dtype="uint16").window(0, 5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="10 bytes is not a whole number of uint32"):
        TokenStream(raw, dtype="uint32")
    built = TokenStream.build([1, 2, 3], tmp_path / "b.bin")
    with pytest.raises(ValueError, match="dtype 'uint32' given, sidecar says 'uint16'"):
        TokenStream(built.path, dtype="uint32")
    with pytest.raises(ValueError, match="3 tokens cannot hold a window of block_size 3"):
        built.random_windows(1, 3)


def test_hf_can_read_what_the_char_tokenizer_wrote_for_a_stream(tmp_path):
    # the tokenizer and the stream are the two artefacts a char-LM recipe keeps
    tok = CharTokenizer.train(["to be or not"])
    hf = HFTokenizer.from_file(str(tok.save(tmp_path)))
    stream = TokenStream.build(hf.encode("not to be").ids, tmp_path / "s.bin")
    assert tok.decode(stream.window(0, len(stream))) == "not to be"
