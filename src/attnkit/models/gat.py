"""Graph attention network (GAT, Veličković et al. 2018) for node classification.

Input dropout -> :class:`~attnkit.nn.attention.graph.GraphAttentionLayer` with ``heads``
concatenated heads -> ELU, repeated ``num_layers - 1`` times, then input dropout ->
an output attention layer whose ``out_heads`` heads are averaged into class logits.
Cora's set-up in the paper: 2 layers, 8 heads x 8 features, 1 output head, dropout 0.6
on the inputs of both layers and on the attention weights.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.functional import dropout as fast_dropout
from attnkit.models._config import check_positive
from attnkit.nn.attention.graph import GraphAttentionLayer

__all__ = ["GAT", "GATConfig", "build_gat", "feature_dropout"]


@dataclass
class GATConfig:
    """Hyper-parameters of :class:`GAT` (defaults: the paper's Cora model).

    Attributes:
        in_features: features per node (1433 for Cora).
        num_classes: output classes (7 for Cora).
        hidden_features: features per head in the hidden layers.
        heads: heads of each hidden layer (concatenated).
        out_heads: heads of the output layer (averaged).
        num_layers: attention layers, the output layer included (>= 1).
        dropout: on each layer's input features.
        attention_dropout: on the normalised attention weights.
        alpha: LeakyReLU negative slope of the attention scores.

    Example:
        >>> from attnkit.models import GATConfig
        >>> config = GATConfig(in_features=10, num_classes=3, hidden_features=4, heads=2)
        >>> config.in_features, config.num_classes, config.num_layers
        (10, 3, 2)
    """

    in_features: int = 1433
    num_classes: int = 7
    hidden_features: int = 8
    heads: int = 8
    out_heads: int = 1
    num_layers: int = 2
    dropout: float = 0.6
    attention_dropout: float = 0.6
    alpha: float = 0.2

    def __post_init__(self) -> None:
        check_positive(self, "in_features", "num_classes", "hidden_features", "heads", "out_heads")
        check_positive(self, "num_layers")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1); got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


class GAT(nn.Module):
    """A stack of graph attention layers: ``x (N, F)``, ``edge_index (2, E)`` -> logits
    ``(N, C)``.

    Composed from the layers passed in (hidden layers first, the output layer last);
    :func:`build_gat` makes them from a :class:`GATConfig`. ELU follows every layer but
    the last; ``dropout`` is applied to every layer's input.

    Example:
        >>> import torch
        >>> from attnkit.models import GAT
        >>> from attnkit.nn import GraphAttentionLayer
        >>> hidden = GraphAttentionLayer(16, 8, heads=4)  # (N, 16) -> (N, 32)
        >>> output = GraphAttentionLayer(32, 3, concat=False)  # (N, 32) -> (N, 3)
        >>> gat = GAT([hidden, output], dropout=0.5)
        >>> tuple(gat(torch.randn(4, 16), torch.tensor([[0, 1, 2], [1, 2, 3]])).shape)
        (4, 3)
    """

    def __init__(
        self, layers: Sequence[GraphAttentionLayer], dropout: float = 0.0, *, config: Any = None
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("GAT needs at least one layer; got none")
        for index, (prev, layer) in enumerate(itertools.pairwise(layers)):
            if prev.output_size != layer.in_features:
                raise ValueError(
                    f"layer {index + 1} expects {layer.in_features} input features but layer "
                    f"{index} gives {prev.output_size}"
                )
        self.layers = nn.ModuleList(layers)
        self.dropout = dropout
        self.config = config

    def forward(
        self, x: Tensor, edge_index: Tensor, *, need_weights: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Class logits ``(N, C)`` of every node from features ``x (N, F)`` (dense or sparse
        COO) and edges ``edge_index (2, E)``; with ``need_weights`` also each layer's
        attention weights ``(E', H)`` over its edges (self-loops appended at the end)."""
        weights = []
        for index, layer in enumerate(self.layers):
            x = feature_dropout(x, self.dropout, self.training)
            x, (_, layer_weights) = layer(x, edge_index, need_weights=True)
            weights.append(layer_weights)
            if index < len(self.layers) - 1:
                x = F.elu(x)
        return (x, weights) if need_weights else x


def feature_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout on node features ``(N, F)``, dense or sparse COO.

    For a sparse ``x`` only the stored values are dropped: zeros stay zero under dropout
    anyway, so this is the same distribution as dense dropout at ``O(nnz)`` cost.
    """
    if x.layout != torch.sparse_coo:
        return fast_dropout(x, p, training)
    if not training or p == 0.0:
        return x
    x = x.coalesce()
    values = fast_dropout(x.values(), p, training)
    # The indices come from a valid coalesced tensor: no need to re-check them.
    return torch.sparse_coo_tensor(
        x.indices(), values, x.shape, is_coalesced=True, check_invariants=False
    )


def build_gat(config: GATConfig | None = None, **overrides: Any) -> GAT:
    """A :class:`GAT` from ``config`` (the paper's Cora model by default) with field
    ``overrides``.

    Example:
        >>> import torch
        >>> from attnkit.models import GATConfig, build_gat
        >>> gat = build_gat(GATConfig(in_features=16, num_classes=3))  # 8 heads x 8 features
        >>> edges = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])  # source -> target
        >>> tuple(gat(torch.randn(4, 16), edges).shape)
        (4, 3)
    """
    config = GATConfig(**{**(asdict(config) if config is not None else {}), **overrides})
    layers = []
    width = config.in_features
    for _ in range(config.num_layers - 1):
        layer = GraphAttentionLayer(
            width,
            config.hidden_features,
            config.attention_dropout,
            config.alpha,
            concat=True,
            heads=config.heads,
        )
        layers.append(layer)
        width = layer.output_size
    output = GraphAttentionLayer(
        width,
        config.num_classes,
        config.attention_dropout,
        config.alpha,
        concat=False,
        heads=config.out_heads,
    )
    return GAT([*layers, output], config.dropout, config=config)
