"""RNN encoder-decoder with attention (Bahdanau et al. 2015; Luong et al. 2015).

``RNNSeq2SeqConfig`` describes it, ``build_rnn_seq2seq(config)`` builds it.

- **Encoder**: embeddings, then a bidirectional GRU or LSTM run over *packed*
  sequences, so padding never enters the recurrence (a padded batch gives the
  same numbers as each sentence alone). Its outputs ``(B, S, 2 * He)`` are the
  attention memory.
- **Bridge**: the decoder's initial state is ``tanh(W [h_fwd; h_bwd])`` of the
  top encoder layer's final forward and backward states (one slice per decoder
  layer; an LSTM's cell state gets its own linear map).
- **Decoder** (Luong et al.'s global attention with *input feeding*). At step ``t``::

      x_t  = [E y_{t-1}; h~_{t-1}]                  input feeding (h~_0 = 0)
      s_t  = RNN(x_t, s_{t-1})                      stacked GRU / LSTM
      c_t, a_t = attention(s_t, memory, mask)       Bahdanau (additive) or Luong scores
      h~_t = dropout(tanh(W_c [c_t; s_t]))          the attentional vector
      p(y_t | y_<t, x) = softmax(W_o h~_t + b_o)

  The attention scores come from :mod:`attnkit.nn.attention.additive`; the key
  projection is computed once per source (:meth:`RNNSeq2Seq.init_decoder_state`),
  so every step costs ``O(S)``.

Decoding goes through :mod:`attnkit.generation` (greedy, beam, sampling) via
:class:`attnkit.generation.RNNSeq2SeqAdapter`, which drives
:meth:`RNNSeq2Seq.decode_step`, the same step the teacher-forced forward runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnkit.models._config import check_positive
from attnkit.nn import BahdanauAttention, LuongAttention
from attnkit.nn.attention.additive import LUONG_SCORES

__all__ = [
    "ATTENTIONS",
    "CELLS",
    "RNNDecoderState",
    "RNNEncoderOutput",
    "RNNSeq2Seq",
    "RNNSeq2SeqConfig",
    "build_rnn_seq2seq",
]

CELLS = ("gru", "lstm")
ATTENTIONS = ("bahdanau", "luong")
_RNN = {"gru": nn.GRU, "lstm": nn.LSTM}


@dataclass
class RNNSeq2SeqConfig:
    """Hyper-parameters of :class:`RNNSeq2Seq`.

    Attributes:
        src_vocab_size, tgt_vocab_size: vocabulary sizes.
        cell: ``"gru"`` or ``"lstm"`` (encoder and decoder).
        attention: ``"bahdanau"`` (additive, ``v^T tanh(W_q s + W_k h)``) or ``"luong"``.
        luong_score: ``"dot"`` (needs ``decoder_hidden_size == 2 * encoder_hidden_size``),
            ``"general"`` or ``"concat"``; used when ``attention == "luong"``.
        embedding_dim: ``E``, source and target embedding size.
        encoder_hidden_size: ``He``, per direction (the memory is ``2 * He`` wide).
        decoder_hidden_size: ``Hd``.
        attention_hidden_size: tanh width of the Bahdanau / Luong-concat score
            (default ``Hd``).
        num_encoder_layers, num_decoder_layers: stacked RNN layers.
        dropout: on embeddings, between stacked layers and on the attentional vector.
        share_embeddings: one embedding table for source and target (joint vocabulary).
        tie_output: the output layer reuses the target embedding matrix; the
            attentional vector is then ``E`` wide instead of ``Hd``.
        pad_id: padding id of both vocabularies.

    Example:
        >>> from attnkit.models import RNNSeq2SeqConfig
        >>> config = RNNSeq2SeqConfig(src_vocab_size=20, tgt_vocab_size=30, cell="lstm")
        >>> config.cell, config.attention, config.decoder_hidden_size
        ('lstm', 'bahdanau', 512)
    """

    src_vocab_size: int
    tgt_vocab_size: int
    cell: str = "gru"
    attention: str = "bahdanau"
    luong_score: str = "general"
    embedding_dim: int = 256
    encoder_hidden_size: int = 256
    decoder_hidden_size: int = 512
    attention_hidden_size: int | None = None
    num_encoder_layers: int = 1
    num_decoder_layers: int = 1
    dropout: float = 0.3
    share_embeddings: bool = False
    tie_output: bool = False
    pad_id: int = 0

    def __post_init__(self) -> None:
        check_positive(
            self,
            "src_vocab_size",
            "tgt_vocab_size",
            "embedding_dim",
            "encoder_hidden_size",
            "decoder_hidden_size",
            "num_encoder_layers",
            "num_decoder_layers",
        )
        self._check_choices()
        if self.attention_hidden_size is not None and self.attention_hidden_size < 1:
            raise ValueError(
                f"attention_hidden_size must be >= 1 or None; got {self.attention_hidden_size}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(
                "share_embeddings needs src_vocab_size == tgt_vocab_size; got "
                f"{self.src_vocab_size} and {self.tgt_vocab_size}"
            )
        if not 0 <= self.pad_id < min(self.src_vocab_size, self.tgt_vocab_size):
            raise ValueError(f"pad_id must be a valid token id; got {self.pad_id}")

    def _check_choices(self) -> None:
        for name, allowed in (
            ("cell", CELLS),
            ("attention", ATTENTIONS),
            ("luong_score", LUONG_SCORES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {getattr(self, name)!r}")
        uses_dot = self.attention == "luong" and self.luong_score == "dot"
        if uses_dot and self.decoder_hidden_size != 2 * self.encoder_hidden_size:
            raise ValueError(
                "luong_score 'dot' needs decoder_hidden_size == 2 * encoder_hidden_size "
                f"(the bidirectional memory width); got {self.decoder_hidden_size} and "
                f"2 * {self.encoder_hidden_size}"
            )

    @property
    def memory_size(self) -> int:
        """Width of the encoder outputs, ``2 * encoder_hidden_size``."""
        return 2 * self.encoder_hidden_size

    @property
    def attentional_size(self) -> int:
        """Width of ``h~`` (fed back and projected to the vocabulary)."""
        return self.embedding_dim if self.tie_output else self.decoder_hidden_size

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RNNEncoderOutput:
    """What the encoder hands to the decoder.

    Attributes:
        memory: ``(B, S, 2 * He)`` encoder outputs, zeros at padded positions.
        mask: ``(B, S)`` bool, True at real source tokens.
        final: ``(B, 2 * He)`` top layer's last forward and first backward hidden states.
        final_cell: the same of the LSTM cell state (``None`` for a GRU).

    Example:
        >>> import torch
        >>> from attnkit.models import RNNSeq2Seq, RNNSeq2SeqConfig
        >>> model = RNNSeq2Seq(RNNSeq2SeqConfig(20, 30, embedding_dim=8, encoder_hidden_size=8))
        >>> encoded = model.encode(torch.tensor([[4, 5, 6, 0], [7, 8, 9, 10]]))  # right-padded
        >>> tuple(encoded.memory.shape), tuple(encoded.final.shape), encoded.final_cell is None
        ((2, 4, 16), (2, 16), True)
        >>> encoded.mask.tolist(), bool((encoded.memory[0, 3] == 0).all())  # zero at padding
        ([[True, True, True, False], [True, True, True, True]], True)
    """

    memory: Tensor
    mask: Tensor
    final: Tensor
    final_cell: Tensor | None = None


@dataclass
class RNNDecoderState:
    """Everything the decoder carries from one step to the next, one row per hypothesis.

    Attributes:
        memory: ``(N, S, 2 * He)`` encoder outputs (attention keys and values).
        mask: ``(N, S)`` bool source mask.
        projected_keys: ``(N, S, Da)`` the attention's step-independent key projection.
        hidden: ``(Ld, N, Hd)`` decoder hidden state of every layer.
        cell: ``(Ld, N, Hd)`` LSTM cell state (``None`` for a GRU).
        feed: ``(N, A)`` previous attentional vector (input feeding).

    Example:
        >>> import torch
        >>> from attnkit.models import RNNSeq2Seq, RNNSeq2SeqConfig
        >>> config = RNNSeq2SeqConfig(20, 30, cell="lstm", embedding_dim=8, encoder_hidden_size=8,
        ...                           decoder_hidden_size=16, num_decoder_layers=2)
        >>> model = RNNSeq2Seq(config)
        >>> state = model.init_decoder_state(model.encode(torch.randint(1, 20, (2, 5))))
        >>> tuple(state.hidden.shape), tuple(state.cell.shape), tuple(state.feed.shape)
        ((2, 2, 16), (2, 2, 16), (2, 16))
        >>> beams = state.repeat_interleave(3)  # 2 inputs -> 6 beam rows: 0, 0, 0, 1, 1, 1
        >>> tuple(beams.memory.shape), torch.equal(beams.hidden[:, 3], state.hidden[:, 1])
        ((6, 5, 16), True)
    """

    memory: Tensor
    mask: Tensor
    projected_keys: Tensor
    hidden: Tensor
    cell: Tensor | None
    feed: Tensor

    def index_select(self, indices: Tensor) -> RNNDecoderState:
        """Rows ``indices (N',)`` of every tensor, in that order (beam search reordering)."""
        return RNNDecoderState(
            self.memory.index_select(0, indices),
            self.mask.index_select(0, indices),
            self.projected_keys.index_select(0, indices),
            self.hidden.index_select(1, indices),
            None if self.cell is None else self.cell.index_select(1, indices),
            self.feed.index_select(0, indices),
        )

    def repeat_interleave(self, repeats: int) -> RNNDecoderState:
        """Each row ``repeats`` times in a row (``B`` inputs -> ``B * repeats`` beams)."""
        rows = torch.arange(self.feed.size(0), device=self.feed.device)
        return self.index_select(rows.repeat_interleave(repeats))


def _build_attention(config: RNNSeq2SeqConfig) -> nn.Module:
    """The score function the config names, over the decoder state and the memory."""
    hidden = config.attention_hidden_size or config.decoder_hidden_size
    if config.attention == "bahdanau":
        return BahdanauAttention(config.decoder_hidden_size, config.memory_size, hidden)
    return LuongAttention(
        config.decoder_hidden_size, config.memory_size, config.luong_score, hidden_dim=hidden
    )


def _rnn(
    config: RNNSeq2SeqConfig, input_size: int, hidden_size: int, layers: int, **kw
) -> nn.RNNBase:
    """A batch-first GRU/LSTM stack with the config's dropout between its layers."""
    dropout = config.dropout if layers > 1 else 0.0  # torch warns on dropout with one layer
    return _RNN[config.cell](
        input_size, hidden_size, layers, batch_first=True, dropout=dropout, **kw
    )


class RNNSeq2Seq(nn.Module):
    """Bidirectional RNN encoder, attentive RNN decoder with input feeding.

    Args:
        config: the hyper-parameters.
        attention: the score module (default: built from ``config``). Anything with
            ``project_keys(keys)`` and ``forward(query, keys, mask=..., projected_keys=...)
            -> (context, weights)``, like :class:`~attnkit.nn.BahdanauAttention` and
            :class:`~attnkit.nn.LuongAttention`, with query size ``Hd`` and key size ``2 * He``.

    ``forward(src, tgt)`` gives teacher-forced logits ``(B, T, tgt_vocab_size)``;
    decoding runs :meth:`encode`, :meth:`init_decoder_state` and :meth:`decode_step`.

    Example:
        >>> import torch
        >>> from attnkit.models import RNNSeq2Seq, RNNSeq2SeqConfig
        >>> config = RNNSeq2SeqConfig(src_vocab_size=100, tgt_vocab_size=90, cell="lstm",
        ...                           attention="luong", embedding_dim=16,
        ...                           encoder_hidden_size=16, decoder_hidden_size=32)
        >>> src, tgt = torch.randint(3, 100, (2, 7)), torch.randint(3, 90, (2, 5))
        >>> logits, weights = RNNSeq2Seq(config)(src, tgt, return_attention=True)
        >>> tuple(logits.shape), tuple(weights.shape)
        ((2, 5, 90), (2, 5, 7))
    """

    def __init__(self, config: RNNSeq2SeqConfig, *, attention: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        e, hd, ld = config.embedding_dim, config.decoder_hidden_size, config.num_decoder_layers
        self.src_embedding = nn.Embedding(config.src_vocab_size, e, config.pad_id)
        self.tgt_embedding = (
            self.src_embedding
            if config.share_embeddings
            else nn.Embedding(config.tgt_vocab_size, e, config.pad_id)
        )
        self.encoder = _rnn(
            config, e, config.encoder_hidden_size, config.num_encoder_layers, bidirectional=True
        )
        self.bridge = nn.Linear(config.memory_size, ld * hd)
        self.bridge_cell = nn.Linear(config.memory_size, ld * hd) if config.cell == "lstm" else None
        self.decoder = _rnn(config, e + config.attentional_size, hd, ld)
        self.attention = attention if attention is not None else _build_attention(config)
        self.combine = nn.Linear(config.memory_size + hd, config.attentional_size, bias=False)
        self.output_projection = nn.Linear(config.attentional_size, config.tgt_vocab_size)
        self.dropout = nn.Dropout(config.dropout)
        self._reset_parameters()

    @classmethod
    def from_config(cls, config: RNNSeq2SeqConfig) -> RNNSeq2Seq:
        return cls(config)

    def _reset_parameters(self) -> None:
        """N(0, E^-1/2) embeddings with a zero padding row; zero output bias; the RNNs and
        linear maps keep torch's uniform initialisation."""
        for embedding in (self.src_embedding, self.tgt_embedding):
            nn.init.normal_(embedding.weight, std=self.config.embedding_dim**-0.5)
            embedding.weight.data[self.config.pad_id].zero_()
        nn.init.zeros_(self.output_projection.bias)
        if self.config.tie_output:
            self.output_projection.weight = self.tgt_embedding.weight

    # ----------------------------------------------------------------- checks

    def _check_tokens(self, name: str, tokens: Tensor, vocab_size: int) -> None:
        if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype.is_floating_point:
            shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            dtype = tokens.dtype if isinstance(tokens, Tensor) else ""
            raise ValueError(
                f"{name} must be integer token ids of shape (B, T); got {shape} {dtype}"
            )
        if tokens.size(1) == 0:
            raise ValueError(f"{name} must have at least one position; got {tuple(tokens.shape)}")
        if bool(((tokens < 0) | (tokens >= vocab_size)).any()):
            raise ValueError(
                f"{name} ids must be in [0, {vocab_size}); got range "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )

    def source_mask(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """The ``(B, S)`` bool mask of ``src`` (default: ``src != pad_id``), checked.

        Sources must be right-padded: packing reads the first ``length`` tokens.
        """
        self._check_tokens("src", src, self.config.src_vocab_size)
        if src_mask is None:
            mask = src != self.config.pad_id
        elif (
            not isinstance(src_mask, Tensor)
            or src_mask.dtype != torch.bool
            or src_mask.shape != src.shape
        ):
            got = (
                f"{tuple(src_mask.shape)} {src_mask.dtype}"
                if isinstance(src_mask, Tensor)
                else repr(src_mask)
            )
            raise ValueError(
                f"src_mask must be bool of the shape of src {tuple(src.shape)}; got {got}"
            )
        else:
            mask = src_mask
        if bool((~mask[:, :-1] & mask[:, 1:]).any()):
            raise ValueError(
                "sources must be right-padded (real tokens first, then padding); "
                "a row has a real token after padding"
            )
        return mask

    # ---------------------------------------------------------------- encoder

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> RNNEncoderOutput:
        """Run the bidirectional encoder over ``src (B, S)`` (right-padded).

        ``src_mask`` (bool ``(B, S)``, True = real token) defaults to ``src != pad_id``.
        A source without real tokens is allowed: its attention context is zero.
        """
        mask = self.source_mask(src, src_mask)
        # Packing needs lengths >= 1 (on the CPU): an empty source runs one step over
        # its first (padding) position, then gets an all-masked, all-zero memory.
        lengths = mask.sum(dim=1).clamp_min(1).cpu()
        embedded = self.dropout(self.src_embedding(src))
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        outputs, final = self.encoder(packed)
        memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.size(1))
        memory = memory * mask.unsqueeze(-1).to(memory.dtype)
        hidden, cell = final if isinstance(final, tuple) else (final, None)
        # (2 * layers, B, He): the last two rows are the top layer's forward and backward.
        top = torch.cat([hidden[-2], hidden[-1]], dim=-1)
        top_cell = None if cell is None else torch.cat([cell[-2], cell[-1]], dim=-1)
        return RNNEncoderOutput(memory, mask, top, top_cell)

    # ---------------------------------------------------------------- decoder

    def _layers(self, bridge: nn.Linear, final: Tensor) -> Tensor:
        """``(B, 2 He)`` -> ``(Ld, B, Hd)``, one slice of the bridge per decoder layer."""
        out = bridge(final).view(final.size(0), self.config.num_decoder_layers, -1)
        return out.transpose(0, 1).contiguous()

    def init_decoder_state(self, encoded: RNNEncoderOutput) -> RNNDecoderState:
        """The decoder's state before its first step: bridged hidden state, zero input
        feed, and the attention's key projection computed once for all steps."""
        hidden = torch.tanh(self._layers(self.bridge, encoded.final))
        cell = None
        if self.bridge_cell is not None and encoded.final_cell is not None:
            cell = self._layers(self.bridge_cell, encoded.final_cell)
        feed = encoded.memory.new_zeros(encoded.memory.size(0), self.config.attentional_size)
        projected = self.attention.project_keys(encoded.memory)
        return RNNDecoderState(encoded.memory, encoded.mask, projected, hidden, cell, feed)

    def _step(
        self, embedded: Tensor, state: RNNDecoderState
    ) -> tuple[Tensor, Tensor, RNNDecoderState]:
        """One step on embedded inputs ``(N, E)``: ``(h~ (N, A), weights (N, S), state)``."""
        inputs = torch.cat([embedded, state.feed], dim=-1).unsqueeze(1)
        recurrent = state.hidden if state.cell is None else (state.hidden, state.cell)
        output, recurrent = self.decoder(inputs, recurrent)
        hidden, cell = recurrent if isinstance(recurrent, tuple) else (recurrent, None)
        query = output[:, 0]
        context, weights = self.attention(
            query, state.memory, mask=state.mask, projected_keys=state.projected_keys
        )
        attentional = self.dropout(torch.tanh(self.combine(torch.cat([context, query], dim=-1))))
        return attentional, weights, replace(state, hidden=hidden, cell=cell, feed=attentional)

    def decode_step(
        self, tokens: Tensor, state: RNNDecoderState
    ) -> tuple[Tensor, Tensor, RNNDecoderState]:
        """Feed ``tokens (N,)``; return ``(logits (N, V), attention (N, S), next state)``."""
        if tokens.dim() != 1 or tokens.size(0) != state.feed.size(0):
            raise ValueError(
                f"tokens must have shape (N,) = ({state.feed.size(0)},), one per state row; "
                f"got {tuple(tokens.shape)}"
            )
        self._check_tokens("tokens", tokens[:, None], self.config.tgt_vocab_size)
        embedded = self.dropout(self.tgt_embedding(tokens))
        attentional, weights, state = self._step(embedded, state)
        return self.project(attentional), weights, state

    def project(self, attentional: Tensor) -> Tensor:
        """Attentional vectors ``(..., A)`` -> logits ``(..., tgt_vocab_size)``."""
        return self.output_projection(attentional)

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        src_mask: Tensor | None = None,
        *,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Teacher-forced logits ``(B, T, tgt_vocab_size)`` for ``src (B, S)``, ``tgt (B, T)``.

        ``tgt`` is the decoder input (``bos`` first). Target padding needs no mask:
        the decoder is causal, so padded positions never affect real ones (the loss
        ignores their logits). With ``return_attention`` also returns the attention
        weights ``(B, T, S)`` (zero at padded source positions).
        """
        self._check_tokens("tgt", tgt, self.config.tgt_vocab_size)
        if src.dim() == 2 and src.size(0) != tgt.size(0):
            raise ValueError(
                f"src and tgt must have the same batch size; got {src.size(0)} and {tgt.size(0)}"
            )
        state = self.init_decoder_state(self.encode(src, src_mask))
        embedded = self.dropout(self.tgt_embedding(tgt))
        outputs, weights = [], []
        for step in range(tgt.size(1)):  # the recurrence: one step at a time
            attentional, step_weights, state = self._step(embedded[:, step], state)
            outputs.append(attentional)
            weights.append(step_weights)
        logits = self.project(torch.stack(outputs, dim=1))
        return (logits, torch.stack(weights, dim=1)) if return_attention else logits


def build_rnn_seq2seq(config: RNNSeq2SeqConfig) -> RNNSeq2Seq:
    """Build an :class:`RNNSeq2Seq` from its config.

    Example:
        >>> import torch
        >>> from attnkit.models import RNNSeq2SeqConfig, build_rnn_seq2seq
        >>> config = RNNSeq2SeqConfig(20, 30, embedding_dim=8, encoder_hidden_size=8,
        ...                           decoder_hidden_size=16)
        >>> model = build_rnn_seq2seq(config)
        >>> tuple(model(torch.randint(1, 20, (2, 5)), torch.ones(2, 4).long()).shape)
        (2, 4, 30)
    """
    return RNNSeq2Seq.from_config(config)
