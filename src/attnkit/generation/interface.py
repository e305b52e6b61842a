"""The step interface every decoding strategy runs on, and its encoder-decoder adaptor.

Decoding strategies (greedy, beam search, sampling) never call a model's
``encode``/``decode`` directly. They see a :class:`DecodingModel`: something
that holds a batch of inputs, starts decoding (encoding the source or
prefilling a prompt, allocating KV caches), and then, one step at a time, turns
the newest tokens of every row into next-token logits. Beam search also asks it
to reorder rows when beams are pruned.

Rows: a decoding run has ``N = batch_size * num_beams`` rows, and row
``b * num_beams + k`` is beam ``k`` of input ``b`` (``repeat_interleave`` order).

:class:`EncoderDecoderAdapter` implements the interface for
:class:`attnkit.models.Transformer` (and anything with the same
``encode``/``decode``/``project``/``new_cache`` methods). A decoder-only
adaptor (GPT: prefill the prompt in ``start``, then single-token steps) fits
the same interface.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from attnkit.functional import create_padding_mask, key_padding_mask
from attnkit.generation._source import SourceAdapter
from attnkit.generation.decoder_only import DecoderOnlyAdapter, is_causal_lm
from attnkit.generation.rnn import RNNSeq2SeqAdapter, is_rnn_seq2seq

__all__ = [
    "DecodingModel",
    "EncoderDecoderAdapter",
    "EncoderDecoderModel",
    "EncoderDecoderState",
    "as_decoding_model",
]


class EncoderDecoderModel(Protocol):
    """What decoding needs of an encoder-decoder model (e.g. ``attnkit.models.Transformer``).

    ``encode(src (B, S), src_mask)`` gives the memory ``(B, S, D)``;
    ``decode(tgt (B, T), memory, ..., cache=...)`` the decoder states ``(B, T, D)``
    (with a cache, ``tgt`` holds only the new tokens); ``project`` maps states to
    logits ``(..., V)``; ``new_cache(N, max_len, like=memory)`` allocates the KV caches.

    Example:
        >>> import torch
        >>> from attnkit.models import Transformer
        >>> model = Transformer(vocab_size=20, d_model=32, num_heads=4, num_layers=1, d_ff=64)
        >>> memory = model.eval().encode(torch.randint(3, 20, (2, 6)))  # (B, S, D)
        >>> cache = model.new_cache(2, max_len=4, like=memory)
        >>> hidden = model.decode(torch.full((2, 1), 1), memory, cache=cache)  # feed bos
        >>> tuple(memory.shape), tuple(model.project(hidden).shape), cache.length
        ((2, 6, 32), (2, 1, 20), 1)
    """

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor: ...

    def decode(
        self, tgt: Tensor, memory: Tensor, tgt_mask=None, memory_mask=None, *, cache=None
    ): ...

    def project(self, hidden: Tensor) -> Tensor: ...

    def new_cache(self, batch_size: int, max_len: int, *, like: Tensor): ...


@runtime_checkable
class DecodingModel(Protocol):
    """A model as decoding strategies see it: a batch of inputs, then one step at a time.

    Implementations hold their inputs (source ids, prompts). ``state`` is
    whatever the implementation needs between steps (encoder memory, caches,
    the tokens so far); strategies only pass it back.

    Example:
        >>> import torch
        >>> from attnkit.generation import DecodingModel, EncoderDecoderAdapter, greedy_decode
        >>> from attnkit.models import Transformer
        >>> model = Transformer(vocab_size=20, d_model=32, num_heads=4, num_layers=1, d_ff=64)
        >>> adapter = EncoderDecoderAdapter(model.eval(), torch.randint(3, 20, (2, 6)))
        >>> isinstance(adapter, DecodingModel), isinstance(model, DecodingModel)
        (True, False)
        >>> state, logits = adapter.start(num_beams=1, max_new_tokens=4, bos_id=1)  # (N, V)
        >>> tuple(logits.shape), tuple(adapter.step(state, logits.argmax(-1, keepdim=True)).shape)
        ((2, 20), (2, 20))
        >>> tuple(greedy_decode(adapter, None, max_new_tokens=4, bos_id=1).shape)  # no eos_id
        (2, 4)
    """

    @property
    def batch_size(self) -> int:
        """``B``, the number of inputs."""
        ...

    @property
    def device(self) -> torch.device: ...

    def start(
        self, num_beams: int, max_new_tokens: int, *, bos_id: int | None
    ) -> tuple[Any, Tensor]:
        """Begin decoding ``N = B * num_beams`` rows of at most ``max_new_tokens`` tokens.

        Encoder-decoder models start from ``bos_id``; decoder-only models
        continue their prompts and ignore it.

        Returns ``(state, logits)``: ``logits (N, V)`` score the first generated token.
        """
        ...

    def step(self, state: Any, tokens: Tensor) -> Tensor:
        """Append ``tokens (N, t)`` to every row; return ``(N, V)`` logits of the next token."""
        ...

    def reorder(self, state: Any, indices: Tensor) -> None:
        """Keep rows ``indices (N,)`` in that order (beam search); in place."""
        ...


@dataclass
class EncoderDecoderState:
    """Decoding state of :class:`EncoderDecoderAdapter`.

    Attributes:
        memory: encoder output ``(N, S, D)``.
        memory_mask: bool source mask, ``(N, 1, 1, S)`` (or batch size 1: broadcast).
        cache: the decoder's KV caches, or ``None`` when decoding without a cache.
        tokens: ``(N, T)`` decoder inputs so far (``bos`` and every fed token).

    Example:
        >>> import torch
        >>> from attnkit.generation import EncoderDecoderAdapter, EncoderDecoderState
        >>> from attnkit.models import Transformer
        >>> model = Transformer(vocab_size=20, d_model=32, num_heads=4, num_layers=1, d_ff=64)
        >>> adapter = EncoderDecoderAdapter(model.eval(), torch.randint(3, 20, (2, 6)))
        >>> state, _ = adapter.start(num_beams=2, max_new_tokens=4, bos_id=1)  # N = 4 rows
        >>> isinstance(state, EncoderDecoderState), tuple(state.memory.shape), state.tokens.tolist()
        (True, (4, 6, 32), [[1], [1], [1], [1]])
        >>> _ = adapter.step(state, torch.tensor([[5], [6], [7], [8]]))
        >>> adapter.reorder(state, torch.tensor([1, 1, 3, 2]))  # as beam search prunes
        >>> state.tokens.tolist()
        [[1, 6], [1, 6], [1, 8], [1, 7]]
    """

    memory: Tensor
    memory_mask: Tensor
    cache: Any | None
    tokens: Tensor


class EncoderDecoderAdapter(SourceAdapter):
    """:class:`DecodingModel` for an encoder-decoder model such as ``Transformer``.

    The source is encoded once; memory and mask are expanded to the beams with
    ``repeat_interleave``. With ``use_cache`` (default) each step feeds only the
    new tokens and the decoder continues from its KV cache; without it, every
    step reruns the decoder over all tokens so far (slower, same tokens).

    Args:
        model: has ``encode``, ``decode``, ``project``, ``new_cache``.
        src: ``(B, S)`` source ids, padded with ``pad_id``.
        src_mask: bool mask, ``True`` at real tokens: ``(B, S)`` (a key-padding
            mask, as for the other adapters) or ``(B, 1, 1, S)``; defaults to the
            padding mask of ``src``. Masks the encoder and cross-attention.
        pad_id: padding id of ``src``.
        use_cache: decode incrementally with the model's KV cache.

    Example:
        >>> import torch
        >>> from attnkit.generation import EncoderDecoderAdapter
        >>> from attnkit.models import Transformer
        >>> model = Transformer(vocab_size=20, d_model=32, num_heads=4, num_layers=1, d_ff=64)
        >>> src = torch.tensor([[5, 6, 7, 0], [8, 9, 10, 11]])  # row 0 padded with pad_id 0
        >>> adapter = EncoderDecoderAdapter(model.eval(), src, pad_id=0)
        >>> state, logits = adapter.start(num_beams=3, max_new_tokens=5, bos_id=1)
        >>> tuple(state.memory.shape), tuple(logits.shape)  # N = B * num_beams rows
        ((6, 4, 32), (6, 20))
        >>> uncached = EncoderDecoderAdapter(model, src, use_cache=False)
        >>> torch.allclose(uncached.start(3, 5, bos_id=1)[1], logits, atol=1e-5)
        True
    """

    model: EncoderDecoderModel

    def __init__(
        self,
        model: EncoderDecoderModel,
        src: Tensor,
        src_mask: Tensor | None = None,
        *,
        pad_id: int = 0,
        use_cache: bool = True,
    ) -> None:
        super().__init__(model, src)
        self.src_mask = _source_mask(src, src_mask, pad_id)
        self.use_cache = use_cache

    def start(
        self, num_beams: int, max_new_tokens: int, *, bos_id: int | None
    ) -> tuple[EncoderDecoderState, Tensor]:
        """Encode the source, expand it to ``num_beams`` rows each, feed ``bos``.

        Returns the state and ``(N, V)`` logits of the first generated token.
        """
        bos_id = self._check_start(num_beams, max_new_tokens, bos_id)
        memory = self.model.encode(self.src, self.src_mask)
        mask = self.src_mask
        if num_beams > 1:
            memory = memory.repeat_interleave(num_beams, dim=0)
            if mask.size(0) > 1:
                mask = mask.repeat_interleave(num_beams, dim=0)
        rows = memory.size(0)
        cache = self.model.new_cache(rows, max_new_tokens, like=memory) if self.use_cache else None
        empty = torch.empty(rows, 0, dtype=torch.long, device=self.device)
        state = EncoderDecoderState(memory, mask, cache, empty)
        return state, self._feed_bos(state, rows, bos_id)

    def step(self, state: EncoderDecoderState, tokens: Tensor) -> Tensor:
        """Feed ``tokens (N, t)``; return ``(N, V)`` logits at the last position."""
        state.tokens = torch.cat([state.tokens, tokens], dim=1)
        if state.cache is not None:
            hidden = self.model.decode(
                tokens, state.memory, memory_mask=state.memory_mask, cache=state.cache
            )
        else:
            # Every fed token is real (even a generated pad id), exactly as with the cache.
            length = state.tokens.size(1)
            tgt_mask = torch.ones(1, 1, 1, length, dtype=torch.bool, device=tokens.device)
            hidden = self.model.decode(
                state.tokens, state.memory, tgt_mask, memory_mask=state.memory_mask
            )
        return self.model.project(hidden[:, -1])

    def reorder(self, state: EncoderDecoderState, indices: Tensor) -> None:
        """Keep rows ``indices (N,)``: memory, mask, tokens and every cache."""
        state.memory = state.memory.index_select(0, indices)
        if state.memory_mask.size(0) > 1:
            state.memory_mask = state.memory_mask.index_select(0, indices)
        state.tokens = state.tokens.index_select(0, indices)
        if state.cache is not None:
            state.cache.reorder(indices)


def _source_mask(src: Tensor, src_mask: Tensor | None, pad_id: int) -> Tensor:
    """The bool ``(B, 1, 1, S)`` source mask from a ``(B, S)`` or ``(B, 1, 1, S)`` ``src_mask``
    (batch size 1 broadcasts), or from the padding of ``src``; raise on anything else."""
    if src_mask is None:
        return create_padding_mask(src, pad_id)
    mask = key_padding_mask(src_mask, src, "src_mask")
    if mask.shape[1:3] != (1, 1):  # beams reorder and expand the batch: key padding only
        raise ValueError(
            f"src_mask must be a key-padding mask (B, S) or (B, 1, 1, S) = "
            f"{(src.size(0), 1, 1, src.size(1))} for decoding; got {src_mask.dtype} "
            f"{tuple(src_mask.shape)}"
        )
    return mask


def as_decoding_model(
    model: Any, src: Tensor | None, *, src_mask: Tensor | None = None, pad_id: int = 0
) -> DecodingModel:
    """The :class:`DecodingModel` for ``model`` and its inputs.

    A :class:`DecodingModel` is returned as it is (it holds its own inputs, so
    ``src`` and ``src_mask`` must be ``None``); a decoder-only LM (GPT: has
    ``new_cache``, no ``encode``) is wrapped in a
    :class:`~attnkit.generation.DecoderOnlyAdapter` over the left-padded
    prompts ``src (B, P)`` with ``src_mask (B, P)`` true at real tokens; an RNN
    encoder-decoder (``init_decoder_state``/``decode_step``, e.g.
    ``attnkit.models.RNNSeq2Seq``) in a :class:`~attnkit.generation.RNNSeq2SeqAdapter`;
    an encoder-decoder model in an :class:`EncoderDecoderAdapter` over ``src``.

    Example:
        >>> import torch
        >>> from attnkit.generation import RNNSeq2SeqAdapter, as_decoding_model
        >>> from attnkit.models import RNNSeq2SeqConfig, build_rnn_seq2seq
        >>> model = build_rnn_seq2seq(RNNSeq2SeqConfig(20, 30, embedding_dim=8))
        >>> isinstance(as_decoding_model(model, torch.randint(1, 20, (2, 5))), RNNSeq2SeqAdapter)
        True
    """
    if isinstance(model, DecodingModel):
        if src is not None or src_mask is not None:
            raise ValueError(
                f"{type(model).__name__} is a DecodingModel that holds its inputs; "
                "pass src=None and src_mask=None"
            )
        return model
    if is_causal_lm(model):
        if src is None:
            raise ValueError("src (B, P), the prompts, is required to decode with a causal LM")
        return DecoderOnlyAdapter(model, src, src_mask)
    if is_rnn_seq2seq(model):
        if src is None:
            raise ValueError("src (B, S) is required to decode with an RNN encoder-decoder")
        return RNNSeq2SeqAdapter(model, src, src_mask, pad_id=pad_id)
    if all(hasattr(model, name) for name in ("encode", "decode", "project", "new_cache")):
        if src is None:
            raise ValueError("src (B, S) is required to decode with an encoder-decoder model")
        return EncoderDecoderAdapter(model, src, src_mask, pad_id=pad_id)
    raise TypeError(
        "model must be a DecodingModel (start/step/reorder), an encoder-decoder model "
        "(encode/decode/project/new_cache) or an RNN encoder-decoder "
        f"(encode/init_decoder_state/decode_step); got {type(model).__name__}"
    )


@contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Run with dropout off: the model (or an adaptor's ``.model``) in eval mode, restored after."""
    module = model if isinstance(model, nn.Module) else getattr(model, "model", None)
    was_training = isinstance(module, nn.Module) and module.training
    if was_training:
        module.eval()  # type: ignore[union-attr]
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            module.train()  # type: ignore[union-attr]


def is_token_id(value: Any) -> bool:
    """Whether ``value`` is an integer scalar: an ``int`` (not a ``bool``), a NumPy
    integer or a one-element integer tensor (anything ``operator.index`` accepts)."""
    if isinstance(value, bool) or (isinstance(value, Tensor) and value.dtype == torch.bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def as_token_id(name: str, value: Any, *, expected: str = "an integer token id") -> int:
    """``value`` as a Python ``int`` (see :func:`is_token_id`); ``TypeError`` otherwise."""
    if not is_token_id(value):
        raise TypeError(f"{name} must be {expected}; got {value!r} ({type(value).__name__})")
    return operator.index(value)


def stop_token_list(eos_id: Any) -> list[int]:
    """``eos_id`` (``None``, one integer id or an iterable of them) as a list of ints.

    Raises ``TypeError`` for anything else; the ids' range is checked once the
    vocabulary is known (:func:`check_special_ids`).
    """
    if eos_id is None:
        return []
    if is_token_id(eos_id):
        return [operator.index(eos_id)]
    ids: list[Any] | None = None
    if isinstance(eos_id, Iterable) and not isinstance(eos_id, (str, bytes)):
        try:
            ids = list(eos_id)
        except TypeError:  # e.g. a 0-d float tensor
            ids = None
    if ids is None or not all(is_token_id(value) for value in ids):
        raise TypeError(
            "eos_id must be None, an integer token id or a sequence of them; "
            f"got {eos_id!r} ({type(eos_id).__name__})"
        )
    return [operator.index(value) for value in ids]


def check_special_ids(vocab_size: int, **ids: Any) -> None:
    """Raise unless every given token id is an integer in ``[0, vocab_size)``."""
    for name, value in ids.items():
        value = as_token_id(name, value)
        if not 0 <= value < vocab_size:
            raise ValueError(f"{name} must be in [0, {vocab_size}) (the vocabulary); got {value}")


def check_positive_int(name: str, value: Any) -> None:
    """Raise unless ``value`` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value}")
