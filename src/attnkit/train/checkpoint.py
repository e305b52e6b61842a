"""Checkpoints: a directory per save, written atomically and verified on load.

Layout of one checkpoint directory::

    model.safetensors   model weights (tied weights stored once, aliases in its metadata)
    trainer_state.pt    optimizer, scheduler, grad scaler, RNG and data-position state
    meta.json           step, metrics, and the size and SHA-256 of every file above

A run keeps them under ``<output_dir>/checkpoints/``: ``step_00000100/`` ...
and ``best/``. Each is written into a temporary sibling directory and renamed
into place, so a crash mid-write leaves the previous checkpoint intact. Loading
checks every file against ``meta.json`` and the tensors against the model
before anything is copied into it: a corrupted or truncated checkpoint raises
:class:`CheckpointError` naming the file, and the model stays untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

__all__ = [
    "CHECKPOINTS_DIR",
    "META_FILE",
    "MODEL_FILE",
    "STATE_FILE",
    "Checkpoint",
    "CheckpointError",
    "CheckpointManager",
    "apply_model_state",
    "check_model_state",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_weights",
    "read_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "verify_checkpoint",
]

MODEL_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"
META_FILE = "meta.json"
CHECKPOINTS_DIR = "checkpoints"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupted or does not fit the model.

    Raised before anything is copied into the model, so a failed load leaves the
    model as it was.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from torch import nn
        >>> from attnkit.train import CheckpointError, load_checkpoint, save_checkpoint
        >>> path = save_checkpoint(f"{tempfile.mkdtemp()}/ckpt", nn.Linear(4, 2).state_dict())
        >>> weights = path / "model.safetensors"
        >>> _ = weights.write_bytes(weights.read_bytes()[:-1] + b"!")  # same size, 1 byte changed
        >>> model = nn.Linear(4, 2)
        >>> before = model.weight.clone()
        >>> try:
        ...     load_checkpoint(path, model)
        ... except CheckpointError as error:
        ...     print("SHA-256 does not match" in str(error), torch.equal(model.weight, before))
        True True
    """


@dataclass
class Checkpoint:
    """A verified checkpoint read into memory (tensors on ``map_location``).

    Attributes:
        path: the checkpoint directory.
        model_state: ``{name: tensor}`` as ``model.state_dict()`` gave them
            (tied weights share one tensor again).
        trainer_state: the ``trainer_state.pt`` contents, or ``None`` when it
            was not written or not read.
        meta: ``meta.json``: ``step``, the caller's extras and the file records.

    ``step`` is ``meta["step"]`` (0 when absent).

    Example:
        >>> import tempfile
        >>> from torch import nn
        >>> from attnkit.train import read_checkpoint, save_checkpoint
        >>> directory = f"{tempfile.mkdtemp()}/step_00000007"
        >>> _ = save_checkpoint(directory, nn.Linear(4, 2).state_dict(), {"epoch": 1}, {"step": 7})
        >>> checkpoint = read_checkpoint(directory)
        >>> checkpoint.step, checkpoint.path.name, checkpoint.trainer_state
        (7, 'step_00000007', {'epoch': 1})
        >>> sorted((name, tuple(t.shape)) for name, t in checkpoint.model_state.items())
        [('bias', (2,)), ('weight', (2, 4))]
    """

    path: Path
    model_state: dict[str, Tensor]
    trainer_state: dict[str, Any] | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))


# ---------------------------------------------------------------- writing


def _storage_key(tensor: Tensor) -> tuple:
    return (
        tensor.device,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tuple(tensor.stride()),
        tensor.dtype,
    )


def _dedupe(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors to write (each storage once, contiguous) and ``alias -> stored name``.

    Tied weights (the same tensor under two names) are stored once; other views
    that share memory are copied, as safetensors requires.
    """
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    first_name: dict[tuple, str] = {}
    storages: set[tuple] = set()
    for name, tensor in state.items():
        tensor = tensor.detach()
        key = _storage_key(tensor)
        if tensor.numel() and key in first_name:
            aliases[name] = first_name[key]
            continue
        first_name[key] = name
        storage = (tensor.device, tensor.untyped_storage().data_ptr())
        whole = tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
        if tensor.numel() and (storage in storages or not whole or not tensor.is_contiguous()):
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        storages.add(storage)
        tensors[name] = tensor.cpu()
    return tensors, aliases


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` to ``target``, replacing an old ``target`` last."""
    if target.exists():
        old = target.with_name(f".old-{target.name}-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    with contextlib.suppress(OSError):
        _fsync(target.parent)


def save_checkpoint(
    directory: str | Path,
    model_state: dict[str, Tensor],
    trainer_state: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Atomically write a checkpoint directory; returns its path.

    Args:
        directory: the checkpoint directory (replaced if it exists).
        model_state: ``model.state_dict()`` (or a gathered full state dict).
        trainer_state: anything ``torch.load(weights_only=True)`` can read back.
        meta: JSON-serialisable extras for ``meta.json`` (e.g. ``step``, metrics).

    Tensors are written to CPU; tensors shared under two names (tied weights)
    are stored once and come back shared.

    Example:
        >>> import tempfile
        >>> from torch import nn
        >>> from attnkit.train import save_checkpoint
        >>> model = nn.Linear(4, 2)
        >>> path = save_checkpoint(f"{tempfile.mkdtemp()}/step_00000010", model.state_dict(),
        ...                        {"scheduler": {"last_epoch": 10}}, {"step": 10, "loss": 1.5})
        >>> path.name, sorted(child.name for child in path.iterdir())
        ('step_00000010', ['meta.json', 'model.safetensors', 'trainer_state.pt'])
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".tmp-{directory.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        tensors, aliases = _dedupe(model_state)
        header = {"format": "pt", "aliases": json.dumps(aliases)}
        save_file(tensors, tmp / MODEL_FILE, metadata=header)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / STATE_FILE)
        files = {path.name: _file_record(path) for path in sorted(tmp.iterdir())}
        record = {"format_version": FORMAT_VERSION, "created": time.time(), **(meta or {})}
        record["files"] = files
        (tmp / META_FILE).write_text(json.dumps(record, indent=2, default=str))
        for path in tmp.iterdir():
            _fsync(path)
        _replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


# ---------------------------------------------------------------- reading


def verify_checkpoint(directory: str | Path, *, files: tuple[str, ...] | None = None) -> dict:
    """Check ``meta.json`` and the size and SHA-256 of its files; returns the metadata.

    ``files`` limits the check to those names (default: every file listed).
    Raises :class:`CheckpointError` naming the first bad file.

    Example:
        >>> import tempfile
        >>> from torch import nn
        >>> from attnkit.train import save_checkpoint, verify_checkpoint
        >>> path = save_checkpoint(f"{tempfile.mkdtemp()}/ckpt", nn.Linear(4, 2).state_dict(),
        ...                        meta={"step": 5})
        >>> meta = verify_checkpoint(path)
        >>> meta["step"], sorted(meta["files"])
        (5, ['model.safetensors'])
        >>> _ = (path / "model.safetensors").write_bytes(b"cut")  # a truncated write
        >>> verify_checkpoint(path)
        Traceback (most recent call last):
            ...
        attnkit.train.checkpoint.CheckpointError: ...model.safetensors is truncated or corrupted:
        expected ... bytes, found 3
    """
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    try:
        meta = json.loads(meta_path.read_text())
        listed = meta["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path} is missing: incomplete checkpoint") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{meta_path} is corrupted: {error}") from None
    for name in files or tuple(listed):
        _verify_file(directory / name, listed.get(name))
    return meta


def _verify_file(path: Path, record: dict | None) -> None:
    if record is None:
        raise CheckpointError(f"{path.name} is not listed in {path.parent / META_FILE}")
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    size = path.stat().st_size
    if size != record["bytes"]:
        raise CheckpointError(
            f"{path} is truncated or corrupted: expected {record['bytes']} bytes, found {size}"
        )
    if _sha256(path) != record["sha256"]:
        raise CheckpointError(f"{path} is corrupted: its SHA-256 does not match {META_FILE}")


def _read_safetensors(path: Path, map_location: str | torch.device) -> dict[str, Tensor]:
    """All tensors of a safetensors file with aliases (tied weights) restored."""
    device = str(map_location)
    try:
        with safe_open(path, framework="pt", device=device) as handle:
            state = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
            aliases = json.loads((handle.metadata() or {}).get("aliases", "{}"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from None
    for alias, name in aliases.items():
        state[alias] = state[name]
    return state


def _read_trainer_state(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path} could not be read: {error}") from None


def read_checkpoint(
    directory: str | Path,
    *,
    map_location: str | torch.device = "cpu",
    trainer_state: bool = True,
) -> Checkpoint:
    """Verify and read a checkpoint directory into memory (nothing is applied).

    Args:
        directory: a checkpoint directory (see :func:`resolve_checkpoint` for
            finding one in a run directory).
        map_location: device for the tensors.
        trainer_state: also verify and read ``trainer_state.pt``; ``False`` for
            weights only (e.g. inference), leaving ``Checkpoint.trainer_state`` ``None``.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from torch import nn
        >>> from attnkit.train import read_checkpoint, save_checkpoint
        >>> model = nn.Linear(4, 2)
        >>> path = save_checkpoint(f"{tempfile.mkdtemp()}/ckpt", model.state_dict(), {"epoch": 3})
        >>> checkpoint = read_checkpoint(path, trainer_state=False)
        >>> torch.equal(checkpoint.model_state["weight"], model.weight), checkpoint.trainer_state
        (True, None)
        >>> read_checkpoint(path).trainer_state
        {'epoch': 3}
    """
    directory = Path(directory)
    files = (MODEL_FILE, STATE_FILE) if trainer_state else (MODEL_FILE,)
    meta = verify_checkpoint(directory, files=files)
    model_state = _read_safetensors(directory / MODEL_FILE, map_location)
    state = _read_trainer_state(directory / STATE_FILE, map_location) if trainer_state else None
    return Checkpoint(directory, model_state, state, meta)


def check_model_state(model: nn.Module, state: dict[str, Tensor], *, source: str = "") -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly ``model``'s keys and shapes.

    ``source`` (e.g. the checkpoint path) is named in the error message.

    Example:
        >>> from torch import nn
        >>> from attnkit.train import check_model_state
        >>> check_model_state(nn.Linear(4, 2), nn.Linear(4, 2).state_dict())  # fits: no error
        >>> check_model_state(nn.Linear(4, 2), nn.Linear(4, 3).state_dict())
        Traceback (most recent call last):
            ...
        attnkit.train.checkpoint.CheckpointError: checkpoint weight 'weight' has shape (3, 4);
        the model expects (2, 4)
    """
    expected = model.state_dict()
    where = f" in {source}" if source else ""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint weights{where} do not fit {type(model).__name__}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"checkpoint weight {name!r}{where} has shape {tuple(state[name].shape)}; "
                f"the model expects {tuple(tensor.shape)}"
            )


def apply_model_state(model: nn.Module, state: dict[str, Tensor], *, source: str = "") -> None:
    """Load ``state`` into ``model`` after :func:`check_model_state`.

    On a missing or unexpected key or a shape mismatch it raises
    :class:`CheckpointError` and leaves the model untouched.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from attnkit.train import CheckpointError, apply_model_state
        >>> source, target = nn.Linear(4, 2), nn.Linear(4, 2)
        >>> apply_model_state(target, source.state_dict())
        >>> torch.equal(target.weight, source.weight)
        True
        >>> try:
        ...     apply_model_state(target, {"weight": torch.zeros(2, 4)})  # no bias
        ... except CheckpointError as error:
        ...     print(error, "|", torch.equal(target.weight, source.weight))
        checkpoint weights do not fit Linear: missing ['bias'], unexpected [] | True
    """
    check_model_state(model, state, source=source)
    model.load_state_dict(state, strict=True)


def load_checkpoint(
    directory: str | Path,
    model: nn.Module | None = None,
    *,
    map_location: str | torch.device = "cpu",
    trainer_state: bool = True,
) -> Checkpoint:
    """Verify and read a checkpoint, then load its weights into ``model`` if given.

    Arguments as in :func:`read_checkpoint`; the returned :class:`Checkpoint`
    also carries the trainer state and metadata for resuming.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from torch import nn
        >>> from attnkit.train import load_checkpoint, save_checkpoint
        >>> trained = nn.Linear(4, 2)
        >>> path = save_checkpoint(f"{tempfile.mkdtemp()}/ckpt", trained.state_dict(),
        ...                        {"optimizer": {}}, {"step": 200})
        >>> fresh = nn.Linear(4, 2)
        >>> checkpoint = load_checkpoint(path, fresh)
        >>> checkpoint.step, torch.equal(fresh.weight, trained.weight)
        (200, True)
    """
    checkpoint = read_checkpoint(directory, map_location=map_location, trainer_state=trainer_state)
    if model is not None:
        apply_model_state(model, checkpoint.model_state, source=str(checkpoint.path))
    return checkpoint


def load_model_weights(model: nn.Module, path: str | Path, which: str = "latest") -> Path:
    """Load weights for inference from a run directory, a checkpoint directory or a
    ``.safetensors`` file; returns the file or directory used.

    In a run directory, ``which`` picks ``"latest"`` or ``"best"`` (see
    :func:`resolve_checkpoint`). Only the weights are read and verified.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from torch import nn
        >>> from attnkit.train import CheckpointManager, load_model_weights
        >>> run, trained = tempfile.mkdtemp(), nn.Linear(4, 2)
        >>> manager = CheckpointManager(run)
        >>> _ = manager.save(100, nn.Linear(4, 2).state_dict(), None)
        >>> _ = manager.save(200, trained.state_dict(), None)
        >>> model = nn.Linear(4, 2)
        >>> load_model_weights(model, run).name, torch.equal(model.weight, trained.weight)
        ('step_00000200', True)
        >>> load_model_weights(model, f"{run}/checkpoints/step_00000100/model.safetensors").name
        'model.safetensors'
    """
    path = Path(path)
    if path.is_file():
        apply_model_state(model, _read_safetensors(path, "cpu"), source=str(path))
        return path
    directory = resolve_checkpoint(path, which)
    load_checkpoint(directory, model, trainer_state=False)
    return directory


# ---------------------------------------------------------------- finding


def _checkpoints_root(path: Path) -> Path:
    return path / CHECKPOINTS_DIR if (path / CHECKPOINTS_DIR).is_dir() else path


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """``(step, directory)`` of the complete ``step_*`` checkpoints under ``root``, by step.

    ``root`` may be a run's output directory or its ``checkpoints/`` directory;
    a directory without ``meta.json`` (an unfinished write) is skipped.

    Example:
        >>> import tempfile
        >>> from torch import nn
        >>> from attnkit.train import CheckpointManager, list_checkpoints
        >>> run, state = tempfile.mkdtemp(), nn.Linear(4, 2).state_dict()
        >>> manager = CheckpointManager(run)
        >>> for step in (300, 100, 200):
        ...     _ = manager.save(step, state, None)
        >>> _ = manager.save(200, state, None, best=True)  # best/ is not a step checkpoint
        >>> [(step, directory.name) for step, directory in list_checkpoints(run)]  # by step
        [(100, 'step_00000100'), (200, 'step_00000200'), (300, 'step_00000300')]
    """
    root = _checkpoints_root(Path(root))
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / META_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def resolve_checkpoint(path: str | Path, which: str = "latest") -> Path:
    """The checkpoint directory ``path`` names.

    ``path`` is a checkpoint directory (it holds ``meta.json``), or a run /
    ``checkpoints`` directory, in which ``which`` picks ``"latest"`` (highest
    step) or ``"best"``.

    Example:
        >>> import tempfile
        >>> from torch import nn
        >>> from attnkit.train import CheckpointManager, resolve_checkpoint
        >>> run, state = tempfile.mkdtemp(), nn.Linear(4, 2).state_dict()
        >>> manager = CheckpointManager(run)
        >>> for step in (100, 200):
        ...     _ = manager.save(step, state, None, best=step == 100)
        >>> resolve_checkpoint(run).name, resolve_checkpoint(run, "best").name
        ('step_00000200', 'best')
        >>> resolve_checkpoint(f"{run}/checkpoints/step_00000200").name  # already a checkpoint
        'step_00000200'
    """
    path = Path(path)
    if (path / META_FILE).is_file():
        return path
    root = _checkpoints_root(path)
    if which == "best":
        if (root / "best" / META_FILE).is_file():
            return root / "best"
        raise CheckpointError(f"no best checkpoint under {root}")
    if which != "latest":
        raise ValueError(f"which must be 'latest' or 'best'; got {which!r}")
    found = list_checkpoints(root)
    if not found:
        raise CheckpointError(f"no checkpoint under {path}")
    return found[-1][1]


class CheckpointManager:
    """Saves ``step_<N>/`` and ``best/`` under ``<output_dir>/checkpoints``, keeping the last K.

    Args:
        output_dir: the run's output directory.
        keep_last: how many ``step_<N>/`` checkpoints :meth:`save` keeps (the
            newest); ``best/`` is never pruned.

    Example:
        >>> import tempfile
        >>> from torch import nn
        >>> from attnkit.train import CheckpointManager
        >>> manager = CheckpointManager(tempfile.mkdtemp(), keep_last=2)
        >>> state = nn.Linear(4, 2).state_dict()
        >>> for step in (10, 20, 30):
        ...     _ = manager.save(step, state, {"epoch": 0}, {"val_loss": 1.0 / step})
        >>> _ = manager.save(30, state, {"epoch": 0}, best=True)
        >>> sorted(child.name for child in manager.root.iterdir())  # step 10 was pruned
        ['best', 'step_00000020', 'step_00000030']
        >>> manager.latest().name, manager.best().name
        ('step_00000030', 'best')
    """

    def __init__(self, output_dir: str | Path, keep_last: int = 3) -> None:
        self.root = Path(output_dir) / CHECKPOINTS_DIR
        self.keep_last = keep_last

    def step_dir(self, step: int) -> Path:
        return self.root / f"step_{step:08d}"

    def save(
        self,
        step: int,
        model_state: dict[str, Tensor],
        trainer_state: dict[str, Any] | None,
        meta: dict[str, Any] | None = None,
        *,
        best: bool = False,
    ) -> Path:
        """Write the step (or the best) checkpoint; prune old steps; returns its path."""
        target = self.root / "best" if best else self.step_dir(step)
        path = save_checkpoint(target, model_state, trainer_state, {"step": step, **(meta or {})})
        if not best:
            self.prune()
        return path

    def prune(self) -> None:
        """Delete all but the ``keep_last`` newest step checkpoints (``best/`` stays)."""
        for _, directory in list_checkpoints(self.root)[: -self.keep_last]:
            shutil.rmtree(directory, ignore_errors=True)

    def discard_after(self, step: int) -> list[Path]:
        """Delete the step checkpoints above ``step`` (``best/`` stays); returns them.

        A run resumed from an earlier checkpoint (e.g. ``best/``) continues from
        ``step``: the later ones belong to the run it abandoned, and left in place they
        would outrank its new checkpoints in :meth:`prune` and :meth:`latest`.

        Example:
            >>> import tempfile
            >>> from torch import nn
            >>> from attnkit.train import CheckpointManager
            >>> manager, state = CheckpointManager(tempfile.mkdtemp()), nn.Linear(2, 2).state_dict()
            >>> for step in (10, 20, 30):
            ...     _ = manager.save(step, state, None)
            >>> [path.name for path in manager.discard_after(10)], manager.latest().name
            (['step_00000020', 'step_00000030'], 'step_00000010')
        """
        later = [directory for found, directory in list_checkpoints(self.root) if found > step]
        for directory in later:
            shutil.rmtree(directory, ignore_errors=True)
        return later

    def latest(self) -> Path | None:
        found = list_checkpoints(self.root)
        return found[-1][1] if found else None

    def best(self) -> Path | None:
        path = self.root / "best"
        return path if (path / META_FILE).is_file() else None
