"""What the adapters that decode from a batch of source ids (``src (B, S)``) share.

:class:`~attnkit.generation.EncoderDecoderAdapter` (Transformer) and
:class:`~attnkit.generation.RNNSeq2SeqAdapter` hold the model and its source the
same way, check ``start``'s arguments the same way and begin every row from
``bos``; only how they encode, step and reorder differs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor


class SourceAdapter(ABC):
    """Base of the source-holding adapters: ``model``, ``src (B, S)``, ``batch_size``, ``device``.

    Subclasses implement ``step(state, tokens (N, t)) -> (N, V)`` logits.
    """

    def __init__(self, model: Any, src: Tensor) -> None:
        if not isinstance(src, Tensor) or src.dim() != 2:
            shape = tuple(src.shape) if isinstance(src, Tensor) else type(src).__name__
            raise ValueError(f"src must have shape (B, S); got {shape}")
        self.model = model
        self.src = src

    @property
    def batch_size(self) -> int:
        return self.src.size(0)

    @property
    def device(self) -> torch.device:
        return self.src.device

    @abstractmethod
    def step(self, state: Any, tokens: Tensor) -> Tensor:
        """Next-token logits ``(N, V)`` after feeding ``tokens (N, t)``."""

    @staticmethod
    def _check_start(num_beams: int, max_new_tokens: int, bos_id: int | None) -> int:
        """Raise unless ``bos_id`` is given and both counts are >= 1; returns ``bos_id``."""
        if bos_id is None:
            raise ValueError("bos_id is required to decode with an encoder-decoder model")
        if num_beams < 1 or max_new_tokens < 1:
            raise ValueError(
                f"num_beams and max_new_tokens must be >= 1; got {num_beams} and {max_new_tokens}"
            )
        return bos_id

    def _feed_bos(self, state: Any, rows: int, bos_id: int) -> Tensor:
        """Feed ``bos`` to all ``rows``; returns ``(rows, V)`` logits of the first token."""
        bos = torch.full((rows, 1), bos_id, dtype=torch.long, device=self.device)
        return self.step(state, bos)
