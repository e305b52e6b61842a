"""Attention pictures with matplotlib (headless-safe: the Agg backend).

Every function saves one figure and returns its path: PNG by default, SVG
when the path ends in ``.svg`` (or ``fmt="svg"``). Rows are queries, columns
keys; each figure has a colour bar and a title that names what it shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

__all__ = [
    "plot_attention_grid",
    "plot_attention_heatmap",
    "plot_head_scores",
    "plot_rollout",
]

_CELL_INCHES = 0.45


def _as_numpy(values: Tensor, dims: int, what: str) -> np.ndarray:
    if values.dim() != dims:
        raise ValueError(f"{what}; got shape {tuple(values.shape)}")
    return values.detach().double().cpu().numpy()


def _check_labels(labels: Sequence[str] | None, size: int, which: str) -> None:
    if labels is not None and len(labels) != size:
        raise ValueError(f"{which} must have {size} entries (one per token); got {len(labels)}")


def _draw(
    ax: Axes,
    data: np.ndarray,
    query_labels: Sequence[str] | None,
    key_labels: Sequence[str] | None,
    title: str,
):
    """One heatmap on ``ax``, token labels on both axes; returns the image."""
    finite = data[np.isfinite(data)]
    top = max(float(finite.max()), 1e-6) if finite.size else 1.0
    image = ax.imshow(data, cmap="viridis", vmin=min(0.0, float(finite.min(initial=0))), vmax=top)
    if key_labels is not None:
        long_labels = max((len(label) for label in key_labels), default=0) > 3
        ax.set_xticks(
            range(len(key_labels)),
            labels=list(key_labels),
            rotation=45 if long_labels else 0,
            ha="right" if long_labels else "center",
        )
    if query_labels is not None:
        ax.set_yticks(range(len(query_labels)), labels=list(query_labels))
    ax.set_title(title, fontsize=9)
    return image


def _matrix_figure(data: np.ndarray, size: tuple[float, float], row_labels, column_labels, title):
    """A one-axes figure with the heatmap of ``data``: ``(fig, ax, image)``."""
    fig, ax = plt.subplots(figsize=size)
    return fig, ax, _draw(ax, data, row_labels, column_labels, title)


def _finish(fig: Figure, ax: Axes, image, axis_names: tuple[str, str], path, fmt) -> Path:
    """Axis names (x, y), a colour bar, then save."""
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path, fmt)


def _save(fig: Figure, path: str | Path, fmt: str | None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or ("svg" if path.suffix.lower() == ".svg" else "png")
    if fmt not in ("png", "svg"):
        raise ValueError(f"fmt must be 'png' or 'svg'; got {fmt!r}")
    with plt.rc_context({"svg.fonttype": "none"}):  # SVG text stays text (searchable)
        fig.savefig(path, dpi=120, format=fmt, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_attention_heatmap(
    weights: Tensor,
    path: str | Path,
    *,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    title: str = "attention",
    fmt: str | None = None,
) -> Path:
    """Save a heatmap of one head's weights ``(Tq, Tk)``; returns the path written.

    Example:
        >>> import torch
        >>> from attnkit.analysis import plot_attention_heatmap
        >>> weights = torch.softmax(torch.randn(3, 4), dim=-1)  # (Tq, Tk)
        >>> path = plot_attention_heatmap(weights, "heatmap.png", query_labels=["a", "b", "c"],
        ...                               key_labels=["w", "x", "y", "z"], title="one head")
        >>> path.name
        'heatmap.png'
    """
    data = _as_numpy(weights, 2, "weights must have shape (Tq, Tk)")
    _check_labels(query_labels, data.shape[0], "query_labels")
    _check_labels(key_labels, data.shape[1], "key_labels")
    rows, cols = data.shape
    fig, ax, image = _matrix_figure(
        data, (1.5 + _CELL_INCHES * cols, 1 + _CELL_INCHES * rows), query_labels, key_labels, title
    )
    return _finish(fig, ax, image, ("key (attended to)", "query"), path, fmt)


def plot_attention_grid(
    layers: Sequence[Tensor],
    path: str | Path,
    *,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    title: str = "attention",
    fmt: str | None = None,
) -> Path:
    """Save a layer x head grid of heatmaps from per-layer weights ``(H, Tq, Tk)``.

    Example:
        >>> import torch
        >>> from attnkit.analysis import plot_attention_grid
        >>> layers = [torch.softmax(torch.randn(4, 5, 5), dim=-1) for _ in range(2)]  # (H, Tq, Tk)
        >>> plot_attention_grid(layers, "grid.svg", title="2 layers x 4 heads").suffix
        '.svg'
    """
    grids = [_as_numpy(w, 3, "each layer's weights must have shape (H, Tq, Tk)") for w in layers]
    if not grids:
        raise ValueError("need at least one layer of weights; got none")
    rows, cols = len(grids), max(g.shape[0] for g in grids)
    tq, tk = grids[0].shape[1:]
    _check_labels(query_labels, tq, "query_labels")
    _check_labels(key_labels, tk, "key_labels")
    cell = max(1.6, 0.22 * max(tq, tk))
    size = (cell * cols + 1, cell * rows + 0.6)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    image = None
    for layer, grid in enumerate(grids):
        for head in range(cols):
            ax = axes[layer][head]
            if head >= grid.shape[0]:
                ax.axis("off")  # a pruned layer has fewer heads
                continue
            image = _draw(ax, grid[head], None, None, f"layer {layer}, head {head}")
            _grid_ticks(ax, layer == rows - 1, head == 0, query_labels, key_labels)
    fig.suptitle(title)
    fig.colorbar(image, ax=axes, fraction=0.02, pad=0.02)
    return _save(fig, path, fmt)


def _grid_ticks(ax: Axes, bottom: bool, left: bool, query_labels, key_labels) -> None:
    """Token labels only on the outer edge of the grid (small font)."""
    if bottom and key_labels is not None:
        ax.set_xticks(range(len(key_labels)), labels=list(key_labels), rotation=90, fontsize=6)
    else:
        ax.set_xticks([])
    if left and query_labels is not None:
        ax.set_yticks(range(len(query_labels)), labels=list(query_labels), fontsize=6)
    else:
        ax.set_yticks([])


def plot_rollout(
    rollout: Tensor,
    path: str | Path,
    *,
    labels: Sequence[str] | None = None,
    title: str = "attention rollout",
    fmt: str | None = None,
) -> Path:
    """Save a rollout (or flow) map ``(T, T)``: output positions x input tokens.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> import torch
        >>> from attnkit.analysis import attention_rollout, plot_rollout
        >>> layers = [torch.softmax(torch.randn(1, 4, 5, 5), dim=-1) for _ in range(2)]
        >>> rollout = attention_rollout(layers)[0]  # (T, T) of the first input
        >>> path = Path(tempfile.mkdtemp()) / "rollout.png"
        >>> plot_rollout(rollout, path, labels=["the", "cat", "sat", "on", "it"]).suffix
        '.png'
        >>> path.is_file(), path.read_bytes()[1:4]  # a PNG file
        (True, b'PNG')
    """
    data = _as_numpy(rollout, 2, "rollout must have shape (T, T)")
    _check_labels(labels, data.shape[0], "labels")
    inches = 1 + _CELL_INCHES * data.shape[0]
    fig, ax, image = _matrix_figure(data, (inches + 0.5, inches), labels, labels, title)
    return _finish(fig, ax, image, ("input token", "output position"), path, fmt)


def plot_head_scores(
    scores: Tensor,
    path: str | Path,
    *,
    row_labels: Sequence[str] | None = None,
    title: str = "head importance",
    fmt: str | None = None,
) -> Path:
    """Save a layer x head matrix of scores ``(L, H)`` (NaN: no such head), values written in.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> import torch
        >>> from attnkit.analysis import plot_head_scores
        >>> scores = torch.tensor([[0.9, 0.1, 0.5], [0.3, float("nan"), 0.7]])  # a pruned head
        >>> path = Path(tempfile.mkdtemp()) / "heads.svg"  # the suffix picks the format
        >>> plot_head_scores(scores, path, row_labels=["layer 0", "layer 1"]).suffix, path.is_file()
        ('.svg', True)
        >>> "0.90" in path.read_text()  # the values are written into the cells
        True
    """
    data = _as_numpy(scores, 2, "scores must have shape (L, H)")
    _check_labels(row_labels, data.shape[0], "row_labels")
    rows, cols = data.shape
    heads = [str(h) for h in range(cols)]
    fig, ax, image = _matrix_figure(
        data, (2.5 + 0.7 * cols, 1 + 0.5 * rows), row_labels, heads, title
    )
    for (row, col), value in np.ndenumerate(data):
        if np.isfinite(value):
            ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w")
    return _finish(fig, ax, image, ("head", "layer"), path, fmt)
