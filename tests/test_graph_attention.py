"""Graph attention (GAT): a float64 loop reference, PyG's GATConv with copied weights, the
dense twin, gradients, bad input, and a tiny GAT that learns to read its neighbours."""

import math

import pytest
import torch
import torch.nn.functional as F

from attnkit.models import GAT, GATConfig, build_gat
from attnkit.models.gat import feature_dropout
from attnkit.nn import DenseGraphAttentionLayer, GraphAttentionLayer
from attnkit.nn.attention.graph import (
    add_self_loops,
    check_edge_index,
    edge_index_to_adjacency,
    edge_softmax,
)

pytestmark = pytest.mark.usefixtures("single_thread")

# 6 nodes; a duplicate edge (0 -> 1 twice), an existing self-loop (2 -> 2) and node 5
# without incoming edges (it attends only to itself once self-loops are added).
EDGES = torch.tensor([[0, 0, 1, 2, 3, 4, 2, 1, 5, 5], [1, 1, 0, 2, 1, 3, 4, 2, 0, 4]])


def _layer(heads=2, concat=True, dtype=torch.float64, cls=GraphAttentionLayer, **kwargs):
    layer = cls(5, 3, dropout=0.0, alpha=0.2, concat=concat, heads=heads, **kwargs).to(dtype)
    with torch.no_grad():  # a non-zero bias, so that the test sees it
        layer.bias.uniform_(-1, 1)
    return layer


def loop_reference(layer: GraphAttentionLayer, x: torch.Tensor, edge_index: torch.Tensor):
    """GAT by hand in float64 Python: per node, per head, LeakyReLU scores, softmax over the
    in-neighbours (existing self-loops replaced by one per node), weighted sum."""
    heads, width, slope = layer.heads, layer.out_features, layer.alpha
    weight = layer.lin.weight.detach().double().tolist()
    a_src = layer.att_src.detach().double()[0].tolist()
    a_dst = layer.att_dst.detach().double()[0].tolist()
    rows = x.double().tolist()
    num_nodes = len(rows)
    # h[n][k][c] = sum_f W[k * C + c][f] x[n][f]
    h = [
        [
            [
                sum(w * v for w, v in zip(weight[k * width + c], row, strict=True))
                for c in range(width)
            ]
            for k in range(heads)
        ]
        for row in rows
    ]
    edges = [(j, i) for j, i in edge_index.t().tolist() if j != i]
    edges += [(i, i) for i in range(num_nodes)]
    out = [[[0.0] * width for _ in range(heads)] for _ in range(num_nodes)]
    weights = {}
    for i in range(num_nodes):
        sources = [j for j, target in edges if target == i]
        for k in range(heads):
            scores = []
            for j in sources:
                raw = sum(a * v for a, v in zip(a_src[k], h[j][k], strict=True))
                raw += sum(a * v for a, v in zip(a_dst[k], h[i][k], strict=True))
                scores.append(raw if raw > 0 else slope * raw)
            top = max(scores)
            exps = [math.exp(s - top) for s in scores]
            total = sum(exps)
            for j, e in zip(sources, exps, strict=True):
                w = e / total
                weights.setdefault((i, k), []).append((j, w))
                for c in range(width):
                    out[i][k][c] += w * h[j][k][c]
    out = torch.tensor(out, dtype=torch.float64)
    out = out.reshape(num_nodes, -1) if layer.concat else out.mean(dim=1)
    return out + layer.bias.detach().double(), weights


@pytest.mark.parametrize(("heads", "concat"), [(1, True), (3, True), (3, False)])
def test_edge_list_layer_matches_the_float64_loop_reference(heads, concat):
    layer = _layer(heads, concat)
    x = torch.randn(6, 5, dtype=torch.float64)
    out, (edges, weights) = layer(x, EDGES, need_weights=True)
    expected, expected_weights = loop_reference(layer, x, EDGES)
    assert out.shape == (6, heads * 3 if concat else 3)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    # the weights per (target, head), in the edges' order, equal the reference's
    for k in range(heads):
        for i in range(6):
            got = [
                (int(j), float(w))
                for j, t, w in zip(edges[0], edges[1], weights[:, k].detach(), strict=True)
                if t == i
            ]
            want = expected_weights[(i, k)]
            assert [j for j, _ in got] == [j for j, _ in want]
            assert max(abs(a[1] - b[1]) for a, b in zip(got, want, strict=True)) < 1e-12


def test_self_loops_replace_existing_ones_and_keep_duplicates():
    edges = add_self_loops(EDGES, 6)
    loops = edges[:, edges[0] == edges[1]]
    assert sorted(loops[0].tolist()) == list(range(6))  # one loop per node, 2 -> 2 not twice
    assert edges.size(1) == EDGES.size(1) - 1 + 6
    assert int(((edges[0] == 0) & (edges[1] == 1)).sum()) == 2  # the duplicate stays


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(("heads", "concat"), [(1, False), (4, True), (2, False)])
def test_matches_torch_geometric_gatconv_with_copied_weights(heads, concat):
    from torch_geometric.nn import GATConv  # dev extra; imported here, it is slow to import

    conv = GATConv(5, 3, heads=heads, concat=concat, negative_slope=0.2, dropout=0.0)
    layer = GraphAttentionLayer(5, 3, dropout=0.0, alpha=0.2, concat=concat, heads=heads)
    with torch.no_grad():
        conv.bias.uniform_(-1, 1)
    layer.load_state_dict(conv.state_dict())  # the same parameter names and shapes
    x = torch.randn(6, 5, requires_grad=True)
    expected, (ref_edges, ref_weights) = conv(x, EDGES, return_attention_weights=True)
    out, (edges, weights) = layer(x, EDGES, need_weights=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert torch.equal(edges, ref_edges)
    torch.testing.assert_close(weights, ref_weights, rtol=0, atol=1e-6)
    # gradients of the parameters and the input agree too
    probe = torch.randn_like(out)
    ours = torch.autograd.grad((out * probe).sum(), [x, *layer.parameters()])
    theirs = torch.autograd.grad((expected * probe).sum(), [x, *conv.parameters()])
    names = ["x"] + [name for name, _ in layer.named_parameters()]
    assert names[1:] == [name for name, _ in conv.named_parameters()]
    for name, a, b in zip(names, ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize(("heads", "concat"), [(1, True), (3, True), (3, False)])
def test_dense_variant_gives_the_edge_list_numbers(heads, concat):
    sparse = _layer(heads, concat)
    dense = _layer(heads, concat, cls=DenseGraphAttentionLayer)
    dense.load_state_dict(sparse.state_dict())
    unique = torch.unique(EDGES, dim=1)  # a dense adjacency cannot hold duplicate edges
    x = torch.randn(6, 5, dtype=torch.float64)
    out, (edges, weights) = sparse(x, unique, need_weights=True)
    adjacency = edge_index_to_adjacency(unique, 6)
    dense_out, dense_weights = dense(x, adjacency, need_weights=True)
    torch.testing.assert_close(dense_out, out, rtol=0, atol=1e-12)
    # per edge j -> i and head k: dense_weights[k, i, j]; all other entries are exactly 0
    torch.testing.assert_close(
        dense_weights[:, edges[1], edges[0]].t(), weights, rtol=0, atol=1e-12
    )
    off_graph = ~(adjacency | torch.eye(6, dtype=torch.bool))
    assert torch.all(dense_weights[:, off_graph] == 0)


def test_gradcheck_edge_list_and_dense_paths():
    layer = _layer(2, True)
    dense = _layer(2, True, cls=DenseGraphAttentionLayer)
    dense.load_state_dict(layer.state_dict())
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    unique = torch.unique(EDGES, dim=1)
    assert torch.autograd.gradcheck(lambda v: layer(v, EDGES), (x,))
    assert torch.autograd.gradcheck(lambda v: dense(v, edge_index_to_adjacency(unique, 6)), (x,))

    def through_attention_vectors(a_src, a_dst):
        return F.leaky_relu(a_src[EDGES[0]] + a_dst[EDGES[1]], 0.2)

    scores = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    scores_dst = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s, d: edge_softmax(through_attention_vectors(s, d), EDGES[1], 6),
        (scores, scores_dst),
    )


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_features_give_the_dense_numbers():
    layer = _layer(2, True)
    x = torch.randn(6, 5, dtype=torch.float64) * (torch.rand(6, 5) < 0.4)
    torch.testing.assert_close(layer(x.to_sparse(), EDGES), layer(x, EDGES), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="dense or sparse COO"):
        layer(x.to_sparse_csr(), EDGES)


def test_edge_softmax_normalises_per_target_and_survives_huge_scores():
    index = torch.tensor([0, 0, 1, 2, 2, 2])
    scores = torch.tensor([[1e4], [1e4 - 1], [-3e4], [0.0], [5.0], [-5.0]])
    weights = edge_softmax(scores, index, num_nodes=4)  # node 3 has no edges
    assert torch.isfinite(weights).all()
    sums = torch.zeros(4, 1).index_add_(0, index, weights)
    torch.testing.assert_close(sums, torch.tensor([[1.0], [1.0], [1.0], [0.0]]))
    torch.testing.assert_close(weights[:2, 0], torch.softmax(torch.tensor([1.0, 0.0]), 0))
    half = edge_softmax(scores.half(), index, 4)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()


@pytest.mark.parametrize("cls", [GraphAttentionLayer, DenseGraphAttentionLayer])
def test_a_node_with_no_neighbours_gets_the_bias_not_nan(cls):
    layer = _layer(2, True, cls=cls, add_self_loops=False)
    x = torch.randn(6, 5, dtype=torch.float64)
    graph = EDGES[:, EDGES[0] != EDGES[1]]
    if cls is DenseGraphAttentionLayer:
        graph = edge_index_to_adjacency(torch.unique(graph, dim=1), 6)
    out = layer(x, graph)
    assert torch.isfinite(out).all()
    lonely = 5  # nothing points at node 5
    torch.testing.assert_close(out[lonely], layer.bias.detach())


def test_attention_dropout_only_in_training_and_keeps_expectation():
    layer = GraphAttentionLayer(5, 4, dropout=0.5, heads=2).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    layer.eval()
    torch.testing.assert_close(layer(x, EDGES), layer(x, EDGES))
    clean = layer(x, EDGES)
    layer.train()
    draws = torch.stack([layer(x, EDGES) for _ in range(4000)])
    assert not torch.equal(draws[0], draws[1])
    torch.testing.assert_close(draws.mean(0), clean, rtol=0, atol=0.1)


def test_feature_dropout_on_sparse_features_keeps_zeros_and_scales():
    x = (torch.rand(50, 40) < 0.2).float()
    dropped = feature_dropout(x.to_sparse(), 0.5, training=True).to_dense()
    assert torch.all(dropped[x == 0] == 0)
    assert set(dropped[x == 1].unique().tolist()) <= {0.0, 2.0}
    assert 0.3 < (dropped[x == 1] == 0).float().mean() < 0.7
    assert feature_dropout(x, 0.5, training=False) is x


def test_bad_input_gives_clear_errors():
    layer = GraphAttentionLayer(5, 3, heads=2)
    x = torch.randn(6, 5)
    with pytest.raises(
        ValueError, match=r"x must have shape \(N, in_features\) = \(N, 5\); got \(6, 4\)"
    ):
        layer(torch.randn(6, 4), EDGES)
    with pytest.raises(ValueError, match=r"got \(5,\)"):
        layer(torch.randn(5), EDGES)
    with pytest.raises(ValueError, match="node id 6, outside the graph of 6 nodes"):
        layer(x, torch.tensor([[0, 6], [1, 2]]))
    with pytest.raises(ValueError, match="node id -1, outside the graph of 6 nodes"):
        layer(x, torch.tensor([[0, -1], [1, 2]]))
    with pytest.raises(ValueError, match=r"edge_index must have shape \(2, E\).*got \(10, 2\)"):
        layer(x, EDGES.t().contiguous())
    with pytest.raises(ValueError, match=r"shape \(2, E\).*got \(3, 4\)"):
        layer(x, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(2, E\).*got \(4,\)"):
        layer(x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"int64 .* node ids; got torch\.float32"):
        layer(x, EDGES.float())
    with pytest.raises(ValueError, match=r"must be a torch\.Tensor; got list"):
        check_edge_index([[0], [1]], 6)
    dense = DenseGraphAttentionLayer(5, 3)
    with pytest.raises(
        ValueError, match=r"adj must be a bool \(N, N\) = \(6, 6\).*got torch.bool \(6, 5\)"
    ):
        dense(x, torch.ones(6, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"adj must be a bool.*got torch.float32"):
        dense(x, torch.ones(6, 6))
    for kwargs, message in [
        ({"heads": 0}, "heads must be >= 1; got 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\); got 1.0"),
        ({"alpha": -0.1}, "alpha .* must be >= 0; got -0.1"),
    ]:
        with pytest.raises(ValueError, match=message):
            GraphAttentionLayer(5, 3, **kwargs)
    with pytest.raises(ValueError, match="out_features must be >= 1; got 0"):
        GraphAttentionLayer(5, 0)


def test_empty_edge_list_is_fine_with_self_loops():
    layer = _layer(2, False)
    x = torch.randn(6, 5, dtype=torch.float64)
    out = layer(x, torch.zeros(2, 0, dtype=torch.long))
    expected = layer.lin(x).view(6, 2, 3).mean(1) + layer.bias  # each node sees only itself
    torch.testing.assert_close(out, expected)


def test_gat_model_shapes_weights_and_config_errors():
    model = build_gat(in_features=5, num_classes=4, hidden_features=3, heads=2, out_heads=2)
    assert [type(layer) for layer in model.layers] == [GraphAttentionLayer] * 2
    assert model.layers[0].output_size == 6 and model.layers[1].output_size == 4
    model.eval()
    logits, weights = model(torch.randn(6, 5), EDGES, need_weights=True)
    assert logits.shape == (6, 4)
    assert [w.shape for w in weights] == [(15, 2), (15, 2)]  # 10 edges - 1 loop + 6 loops
    three = build_gat(in_features=5, num_classes=4, num_layers=3)
    assert len(three.layers) == 3 and three(torch.randn(6, 5), EDGES).shape == (6, 4)
    with pytest.raises(ValueError, match="heads must be >= 1; got 0"):
        GATConfig(heads=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\); got 1.5"):
        GATConfig(dropout=1.5)
    with pytest.raises(ValueError, match="layer 1 expects 7 input features but layer 0 gives 6"):
        GAT([GraphAttentionLayer(5, 3, heads=2), GraphAttentionLayer(7, 2)])
    with pytest.raises(ValueError, match="at least one layer"):
        GAT([])


def _community_graph(generator: torch.Generator, per_class: int = 20, classes: int = 3):
    """Nodes in ``classes`` communities (edges mostly inside them). Only a third of the
    nodes carry a noisy one-hot of their class; the rest have all-zero features, so they
    can only be classified by attending to their neighbours."""
    num_nodes = per_class * classes
    labels = torch.arange(classes).repeat_interleave(per_class)
    informative = torch.rand(num_nodes, generator=generator) < 1 / 3
    features = F.one_hot(labels, classes).float() + 0.3 * torch.randn(
        num_nodes, classes, generator=generator
    )
    features = torch.cat([features, torch.randn(num_nodes, 5, generator=generator)], dim=1)
    features[~informative] = 0.0
    source = torch.randint(0, num_nodes, (8 * num_nodes,), generator=generator)
    same = torch.rand(8 * num_nodes, generator=generator) < 0.9
    partner = torch.randint(0, per_class, (8 * num_nodes,), generator=generator)
    within = labels[source] * per_class + partner
    other = torch.randint(0, num_nodes, (8 * num_nodes,), generator=generator)
    target = torch.where(same, within, other)
    edges = torch.cat([torch.stack([source, target]), torch.stack([target, source])], dim=1)
    return features, labels, edges, informative


def test_a_tiny_gat_learns_to_classify_featureless_nodes_from_their_neighbours():
    generator = torch.Generator().manual_seed(0)
    features, labels, edges, informative = _community_graph(generator)
    train = torch.rand(len(labels), generator=generator) < 0.5
    test = ~train & ~informative  # zero features: only the neighbours tell the class
    model = build_gat(
        in_features=features.size(1),
        num_classes=3,
        hidden_features=8,
        heads=4,
        dropout=0.1,
        attention_dropout=0.1,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    def test_accuracy() -> float:
        model.eval()
        with torch.no_grad():
            predictions = model(features, edges).argmax(-1)
        model.train()
        return (predictions[test] == labels[test]).float().mean().item()

    before = test_accuracy()
    for _ in range(150):
        loss = F.cross_entropy(model(features, edges)[train], labels[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = test_accuracy()
    assert test.sum() >= 10
    assert loss.item() < 0.3
    assert after >= 0.9 > before + 0.3
