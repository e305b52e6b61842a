"""Hugging Face checkpoints <-> attnkit models.

``from_pretrained(path)`` reads a local Hugging Face model directory
(``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``), builds the
matching attnkit model from the config and loads the weights, checking every
name and shape first. ``save_pretrained(model, path)`` writes the same format
back, so that ``transformers`` loads it. ``load_pretrained_tokenizer(path)``
reads the directory's ``tokenizer.json`` with the ``tokenizers`` library.

Families (``model_type`` in ``config.json``): ``gpt2``, ``bert``, ``t5``, ``vit``.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn

from attnkit.interop import bert, gpt2, t5, vit
from attnkit.interop._checkpoint import (
    CheckpointMismatchError,
    WeightSource,
    load_converted,
    read_config,
    read_weights,
    write_directory,
)

__all__ = [
    "FAMILIES",
    "CheckpointMismatchError",
    "from_pretrained",
    "load_pretrained_tokenizer",
    "save_pretrained",
]

# model_type in config.json -> converter module (build, weights_from_hf, fresh, handles, to_hf)
FAMILIES: dict[str, ModuleType] = {
    gpt2.MODEL_TYPE: gpt2,
    bert.MODEL_TYPE: bert,
    t5.MODEL_TYPE: t5,
    vit.MODEL_TYPE: vit,
}


def _family(model_type: Any, origin: str) -> ModuleType:
    if model_type not in FAMILIES:
        raise ValueError(
            f"{origin}: model_type must be one of {sorted(FAMILIES)}; got {model_type!r}"
        )
    return FAMILIES[model_type]


def from_pretrained(
    path: str | Path,
    *,
    task: str | None = None,
    dtype: torch.dtype | None = None,
    **overrides: Any,
) -> nn.Module:
    """The attnkit model stored in the Hugging Face directory ``path``, in eval mode.

    Args:
        path: a local directory with ``config.json`` and the weights.
        task: which model to build (BERT: ``"base"``, ``"masked_lm"``,
            ``"pretraining"``, ``"sequence_classification"``,
            ``"token_classification"``; default: the checkpoint's own
            ``architectures``). A head the checkpoint lacks is initialised
            fresh and named in a warning.
        dtype: cast the loaded model (e.g. ``torch.float64``).
        overrides: config fields to change (e.g. ``num_labels=2``, ``dropout=0.0``).

    Raises :class:`CheckpointMismatchError` naming every missing or
    unexpected key and every shape mismatch, before any weight is copied.

    Example:
        >>> import tempfile
        >>> import torch
        >>> from attnkit.interop import from_pretrained, save_pretrained
        >>> from attnkit.models import BertConfig, BertModel
        >>> config = BertConfig(vocab_size=100, d_model=32, num_heads=4, num_layers=2, d_ff=64)
        >>> directory = save_pretrained(BertModel(config).eval(), tempfile.mkdtemp())
        >>> bert = from_pretrained(directory)  # any GPT-2, BERT, T5 or ViT directory
        >>> type(bert).__name__, bert.training
        ('BertModel', False)
    """
    hf_config = read_config(path)
    family = _family(hf_config.get("model_type"), str(Path(path) / "config.json"))
    model = family.build(hf_config, task, **overrides)
    source = WeightSource(read_weights(path))
    converted = family.weights_from_hf(source, model)
    load_converted(model, converted, source, str(path), fresh=family.fresh)
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def save_pretrained(model: nn.Module, path: str | Path) -> Path:
    """Write ``model`` as a Hugging Face directory (``config.json`` + ``model.safetensors``).

    Example:
        >>> import tempfile
        >>> import torch
        >>> from attnkit.interop import from_pretrained, save_pretrained
        >>> from attnkit.models import GPT, GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=50, max_len=16, d_model=32, num_heads=4, num_layers=2))
        >>> directory = save_pretrained(gpt.eval(), tempfile.mkdtemp())
        >>> sorted(path.name for path in directory.iterdir())
        ['config.json', 'model.safetensors']
        >>> ids = torch.randint(0, 50, (1, 8))
        >>> torch.allclose(gpt(ids).logits, from_pretrained(directory)(ids).logits)
        True
    """
    for family in FAMILIES.values():
        if family.handles(model):
            config, weights = family.to_hf(model)
            return write_directory(path, config, weights)
    raise TypeError(
        f"save_pretrained supports the families {sorted(FAMILIES)}; got {type(model).__name__}"
    )


def load_pretrained_tokenizer(path: str | Path) -> Tokenizer:
    """The ``tokenizers.Tokenizer`` in ``path/tokenizer.json``.

    Raises ``FileNotFoundError`` when the directory has no ``tokenizer.json``.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from tokenizers import Tokenizer, models, pre_tokenizers
        >>> from attnkit.interop import load_pretrained_tokenizer
        >>> vocab = {"[UNK]": 0, "hello": 1, "world": 2}
        >>> tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        >>> tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        >>> directory = Path(tempfile.mkdtemp())
        >>> tokenizer.save(str(directory / "tokenizer.json"))
        >>> load_pretrained_tokenizer(directory).encode("hello big world").ids
        [1, 0, 2]
    """
    file = Path(path) / "tokenizer.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (save the tokenizer with the model)")
    return Tokenizer.from_file(str(file))
