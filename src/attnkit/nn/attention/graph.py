"""Graph attention (GAT, Veličković et al. 2018) on an edge list, and a dense twin for teaching.

A graph of ``N`` nodes with features ``x (N, F)`` and directed edges
``edge_index (2, E)``: row 0 holds the source node ``j``, row 1 the target node
``i`` of each edge ``j -> i`` (the layout of PyTorch Geometric). Node ``i``
attends over the sources of its incoming edges, each head ``h`` with

    e_ij = LeakyReLU(a_dst . W x_i + a_src . W x_j)        (slope ``alpha``)
    w_ij = softmax_j(e_ij)                                 (over i's in-edges)
    out_i = sum_j w_ij W x_j

and the heads are concatenated (``(N, H * C)``) or averaged (``(N, C)``).
:class:`GraphAttentionLayer` computes this on the edge list with scatter
operations (memory ``O(E H C)``, never ``N x N``); :class:`DenseGraphAttentionLayer`
shares its parameters and computes the same numbers from an ``(N, N)`` boolean
adjacency (``adj[i, j]`` True = ``i`` may attend to ``j``, the library's mask
convention). Parameter names (``lin.weight``, ``att_src``, ``att_dst``, ``bias``)
are those of ``torch_geometric.nn.GATConv``, so its state dict loads as is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.functional import dropout as fast_dropout
from attnkit.functional import masked_softmax
from attnkit.functional._common import compute_dtype

__all__ = [
    "DenseGraphAttentionLayer",
    "GraphAttentionLayer",
    "add_self_loops",
    "check_edge_index",
    "edge_index_to_adjacency",
    "edge_softmax",
]


def check_edge_index(edge_index: Tensor, num_nodes: int) -> None:
    """Raise ``ValueError`` unless ``edge_index`` is an integer ``(2, E)`` tensor of node ids
    in ``[0, num_nodes)``."""
    if not isinstance(edge_index, Tensor):
        raise ValueError(f"edge_index must be a torch.Tensor; got {type(edge_index).__name__}")
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"edge_index must be int64 (or int32) node ids; got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(
            f"edge_index must have shape (2, E) (sources, targets); got {tuple(edge_index.shape)}"
        )
    if edge_index.numel() == 0:
        return
    low, high = int(edge_index.min()), int(edge_index.max())
    if low < 0 or high >= num_nodes:
        bad = low if low < 0 else high
        raise ValueError(
            f"edge_index holds node id {bad}, outside the graph of {num_nodes} nodes "
            f"(expected ids in [0, {num_nodes - 1}])"
        )


def add_self_loops(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Drop existing self-loops, then append one loop ``i -> i`` per node (GATConv's default).

    ``(2, E)`` -> ``(2, E - loops + N)``; the original edges keep their order.
    """
    kept = edge_index[:, edge_index[0] != edge_index[1]]
    loops = torch.arange(num_nodes, device=edge_index.device, dtype=edge_index.dtype)
    return torch.cat([kept, loops.expand(2, num_nodes)], dim=1)


def edge_softmax(scores: Tensor, index: Tensor, num_nodes: int) -> Tensor:
    """Softmax of edge ``scores`` over the edges that share a target node.

    Args:
        scores: ``(E, ...)``, e.g. ``(E, H)`` per head; fp16/bf16 are computed in float32.
        index: ``(E,)`` int64, the group (target node) of each edge.
        num_nodes: number of groups ``N``.

    Returns:
        ``(E, ...)`` weights in the compute dtype, summing to 1 within each group. Nodes
        without edges have no entries, so nothing can become NaN.
    """
    scores = scores.to(compute_dtype(scores.dtype))
    shape = (num_nodes, *scores.shape[1:])
    expanded = index.view(-1, *([1] * (scores.dim() - 1))).expand_as(scores)
    # Subtracting each group's maximum keeps exp() finite; it is a constant shift the
    # softmax does not see, so it is detached (no gradient through the max).
    group_max = scores.new_zeros(shape).scatter_reduce(
        0, expanded, scores.detach(), reduce="amax", include_self=False
    )
    exp = torch.exp(scores - group_max[index])
    denominator = exp.new_zeros(shape).index_add_(0, index, exp)
    return exp / denominator[index]


def edge_index_to_adjacency(edge_index: Tensor, num_nodes: int) -> Tensor:
    """``(2, E)`` edges ``j -> i`` as an ``(N, N)`` bool adjacency with ``adj[i, j]`` True.

    Row ``i`` marks the nodes ``i`` may attend to (True = may attend); duplicate edges
    collapse into one entry.
    """
    check_edge_index(edge_index, num_nodes)
    adjacency = torch.zeros(num_nodes, num_nodes, dtype=torch.bool, device=edge_index.device)
    adjacency[edge_index[1], edge_index[0]] = True
    return adjacency


class GraphAttentionLayer(nn.Module):
    """Multi-head graph attention on an edge list (GAT; ``GATConv`` of PyG).

    Args:
        in_features: ``F``, features per input node.
        out_features: ``C``, features per head of each output node.
        dropout: probability of dropping a normalised attention weight in training.
        alpha: negative slope of the LeakyReLU on the scores (0.2 in the paper).
        concat: concatenate the heads (``(N, H * C)``), else average them (``(N, C)``).
        heads: ``H``, independent attention heads.
        bias: add a learned bias to the output.
        add_self_loops: replace existing self-loops by one loop per node, so each node
            attends to itself too (as GAT and GATConv do).

    Parameters: ``lin.weight (H * C, F)``; ``att_src``, ``att_dst (1, H, C)``; ``bias``
    ``(H * C)`` or ``(C)``. No activation is applied: the model adds ELU between layers.

    Example:
        >>> import torch
        >>> from attnkit.nn import GraphAttentionLayer
        >>> layer = GraphAttentionLayer(16, 8, heads=4)  # the 4 heads are concatenated
        >>> edges = torch.tensor([[0, 1, 2], [1, 2, 0]])  # source -> target
        >>> tuple(layer(torch.randn(3, 16), edges).shape)
        (3, 32)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        dropout: float = 0.0,
        alpha: float = 0.2,
        concat: bool = True,
        *,
        heads: int = 1,
        bias: bool = True,
        add_self_loops: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1; got {value}")
        if heads < 1:
            raise ValueError(f"heads must be >= 1; got {heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        if alpha < 0:
            raise ValueError(f"alpha (LeakyReLU negative slope) must be >= 0; got {alpha}")
        self.in_features, self.out_features, self.heads = in_features, out_features, heads
        self.dropout, self.alpha, self.concat = dropout, alpha, concat
        self.add_self_loops = add_self_loops
        self.lin = nn.Linear(in_features, heads * out_features, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_features))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_features))
        width = heads * out_features if concat else out_features
        self.bias = nn.Parameter(torch.empty(width)) if bias else None
        self.reset_parameters()

    @property
    def output_size(self) -> int:
        """Features per output node: ``H * C`` when concatenating, else ``C``."""
        return self.heads * self.out_features if self.concat else self.out_features

    def reset_parameters(self) -> None:
        """Glorot-uniform ``W`` and attention vectors (each ``a`` as a ``C -> 1`` map), zero
        bias."""
        nn.init.xavier_uniform_(self.lin.weight)
        bound = math.sqrt(6.0 / (self.out_features + 1))
        nn.init.uniform_(self.att_src, -bound, bound)
        nn.init.uniform_(self.att_dst, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, heads={self.heads}, "
            f"concat={self.concat}, dropout={self.dropout}, alpha={self.alpha}"
        )

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x (N, F)`` -> ``W x (N, H, C)`` and the per-node score halves ``(N, H)`` each.

        ``x`` may be sparse COO (bag-of-words features are mostly zeros): the product
        then costs ``O(nnz H C)`` instead of ``O(N F H C)``.
        """
        if x.dim() != 2 or x.size(-1) != self.in_features:
            raise ValueError(
                f"x must have shape (N, in_features) = (N, {self.in_features}); "
                f"got {tuple(x.shape)}"
            )
        if x.layout == torch.sparse_coo:
            h = torch.sparse.mm(x, self.lin.weight.t())
        elif x.layout == torch.strided:
            h = self.lin(x)
        else:
            raise ValueError(f"x must be a dense or sparse COO tensor; got layout {x.layout}")
        h = h.view(x.size(0), self.heads, self.out_features)
        return h, (h * self.att_src).sum(-1), (h * self.att_dst).sum(-1)

    def _finish(self, out: Tensor) -> Tensor:
        """``(N, H, C)`` -> concatenated or averaged heads, plus the bias."""
        out = out.reshape(out.size(0), -1) if self.concat else out.mean(dim=1)
        return out + self.bias if self.bias is not None else out

    def forward(
        self, x: Tensor, edge_index: Tensor, *, need_weights: bool = False
    ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        """Attend over each node's in-neighbours.

        Args:
            x: ``(N, F)`` node features, dense or sparse COO.
            edge_index: ``(2, E)`` int64 edges ``source -> target``, ids in ``[0, N)``.
            need_weights: also return the edges used and their attention weights.

        Returns:
            ``(N, H * C)`` (concat) or ``(N, C)`` (mean); with ``need_weights``,
            ``(out, (edges (2, E'), weights (E', H)))`` where ``edges`` includes the
            added self-loops and ``weights`` are before dropout.
        """
        h, score_src, score_dst = self._project(x)
        num_nodes = x.size(0)
        check_edge_index(edge_index, num_nodes)
        edges = edge_index.long()
        if self.add_self_loops:
            edges = add_self_loops(edges, num_nodes)
        source, target = edges[0], edges[1]
        scores = F.leaky_relu(score_src[source] + score_dst[target], self.alpha)
        weights = edge_softmax(scores, target, num_nodes)
        kept = fast_dropout(weights, self.dropout, self.training).to(h.dtype)
        out = h.new_zeros(h.shape).index_add_(0, target, kept.unsqueeze(-1) * h[source])
        out = self._finish(out)
        return (out, (edges, weights.to(h.dtype))) if need_weights else out


class DenseGraphAttentionLayer(GraphAttentionLayer):
    """:class:`GraphAttentionLayer` on an ``(N, N)`` boolean adjacency: the textbook form.

    Same arguments and parameters (a state dict moves between the two); scores for all
    ``N x N`` pairs, masked where ``adj`` is False. Memory ``O(H N^2)``: for teaching and
    small graphs. ``adj[i, j]`` True = node ``i`` attends to node ``j`` (edge ``j -> i``);
    see :func:`edge_index_to_adjacency`. With ``add_self_loops`` the diagonal is set.

    Example:
        >>> import torch
        >>> from attnkit.nn import DenseGraphAttentionLayer
        >>> adj = torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 1]]).bool()  # 0 attends to 1
        >>> layer = DenseGraphAttentionLayer(4, 8, heads=2)
        >>> out, weights = layer(torch.randn(3, 4), adj, need_weights=True)
        >>> tuple(out.shape), tuple(weights.shape), weights[:, 0, 2].tolist()  # no edge: weight 0
        ((3, 16), (2, 3, 3), [0.0, 0.0])
    """

    def forward(  # type: ignore[override]
        self, x: Tensor, adj: Tensor, *, need_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``x (N, F)``, ``adj (N, N)`` bool -> ``(N, H * C)`` or ``(N, C)``; with
        ``need_weights`` also the weights ``(H, N, N)`` (before dropout; zero off the graph)."""
        h, score_src, score_dst = self._project(x)
        num_nodes = x.size(0)
        if adj.dtype != torch.bool or tuple(adj.shape) != (num_nodes, num_nodes):
            raise ValueError(
                f"adj must be a bool (N, N) = ({num_nodes}, {num_nodes}) adjacency; "
                f"got {adj.dtype} {tuple(adj.shape)}"
            )
        if self.add_self_loops:
            adj = adj | torch.eye(num_nodes, dtype=torch.bool, device=adj.device)
        # (H, N_target, 1) + (H, 1, N_source) -> (H, N, N)
        scores = score_dst.t().unsqueeze(-1) + score_src.t().unsqueeze(1)
        weights = masked_softmax(F.leaky_relu(scores, self.alpha), adj)
        kept = fast_dropout(weights, self.dropout, self.training).to(h.dtype)
        out = (kept @ h.transpose(0, 1)).transpose(0, 1)  # (H, N, C) -> (N, H, C)
        out = self._finish(out)
        return (out, weights.to(h.dtype)) if need_weights else out
