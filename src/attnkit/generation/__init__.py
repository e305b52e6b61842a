"""Decoding strategies over a model's step interface.

Every strategy runs on a :class:`DecodingModel` (``start`` / ``step`` /
``reorder`` with the KV cache); an encoder-decoder model such as
:class:`attnkit.models.Transformer` is adapted automatically
(:class:`EncoderDecoderAdapter`), and so is a decoder-only model such as
:class:`attnkit.models.GPT` over left-padded prompts (:class:`DecoderOnlyAdapter`)
and an RNN encoder-decoder such as :class:`attnkit.models.RNNSeq2Seq`
(:class:`RNNSeq2SeqAdapter`).

- :func:`greedy_decode`: the most likely token at every step.
- :func:`beam_search`: batched beams, length penalty, early stopping, n-best.
- :func:`sample`: temperature, top-k, top-p, repetition penalty, seeded.
- :func:`generate`: any of them by name.
"""

from attnkit.generation.beam import BeamSearchOutput, beam_search
from attnkit.generation.decoder_only import DecoderOnlyAdapter, DecoderOnlyState
from attnkit.generation.greedy import greedy_decode
from attnkit.generation.interface import (
    DecodingModel,
    EncoderDecoderAdapter,
    EncoderDecoderModel,
    EncoderDecoderState,
    as_decoding_model,
)
from attnkit.generation.processors import (
    apply_repetition_penalty,
    apply_suppression,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    suppressed_ids,
)
from attnkit.generation.rnn import RNNDecodingState, RNNSeq2SeqAdapter
from attnkit.generation.sampling import sample
from attnkit.generation.strategy import generate

__all__ = [
    "BeamSearchOutput",
    "DecoderOnlyAdapter",
    "DecoderOnlyState",
    "DecodingModel",
    "EncoderDecoderAdapter",
    "EncoderDecoderModel",
    "EncoderDecoderState",
    "RNNDecodingState",
    "RNNSeq2SeqAdapter",
    "apply_repetition_penalty",
    "apply_suppression",
    "apply_temperature",
    "apply_top_k",
    "apply_top_p",
    "as_decoding_model",
    "beam_search",
    "generate",
    "greedy_decode",
    "sample",
    "suppressed_ids",
]
