"""The Cora citation graph in the Planetoid format, read without trusting pickle.

Planetoid (Yang, Cohen & Salakhutdinov 2016) ships Cora as Python-2 pickles
``ind.cora.{x,y,allx,ally,tx,ty,graph}`` plus the text file ``ind.cora.test.index``:
``allx``/``ally`` are the features / one-hot labels of nodes ``0 .. 1707`` (the first
140 of them, ``x``/``y``, are the training nodes), ``tx``/``ty`` those of the 1,000
test nodes in the *file order of* ``test.index`` (ids 1708-2707, unsorted), and
``graph`` maps each node to its neighbours. Standard split: train = the 140 nodes of
``x``, validation = the next 500, test = the ids of ``test.index``.

Unpickling runs code named by the file, so the pickles are read by
:class:`RestrictedUnpickler`, which builds only what these files hold — a SciPy CSR
matrix, NumPy arrays, a ``defaultdict`` of lists — and refuses everything else.
"""

from __future__ import annotations

import io
import pickle
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from attnkit.data.datasets import data_root

__all__ = [
    "CoraData",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "load_cora",
    "restricted_load",
    "row_normalize",
]

_PARTS = ("x", "y", "allx", "ally", "tx", "ty", "graph")
NUM_VALIDATION = 500


def _numpy_reconstruct() -> Any:
    """NumPy's array-unpickling helper (``numpy._core`` since 2.0, ``numpy.core`` before)."""
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct


# (module, name) as written in the pickle -> the object it may become. Python-2 names
# (``__builtin__``) arrive unmapped, because the name fixing happens in the find_class
# this class replaces.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("scipy.sparse.csr", "csr_matrix"): sp.csr_matrix,
    ("scipy.sparse._csr", "csr_matrix"): sp.csr_matrix,
    ("scipy.sparse", "csr_matrix"): sp.csr_matrix,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("collections", "defaultdict"): defaultdict,
    ("__builtin__", "list"): list,
    ("builtins", "list"): list,
}


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for an object outside the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a Planetoid file needs.

    Allowed: ``scipy.sparse.csr_matrix``, ``numpy.ndarray``, ``numpy.dtype``, NumPy's
    ``_reconstruct``, ``collections.defaultdict`` and ``list``. Any other global
    (``os.system``, ``builtins.eval``, ...) raises :class:`UnsafePickleError` before it
    can be called. Persistent ids are refused as well.
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            names = sorted(f"{m}.{n}" for m, n in _ALLOWED)
            raise UnsafePickleError(
                f"refusing to unpickle global {module}.{name}: only {names} are allowed"
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing persistent id {pid!r} in a restricted pickle")


def restricted_load(data: bytes, *, encoding: str = "latin1") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (``latin1`` reads Python-2 arrays)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


@dataclass
class CoraData:
    """One graph for node classification (``N`` nodes, ``F`` features, ``C`` classes).

    Attributes:
        features: ``(N, F)`` float32 (row-normalised unless loaded with
            ``normalize=False``; then binary bag-of-words).
        labels: ``(N,)`` int64 class ids in ``[0, C)``.
        edge_index: ``(2, E)`` int64, every undirected link in both directions, no
            duplicates or self-loops.
        train_mask, val_mask, test_mask: ``(N,)`` bool.

    Example:
        >>> import torch
        >>> from attnkit.data import CoraData
        >>> graph = CoraData(
        ...     features=torch.eye(3),  # (N, F) = (3, 3)
        ...     labels=torch.tensor([0, 1, 1]),
        ...     edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]),  # the path 0 - 1 - 2
        ...     train_mask=torch.tensor([True, False, False]),
        ...     val_mask=torch.tensor([False, True, False]),
        ...     test_mask=torch.tensor([False, False, True]),
        ... )
        >>> graph.num_nodes, graph.num_features, graph.num_classes, graph.edge_index.size(1)
        (3, 3, 2, 4)
    """

    features: Tensor
    labels: Tensor
    edge_index: Tensor
    train_mask: Tensor
    val_mask: Tensor
    test_mask: Tensor

    @property
    def num_nodes(self) -> int:
        return self.features.size(0)

    @property
    def num_features(self) -> int:
        return self.features.size(1)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1


def row_normalize(features: Tensor) -> Tensor:
    """Divide each row by its sum (the GAT/GCN preprocessing); all-zero rows stay zero.

    ``(N, F)`` -> ``(N, F)``.
    """
    sums = features.sum(dim=1, keepdim=True)
    return torch.where(sums > 0, features / sums.clamp_min(1e-12), torch.zeros_like(features))


def _read(folder: Path, part: str) -> Any:
    path = folder / f"ind.cora.{part}"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: Cora (Planetoid files ind.cora.*) is expected in {folder} "
            "(set ATTNKIT_DATA or pass root)"
        )
    try:
        return restricted_load(path.read_bytes())
    except UnsafePickleError as error:
        raise UnsafePickleError(f"{path}: {error}") from None


def _dense(matrix: Any, name: str) -> np.ndarray:
    if sp.issparse(matrix):
        matrix.check_format(full_check=True)
        return matrix.toarray()
    if isinstance(matrix, np.ndarray) and matrix.ndim == 2:
        return matrix
    raise ValueError(f"ind.cora.{name} must hold a 2-D matrix; got {type(matrix).__name__}")


def _read_test_index(folder: Path) -> np.ndarray:
    path = folder / "ind.cora.test.index"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (the ids of the test nodes)")
    return np.array([int(line) for line in path.read_text().split()], dtype=np.int64)


def _labels(one_hot: np.ndarray) -> np.ndarray:
    if not np.all(one_hot.sum(axis=1) == 1):
        raise ValueError("Cora labels must be one-hot rows; some row is not")
    return one_hot.argmax(axis=1)


def _edges(graph: Any, num_nodes: int) -> Tensor:
    """The adjacency lists as ``(2, E)`` edges: both directions, unique, no self-loops."""
    if not isinstance(graph, dict):
        raise ValueError(f"ind.cora.graph must hold a dict of lists; got {type(graph).__name__}")
    pairs = [(int(node), int(other)) for node, others in graph.items() for other in others]
    edges = torch.tensor(pairs, dtype=torch.int64).t()
    edges = torch.cat([edges, edges.flip(0)], dim=1)
    edges = edges[:, edges[0] != edges[1]]
    if int(edges.min()) < 0 or int(edges.max()) >= num_nodes:
        raise ValueError(f"ind.cora.graph names nodes outside [0, {num_nodes})")
    keys = torch.unique(edges[0] * num_nodes + edges[1])  # sorted by (source, target)
    return torch.stack([keys // num_nodes, keys % num_nodes])


def load_cora(root: str | Path | None = None, *, normalize: bool = True) -> CoraData:
    r"""Read Cora's Planetoid files from ``root`` (default ``data_root() / "cora"``).

    The test rows ``tx``/``ty`` are placed at the node ids of ``test.index`` (which lists
    them unsorted), as the reference loader of GCN/GAT does. ``normalize`` divides each
    feature row by its sum, as in the GAT paper. A missing file raises
    ``FileNotFoundError`` naming it; a pickle asking for anything outside the allow-list
    raises ``UnsafePickleError``.

    Example:
        A made-up graph of 4 known nodes (2 for training) and 2 test nodes, in the
        Planetoid format:

        >>> import pickle, tempfile
        >>> from collections import defaultdict
        >>> from pathlib import Path
        >>> import numpy as np
        >>> from scipy import sparse
        >>> from attnkit.data import load_cora
        >>> folder, one_hot = Path(tempfile.mkdtemp()), np.eye(2, dtype=np.int64)
        >>> parts = {"x": sparse.csr_matrix(np.ones((2, 3))), "y": one_hot,
        ...          "allx": sparse.csr_matrix(np.ones((4, 3))), "ally": one_hot[[0, 1, 0, 1]],
        ...          "tx": sparse.csr_matrix(np.ones((2, 3))), "ty": one_hot[[1, 0]],
        ...          "graph": defaultdict(list, {0: [1], 1: [2], 4: [5]})}
        >>> for name, value in parts.items():
        ...     _ = (folder / f"ind.cora.{name}").write_bytes(pickle.dumps(value, protocol=4))
        >>> _ = (folder / "ind.cora.test.index").write_text("5\n4\n")  # tx rows: nodes 5, 4
        >>> cora = load_cora(folder)
        >>> cora.num_nodes, cora.num_features, cora.num_classes, cora.edge_index.size(1)
        (6, 3, 2, 6)
        >>> cora.labels.tolist(), cora.train_mask.sum().item(), cora.features[0].sum().item()
        ([0, 1, 0, 1, 0, 1], 2, 1.0)
    """
    folder = Path(root) if root is not None else data_root() / "cora"
    parts = {part: _read(folder, part) for part in _PARTS}
    test_index = _read_test_index(folder)
    allx, tx = _dense(parts["allx"], "allx"), _dense(parts["tx"], "tx")
    ally, ty = _dense(parts["ally"], "ally"), _dense(parts["ty"], "ty")
    num_known, num_nodes = allx.shape[0], allx.shape[0] + tx.shape[0]
    expected = np.arange(num_known, num_nodes)
    if len(test_index) != tx.shape[0] or not np.array_equal(np.sort(test_index), expected):
        raise ValueError(
            f"ind.cora.test.index must list each id in [{num_known}, {num_nodes}) once "
            f"(one per row of tx); got {len(test_index)} ids"
        )
    features = np.concatenate([allx, np.zeros_like(tx)])
    features[test_index] = tx  # row k of tx is node test_index[k]
    labels = np.concatenate([_labels(ally), np.zeros(len(ty), dtype=np.int64)])
    labels[test_index] = _labels(ty)
    masks = torch.zeros(3, num_nodes, dtype=torch.bool)
    num_train = _dense(parts["y"], "y").shape[0]
    masks[0, :num_train] = True
    masks[1, num_train : num_train + NUM_VALIDATION] = True
    masks[2, torch.from_numpy(test_index)] = True
    x = torch.from_numpy(features).float()
    return CoraData(
        features=row_normalize(x) if normalize else x,
        labels=torch.from_numpy(labels).long(),
        edge_index=_edges(parts["graph"], num_nodes),
        train_mask=masks[0],
        val_mask=masks[1],
        test_mask=masks[2],
    )
