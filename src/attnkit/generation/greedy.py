"""Greedy decoding for encoder-decoder models with a KV cache."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from attnkit.functional import create_padding_mask

__all__ = ["EncoderDecoderModel", "greedy_decode"]


class EncoderDecoderModel(Protocol):
    """What decoding needs of an encoder-decoder model (e.g. ``attnkit.models.Transformer``)."""

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor: ...

    def decode(
        self, tgt: Tensor, memory: Tensor, tgt_mask=None, memory_mask=None, *, cache=None
    ): ...

    def project(self, hidden: Tensor) -> Tensor: ...

    def new_cache(self, batch_size: int, max_len: int, *, like: Tensor): ...


@torch.no_grad()
def greedy_decode(
    model: EncoderDecoderModel,
    src: Tensor,
    *,
    max_new_tokens: int,
    bos_id: int,
    eos_id: int,
    pad_id: int = 0,
    src_mask: Tensor | None = None,
) -> Tensor:
    """Pick the most likely token at every step, reusing cached keys/values.

    Args:
        model: an encoder-decoder model with ``encode``/``decode``/``project``/``new_cache``.
        src: ``(B, S)`` source token ids (padded with ``pad_id``).
        max_new_tokens: upper bound on generated tokens.
        bos_id, eos_id, pad_id: special token ids.
        src_mask: bool ``(B, 1, 1, S)``; defaults to the padding mask of ``src``.

    Returns:
        ``(B, L)`` generated ids without ``bos``; each row ends with ``eos`` (if it
        was produced) followed by ``pad_id``. ``L <= max_new_tokens``; decoding
        stops once every row has produced ``eos``.
    """
    if src.dim() != 2:
        raise ValueError(f"src must have shape (B, S); got {tuple(src.shape)}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1; got {max_new_tokens}")
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()  # type: ignore[attr-defined]
    try:
        if src_mask is None:
            src_mask = create_padding_mask(src, pad_id)
        memory = model.encode(src, src_mask)
        cache = model.new_cache(src.size(0), max_new_tokens, like=memory)
        next_input = torch.full((src.size(0), 1), bos_id, dtype=torch.long, device=src.device)
        finished = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
        generated = []
        for _ in range(max_new_tokens):
            hidden = model.decode(next_input, memory, memory_mask=src_mask, cache=cache)
            token = model.project(hidden[:, -1]).argmax(dim=-1)
            token = token.masked_fill(finished, pad_id)
            generated.append(token)
            finished |= token == eos_id
            if bool(finished.all()):
                break
            next_input = token[:, None]
        return torch.stack(generated, dim=1)
    finally:
        if was_training:
            model.train()  # type: ignore[attr-defined]
