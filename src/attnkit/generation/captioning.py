"""Decoding image captioners (Show, Attend and Tell) with the library's strategies.

:class:`CaptioningAdapter` is the :class:`~attnkit.generation.DecodingModel`
of a captioner with ``start(pixel_values) -> state`` and
``step(state, tokens (N,)) -> (logits, attention, gate, state)`` (as
:class:`attnkit.models.ShowAttendTell`): the images are encoded once, the state
is expanded to the beams and reordered with them. :func:`caption_images` runs
greedy decoding or beam search through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from attnkit.generation.beam import beam_search
from attnkit.generation.greedy import greedy_decode
from attnkit.generation.interface import check_positive_int

__all__ = ["CaptioningAdapter", "CaptioningState", "StepwiseCaptioner", "caption_images"]


class StepwiseCaptioner(Protocol):
    """What decoding needs of a captioner; ``state`` must have ``index_select(indices)``."""

    def start(self, pixel_values: Tensor) -> Any: ...

    def step(self, state: Any, tokens: Tensor) -> Any: ...


@dataclass
class CaptioningState:
    """The captioner's own state for the current rows (replaced at every step)."""

    inner: Any


class CaptioningAdapter:
    """:class:`~attnkit.generation.DecodingModel` over a batch of images.

    Args:
        model: a :class:`StepwiseCaptioner`; its ``step`` returns a tuple whose
            first item is ``(N, V)`` logits and last the next state.
        pixel_values: ``(B, C, H, W)`` images (checked by the model).
    """

    def __init__(self, model: StepwiseCaptioner, pixel_values: Tensor) -> None:
        if not isinstance(pixel_values, Tensor) or pixel_values.dim() != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, Tensor) else pixel_values
            raise ValueError(f"pixel_values must have shape (B, C, H, W); got {shape}")
        self.model = model
        self.pixel_values = pixel_values

    @property
    def batch_size(self) -> int:
        return self.pixel_values.size(0)

    @property
    def device(self) -> torch.device:
        return self.pixel_values.device

    def start(
        self, num_beams: int, max_new_tokens: int, *, bos_id: int | None
    ) -> tuple[CaptioningState, Tensor]:
        """Encode the images, expand to ``num_beams`` rows each, feed ``bos``."""
        if bos_id is None:
            raise ValueError("bos_id is required to caption images")
        check_positive_int("num_beams", num_beams)
        check_positive_int("max_new_tokens", max_new_tokens)
        inner = self.model.start(self.pixel_values)
        if num_beams > 1:
            rows = torch.arange(self.batch_size, device=self.device)
            inner = inner.index_select(rows.repeat_interleave(num_beams))
        state = CaptioningState(inner)
        bos = torch.full((self.batch_size * num_beams, 1), bos_id, device=self.device)
        return state, self.step(state, bos)

    def step(self, state: CaptioningState, tokens: Tensor) -> Tensor:
        """Feed the newest token of ``tokens (N, t)``; return ``(N, V)`` next-token logits."""
        out = self.model.step(state.inner, tokens[:, -1].long())
        state.inner = out[-1]
        return out[0]

    def reorder(self, state: CaptioningState, indices: Tensor) -> None:
        """Keep rows ``indices (N,)`` (beam search)."""
        state.inner = state.inner.index_select(indices)


def caption_images(
    model: StepwiseCaptioner,
    pixel_values: Tensor,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
    max_new_tokens: int,
    beam_size: int = 1,
    length_penalty: float = 1.0,
) -> Tensor:
    """Captions of ``pixel_values (B, C, H, W)``: ``(B, L)`` ids without ``bos``.

    ``beam_size=1`` decodes greedily, larger values run beam search (best
    hypothesis). Rows end with ``eos`` (unless cut at ``max_new_tokens``),
    then ``pad_id``. The model runs in eval mode without gradients.
    """
    check_positive_int("beam_size", beam_size)
    adapter = CaptioningAdapter(model, pixel_values)
    # Both strategies put the adapter's ``model`` in eval mode (no dropout, batch-norm
    # running statistics) and restore it afterwards.
    if beam_size == 1:
        return greedy_decode(
            adapter, None, max_new_tokens=max_new_tokens, bos_id=bos_id, eos_id=eos_id,
            pad_id=pad_id,
        )  # fmt: skip
    found = beam_search(
        adapter,
        None,
        beam_size=beam_size,
        max_new_tokens=max_new_tokens,
        bos_id=bos_id,
        eos_id=eos_id,
        pad_id=pad_id,
        length_penalty=length_penalty,
    )
    return found.sequences[:, 0]
