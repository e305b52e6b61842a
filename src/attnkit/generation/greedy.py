"""Greedy decoding: the most likely token at every step, reusing cached keys/values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from attnkit.generation._loop import decode_one_per_row
from attnkit.generation.interface import (
    EncoderDecoderModel,
    as_decoding_model,
    check_positive_int,
    eval_mode,
)

__all__ = ["EncoderDecoderModel", "greedy_decode"]


def greedy_decode(
    model: EncoderDecoderModel | Any,
    src: Tensor | None,
    *,
    max_new_tokens: int,
    bos_id: int | None = None,
    eos_id: int | Sequence[int] | None = None,
    pad_id: int = 0,
    src_mask: Tensor | None = None,
    suppress_ids: Sequence[int] | None = None,
) -> Tensor:
    """Pick the most likely token at every step, reusing cached keys/values.

    Args:
        model: an encoder-decoder model with ``encode``/``decode``/``project``/``new_cache``,
            or a :class:`~attnkit.generation.DecodingModel` (then ``src=None``).
        src: ``(B, S)`` source token ids (padded with ``pad_id``).
        max_new_tokens: upper bound on generated tokens.
        bos_id: the token that starts decoding (encoder-decoder models; a
            decoder-only model continues its prompt and ignores it).
        eos_id: stop token(s): an id, a sequence of ids, or ``None`` (run
            ``max_new_tokens`` steps); integer scalars (``np.int64(2)``,
            ``torch.tensor(2)``) count as ids.
        pad_id: fills rows after their stop token.
        src_mask: bool, ``True`` at real tokens: ``(B, S)`` or ``(B, 1, 1, S)`` for an
            encoder-decoder model (default: the padding mask of ``src``), ``(B, P)``
            for a decoder-only model's left-padded prompts (default: all real).
        suppress_ids: token ids never generated (Hugging Face's ``suppress_tokens``),
            e.g. the special tokens of a model trained on raw text.

    Returns:
        ``(B, L)`` generated ids without ``bos``; each row ends with ``eos`` (if it
        was produced) followed by ``pad_id``. ``L <= max_new_tokens``; decoding
        stops once every row has produced ``eos``. The model runs in eval mode
        (restored afterwards) without gradients.

    Example:
        >>> import torch
        >>> from attnkit.generation import greedy_decode
        >>> from attnkit.models import Transformer
        >>> model = Transformer(vocab_size=20, d_model=32, num_heads=4, num_layers=1, d_ff=64)
        >>> src = torch.randint(3, 20, (2, 6))
        >>> out = greedy_decode(model.eval(), src, max_new_tokens=8, bos_id=1, eos_id=2)
        >>> out.shape[0], out.shape[1] <= 8
        (2, True)
    """
    decoder = as_decoding_model(model, src, src_mask=src_mask, pad_id=pad_id)
    check_positive_int("max_new_tokens", max_new_tokens)
    with eval_mode(model):
        return decode_one_per_row(
            decoder,
            lambda logits, _generated: logits.argmax(dim=-1),
            max_new_tokens=max_new_tokens,
            bos_id=bos_id,
            eos_id=eos_id,
            pad_id=pad_id,
            suppress_ids=suppress_ids,
        )
