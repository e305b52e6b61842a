"""The attention explorer page: self-contained, faithful data, escaping, input checks."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from attnkit.analysis.capture import AttentionCapture, AttentionRecord, capture_attention
from attnkit.analysis.explorer import (
    explorer_data,
    kind_tokens,
    write_attention_explorer,
)
from attnkit.models import GPT, GPTConfig
from explorer_helpers import SOURCE, TARGET, read_explorer_data, seq2seq_capture

pytestmark = pytest.mark.usefixtures("single_thread")

PAGE_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "div", "label",
    "select", "input", "p", "main", "section", "svg", "table", "script",
}  # fmt: skip


class _Tags(HTMLParser):
    """Start tags of a page and the text of its script elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def parse(text: str) -> _Tags:
    parser = _Tags()
    parser.feed(text)
    parser.close()
    return parser


def test_page_is_one_self_contained_file(tmp_path):
    path = write_attention_explorer(
        tmp_path / "deep" / "page.html",
        seq2seq_capture(),
        source_tokens=SOURCE,
        target_tokens=TARGET,
    )
    assert path == tmp_path / "deep" / "page.html" and path.is_file()
    text = path.read_text(encoding="utf-8")
    lowered = text.lower()
    for remote in ("http://", "https://", "//cdn", "<link", "@import", "url(", "<iframe"):
        assert remote not in lowered, remote
    page = parse(text)
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts == [{"type": "application/json", "id": "attention-data"}, {}]
    assert {tag for tag, _ in page.tags} <= PAGE_TAGS
    ids = {attrs.get("id") for _, attrs in page.tags}
    assert {"kind", "layer", "head", "average", "queries", "keys", "heatmap"} <= ids


def test_embedded_weights_equal_the_capture_to_the_rounding(tmp_path):
    capture = seq2seq_capture()
    path = write_attention_explorer(
        tmp_path / "page.html", capture, source_tokens=SOURCE, target_tokens=TARGET
    )
    data = read_explorer_data(path)
    assert data["order"] == ["encoder_self", "decoder_self", "cross"] == capture.kinds()
    assert data["decimals"] == 4
    expected_tokens = {
        "encoder_self": (SOURCE, SOURCE),
        "decoder_self": (TARGET, TARGET),
        "cross": (TARGET, SOURCE),
    }
    for kind, view in data["kinds"].items():
        assert (view["queries"], view["keys"]) == expected_tokens[kind]
        layers = capture.layers(kind)
        assert len(view["layers"]) == len(layers) == (2 if kind == "encoder_self" else 3)
        for stored, weights in zip(view["layers"], layers, strict=True):
            exact = weights[0].double().numpy()
            stored = np.array(stored)
            assert stored.shape == exact.shape
            np.testing.assert_array_equal(stored, exact.round(4))
            np.testing.assert_allclose(stored, exact, rtol=0, atol=5e-5 + 1e-12)
    assert data["kinds"]["cross"]["query_side"] == "queries: target tokens"
    assert data["kinds"]["cross"]["key_side"] == "keys: source tokens"


def test_example_picks_the_row_of_the_batch():
    capture = seq2seq_capture(batch=3)
    data = explorer_data(capture, source_tokens=SOURCE, target_tokens=TARGET, example=2)
    for kind in capture.kinds():
        stored = np.array(data["kinds"][kind]["layers"][1])
        np.testing.assert_allclose(stored, capture.layers(kind)[1][2].numpy(), atol=5e-5)
        assert not np.allclose(stored, capture.layers(kind)[1][0].numpy(), atol=1e-3)


def test_decimals_set_the_rounding():
    capture = seq2seq_capture()
    data = explorer_data(capture, source_tokens=SOURCE, target_tokens=TARGET, decimals=2)
    values = np.array(data["kinds"]["cross"]["layers"])
    np.testing.assert_array_equal(values, values.round(2))
    np.testing.assert_allclose(
        values[0], capture.layers("cross")[0][0].numpy(), rtol=0, atol=5e-3 + 1e-9
    )


def test_a_decoder_only_model_is_labelled_with_its_own_tokens():
    model = GPT(GPTConfig(vocab_size=30, max_len=16, d_model=16, num_heads=2, num_layers=2))
    tokens = ["To", " be", ",", " or", " not"]
    with torch.no_grad(), capture_attention(model.eval()) as capture:
        model(torch.randint(0, 30, (1, len(tokens))))
    data = explorer_data(capture, source_tokens=tokens)
    assert data["order"] == ["decoder_self"]
    view = data["kinds"]["decoder_self"]
    assert view["queries"] == view["keys"] == tokens
    assert view["query_side"] == "queries: tokens"
    weights = np.array(view["layers"])  # (L, H, T, T), causal: nothing above the diagonal
    assert weights.shape == (2, 2, 5, 5)
    assert np.all(np.triu(weights, k=1) == 0)


def test_token_text_and_title_are_escaped(tmp_path):
    hostile = [
        "</script><script>alert(1)</script>",
        "<!--",
        "&amp;",
        '"quoted"',
        "it's",
        "line\u2028break",
        "</SCRIPT >",
    ]
    weights = torch.softmax(torch.randn(1, 2, len(hostile), len(hostile)), dim=-1)
    capture = AttentionCapture([AttentionRecord("layers.0.self_attn", "encoder_self", 0, weights)])
    title = '<b>bold</b> & "quoted" </script>'
    path = write_attention_explorer(
        tmp_path / "page.html", capture, source_tokens=hostile, title=title
    )
    text = path.read_text(encoding="utf-8")
    # Only the two real script elements close; nothing in the data opens a comment or tag.
    assert len(re.findall(r"</script", text, flags=re.IGNORECASE)) == 2
    assert "<!--" not in text and "\u2028" not in text
    assert "<b>bold</b>" not in text and text.count(html.escape(title)) == 2
    page = parse(text)
    assert {tag for tag, _ in page.tags} <= PAGE_TAGS
    assert len(page.scripts) == 2
    data = read_explorer_data(path)
    assert data["kinds"]["encoder_self"]["queries"] == hostile


def test_kind_tokens_names_the_query_and_key_sides():
    assert kind_tokens("encoder_self", SOURCE, TARGET) == (SOURCE, SOURCE)
    assert kind_tokens("decoder_self", SOURCE, TARGET) == (TARGET, TARGET)
    assert kind_tokens("decoder_self", SOURCE, None) == (SOURCE, SOURCE)
    assert kind_tokens("cross", SOURCE, TARGET) == (TARGET, SOURCE)
    with pytest.raises(ValueError, match="kind must be encoder_self, decoder_self or cross"):
        kind_tokens("self", SOURCE, TARGET)


def _nan_capture() -> AttentionCapture:
    weights = torch.full((1, 1, 2, 2), float("nan"))
    return AttentionCapture([AttentionRecord("layers.0.self_attn", "encoder_self", 0, weights)])


@pytest.mark.parametrize(
    ("make_capture", "options", "message"),
    [
        (
            seq2seq_capture,
            {"source_tokens": SOURCE[:-1], "target_tokens": TARGET},
            "encoder_self attention, layer 0 has Tq=6: source_tokens must have 6 tokens "
            "(expected 6, got 5)",
        ),
        (
            seq2seq_capture,
            {"source_tokens": SOURCE, "target_tokens": [*TARGET, "extra"]},
            "decoder_self attention, layer 0 has Tq=5: target_tokens must have 5 tokens "
            "(expected 5, got 6)",
        ),
        (
            seq2seq_capture,
            {"source_tokens": SOURCE},
            "cross-attention was captured: give target_tokens",
        ),
        (
            seq2seq_capture,
            {"source_tokens": SOURCE, "target_tokens": TARGET, "example": 1},
            "example must be in [0, 1) (the batch size); got 1",
        ),
        (
            seq2seq_capture,
            {"source_tokens": "Ein Hund", "target_tokens": TARGET},
            "source_tokens must be a sequence of token strings; got str",
        ),
        (
            seq2seq_capture,
            {"source_tokens": [1, 2, 3, 4, 5, 6], "target_tokens": TARGET},
            "source_tokens must hold str tokens; got int 1",
        ),
        (
            seq2seq_capture,
            {"source_tokens": SOURCE, "target_tokens": TARGET, "decimals": 0},
            "decimals must be an int in [1, 8]; got 0",
        ),
        (
            AttentionCapture,
            {"source_tokens": SOURCE},
            "capture holds no attention weights; run the model inside capture_attention(model)",
        ),
        (
            _nan_capture,
            {"source_tokens": ["a", "b"]},
            "encoder_self attention, layer 0: weights of example 0 are not all finite",
        ),
    ],
)
def test_bad_inputs_are_refused_before_writing(tmp_path, make_capture, options, message):
    path = tmp_path / "page.html"
    with pytest.raises(ValueError, match=re.escape(message)):
        write_attention_explorer(path, make_capture(), **options)
    assert not path.exists()


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed; syntax not checked")
def test_page_script_is_valid_javascript(tmp_path):
    path = write_attention_explorer(
        tmp_path / "page.html", seq2seq_capture(), source_tokens=SOURCE, target_tokens=TARGET
    )
    script = parse(path.read_text(encoding="utf-8")).scripts[1]
    (tmp_path / "page.js").write_text(script, encoding="utf-8")
    result = subprocess.run(
        ["node", "--check", str(tmp_path / "page.js")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
