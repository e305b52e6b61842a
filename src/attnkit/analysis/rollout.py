"""Attention rollout and attention flow (Abnar & Zuidema 2020).

Both treat a stack of self-attention layers as a graph whose edges carry the
(head-averaged) weights plus the residual connection,
``A~ = 0.5 * A + 0.5 * I`` (rows renormalised). *Rollout* multiplies these
matrices through the layers; *flow* takes, for every output/input pair, the
maximum flow through the graph with the weights as capacities.
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import torch
from torch import Tensor

__all__ = ["attention_flow", "attention_rollout", "residual_attention"]


def residual_attention(weights: Tensor, head_fusion: str = "mean", residual: bool = True) -> Tensor:
    """One layer's ``(B, H, T, T)`` weights fused over heads, with the residual: ``(B, T, T)``.

    Example:
        >>> import torch
        >>> from attnkit.analysis import residual_attention
        >>> residual_attention(torch.full((1, 2, 2, 2), 0.5)).tolist()  # 0.5 * A + 0.5 * I
        [[[0.75, 0.25], [0.25, 0.75]]]
    """
    if weights.dim() != 4 or weights.size(-1) != weights.size(-2):
        raise ValueError(
            f"self-attention weights must have shape (B, H, T, T); got {tuple(weights.shape)}"
        )
    if head_fusion == "mean":
        fused = weights.mean(1)
    elif head_fusion == "max":
        fused = weights.amax(1)
    elif head_fusion == "min":
        fused = weights.amin(1)
    else:
        raise ValueError(f"head_fusion must be 'mean', 'max' or 'min'; got {head_fusion!r}")
    if residual:
        identity = torch.eye(fused.size(-1), dtype=fused.dtype, device=fused.device)
        fused = 0.5 * fused + 0.5 * identity
    return fused / fused.sum(-1, keepdim=True).clamp_min(1e-12)


def _checked_layers(layers: Sequence[Tensor]) -> list[Tensor]:
    if len(layers) == 0:
        raise ValueError("need the weights of at least one layer; got none")
    shapes = {tuple(w.shape) for w in layers}
    if len(shapes) != 1:
        raise ValueError(f"every layer's weights must have the same shape; got {sorted(shapes)}")
    return list(layers)


def attention_rollout(
    layers: Sequence[Tensor], *, head_fusion: str = "mean", residual: bool = True
) -> Tensor:
    """How much each output position draws on each input token through all layers.

    Args:
        layers: per-layer self-attention weights ``(B, H, T, T)``, first layer first.

    Returns:
        ``(B, T, T)``: row ``i`` of the last layer over input tokens ``j``
        (``A~_L @ ... @ A~_1``; rows sum to 1).

    Example:
        >>> import torch
        >>> from attnkit.analysis import attention_rollout
        >>> layers = [torch.softmax(torch.randn(1, 4, 6, 6), dim=-1) for _ in range(3)]
        >>> rollout = attention_rollout(layers)  # (B, T, T)
        >>> tuple(rollout.shape), torch.allclose(rollout.sum(-1), torch.ones(1, 6))
        ((1, 6, 6), True)
    """
    rollout = None
    for weights in _checked_layers(layers):
        layer = residual_attention(weights.double(), head_fusion, residual)
        rollout = layer if rollout is None else layer @ rollout
    return rollout.to(layers[0].dtype)  # type: ignore[union-attr]


def attention_flow(
    layers: Sequence[Tensor], *, head_fusion: str = "mean", residual: bool = True
) -> Tensor:
    """Maximum flow from each output position to each input token: ``(B, T, T)``.

    Nodes are (layer, position); an edge from position ``i`` in layer ``l + 1``
    to position ``j`` in layer ``l`` has capacity ``A~_l[i, j]``. Exact max flow
    costs ``T^2`` flow problems per example: meant for short inputs.

    Example:
        >>> import torch
        >>> from attnkit.analysis import attention_flow
        >>> flow = attention_flow([torch.full((1, 2, 2, 2), 0.5)] * 2)  # two layers
        >>> tuple(flow.shape), [round(v, 4) for v in flow[0, 0].tolist()]
        ((1, 2, 2), [1.0, 0.5])
    """
    layers = _checked_layers(layers)
    fused = [residual_attention(w.double(), head_fusion, residual) for w in layers]
    batch, length = fused[0].shape[:2]
    flow = torch.zeros(batch, length, length, dtype=torch.float64)
    for b in range(batch):
        graph = _flow_graph([layer[b].cpu() for layer in fused])
        top = len(fused)
        for i in range(length):
            for j in range(length):
                flow[b, i, j] = nx.maximum_flow_value(graph, (top, i), (0, j))
    return flow.to(device=layers[0].device, dtype=layers[0].dtype)


def _flow_graph(layers: list[Tensor]) -> nx.DiGraph:
    """Directed graph from layer ``l + 1`` to layer ``l``, capacities from ``(T, T)`` weights."""
    graph = nx.DiGraph()
    for level, weights in enumerate(layers):
        rows, cols = weights.shape
        graph.add_edges_from(
            ((level + 1, i), (level, j), {"capacity": float(weights[i, j])})
            for i in range(rows)
            for j in range(cols)
        )
    return graph
