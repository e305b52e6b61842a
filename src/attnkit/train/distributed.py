"""``torch.distributed`` plumbing: process groups from ``torchrun``, DDP/FSDP wrapping,
collectives that are no-ops in a single process, and a batch-level distributed sampler.

Launch with ``torchrun --nproc_per_node N script.py``; the Trainer calls
:func:`init_distributed` itself when ``WORLD_SIZE > 1``. Backends: NCCL on
CUDA, gloo on CPU. Only rank 0 logs and writes checkpoints; every rank
evaluates and rank 0's metrics decide (best checkpoint, early stopping).

Data: each rank must see its own share of every global batch. A source built
for one rank (``source.world_size`` set, as ``attnkit.data``'s batchers are)
is used as it is; any other source is wrapped in :class:`ShardedBatchSource`
(rank ``r`` takes batches ``r, r + W, ...``). The Trainer normalises the loss
by the token count of the whole global step, so ``N`` processes with per-rank
batches of ``B / N`` follow the same trajectory as one process with ``B``.

DDP (``TrainConfig(distributed="auto")`` under torchrun, or ``"ddp"``)
replicates the model; choose it while weights, gradients and AdamW state fit
one device. FSDP (``distributed="fsdp"``) uses FSDP2's ``fully_shard``: every
module whose class name is in ``TrainConfig.fsdp_units`` (default: names
ending in ``Layer`` or ``Block``, i.e. each encoder/decoder layer) becomes a
unit whose parameters are all-gathered only while it runs, and the root
module holds the rest (embeddings, a tied output projection). Parameters,
gradients and optimizer state are sharded ``1/N`` per rank. Checkpoints stay
ordinary full ``model.safetensors`` files (gathered to rank 0 with
``torch.distributed.checkpoint.state_dict``), so a model trained with FSDP
loads on one device and a run can be resumed under either strategy's
checkpoint format::

    torchrun --nproc_per_node 8 train.py    # TrainConfig(distributed="fsdp", precision="bf16")

Call :func:`cleanup_distributed` at the end of the script.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "DistributedContext",
    "ShardedBatchSource",
    "all_gather_object",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_fsdp",
    "is_main_process",
    "no_sync",
    "resolve_device",
    "unwrap_model",
    "wrap_model",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node.

    :func:`init_distributed` returns one; the default (rank 0 of 1, no
    ``backend``) describes a plain single process.

    Example:
        >>> from attnkit.train import DistributedContext
        >>> DistributedContext().is_main  # a single process: rank 0 of 1
        True
        >>> worker = DistributedContext(rank=3, local_rank=1, world_size=8, backend="nccl")
        >>> worker.is_main, worker.local_rank  # 4th of 8 processes, 2nd GPU of its node
        (False, 1)
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process.

    Example:
        >>> from attnkit.train import is_distributed
        >>> is_distributed()  # plain python; True under torchrun --nproc_per_node 2
        False
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank in the default process group (0 without one).

    Under ``torchrun --nproc_per_node N`` the ranks are ``0 .. N - 1``.

    Example:
        >>> from attnkit.train import get_rank, get_world_size
        >>> files = ["a.txt", "b.txt", "c.txt"]
        >>> files[get_rank() :: get_world_size()]  # this process's share: all of them alone
        ['a.txt', 'b.txt', 'c.txt']
    """
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """How many processes the default process group has (1 without one).

    Example:
        >>> from attnkit.train import get_world_size
        >>> global_batch = 64
        >>> global_batch // get_world_size()  # per-process batch: 64 alone, 16 on 4 ranks
        64
    """
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that logs and writes files.

    Example:
        >>> from attnkit.train import is_main_process
        >>> if is_main_process():  # under torchrun, printed once rather than once per rank
        ...     print("epoch 1 done")
        epoch 1 done
    """
    return get_rank() == 0


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else CPU; others as given."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return device


def init_distributed(
    device: str = "auto", backend: str | None = None, *, force: bool = False
) -> DistributedContext:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``...).

    Without those variables, or with ``WORLD_SIZE=1`` unless ``force``, returns
    a single-process context. ``backend`` defaults to NCCL when the device is
    CUDA, else gloo. An already initialised group is reused. The same script
    thus runs alone (``python train.py``) or on ``N`` processes
    (``torchrun --nproc_per_node N train.py``).

    Example:
        >>> from attnkit.train import init_distributed
        >>> context = init_distributed()  # plain python: no RANK / WORLD_SIZE set
        >>> context.rank, context.world_size, context.backend
        (0, 1, None)
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(
            dist.get_rank(), local_rank, dist.get_world_size(), dist.get_backend()
        )
    launched = "RANK" in os.environ and "MASTER_ADDR" in os.environ
    if not launched or (world_size <= 1 and not force):
        return DistributedContext()
    target = resolve_device(device, local_rank)
    if backend is None:
        backend = "nccl" if target.type == "cuda" else "gloo"
    if target.type == "cuda":
        torch.cuda.set_device(target)
    dist.init_process_group(backend)
    return DistributedContext(dist.get_rank(), local_rank, dist.get_world_size(), backend)


def cleanup_distributed() -> None:
    """Destroy the process group, if any (call once at the end of a torchrun script).

    Example:
        >>> import torch.distributed as dist
        >>> from attnkit.train import cleanup_distributed, init_distributed
        >>> context = init_distributed()
        >>> cleanup_distributed()  # safe without a process group: nothing to destroy
        >>> dist.is_initialized()
        False
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (nothing to wait for in a single process).

    Example:
        >>> from attnkit.train import barrier, is_main_process
        >>> if is_main_process():
        ...     print("rank 0 writes the vocabulary")
        rank 0 writes the vocabulary
        >>> barrier()  # under torchrun, the other ranks wait here before reading it
    """
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` in place over all ranks (identity in a single process); returns it.

    Example:
        >>> import torch
        >>> from attnkit.train import all_reduce_sum
        >>> totals = torch.tensor([12.0, 4.0])  # this rank's (loss sum, token count)
        >>> all_reduce_sum(totals) is totals  # summed in place, and returned
        True
        >>> loss_sum, tokens = totals.tolist()  # alone: unchanged; else: over all ranks
        >>> loss_sum / tokens
        3.0
    """
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (``obj`` itself in a single process).

    Example:
        >>> from attnkit.train import broadcast_object, is_main_process
        >>> vocab = {"<pad>": 0, "a": 1} if is_main_process() else None  # built on rank 0
        >>> broadcast_object(vocab)  # every rank now holds rank 0's vocabulary
        {'<pad>': 0, 'a': 1}
    """
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` in a single process).

    Example:
        >>> from attnkit.train import all_gather_object
        >>> per_rank = all_gather_object({"correct": 7, "total": 10})  # one dict per rank
        >>> len(per_rank)
        1
        >>> sum(r["correct"] for r in per_rank) / sum(r["total"] for r in per_rank)
        0.7
    """
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def _fsdp2():
    """FSDP2's module: public in torch >= 2.6, ``_composable.fsdp`` in torch 2.5."""
    try:
        from torch.distributed import fsdp

        fsdp.fully_shard  # noqa: B018 - present from torch 2.6
        return fsdp
    except (ImportError, AttributeError):
        from torch.distributed._composable import fsdp

        return fsdp


def is_fsdp(model: nn.Module) -> bool:
    """True for a module sharded with FSDP2 ``fully_shard``."""
    return isinstance(model, _fsdp2().FSDPModule)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside DDP / ``torch.compile`` wrappers (FSDP2 shards in place).

    Example:
        >>> import torch
        >>> from attnkit.train import unwrap_model
        >>> model = torch.nn.Linear(4, 2)
        >>> compiled = torch.compile(model)  # a wrapper; compiles lazily on the first call
        >>> unwrap_model(compiled) is model, unwrap_model(model) is model
        (True, True)
    """
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _fsdp_unit(module: nn.Module, names: Sequence[str]) -> bool:
    kind = type(module).__name__
    return kind in names if names else kind.endswith(("Layer", "Block"))


def wrap_model(
    model: nn.Module,
    strategy: str,
    device: torch.device,
    *,
    find_unused_parameters: bool = False,
    fsdp_units: Sequence[str] = (),
) -> nn.Module:
    """Wrap ``model`` (already on ``device``) for data-parallel training.

    ``"ddp"``: ``DistributedDataParallel``. ``"fsdp"``: FSDP2 ``fully_shard`` on
    every unit module (class names in ``fsdp_units``, default: ending in
    ``Layer`` or ``Block``) and then on the root, sharding parameters,
    gradients and optimizer state over the ranks — for models whose full
    training state does not fit one device. ``"none"``, or no process group
    (a plain ``python`` run rather than ``torchrun``): unchanged.

    Example:
        >>> import torch
        >>> from attnkit.train import wrap_model
        >>> model = torch.nn.Linear(4, 2)
        >>> wrap_model(model, "ddp", torch.device("cpu")) is model  # no process group
        True
    """
    if strategy not in ("none", "ddp", "fsdp"):
        raise ValueError(f"strategy must be 'none', 'ddp' or 'fsdp'; got {strategy!r}")
    if strategy == "none" or not (dist.is_available() and dist.is_initialized()):
        return model
    if strategy == "ddp":
        device_ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
        )
    fully_shard = _fsdp2().fully_shard  # strategy == "fsdp"
    for module in list(model.modules())[1:]:
        if _fsdp_unit(module, fsdp_units):
            fully_shard(module)
    fully_shard(model)
    return model


@contextlib.contextmanager
def no_sync(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Skip the gradient all-reduce inside (accumulation micro-batches but the last)."""
    if not enabled or not (dist.is_available() and dist.is_initialized()):
        yield
    elif isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif is_fsdp(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


class ShardedBatchSource:
    """A distributed sampler at batch level: rank ``r`` gets batches ``r, r + W, r + 2W, ...``.

    Wraps a resumable batch source (``iter``, ``state_dict``, ``load_state_dict``).
    It reads the source in groups of ``world_size`` batches and yields this
    rank's one, so every rank's saved position is the same (the end of the
    group); a last incomplete group is dropped so that all ranks take the same
    number of steps. One optimizer step then sees ``world_size`` consecutive
    source batches per accumulation micro-batch. Under ``torchrun`` the Trainer
    wraps a source that does not shard itself in one.

    Example:
        >>> from attnkit.train import ShardedBatchSource
        >>> batches = ["b0", "b1", "b2", "b3", "b4"]  # any iterable of batches
        >>> for rank in range(2):  # what each of 2 processes would see
        ...     print(rank, list(ShardedBatchSource(batches, rank, world_size=2)))
        0 ['b0', 'b2']
        1 ['b1', 'b3']
        >>> len(ShardedBatchSource(batches, 0, world_size=2))  # "b4" is dropped on every rank
        2
    """

    def __init__(self, source: Any, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}); got {rank}")
        self.source = source
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[Any]:
        group: list[Any] = []
        for batch in self.source:
            group.append(batch)
            if len(group) == self.world_size:
                yield group[self.rank]
                group = []

    def __len__(self) -> int:
        return len(self.source) // self.world_size

    @property
    def epoch(self) -> int | None:
        """The wrapped source's epoch, if it keeps one."""
        return getattr(self.source, "epoch", None)

    def state_dict(self) -> dict[str, Any] | None:
        """The wrapped source's state (``None`` if it keeps none)."""
        return self.source.state_dict() if hasattr(self.source, "state_dict") else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if hasattr(self.source, "load_state_dict"):
            self.source.load_state_dict(state)
