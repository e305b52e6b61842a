"""Output dataclasses of the task models (GPT, BERT, T5, ViT).

Fields are named as in Hugging Face ``transformers`` outputs so that code
moves between the two without a lookup table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["ModelOutput", "upcast"]


def upcast(values: Tensor) -> Tensor:
    """Losses are computed in float32 for fp16/bf16 outputs, else in their own dtype."""
    return values.float() if values.dtype in (torch.float16, torch.bfloat16) else values


@dataclass
class ModelOutput:
    """What a task model returns.

    Attributes:
        logits: the head's scores, e.g. ``(B, T, V)`` for a language model or
            ``(B, C)`` for a classifier.
        loss: the mean loss over labelled positions when labels were given.
        attentions: per layer ``(B, H, Tq, Tk)`` weights when asked for.
        hidden_states: the embeddings and every layer's output ``(B, T, D)``
            when asked for (``num_layers + 1`` tensors, the last after the final norm).
        cache: the KV caches after this call (decoding).
        extra: family-specific outputs (e.g. BERT's ``pooled`` ``(B, D)``).

    Example:
        >>> import torch
        >>> from attnkit.models import ModelOutput
        >>> out = ModelOutput(logits=torch.zeros(2, 3))
        >>> tuple(out.logits.shape), out.loss is None, out.attentions is None
        ((2, 3), True, True)
    """

    logits: Tensor
    loss: Tensor | None = None
    attentions: list[Tensor] | None = None
    hidden_states: list[Tensor] | None = None
    cache: Any | None = None
    extra: dict[str, Tensor] | None = None
