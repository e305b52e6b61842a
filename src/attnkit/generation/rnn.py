"""The step interface for RNN encoder-decoders with attention (``attnkit.models.RNNSeq2Seq``).

:class:`RNNSeq2SeqAdapter` turns such a model into a
:class:`~attnkit.generation.DecodingModel`: ``start`` encodes the source once
(the attention's key projection included), copies the decoder state to the
beams, and every ``step`` advances the recurrence by one token per row. A step
costs ``O(S)`` per row: the attention scores the step's query against the
keys projected at the start. Beam search reorders the recurrent state (hidden
and cell states, the input feed) with the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from attnkit.generation._source import SourceAdapter

__all__ = ["RNNDecodingState", "RNNSeq2SeqAdapter", "RNNSeq2SeqModel", "is_rnn_seq2seq"]


class RNNDecoderStateLike(Protocol):
    """The model's per-row decoder state: reorderable and expandable to beams."""

    def index_select(self, indices: Tensor) -> Any: ...

    def repeat_interleave(self, repeats: int) -> Any: ...


class RNNSeq2SeqModel(Protocol):
    """What decoding needs of an RNN encoder-decoder (e.g. ``attnkit.models.RNNSeq2Seq``).

    ``encode(src (B, S), src_mask (B, S))`` runs the encoder;
    ``init_decoder_state(encoded)`` gives the decoder state before the first
    token; ``decode_step(tokens (N,), state)`` returns ``(logits (N, V),
    attention (N, S), next state)``.
    """

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> Any: ...

    def init_decoder_state(self, encoded: Any) -> RNNDecoderStateLike: ...

    def decode_step(
        self, tokens: Tensor, state: Any
    ) -> tuple[Tensor, Tensor, RNNDecoderStateLike]: ...


def is_rnn_seq2seq(model: Any) -> bool:
    """Whether ``model`` decodes step by step from a recurrent state (``init_decoder_state``,
    ``decode_step``)."""
    return all(hasattr(model, name) for name in ("encode", "init_decoder_state", "decode_step"))


@dataclass
class RNNDecodingState:
    """Decoding state of :class:`RNNSeq2SeqAdapter`.

    Attributes:
        decoder: the model's recurrent state, one row per hypothesis (``N`` rows); it
            summarises every token fed so far, so nothing else is kept.

    Example:
        >>> import torch
        >>> from attnkit.generation import RNNDecodingState, RNNSeq2SeqAdapter
        >>> from attnkit.models import RNNSeq2SeqConfig, build_rnn_seq2seq
        >>> config = RNNSeq2SeqConfig(20, 30, embedding_dim=8, decoder_hidden_size=16)
        >>> model = build_rnn_seq2seq(config).eval()
        >>> adapter = RNNSeq2SeqAdapter(model, torch.randint(1, 20, (2, 5)))
        >>> state, logits = adapter.start(num_beams=3, max_new_tokens=4, bos_id=1)  # N = 6 rows
        >>> isinstance(state, RNNDecodingState), tuple(state.decoder.hidden.shape)  # (Ld, N, Hd)
        (True, (1, 6, 16))
        >>> _ = adapter.step(state, torch.arange(3, 9)[:, None])  # a different token per row
        >>> before = state.decoder.hidden.clone()
        >>> adapter.reorder(state, torch.tensor([4, 4, 4, 0, 0, 0]))  # rows follow their beams
        >>> torch.equal(state.decoder.hidden[:, 3], before[:, 0]), state.decoder.feed.size(0)
        (True, 6)
    """

    decoder: RNNDecoderStateLike


def _source_mask(src: Tensor, src_mask: Tensor | None, pad_id: int) -> Tensor:
    """The ``(B, S)`` bool source mask; a Transformer-style ``(B, 1, 1, S)`` mask is accepted."""
    if src_mask is None:
        return src != pad_id
    if not isinstance(src_mask, Tensor):
        raise ValueError(f"src_mask must be a bool tensor (B, S); got {type(src_mask).__name__}")
    if src_mask.dim() == 4 and src_mask.shape[1:3] == (1, 1):
        src_mask = src_mask[:, 0, 0]
    if src_mask.shape != src.shape or src_mask.dtype != torch.bool:
        raise ValueError(
            f"src_mask must be bool (B, S) = {tuple(src.shape)} (or (B, 1, 1, S)); "
            f"got {tuple(src_mask.shape)} {src_mask.dtype}"
        )
    return src_mask


class RNNSeq2SeqAdapter(SourceAdapter):
    """:class:`~attnkit.generation.DecodingModel` for an :class:`RNNSeq2SeqModel`.

    Args:
        model: has ``encode``, ``init_decoder_state`` and ``decode_step``.
        src: ``(B, S)`` right-padded source ids.
        src_mask: bool ``(B, S)`` (or ``(B, 1, 1, S)``), True at real tokens;
            defaults to ``src != pad_id``.
        pad_id: padding id of ``src``.

    Example:
        >>> import torch
        >>> from attnkit.generation import RNNSeq2SeqAdapter, beam_search
        >>> from attnkit.models import RNNSeq2SeqConfig, build_rnn_seq2seq
        >>> config = RNNSeq2SeqConfig(20, 30, embedding_dim=8, decoder_hidden_size=16)
        >>> model = build_rnn_seq2seq(config).eval()
        >>> src = torch.tensor([[4, 5, 6, 0], [7, 8, 9, 10]])  # right-padded with pad_id 0
        >>> adapter = RNNSeq2SeqAdapter(model, src)
        >>> state, _ = adapter.start(num_beams=1, max_new_tokens=5, bos_id=1)
        >>> logits = adapter.step(state, torch.tensor([[3], [3]]))  # (N, V) after bos, 3
        >>> torch.allclose(logits, model(src, torch.tensor([[1, 3], [1, 3]]))[:, 1], atol=1e-6)
        True
        >>> out = beam_search(adapter, None, beam_size=2, max_new_tokens=5, bos_id=1, eos_id=2)
        >>> tuple(out.sequences.shape[:2])  # (B, n)
        (2, 1)
    """

    model: RNNSeq2SeqModel

    def __init__(
        self,
        model: RNNSeq2SeqModel,
        src: Tensor,
        src_mask: Tensor | None = None,
        *,
        pad_id: int = 0,
    ) -> None:
        super().__init__(model, src)
        self.src_mask = _source_mask(src, src_mask, pad_id)

    def start(
        self, num_beams: int, max_new_tokens: int, *, bos_id: int | None
    ) -> tuple[RNNDecodingState, Tensor]:
        """Encode the source once, copy the decoder state to ``num_beams`` rows, feed ``bos``.

        Returns the state and ``(N, V)`` logits of the first generated token.
        """
        bos_id = self._check_start(num_beams, max_new_tokens, bos_id)
        # Encode and project the keys for B rows, then copy: cheaper than for B * num_beams.
        decoder = self.model.init_decoder_state(self.model.encode(self.src, self.src_mask))
        if num_beams > 1:
            decoder = decoder.repeat_interleave(num_beams)
        state = RNNDecodingState(decoder)
        return state, self._feed_bos(state, self.batch_size * num_beams, bos_id)

    def step(self, state: RNNDecodingState, tokens: Tensor) -> Tensor:
        """Feed ``tokens (N, t)`` one column at a time; return ``(N, V)`` logits of the next."""
        if tokens.dim() != 2 or tokens.size(1) == 0:
            raise ValueError(
                f"tokens must have shape (N, t) with t >= 1; got {tuple(tokens.shape)}"
            )
        for column in tokens.unbind(dim=1):
            logits, _, state.decoder = self.model.decode_step(column, state.decoder)
        return logits

    def reorder(self, state: RNNDecodingState, indices: Tensor) -> None:
        """Keep rows ``indices (N,)`` of the recurrent state."""
        state.decoder = state.decoder.index_select(indices)
