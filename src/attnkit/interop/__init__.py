"""Hugging Face checkpoints <-> attnkit models.

``from_pretrained(path)`` reads a local Hugging Face model directory
(``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``), builds the
matching attnkit model from the config and loads the weights, checking every
name and shape first. ``save_pretrained(model, path)`` writes the same format
back, so that ``transformers`` loads it. ``load_pretrained_tokenizer(path)``
reads the directory's ``tokenizer.json`` with the ``tokenizers`` library.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn

from attnkit.interop import gpt2
from attnkit.interop._checkpoint import (
    CheckpointMismatchError,
    WeightSource,
    load_converted,
    read_config,
    read_weights,
    write_directory,
)
from attnkit.models import GPT

__all__ = [
    "FAMILIES",
    "CheckpointMismatchError",
    "from_pretrained",
    "load_pretrained_tokenizer",
    "save_pretrained",
]

# model_type in config.json -> (converter module, attnkit model class)
FAMILIES: dict[str, tuple[ModuleType, type[nn.Module]]] = {gpt2.MODEL_TYPE: (gpt2, GPT)}


def _family(model_type: Any, origin: str) -> ModuleType:
    if model_type not in FAMILIES:
        raise ValueError(
            f"{origin}: model_type must be one of {sorted(FAMILIES)}; got {model_type!r}"
        )
    return FAMILIES[model_type][0]


def from_pretrained(path: str | Path, *, dtype: torch.dtype | None = None) -> nn.Module:
    """The attnkit model stored in the Hugging Face directory ``path``, in eval mode.

    The family comes from ``config.json``'s ``model_type``. A checkpoint whose
    weights do not fit raises :class:`CheckpointMismatchError` naming every
    missing or unexpected key and every shape mismatch.
    """
    hf_config = read_config(path)
    family = _family(hf_config.get("model_type"), str(Path(path) / "config.json"))
    model = family.build(hf_config)
    source = WeightSource(read_weights(path))
    converted = family.weights_from_hf(source, model.config)
    load_converted(model, converted, source, str(path))
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def save_pretrained(model: nn.Module, path: str | Path) -> Path:
    """Write ``model`` as a Hugging Face directory (``config.json`` + ``model.safetensors``)."""
    for family, model_class in FAMILIES.values():
        if type(model) is model_class:
            config = family.config_to_hf(model.config)  # type: ignore[arg-type]
            return write_directory(path, config, family.weights_to_hf(model))
    names = sorted(cls.__name__ for _, cls in FAMILIES.values())
    raise TypeError(f"save_pretrained supports {names}; got {type(model).__name__}")


def load_pretrained_tokenizer(path: str | Path) -> Tokenizer:
    """The ``tokenizers.Tokenizer`` in ``path/tokenizer.json``."""
    file = Path(path) / "tokenizer.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (save the tokenizer with the model)")
    return Tokenizer.from_file(str(file))
