"""Attention analysis and visualisation."""

from attnkit.analysis.plots import plot_attention_heatmap

__all__ = ["plot_attention_heatmap"]
