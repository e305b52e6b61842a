"""Cora (Planetoid) loading through the restricted unpickler, GAT's early stopping and L2
penalty, and the cora_gat recipe end to end on the real graph for a few epochs."""

import json
import os
import pickle
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from attnkit.cli import main
from attnkit.data import data_root
from attnkit.data.cora import (
    RestrictedUnpickler,
    UnsafePickleError,
    load_cora,
    restricted_load,
    row_normalize,
)
from attnkit.models import build_gat
from attnkit.recipes import ConfigError, load_recipe
from attnkit.recipes.node_classification import PaperEarlyStopping, node_loss

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CORA = data_root() / "cora"


@pytest.fixture(scope="module")
def cora():
    return load_cora()


class _RunsACommand:
    """Unpickling this calls ``os.system(command)``: the classic malicious pickle."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_restricted_unpickler_refuses_os_system_and_does_not_run_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_RunsACommand(f"touch {marker}"), protocol=2)
    assert b"system" in payload
    with pytest.raises(
        UnsafePickleError, match=r"refusing to unpickle global (posix|os|nt)\.system"
    ):
        restricted_load(payload)
    assert not marker.exists()
    # UnsafePickleError is both a pickle error and a ValueError
    assert issubclass(UnsafePickleError, pickle.UnpicklingError)
    assert issubclass(UnsafePickleError, ValueError)


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(eval, protocol=2),  # builtins.eval itself
        b"cbuiltins\neval\n(S'1+1'\ntR.",  # a hand-written call of eval('1+1')
        b"c__builtin__\ngetattr\n(c__builtin__\nlist\nS'append'\ntR.",
        b"cnumpy\nload\n(S'x'\ntR.",  # a numpy function that is not on the list
        pickle.dumps(sp.coo_matrix(np.eye(2)), protocol=2),  # not csr
    ],
)
def test_restricted_unpickler_refuses_other_globals(payload):
    with pytest.raises(UnsafePickleError, match="refusing to unpickle global"):
        restricted_load(payload)


def test_restricted_unpickler_refuses_persistent_ids():
    import io

    class WithIds(pickle.Pickler):
        def persistent_id(self, obj):
            return "resource" if obj == "secret" else None

    buffer = io.BytesIO()
    WithIds(buffer, protocol=2).dump(["secret"])
    with pytest.raises(UnsafePickleError, match="persistent id"):
        RestrictedUnpickler(io.BytesIO(buffer.getvalue())).load()


def test_restricted_unpickler_reads_csr_ndarray_and_defaultdict():
    graph = defaultdict(list, {0: [1, 2], 2: [0]})
    matrix = sp.csr_matrix(np.array([[0.0, 1.5], [2.0, 0.0]], dtype=np.float32))
    array = np.arange(6, dtype=np.int64).reshape(2, 3)
    # Protocols 3 and 4 (Python 3 writes Python 2's protocol 2 with _codecs.encode, and 5
    # with numpy's _frombuffer: neither is needed for the Planetoid files, so both refused)
    for protocol in (3, 4):
        loaded = restricted_load(pickle.dumps((graph, matrix, array), protocol=protocol))
        assert loaded[0] == graph and isinstance(loaded[0], defaultdict)
        assert sp.isspmatrix_csr(loaded[1])
        assert np.array_equal(loaded[1].toarray(), matrix.toarray())
        assert np.array_equal(loaded[2], array) and loaded[2].dtype == np.int64


def _copy_cora(tmp_path: Path) -> Path:
    folder = tmp_path / "cora"
    shutil.copytree(CORA, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


def test_load_cora_refuses_a_malicious_file_and_names_it(tmp_path):
    folder = _copy_cora(tmp_path)
    marker = tmp_path / "pwned"
    (folder / "ind.cora.ty").write_bytes(pickle.dumps(_RunsACommand(f"touch {marker}"), 2))
    with pytest.raises(UnsafePickleError, match=r"ind\.cora\.ty: refusing to unpickle"):
        load_cora(folder)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError, match=r"ind\.cora\.x not found"):
        load_cora(tmp_path / "nowhere")


def test_cora_has_the_planetoid_shapes_split_and_classes(cora):
    assert cora.features.shape == (2708, 1433) and cora.features.dtype == torch.float32
    assert cora.labels.shape == (2708,) and cora.num_classes == 7
    masks = torch.stack([cora.train_mask, cora.val_mask, cora.test_mask])
    assert masks.sum(1).tolist() == [140, 500, 1000]
    assert masks.sum(0).max() == 1  # disjoint
    assert cora.train_mask[:140].all() and cora.val_mask[140:640].all()
    assert cora.test_mask[1708:].all()
    # 20 training nodes per class; the whole graph's and the test split's class counts
    assert torch.bincount(cora.labels[cora.train_mask]).tolist() == [20] * 7
    assert torch.bincount(cora.labels).tolist() == [351, 217, 418, 818, 426, 298, 180]
    assert torch.bincount(cora.labels[cora.test_mask]).tolist() == [130, 91, 144, 319, 149, 103, 64]


def test_cora_edges_are_undirected_unique_and_without_self_loops(cora):
    edges = cora.edge_index
    assert edges.shape == (2, 10556) and edges.dtype == torch.int64
    assert not (edges[0] == edges[1]).any()
    keys = set(map(tuple, edges.t().tolist()))
    assert len(keys) == edges.size(1)
    assert keys == {(j, i) for i, j in keys}


def test_features_are_row_normalised(cora):
    raw = load_cora(normalize=False)
    assert set(raw.features.unique().tolist()) == {0.0, 1.0}
    sums = cora.features.sum(1)
    torch.testing.assert_close(sums, torch.ones_like(sums))
    torch.testing.assert_close(cora.features, raw.features / raw.features.sum(1, keepdim=True))
    assert torch.equal(row_normalize(torch.zeros(2, 3)), torch.zeros(2, 3))


def _homophily(graph, mask):
    """Share of the edges touching ``mask`` nodes whose two ends have the same label."""
    source, target = graph.edge_index
    touching = mask[source] | mask[target]
    same = graph.labels[source] == graph.labels[target]
    return same[touching].float().mean().item()


def test_test_rows_are_placed_at_the_ids_of_test_index(cora, tmp_path):
    # Cora is homophilous (~81% of links join papers of one class). Rows put at the wrong
    # ids would cut the test nodes' labels loose from their neighbours.
    assert _homophily(cora, cora.test_mask) > 0.75
    folder = _copy_cora(tmp_path)
    ids = (folder / "ind.cora.test.index").read_text().split()
    order = np.random.default_rng(0).permutation(len(ids))
    (folder / "ind.cora.test.index").write_text("\n".join(ids[i] for i in order) + "\n")
    shuffled = load_cora(folder)
    assert _homophily(shuffled, shuffled.test_mask) < 0.45
    (folder / "ind.cora.test.index").write_text("\n".join(ids[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"test.index must list each id in \[1708, 2708\) once"):
        load_cora(folder)


class _FakeTrainer:
    def __init__(self, module):
        self.module, self.step, self.stopped = module, 0, None
        self.evaluated_module = module

    def request_stop(self, reason):
        self.stopped = reason


def test_paper_early_stopping_resets_on_either_metric_and_keeps_the_joint_best():
    module = torch.nn.Linear(1, 1, bias=False)
    trainer = _FakeTrainer(module)
    stopper = PaperEarlyStopping(patience=2)
    history = [  # (loss, accuracy)
        (1.0, 0.5),  # both best: kept
        (0.9, 0.4),  # loss better only: counter resets, weights not kept
        (0.95, 0.6),  # accuracy better only: counter resets
        (0.8, 0.6),  # both at least as good: kept
        (0.85, 0.55),  # worse: 1
        (0.9, 0.5),  # worse: 2 -> stop
    ]
    for step, (loss, accuracy) in enumerate(history, start=1):
        trainer.step = step
        with torch.no_grad():
            module.weight.fill_(step)
        stopper.on_evaluate(trainer, {"valid_loss": loss, "valid_accuracy": accuracy})
        assert (trainer.stopped is not None) == (step == 6)
    assert stopper.chosen["step"] == 4
    assert stopper.state["weight"].item() == 4.0  # a copy, not the live weights
    assert "no better valid_loss or valid_accuracy for 2 epochs" in trainer.stopped


def test_node_loss_gives_adam_weight_decay_gradients(cora):
    """The Trainer divides the summed loss by the node count; what remains must be the
    gradient of the mean cross-entropy plus ``l2 * theta`` (torch Adam's weight_decay)."""
    model = build_gat(in_features=1433, num_classes=7, hidden_features=4, heads=2)
    model.eval()  # no dropout: both passes see the same function
    output = node_loss(5e-4)(model, cora)
    assert output.num_tokens == 140
    ours = torch.autograd.grad(output.loss_sum / output.num_tokens, list(model.parameters()))
    logits = model(cora.features, cora.edge_index)
    mean = F.cross_entropy(logits[cora.train_mask], cora.labels[cora.train_mask])
    plain = torch.autograd.grad(mean, list(model.parameters()))
    for got, grad, param in zip(ours, plain, model.parameters(), strict=True):
        torch.testing.assert_close(got, grad + 5e-4 * param.detach())
    torch.testing.assert_close(output.logs["cross_entropy"], mean.detach())


def test_cora_recipe_validates_its_keys():
    path = CONFIGS / "cora_gat.yaml"
    recipe = load_recipe(path)
    assert recipe.seeds == list(range(10)) and recipe.patience == 100
    assert recipe.train.lr == 0.005 and recipe.l2_penalty == 5e-4
    for override, message in [
        ("model.in_features=10", "model.in_features is set from the data"),
        ("seeds=[]", "seeds must list at least one seed"),
        ("train.eval_every=5", "train.eval_every must be 1"),
        ("train.patience=5", "patience .* needs best_metric"),
        ("model.heads=0", "heads must be >= 1; got 0"),
        ("data.dataset=citeseer", r"data.dataset must be one of \['cora'\]"),
        ("patience=0", "patience must be >= 1"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_recipe(path, [override])
    with pytest.raises(ConfigError, match=r"set the recipe's patience, not train\.patience"):
        load_recipe(path, ["train.patience=5", "train.best_metric=valid_loss"])


def test_cora_recipe_runs_end_to_end_and_reports_every_seed(tmp_path, capsys):
    run = tmp_path / "cora"
    args = [
        "train",
        str(CONFIGS / "cora_gat.yaml"),
        f"output_dir={run}",
        "seeds=[0,1]",
        "train.max_epochs=20",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    results = json.loads((run / "results.json").read_text())
    accuracy = results["test_accuracy"]
    per_seed = accuracy["per_seed"]
    assert [item["seed"] for item in results["runs"]] == [0, 1]
    assert per_seed == [item["test_accuracy"] for item in results["runs"]]
    assert accuracy["mean"] == pytest.approx(np.mean(per_seed))
    assert accuracy["std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert results["test_nodes"] == 1000
    assert all(item["epochs"] == 20 for item in results["runs"])
    # 20 full-batch epochs already lift both seeds far above the majority class (32%)
    assert min(per_seed) > 0.6
    assert "seed 0: test accuracy" in printed and "seed 1: test accuracy" in printed
    assert f"{100 * accuracy['mean']:.2f}% ± {100 * accuracy['std']:.2f}%" in printed
    assert (run / "seed_1" / "metrics.jsonl").is_file() and (run / "recipe.yaml").is_file()
    assert main([*args, "--resume"]) != 0
    assert "node_classification does not resume" in capsys.readouterr().err
