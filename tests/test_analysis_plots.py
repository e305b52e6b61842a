"""Attention pictures: files, sizes, titles and token labels (issue 6)."""

from __future__ import annotations

import matplotlib.image as mpimg
import pytest
import torch

from attnkit.analysis import (
    AttentionAnalyzer,
    plot_attention_grid,
    plot_attention_heatmap,
    plot_rollout,
)
from attnkit.models import GPT, GPTConfig

TOKENS = ["the", "cat", "sat", "on", "a", "mat"]


def weights(*shape: int) -> torch.Tensor:
    return torch.softmax(torch.randn(*shape, generator=torch.Generator().manual_seed(0)), -1)


def test_heatmap_png_grows_with_tokens_and_is_not_blank(tmp_path):
    small = plot_attention_heatmap(weights(3, 3), tmp_path / "small.png")
    large = plot_attention_heatmap(
        weights(6, 6), tmp_path / "large.png", query_labels=TOKENS, key_labels=TOKENS
    )
    small_pixels, large_pixels = mpimg.imread(small), mpimg.imread(large)
    assert large_pixels.shape[0] > small_pixels.shape[0]
    assert large_pixels.shape[1] > small_pixels.shape[1]
    assert large_pixels[..., :3].std() > 0.05  # a picture, not an empty canvas


def test_heatmap_svg_names_tokens_axes_and_title(tmp_path):
    svg = plot_attention_heatmap(
        weights(6, 6), tmp_path / "h.svg", query_labels=TOKENS, key_labels=TOKENS,
        title="encoder self attention, layer 1, head 2",
    )  # fmt: skip
    text = svg.read_text()
    assert text.startswith("<?xml") and "encoder self attention, layer 1, head 2" in text
    for token in [*TOKENS, "query", "key (attended to)"]:
        assert f">{token}<" in text


def test_grid_has_one_panel_per_layer_and_head(tmp_path):
    layers = [weights(3, 6, 6), weights(3, 6, 6)]
    svg = plot_attention_grid(layers, tmp_path / "grid.svg", query_labels=TOKENS, key_labels=TOKENS)
    text = svg.read_text()
    titles = [f"layer {layer}, head {head}" for layer in range(2) for head in range(3)]
    assert all(title in text for title in titles) and "layer 2" not in text
    png = plot_attention_grid(layers, tmp_path / "grid.png")
    height, width = mpimg.imread(png).shape[:2]
    assert width > height  # 3 heads across, 2 layers down


def test_rollout_plot_and_label_checks(tmp_path):
    svg = plot_rollout(weights(6, 6), tmp_path / "r.svg", labels=TOKENS)
    assert ">output position<" in svg.read_text() and ">mat<" in svg.read_text()
    with pytest.raises(ValueError, match="labels must have 6 entries"):
        plot_rollout(weights(6, 6), tmp_path / "bad.png", labels=TOKENS[:2])
    with pytest.raises(ValueError, match=r"\(Tq, Tk\)"):
        plot_attention_heatmap(weights(2, 3, 3), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="fmt must be 'png' or 'svg'"):
        plot_rollout(weights(6, 6), tmp_path / "r.pdf", fmt="pdf")


def test_analyzer_pictures(tmp_path):
    config = GPTConfig(vocab_size=20, max_len=16, d_model=16, num_heads=2, num_layers=2)
    analyzer = AttentionAnalyzer(GPT(config))
    analyzer.analyze_attention(torch.arange(1, 7)[None])
    mean = analyzer.visualize_attention(1, None, key_labels=TOKENS, path=tmp_path / "m.svg")
    assert "decoder self attention, layer 1, mean of heads" in mean.read_text()
    grid = analyzer.visualize_grid(path=tmp_path / "g.svg", key_labels=TOKENS)
    assert "layer 1, head 1" in grid.read_text()
    rollout = analyzer.visualize_rollout(path=tmp_path / "r.png", labels=TOKENS)
    assert mpimg.imread(rollout).shape[0] > 100
