"""``AttentionAnalyzer``: run a model once, keep its attention, look at it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnkit.analysis.capture import AttentionCapture, capture_attention
from attnkit.analysis.plots import plot_attention_grid, plot_attention_heatmap, plot_rollout
from attnkit.analysis.rollout import attention_flow, attention_rollout
from attnkit.analysis.statistics import (
    attention_entropy,
    mean_attention_distance,
    special_token_attention,
)
from attnkit.models.t5 import T5

__all__ = ["AttentionAnalyzer"]


class AttentionAnalyzer:
    """Captures every attention map of one forward pass of an attnkit model.

    Usage::

        analyzer = AttentionAnalyzer(model)
        analyzer.analyze_attention(src_ids, tgt_ids)      # returns the model's output
        analyzer.visualize_attention(layer_idx=1, head_idx=3, path="head.png")
        analyzer.statistics("encoder_self")["entropy"]   # (layers, heads)

    Example:
        >>> import torch
        >>> from attnkit.analysis import AttentionAnalyzer
        >>> from attnkit.models import GPT, GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=50, max_len=16, d_model=32, num_heads=4, num_layers=2))
        >>> analyzer = AttentionAnalyzer(gpt.eval())
        >>> _ = analyzer.analyze_attention(torch.randint(0, 50, (1, 8)))
        >>> tuple(analyzer.statistics("decoder_self")["entropy"].shape)  # (layers, heads)
        (2, 4)
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.capture: AttentionCapture | None = None

    @torch.no_grad()
    def analyze_attention(self, src: Tensor, tgt: Tensor | None = None, **kwargs: Any) -> Any:
        """Run the model in eval mode on ``src`` (and ``tgt`` for encoder-decoders).

        Extra keyword arguments go to the model (e.g. ``attention_mask``).
        Returns the model's output; the weights stay in :attr:`capture`.
        """
        was_training = self.model.training
        self.model.eval()
        try:
            with capture_attention(self.model) as capture:
                output = self._forward(src, tgt, kwargs)
        finally:
            self.model.train(was_training)
        self.capture = capture
        return output

    def _forward(self, src: Tensor, tgt: Tensor | None, kwargs: dict[str, Any]) -> Any:
        if tgt is None:
            return self.model(src, **kwargs)
        if isinstance(self.model, T5):
            return self.model(src, decoder_input_ids=tgt, **kwargs)
        return self.model(src, tgt, **kwargs)

    def _captured(self) -> AttentionCapture:
        if self.capture is None:
            raise RuntimeError("no attention captured yet: call analyze_attention(...) first")
        return self.capture

    def layers(self, kind: str | None = None) -> list[Tensor]:
        """Per-layer weights ``(B, H, Tq, Tk)`` of ``kind`` (default: the first kind captured)."""
        capture = self._captured()
        kinds = capture.kinds()
        if not kinds:
            raise RuntimeError("the model ran no attention module that returns weights")
        return capture.layers(kind or kinds[0])

    def weights(self, layer_idx: int = 0, kind: str | None = None) -> Tensor:
        """One layer's weights ``(B, H, Tq, Tk)``, with a clear error for a bad index."""
        layers = self.layers(kind)
        if not -len(layers) <= layer_idx < len(layers):
            raise IndexError(f"layer_idx must be in [0, {len(layers)}); got {layer_idx}")
        return layers[layer_idx]

    def visualize_attention(
        self,
        layer_idx: int = 0,
        head_idx: int | None = 0,
        *,
        kind: str | None = None,
        example: int = 0,
        query_labels: Sequence[str] | None = None,
        key_labels: Sequence[str] | None = None,
        path: str | Path = "attention.png",
    ) -> Path:
        """Heatmap of one head (``head_idx=None``: the mean over heads); returns the file."""
        weights = self.weights(layer_idx, kind)[example]
        kind = kind or self._captured().kinds()[0]
        if head_idx is None:
            matrix, which = weights.mean(0), "mean of heads"
        elif not 0 <= head_idx < weights.size(0):
            raise IndexError(f"head_idx must be in [0, {weights.size(0)}); got {head_idx}")
        else:
            matrix, which = weights[head_idx], f"head {head_idx}"
        title = f"{kind.replace('_', ' ')} attention, layer {layer_idx}, {which}"
        return plot_attention_heatmap(
            matrix, path, query_labels=query_labels, key_labels=key_labels, title=title
        )

    def visualize_grid(
        self,
        *,
        kind: str | None = None,
        example: int = 0,
        query_labels: Sequence[str] | None = None,
        key_labels: Sequence[str] | None = None,
        path: str | Path = "attention_grid.png",
    ) -> Path:
        """Layer x head grid of heatmaps of one kind; returns the file."""
        kind = kind or self._captured().kinds()[0]
        layers = [w[example] for w in self.layers(kind)]
        title = f"{kind.replace('_', ' ')} attention: layers x heads"
        return plot_attention_grid(
            layers, path, query_labels=query_labels, key_labels=key_labels, title=title
        )

    def statistics(
        self,
        kind: str | None = None,
        *,
        query_mask: Tensor | None = None,
        special_keys: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Per-layer, per-head statistics ``(L, H)``: entropy, distance, special-token share.

        ``distance`` is given for self-attention only; ``special`` when
        ``special_keys (B, Tk)`` marks the special tokens.
        """
        kind = kind or self._captured().kinds()[0]
        layers = self.layers(kind)
        stats = {"entropy": torch.stack([attention_entropy(w, query_mask) for w in layers])}
        if kind != "cross":
            distances = [mean_attention_distance(w, query_mask) for w in layers]
            stats["distance"] = torch.stack(distances)
        if special_keys is not None:
            shares = [special_token_attention(w, special_keys, query_mask) for w in layers]
            stats["special"] = torch.stack(shares)
        return stats

    def rollout(self, kind: str | None = None, *, method: str = "rollout", **options) -> Tensor:
        """Attention rollout or flow ``(B, T, T)`` through the self-attention layers of ``kind``."""
        kind = kind or self._captured().kinds()[0]
        if kind == "cross":
            raise ValueError("rollout runs through self-attention layers; got kind 'cross'")
        if method == "rollout":
            return attention_rollout(self.layers(kind), **options)
        if method == "flow":
            return attention_flow(self.layers(kind), **options)
        raise ValueError(f"method must be 'rollout' or 'flow'; got {method!r}")

    def visualize_rollout(
        self,
        *,
        kind: str | None = None,
        method: str = "rollout",
        example: int = 0,
        labels: Sequence[str] | None = None,
        path: str | Path = "rollout.png",
    ) -> Path:
        """Picture of :meth:`rollout` for one example; returns the file."""
        values = self.rollout(kind, method=method)[example]
        title = f"attention {method} ({(kind or self._captured().kinds()[0]).replace('_', ' ')})"
        return plot_rollout(values, path, labels=labels, title=title)
