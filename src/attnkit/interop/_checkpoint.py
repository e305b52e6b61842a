"""Reading and writing Hugging Face model directories, and checked weight conversion.

A Hugging Face model directory holds ``config.json`` and the weights as
``model.safetensors`` (or the older ``pytorch_model.bin``). Conversion between
their parameter names and attnkit's goes through :class:`WeightSource`, which
records every name asked for and every name left over, so that a checkpoint
that does not fit fails with the complete list of what is missing, what is
unexpected and which shapes differ — before any weight is copied.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "pytorch_model.bin"
INDEX_SUFFIX = ".index.json"  # a sharded checkpoint's map from weight name to shard file
logger = logging.getLogger(__name__)

# Hugging Face activation names -> attnkit's; the tanh approximation of GELU has three names.
_ACTIVATIONS_FROM_HF = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
_ACTIVATIONS_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not fit the model built from its config.

    Example:
        >>> from attnkit.interop import CheckpointMismatchError
        >>> issubclass(CheckpointMismatchError, ValueError)  # caught by ``except ValueError``
        True
    """


def read_config(path: str | Path) -> dict[str, Any]:
    """``config.json`` of a model directory as a dict."""
    directory = Path(path)
    file = directory / CONFIG_FILE
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory (expected a model directory)")
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (a Hugging Face model directory has one)")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON ({error})") from error


def activation_from_hf(name: str, field: str) -> str:
    """attnkit's name for the Hugging Face activation ``name`` read from ``field``."""
    if name not in _ACTIVATIONS_FROM_HF:
        raise ValueError(f"{field} must be one of {sorted(_ACTIVATIONS_FROM_HF)}; got {name!r}")
    return _ACTIVATIONS_FROM_HF[name]


def activation_to_hf(activation: str, family: str) -> str:
    """The Hugging Face name of attnkit's ``activation`` for a ``family`` checkpoint."""
    if activation not in _ACTIVATIONS_TO_HF:
        raise ValueError(
            f"{family} format needs activation in {sorted(_ACTIVATIONS_TO_HF)}; got {activation!r}"
        )
    return _ACTIVATIONS_TO_HF[activation]


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """The weights of a model directory: ``model.safetensors`` or ``pytorch_model.bin``,
    whole or in the shards that ``model.safetensors.index.json`` (or
    ``pytorch_model.bin.index.json``) lists."""
    directory = Path(path)
    for file_name in (SAFETENSORS_FILE, TORCH_FILE):
        if (directory / file_name).is_file():
            return _read_weight_file(directory / file_name)
        index = directory / (file_name + INDEX_SUFFIX)
        if index.is_file():
            return _read_shards(index)
    raise FileNotFoundError(
        f"{directory}: no weights found (expected {SAFETENSORS_FILE} or {TORCH_FILE}, "
        f"or a sharded checkpoint's {SAFETENSORS_FILE + INDEX_SUFFIX})"
    )


def _read_weight_file(file: Path) -> dict[str, Tensor]:
    try:
        if file.name.endswith(".safetensors"):
            return load_file(str(file))
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors and torch raise their own error types
        raise ValueError(f"{file}: cannot be read ({error})") from error


def _read_shards(index: Path) -> dict[str, Tensor]:
    """Merge the shard files named in a sharded checkpoint's index."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{index}: expected JSON with a 'weight_map' ({error})") from error
    weights: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        file = index.parent / shard
        if not file.is_file():
            raise FileNotFoundError(f"{file}: missing (listed in {index.name})")
        weights.update(_read_weight_file(file))
    return weights


def write_directory(
    path: str | Path, config: Mapping[str, Any], weights: dict[str, Tensor]
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``path`` (created if needed)."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
    # Copies: safetensors refuses tensors that share memory (views of one fused weight).
    contiguous = {
        name: tensor.detach().cpu().clone(memory_format=torch.contiguous_format)
        for name, tensor in weights.items()
    }
    save_file(contiguous, str(directory / SAFETENSORS_FILE), metadata={"format": "pt"})
    return directory


class WeightSource:
    """A checkpoint's tensors, handed out by name, remembering what was taken and missed.

    Args:
        weights: name -> tensor as stored in the checkpoint.
        ignore: predicates for stored names that are not weights (buffers such
            as GPT-2's ``attn.bias`` causal mask) and may be left over.
    """

    def __init__(
        self, weights: Mapping[str, Tensor], ignore: Iterable[Callable[[str], bool]] = ()
    ) -> None:
        self.weights = dict(weights)
        self.ignore = tuple(ignore)
        self.taken: set[str] = set()
        self.missing: list[str] = []
        self.name_of: dict[int, str] = {}  # id of a handed-out tensor -> its checkpoint name

    def has(self, name: str) -> bool:
        return name in self.weights

    def take(self, name: str, *, optional: bool = False) -> Tensor | None:
        """The tensor called ``name``, or ``None`` (noted as missing unless ``optional``)."""
        if name not in self.weights:
            if not optional:
                self.missing.append(name)
            return None
        self.taken.add(name)
        tensor = self.weights[name]
        self.name_of[id(tensor)] = name
        return tensor

    def mark_used(self, name: str) -> None:
        """Count ``name`` as consumed without reading it (e.g. a tied copy)."""
        if name in self.weights:
            self.taken.add(name)

    def unexpected(self) -> list[str]:
        return sorted(
            name
            for name in self.weights
            if name not in self.taken and not any(rule(name) for rule in self.ignore)
        )

    def ignored(self) -> list[str]:
        """Names left over that an ``ignore`` rule allows (buffers, other tasks' heads)."""
        return sorted(
            name
            for name in self.weights
            if name not in self.taken and any(rule(name) for rule in self.ignore)
        )


def load_converted(
    model: nn.Module,
    converted: Mapping[str, Tensor | None],
    source: WeightSource,
    origin: str,
    *,
    fresh: Callable[[str], bool] = lambda name: False,
) -> list[str]:
    """Copy ``converted`` weights into ``model`` after checking every name and shape.

    Raises :class:`CheckpointMismatchError` listing every missing checkpoint
    key, unexpected checkpoint key, attnkit parameter left without a value and
    shape mismatch; nothing is copied unless everything fits. Parameters for
    which ``fresh(name)`` holds (a task head the checkpoint does not have)
    may stay as initialised: their names are returned and logged.
    """
    expected = model.state_dict()
    converted = _with_aliases(converted, expected)
    problems = []
    if source.missing:
        problems.append(f"missing keys in the checkpoint: {sorted(set(source.missing))}")
    unexpected = source.unexpected()
    if unexpected:
        problems.append(f"unexpected keys in the checkpoint: {unexpected}")
    filled = {name for name, tensor in converted.items() if tensor is not None}
    new_head = sorted(name for name in expected if name not in filled and fresh(name))
    unfilled = sorted(name for name in expected if name not in filled and not fresh(name))
    if unfilled:
        problems.append(f"attnkit parameters with no checkpoint value: {unfilled}")
    for name, tensor in converted.items():
        if tensor is None:
            continue
        if name not in expected:
            problems.append(f"conversion produced an unknown attnkit name {name!r}")
        elif tensor.shape != expected[name].shape:
            stored = source.name_of.get(id(tensor))
            problems.append(
                f"shape mismatch for {name}"
                + (f" (checkpoint key {stored})" if stored else "")
                + f": the model expects {tuple(expected[name].shape)}, "
                f"the checkpoint gives {tuple(tensor.shape)}"
            )
    if problems:
        raise CheckpointMismatchError(f"{origin}: " + "; ".join(problems))
    with torch.no_grad():
        for name, tensor in converted.items():
            if tensor is not None:
                expected[name].copy_(tensor)
    if new_head:
        logger.warning("%s: newly initialised (not in the checkpoint): %s", origin, new_head)
    ignored = [name for name in source.ignored() if not _is_known_buffer(name)]
    if ignored:
        logger.warning("%s: checkpoint weights not used by this model: %s", origin, ignored)
    return new_head


def _with_aliases(
    converted: Mapping[str, Tensor | None], expected: Mapping[str, Tensor]
) -> dict[str, Tensor | None]:
    """Give every state-dict name that shares storage with a converted one (tied
    weights, a bias table shared by all layers) the same value."""
    out = dict(converted)
    by_storage: dict[tuple[int, tuple[int, ...]], list[str]] = {}
    for name, tensor in expected.items():
        by_storage.setdefault((tensor.data_ptr(), tuple(tensor.shape)), []).append(name)
    for names in by_storage.values():
        given = [out[name] for name in names if out.get(name) is not None]
        if given:
            for name in names:
                out.setdefault(name, given[0])
    return out


def _is_known_buffer(name: str) -> bool:
    """Non-weight tensors some checkpoints store (position ids, causal masks)."""
    return name.endswith(("position_ids", ".attn.bias", ".attn.masked_bias"))


def split_rows(tensor: Tensor, parts: int) -> list[Tensor]:
    """Split along dim 0 into ``parts`` equal pieces (fused q/k/v projections)."""
    if tensor.size(0) % parts:
        raise CheckpointMismatchError(
            f"a fused projection of {tensor.size(0)} rows cannot be split into {parts} equal parts"
        )
    return list(tensor.chunk(parts, dim=0))
