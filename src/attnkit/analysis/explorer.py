"""An interactive attention explorer: one self-contained HTML page (bertviz-style head view).

``write_attention_explorer(path, capture, source_tokens=..., target_tokens=...)`` writes
what :func:`attnkit.analysis.capture.capture_attention` recorded for one example of
the batch into a single file: inline CSS, vanilla JavaScript and the weights as JSON
(rounded to ``decimals``). It needs no network, server, external script or font.

The page lets one choose the attention kind (only those captured), the layer, the head
or the average over heads. Queries are listed on the left, keys on the right; hovering
(or focusing) a query token colours every key token in proportion to its weight, draws
links of the same strength and shows the weight as a number (``data-weight`` and
text). Clicking a query pins it. Below, a heatmap table shows the whole ``(Tq, Tk)``
matrix of the selection.

Elements for scripts and tests: ``#kind``, ``#layer``, ``#head``, ``#average``
(checkbox), ``.query-token[data-index]``, ``.key-token[data-index][data-weight]``
(``data-weight`` only while a query is shown), ``#heatmap td.cell[data-row][data-col]
[data-weight]`` and the data itself in ``script#attention-data`` (JSON).

Which tokens label which axis:

* ``encoder_self``: source x source;
* ``decoder_self``: target x target, or the text's own tokens (``source_tokens``) for a
  decoder-only model such as GPT (``target_tokens=None``);
* ``cross``: target (queries) x source (keys); needs ``target_tokens``.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from attnkit.analysis.capture import AttentionCapture

__all__ = [
    "DEFAULT_TITLE",
    "explorer_data",
    "kind_tokens",
    "render_explorer",
    "write_attention_explorer",
]

DEFAULT_TITLE = "attnkit attention explorer"

# Characters that must not appear raw in JSON placed inside <script>: "</script>",
# "<!--" and the JavaScript line terminators. Escaped, JSON.parse reads them back.
_SCRIPT_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_SCRIPT_UNSAFE = re.compile("[<>&\u2028\u2029]")
_PLACEHOLDER = re.compile(r"@@([A-Z]+)@@")
_NO_TARGET = (
    "cross-attention was captured: give target_tokens (the decoder's tokens, its queries); "
    "source_tokens are its keys"
)


def write_attention_explorer(
    path: str | Path,
    capture: AttentionCapture,
    *,
    source_tokens: Sequence[str],
    target_tokens: Sequence[str] | None = None,
    example: int = 0,
    title: str = DEFAULT_TITLE,
    decimals: int = 4,
) -> Path:
    """Write the explorer page of one example of ``capture``; returns the path written.

    Args:
        path: the HTML file (parent folders are created).
        capture: recorded weights, per kind a list over layers of ``(B, H, Tq, Tk)``.
        source_tokens: the encoder's tokens (``S`` of them), or the text of an
            encoder-only (BERT) or decoder-only (GPT) model.
        target_tokens: the decoder's input tokens (``T``) of an encoder-decoder model;
            required when cross-attention was captured.
        example: which row of the batch ``B`` to show.
        title: page title and heading.
        decimals: weights are rounded to this many decimals in the page.

    Raises:
        ValueError: no weights captured, token counts that differ from the captured
            ``Tq``/``Tk`` (naming expected and got), ``example`` outside the batch,
            non-finite weights, or cross-attention without ``target_tokens``.

    Example:
        >>> import torch
        >>> from attnkit.analysis import capture_attention, write_attention_explorer
        >>> from attnkit.models import GPT, GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=50, max_len=16, d_model=32, num_heads=4, num_layers=2))
        >>> with torch.no_grad(), capture_attention(gpt.eval()) as capture:
        ...     _ = gpt(torch.tensor([[5, 6, 7, 8]]))
        >>> page = write_attention_explorer("explorer.html", capture, source_tokens=list("abcd"))
        >>> page.name
        'explorer.html'
    """
    data = explorer_data(
        capture,
        source_tokens=source_tokens,
        target_tokens=target_tokens,
        example=example,
        decimals=decimals,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_explorer(data, title=title), encoding="utf-8")
    return path


def explorer_data(
    capture: AttentionCapture,
    *,
    source_tokens: Sequence[str],
    target_tokens: Sequence[str] | None = None,
    example: int = 0,
    decimals: int = 4,
) -> dict[str, Any]:
    """The JSON-ready data of the page (arguments as in :func:`write_attention_explorer`).

    Returns ``{"decimals": int, "order": [kind, ...], "kinds": {kind: {"queries":
    [str] * Tq, "keys": [str] * Tk, "query_side": str, "key_side": str, "layers":
    nested lists (L, H, Tq, Tk)}}}``.
    """
    kinds = capture.kinds()
    if not kinds:
        raise ValueError(
            "capture holds no attention weights; run the model inside capture_attention(model)"
        )
    if not isinstance(decimals, int) or not 1 <= decimals <= 8:
        raise ValueError(f"decimals must be an int in [1, 8]; got {decimals!r}")
    source = _token_list("source_tokens", source_tokens)
    target = None if target_tokens is None else _token_list("target_tokens", target_tokens)
    if "cross" in kinds and target is None:
        raise ValueError(_NO_TARGET)
    views = {
        kind: _kind_view(kind, capture.layers(kind), source, target, example, decimals)
        for kind in kinds
    }
    return {"decimals": decimals, "order": kinds, "kinds": views}


def kind_tokens(
    kind: str, source_tokens: Sequence[str], target_tokens: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """``(query tokens, key tokens)`` of one attention kind (see the module docstring)."""
    (_, queries, _), (_, keys, _) = _sides(
        kind, list(source_tokens), None if target_tokens is None else list(target_tokens)
    )
    return queries, keys


def render_explorer(data: dict[str, Any], *, title: str = DEFAULT_TITLE) -> str:
    """The HTML page for ``data`` from :func:`explorer_data`."""
    parts = {
        "TITLE": html.escape(title),
        "STYLE": _STYLE,
        "DATA": _script_json(data),
        "SCRIPT": _SCRIPT,
    }
    # One pass: text put in (the title, the data) is never scanned for placeholders.
    return _PLACEHOLDER.sub(lambda match: parts[match.group(1)], _PAGE)


def _script_json(data: dict[str, Any]) -> str:
    """JSON that is safe inside ``<script>``: no ``<``, ``>``, ``&`` or U+2028/9 left raw."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _SCRIPT_UNSAFE.sub(lambda match: _SCRIPT_ESCAPES[match.group(0)], text)


def _token_list(name: str, tokens: Sequence[str]) -> list[str]:
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise ValueError(f"{name} must be a sequence of token strings; got {type(tokens).__name__}")
    wrong = [token for token in tokens if not isinstance(token, str)]
    if wrong:
        raise ValueError(f"{name} must hold str tokens; got {type(wrong[0]).__name__} {wrong[0]!r}")
    return list(tokens)


Side = tuple[str, list[str], str]  # (argument name, tokens, heading)


def _sides(kind: str, source: list[str], target: list[str] | None) -> tuple[Side, Side]:
    """The query side and the key side of ``kind``: which argument, its tokens, a heading."""
    if kind == "encoder_self":
        heading = "source tokens" if target is not None else "tokens"
        side = ("source_tokens", source, heading)
        return side, side
    if kind == "decoder_self":
        side = (
            ("source_tokens", source, "tokens")
            if target is None
            else ("target_tokens", target, "target tokens")
        )
        return side, side
    if kind != "cross":
        raise ValueError(f"kind must be encoder_self, decoder_self or cross; got {kind!r}")
    if target is None:
        raise ValueError(_NO_TARGET)
    return ("target_tokens", target, "target tokens"), ("source_tokens", source, "source tokens")


def _kind_view(
    kind: str,
    layers: list[Tensor],
    source: list[str],
    target: list[str] | None,
    example: int,
    decimals: int,
) -> dict[str, Any]:
    """One kind's tokens, headings and rounded weights ``(L, H, Tq, Tk)`` of ``example``."""
    query_side, key_side = _sides(kind, source, target)
    weights = []
    for index, layer in enumerate(layers):
        _check_layer(kind, index, layer, example, query_side, key_side)
        weights.append(_rounded(layer[example], decimals))
    return {
        "queries": query_side[1],
        "keys": key_side[1],
        "query_side": f"queries: {query_side[2]}",
        "key_side": f"keys: {key_side[2]}",
        "layers": weights,
    }


def _check_layer(
    kind: str, index: int, weights: Tensor, example: int, query_side: Side, key_side: Side
) -> None:
    """Shape ``(B, H, Tq, Tk)``, ``example`` in the batch, token counts, finite values."""
    where = f"{kind} attention, layer {index}"
    if weights.dim() != 4:
        raise ValueError(f"{where}: weights must be (B, H, Tq, Tk); got {tuple(weights.shape)}")
    batch, _, queries, keys = weights.shape
    if not 0 <= example < batch:
        raise ValueError(f"example must be in [0, {batch}) (the batch size); got {example}")
    for (name, tokens, _), count, axis in ((query_side, queries, "Tq"), (key_side, keys, "Tk")):
        if len(tokens) != count:
            raise ValueError(
                f"{where} has {axis}={count}: {name} must have {count} tokens "
                f"(expected {count}, got {len(tokens)})"
            )
    if not bool(weights[example].isfinite().all()):
        raise ValueError(f"{where}: weights of example {example} are not all finite")


def _rounded(weights: Tensor, decimals: int) -> list:
    """``(H, Tq, Tk)`` as nested lists of floats rounded to ``decimals``."""
    array = weights.detach().to("cpu").double().numpy()
    return array.round(decimals).tolist()


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@@TITLE@@</title>
<style>@@STYLE@@</style>
</head>
<body>
<header>
<h1>@@TITLE@@</h1>
<div id="controls">
<label>attention <select id="kind"></select></label>
<label>layer <select id="layer"></select></label>
<label>head <select id="head"></select></label>
<label><input type="checkbox" id="average"> average over heads</label>
</div>
<p id="selection" class="note"></p>
</header>
<main>
<p class="note">Hover a query token (left) to see how much it attends to each key token
(right); click it to keep it shown. Colour strength is the weight relative to the row's
largest; the number is the weight itself.</p>
<p id="focus" class="note">&nbsp;</p>
<section id="head-view">
<div class="column"><h2 id="query-heading">queries</h2><div id="queries"></div></div>
<svg id="links" aria-hidden="true"></svg>
<div class="column"><h2 id="key-heading">keys</h2><div id="keys"></div></div>
</section>
<section id="matrix">
<h2>All weights of the selection (rows: queries, columns: keys)</h2>
<table id="heatmap"></table>
</section>
</main>
<script type="application/json" id="attention-data">@@DATA@@</script>
<script>@@SCRIPT@@</script>
</body>
</html>
"""

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem;
  color: #1d2330; background: #fff; }
h1 { font-size: 1.3rem; margin: 0 0 .6rem; }
h2 { font-size: .95rem; font-weight: 600; margin: 0 0 .4rem; color: #4a5263; }
#controls { display: flex; gap: 1.2rem; flex-wrap: wrap; align-items: center; }
#controls label { font-size: .9rem; }
select { font-size: .9rem; padding: .1rem .3rem; }
.note { font-size: .85rem; color: #5a6275; margin: .4rem 0; max-width: 60rem; }
#head-view { display: flex; align-items: flex-start; margin: .8rem 0 1.5rem; }
.column { display: flex; flex-direction: column; }
#links { width: 160px; flex: none; }
#links line { stroke: #e66101; stroke-width: 2; }
.token { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .9rem;
  white-space: pre; padding: 2px 6px; margin: 1px 0; height: 1.25rem; line-height: 1.25rem;
  border-radius: 3px; border: 1px solid transparent; }
.query-token { text-align: right; cursor: pointer; }
.query-token:hover, .query-token.active { border-color: #e66101; }
.query-token.pinned { background: #fde0c5; }
.key-token { display: flex; justify-content: space-between; gap: .8rem; }
.weight-value { color: #1d2330; font-size: .8rem; min-width: 3.5rem; text-align: right; }
#heatmap { border-collapse: collapse; font-size: .75rem; }
#heatmap th { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-weight: 400;
  white-space: pre; padding: 1px 4px; }
#heatmap th.col { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; }
#heatmap th.row { text-align: right; }
#heatmap td.cell { width: 18px; height: 18px; border: 1px solid #f0f0f0; padding: 0; }
#heatmap tr.active th.row { color: #e66101; font-weight: 700; }
#heatmap tr.active td.cell { border-color: #e66101; }
"""

_SCRIPT = r"""
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("attention-data").textContent);
  const KIND_NAMES = {
    encoder_self: "encoder self-attention",
    decoder_self: "decoder self-attention",
    cross: "cross-attention (target \u2192 source)",
  };
  const byId = (id) => document.getElementById(id);
  const controls = {
    kind: byId("kind"), layer: byId("layer"), head: byId("head"), average: byId("average"),
  };
  let pinned = null;

  const view = () => DATA.kinds[controls.kind.value];
  const layerHeads = () => view().layers[Number(controls.layer.value)];
  const format = (w) => w.toFixed(DATA.decimals);
  const mean = (values) => values.reduce((a, b) => a + b, 0) / values.length;
  const rowMax = (row) => row.reduce((a, b) => Math.max(a, b), 0) || 1;

  // The (Tq, Tk) weights shown: one head, or the mean over the layer's heads.
  function currentMatrix() {
    const heads = layerHeads();
    if (!controls.average.checked) return heads[Number(controls.head.value)];
    return heads[0].map((row, q) => row.map((_, k) => mean(heads.map((h) => h[q][k]))));
  }

  // Visible stand-ins for whitespace-only tokens; the text itself is set as textContent.
  function shown(token) {
    const text = token.replace(/\n/g, "\u21b5").replace(/\r/g, "\u240d").replace(/\t/g, "\u21e5");
    return text === "" ? "\u2205" : text;
  }

  function setOptions(select, count) {
    const keep = Math.min(Number(select.value) || 0, count - 1);
    const options = Array.from({ length: count }, (_, i) => new Option(String(i), String(i)));
    select.replaceChildren(...options);
    select.value = String(keep);
  }

  function tokenNode(kind, text, index) {
    const node = document.createElement("div");
    node.className = "token " + kind;
    node.dataset.index = String(index);
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = shown(text);
    node.append(label);
    return node;
  }

  function queryToken(text, index) {
    const node = tokenNode("query-token", text, index);
    node.tabIndex = 0;
    node.title = text;
    node.addEventListener("mouseenter", () => show(index));
    node.addEventListener("mouseleave", () => show(pinned));
    node.addEventListener("focus", () => show(index));
    node.addEventListener("blur", () => show(pinned));
    node.addEventListener("click", () => pin(index));
    return node;
  }

  function keyToken(text, index) {
    const node = tokenNode("key-token", text, index);
    const value = document.createElement("span");
    value.className = "weight-value";
    node.append(value);
    node.title = text;
    return node;
  }

  function markPinned() {
    document.querySelectorAll(".query-token").forEach((node) => {
      node.classList.toggle("pinned", Number(node.dataset.index) === pinned);
    });
  }

  function pin(index) {
    pinned = pinned === index ? null : index;
    markPinned();
    show(index);
  }

  function renderTokens() {
    const v = view();
    byId("query-heading").textContent = v.query_side;
    byId("key-heading").textContent = v.key_side;
    byId("queries").replaceChildren(...v.queries.map(queryToken));
    byId("keys").replaceChildren(...v.keys.map(keyToken));
  }

  function headerCell(text, kind) {
    const cell = document.createElement("th");
    cell.className = kind;
    cell.textContent = shown(text);
    cell.title = text;
    return cell;
  }

  function weightCell(w, q, k, top) {
    const v = view();
    const cell = document.createElement("td");
    cell.className = "cell";
    cell.dataset.row = String(q);
    cell.dataset.col = String(k);
    cell.dataset.weight = format(w);
    cell.title = v.queries[q] + " \u2192 " + v.keys[k] + ": " + format(w);
    cell.style.backgroundColor = "rgba(33, 102, 172, " + (w / top).toFixed(3) + ")";
    return cell;
  }

  function renderHeatmap(matrix) {
    const v = view();
    const top = matrix.reduce((m, row) => row.reduce((a, b) => Math.max(a, b), m), 0) || 1;
    const header = document.createElement("tr");
    header.append(document.createElement("th"), ...v.keys.map((t) => headerCell(t, "col")));
    const rows = matrix.map((row, q) => {
      const tr = document.createElement("tr");
      tr.dataset.row = String(q);
      tr.append(headerCell(v.queries[q], "row"), ...row.map((w, k) => weightCell(w, q, k, top)));
      tr.addEventListener("mouseenter", () => show(q));
      tr.addEventListener("mouseleave", () => show(pinned));
      return tr;
    });
    byId("heatmap").replaceChildren(header, ...rows);
  }

  function middleY(node, box) {
    const rect = node.getBoundingClientRect();
    return rect.top + rect.height / 2 - box.top;
  }

  function drawLinks(q, row, top) {
    const svg = byId("links");
    svg.setAttribute("height", "0");
    svg.setAttribute("height", String(byId("head-view").clientHeight));
    if (q === null) {
      svg.replaceChildren();
      return;
    }
    const box = svg.getBoundingClientRect();
    const from = middleY(document.querySelector('.query-token[data-index="' + q + '"]'), box);
    const lines = Array.from(document.querySelectorAll(".key-token"), (node) => {
      const line = document.createElementNS(svg.namespaceURI, "line");
      const w = row[Number(node.dataset.index)];
      line.setAttribute("x1", "0");
      line.setAttribute("y1", String(from));
      line.setAttribute("x2", String(box.width));
      line.setAttribute("y2", String(middleY(node, box)));
      line.setAttribute("stroke-opacity", (w / top).toFixed(3));
      return line;
    });
    svg.replaceChildren(...lines);
  }

  function colourKey(node, w, top) {
    node.dataset.weight = format(w);
    node.style.backgroundColor = "rgba(230, 97, 1, " + (w / top).toFixed(3) + ")";
    node.querySelector(".weight-value").textContent = format(w);
  }

  function clearKey(node) {
    delete node.dataset.weight;
    node.style.backgroundColor = "";
    node.querySelector(".weight-value").textContent = "";
  }

  // Show query q's weights on the keys (q === null: show none).
  function show(q) {
    const row = q === null ? null : currentMatrix()[q];
    const top = row === null ? 1 : rowMax(row);
    document.querySelectorAll(".query-token").forEach((node) => {
      node.classList.toggle("active", Number(node.dataset.index) === q);
    });
    document.querySelectorAll(".key-token").forEach((node) => {
      if (row === null) clearKey(node);
      else colourKey(node, row[Number(node.dataset.index)], top);
    });
    document.querySelectorAll("#heatmap tr[data-row]").forEach((tr) => {
      tr.classList.toggle("active", Number(tr.dataset.row) === q);
    });
    const focus = byId("focus");
    const quoted = q === null ? "" : " \u201c" + view().queries[q] + "\u201d";
    focus.textContent = q === null ? "\u00a0" : "query " + q + quoted;
    drawLinks(q, row, top);
  }

  function describe() {
    const heads = layerHeads().length;
    const which = controls.average.checked
      ? "average of " + heads + " heads"
      : "head " + controls.head.value + " of " + heads;
    const v = view();
    byId("selection").textContent = [
      KIND_NAMES[controls.kind.value] || controls.kind.value,
      "layer " + controls.layer.value + " of " + v.layers.length,
      which,
      v.queries.length + " queries \u00d7 " + v.keys.length + " keys",
    ].join(" \u00b7 ");
  }

  function refresh() {
    controls.head.disabled = controls.average.checked;
    renderTokens();
    renderHeatmap(currentMatrix());
    describe();
    markPinned();
    show(pinned);
  }

  function onLayer() {
    setOptions(controls.head, layerHeads().length);
    refresh();
  }

  function onKind() {
    pinned = null;
    setOptions(controls.layer, view().layers.length);
    onLayer();
  }

  const kinds = DATA.order.map((kind) => new Option(KIND_NAMES[kind] || kind, kind));
  controls.kind.replaceChildren(...kinds);
  controls.kind.addEventListener("change", onKind);
  controls.layer.addEventListener("change", onLayer);
  controls.head.addEventListener("change", refresh);
  controls.average.addEventListener("change", refresh);
  window.addEventListener("resize", () => show(pinned));
  onKind();
})();
"""
