"""Attention plots with matplotlib (headless-safe: the Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torch import Tensor

__all__ = ["plot_attention_heatmap"]


def plot_attention_heatmap(
    weights: Tensor,
    path: str | Path,
    *,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    title: str = "attention",
) -> Path:
    """Save a heatmap of one head's weights ``(Tq, Tk)`` (rows: queries, columns: keys).

    Returns the path written (parent folders are created).
    """
    if weights.dim() != 2:
        raise ValueError(f"weights must have shape (Tq, Tk); got {tuple(weights.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = weights.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(1 + 0.45 * data.shape[1], 1 + 0.45 * data.shape[0]))
    image = ax.imshow(data, cmap="viridis", vmin=0.0, vmax=max(float(data.max()), 1e-6))
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
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
