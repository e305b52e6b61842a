"""T5: the text-to-text encoder-decoder Transformer (Raffel et al. 2020).

What makes it T5, each an injected ``nn`` part of the usual encoder and
decoder stacks:

- no absolute positions: a bucketed relative position bias
  (:class:`attnkit.nn.T5RelativePositionBias`), bidirectional in the encoder,
  causal in the decoder, one table per stack shared by all its layers;
- unscaled dot-product scores (``scale=1``; T5 folds ``1/sqrt(d)`` into its
  initialisation);
- RMS layer norm without bias, pre-norm blocks, no biases anywhere;
- ReLU feed-forward (T5 v1.0) or gated GELU (``activation="geglu_tanh"``, v1.1);
- decoder outputs scaled by ``d_model^-0.5`` before the output matrix (v1.0,
  whose output matrix is the shared embedding; v1.1 neither ties nor scales).

``T5`` has the ``encode``/``decode``/``project``/``new_cache`` methods of an
encoder-decoder model, so :mod:`attnkit.generation` decodes it with the KV cache
(start token: ``decoder_start_id``, the pad id in T5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.functional import create_padding_mask
from attnkit.models._config import check_attention, check_positional, check_positive
from attnkit.models.outputs import ModelOutput, upcast
from attnkit.nn import (
    DecoderCache,
    Dropout,
    FeedForward,
    MultiHeadAttention,
    PositionScheme,
    RMSNorm,
    T5RelativePositionBias,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    build_self_attention,
    position_scheme,
)

__all__ = ["T5", "Seq2SeqOutput", "T5Config", "shift_right"]

IGNORE_INDEX = -100


@dataclass
class T5Config:
    """Hyper-parameters of :class:`T5` (defaults: t5-small).

    Attributes:
        vocab_size, d_model, num_heads, num_layers: sizes; ``num_decoder_layers``
            defaults to ``num_layers``.
        d_kv: per-head size (``num_heads * d_kv`` need not equal ``d_model``).
        d_ff: feed-forward width.
        num_buckets, max_distance: relative position buckets (32, 128).
        dropout: everywhere (embeddings, residual branches, attention, feed-forward).
        layer_norm_eps: RMS norm epsilon.
        activation: ``"relu"`` (v1.0) or ``"geglu_tanh"`` (v1.1's gated GELU).
        tie_embeddings: the output layer shares the embedding matrix.
        scale_decoder_outputs: multiply decoder outputs by ``d_model^-0.5`` before
            the output layer (T5 v1.0); default: when embeddings are tied.
        pad_id, eos_id, decoder_start_id: special ids (0, 1, 0 in T5).
        init_factor: T5's initialisation factor (1.0).
        positional: ``"t5"`` (bucketed bias from ``num_buckets``/``max_distance``)
            or any other scheme of :func:`attnkit.nn.position_scheme`, with
            ``position_options`` (e.g. T5 with rotary or ALiBi for an ablation;
            learned and sinusoidal tables take ``max_len``, default 512).
        attention, attention_options: the self-attention variant
            (``"dense"`` or ``"sliding_window"`` with ``window``; see
            :func:`attnkit.nn.build_self_attention`).

    Example:
        >>> from attnkit.models import T5, T5Config
        >>> config = T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_heads=4,
        ...                   num_layers=2, num_decoder_layers=1, activation="geglu_tanh")
        >>> t5 = T5(config)
        >>> len(t5.encoder.layers), len(t5.decoder.layers)
        (2, 1)
    """

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_heads: int = 8
    num_layers: int = 6
    num_decoder_layers: int | None = None
    num_buckets: int = 32
    max_distance: int = 128
    dropout: float = 0.1
    layer_norm_eps: float = 1e-6
    activation: str = "relu"
    tie_embeddings: bool = True
    scale_decoder_outputs: bool | None = None
    pad_id: int = 0
    eos_id: int = 1
    decoder_start_id: int = 0
    init_factor: float = 1.0
    positional: str = "t5"
    position_options: dict = field(default_factory=dict)
    attention: str = "dense"
    attention_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_positional(self.positional)
        check_attention(self)
        check_positive(self, "vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_layers")
        if self.activation not in ("relu", "geglu_tanh", "gelu", "geglu"):
            raise ValueError(
                "activation must be 'relu', 'gelu', 'geglu' or 'geglu_tanh'; "
                f"got {self.activation!r}"
            )
        for name in ("pad_id", "eos_id", "decoder_start_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(
                    f"{name} must be in [0, {self.vocab_size}); got {getattr(self, name)}"
                )

    @property
    def scales_outputs(self) -> bool:
        if self.scale_decoder_outputs is None:
            return self.tie_embeddings
        return self.scale_decoder_outputs

    @property
    def decoder_layers(self) -> int:
        return self.num_decoder_layers or self.num_layers

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Seq2SeqOutput(ModelOutput):
    """:class:`ModelOutput` of an encoder-decoder model.

    ``attentions``/``hidden_states`` are the decoder's; the encoder's and the
    cross-attention weights have their own fields.

    Attributes:
        encoder_last_hidden_state: ``(B, S, D)`` encoder output (the decoder's memory).
        encoder_attentions: per encoder layer ``(B, H, S, S)`` when asked for.
        cross_attentions: per decoder layer ``(B, H, T, S)`` when asked for.

    Example:
        >>> import torch
        >>> from attnkit.models import T5, Seq2SeqOutput, T5Config
        >>> config = T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_heads=4,
        ...                   num_layers=2)
        >>> t5 = T5(config)
        >>> out = t5(torch.randint(2, 100, (2, 9)), labels=torch.randint(2, 100, (2, 4)),
        ...          output_attentions=True)
        >>> isinstance(out, Seq2SeqOutput), tuple(out.encoder_last_hidden_state.shape)
        (True, (2, 9, 32))
        >>> len(out.encoder_attentions), tuple(out.cross_attentions[-1].shape)  # (B, H, T, S)
        (2, (2, 4, 4, 9))
    """

    encoder_last_hidden_state: Tensor | None = None
    encoder_attentions: list[Tensor] | None = None
    cross_attentions: list[Tensor] | None = None


def shift_right(labels: Tensor, start_id: int, pad_id: int) -> Tensor:
    """Decoder inputs from labels: ``[start, y1, ..., y_{T-1}]``, ``-100`` -> ``pad_id``.

    Example:
        >>> import torch
        >>> from attnkit.models import shift_right
        >>> shift_right(torch.tensor([[5, 6, 7, -100]]), start_id=0, pad_id=1).tolist()
        [[0, 5, 6, 7]]
    """
    shifted = labels.new_full(labels.shape, start_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_id)


def _attention(config: T5Config, scheme: PositionScheme | None) -> MultiHeadAttention:
    """Self-attention with the stack's scheme, or plain cross-attention (``scheme=None``)."""
    options = {"bias": False, "head_dim": config.d_kv, "scale": 1.0}
    if scheme is None:
        return MultiHeadAttention(config.d_model, config.num_heads, config.dropout, **options)
    return build_self_attention(
        config.attention,
        config.d_model,
        config.num_heads,
        config.dropout,
        scheme=scheme,
        options=config.attention_options,
        **options,
    )


def _feed_forward(config: T5Config) -> FeedForward:
    return FeedForward(config.d_model, config.d_ff, config.dropout, config.activation, bias=False)


def _layer_options(config: T5Config) -> dict:
    return {
        "dropout": config.dropout,
        "norm_first": True,
        "norm": "rmsnorm",
        "layer_norm_eps": config.layer_norm_eps,
        "bias": False,
    }


class T5(nn.Module):
    """T5 for conditional generation: ``input_ids (B, S)``, ``labels (B, T)`` -> logits, loss.

    Example:
        >>> import torch
        >>> from attnkit.models import T5, T5Config
        >>> t5 = T5(T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2))
        >>> out = t5(torch.randint(2, 100, (2, 9)), labels=torch.randint(2, 100, (2, 4)))
        >>> tuple(out.logits.shape), out.loss.dim()  # the decoder reads the labels shifted right
        ((2, 4, 100), 0)
    """

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder_scheme = self._scheme(causal=False)
        self.decoder_scheme = self._scheme(causal=True)
        # One bias / rotary per stack, shared by its layers; absolute tables (if any)
        # are added to the embeddings.
        self.encoder_bias = self.encoder_scheme.score_bias
        self.decoder_bias = self.decoder_scheme.score_bias
        self.encoder_positions = self.encoder_scheme.absolute
        self.decoder_positions = self.decoder_scheme.absolute
        self.encoder = TransformerEncoder(
            [self._encoder_layer() for _ in range(config.num_layers)],
            norm=RMSNorm(config.d_model, config.layer_norm_eps),
        )
        self.decoder = TransformerDecoder(
            [self._decoder_layer() for _ in range(config.decoder_layers)],
            norm=RMSNorm(config.d_model, config.layer_norm_eps),
        )
        self.dropout = Dropout(config.dropout)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.reset_parameters()
        if config.tie_embeddings:
            self.lm_head.weight = self.shared.weight

    def _scheme(self, *, causal: bool) -> PositionScheme:
        c = self.config
        options = dict(c.position_options)
        if c.positional == "t5":
            options = {"num_buckets": c.num_buckets, "max_distance": c.max_distance, **options}
        return position_scheme(
            c.positional,
            d_model=c.d_model,
            num_heads=c.num_heads,
            head_dim=c.d_kv,
            max_len=options.pop("max_len", 512) if c.positional in ("learned", "sinusoidal") else 1,
            causal=causal,
            options=options,
        )

    def _encoder_layer(self) -> TransformerEncoderLayer:
        c = self.config
        return TransformerEncoderLayer(
            c.d_model,
            c.num_heads,
            c.d_ff,
            activation=c.activation,
            self_attention=_attention(c, self.encoder_scheme),
            feed_forward=_feed_forward(c),
            **_layer_options(c),
        )

    def _decoder_layer(self) -> TransformerDecoderLayer:
        c = self.config
        return TransformerDecoderLayer(
            c.d_model,
            c.num_heads,
            c.d_ff,
            activation=c.activation,
            self_attention=_attention(c, self.decoder_scheme),
            cross_attention=_attention(c, None),
            feed_forward=_feed_forward(c),
            **_layer_options(c),
        )

    def reset_parameters(self) -> None:
        """T5's initialisation: each matrix scaled by its fan-in (``init_factor`` times)."""
        factor, d, inner = self.config.init_factor, self.config.d_model, self.config.d_kv
        nn.init.normal_(self.shared.weight, std=factor)
        if not self.config.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, std=factor)
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                heads = module.num_heads
                nn.init.normal_(module.q_proj.weight, std=factor * (d * inner) ** -0.5)
                for proj in (module.k_proj, module.v_proj):
                    nn.init.normal_(proj.weight, std=factor * d**-0.5)
                nn.init.normal_(module.out_proj.weight, std=factor * (heads * inner) ** -0.5)
            elif isinstance(module, FeedForward):
                for proj in (module.linear1, module.gate):
                    if proj is not None:
                        nn.init.normal_(proj.weight, std=factor * d**-0.5)
                nn.init.normal_(module.linear2.weight, std=factor * self.config.d_ff**-0.5)
            elif isinstance(module, T5RelativePositionBias):
                nn.init.normal_(module.embedding.weight, std=factor * d**-0.5)

    def _check_ids(self, name: str, ids: Tensor) -> None:
        if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point():
            got = f"{ids.dtype} {tuple(ids.shape)}" if isinstance(ids, Tensor) else type(ids)
            raise ValueError(f"{name} must be integer token ids of shape (B, T); got {got}")

    def encode(
        self, src: Tensor, src_mask: Tensor | None = None, *, need_weights: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """``src (B, S)`` -> ``(B, S, D)``; ``src_mask`` bool broadcastable to ``(B, 1, 1, S)``."""
        self._check_ids("input_ids", src)
        if src_mask is None:
            src_mask = create_padding_mask(src, self.config.pad_id)
        x = self.shared(src)
        if self.encoder_positions is not None:
            x = self.encoder_positions(x)
        x = self.dropout(x)
        out = self.encoder(x, src_mask, need_weights=need_weights)
        if need_weights:
            hidden, weights = out
            return self.dropout(hidden), weights
        return self.dropout(out)

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        *,
        cache: DecoderCache | None = None,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor], list[Tensor]]:
        """Causal decoder states ``(B, T, D)`` for ``tgt (B, T)`` over ``memory (B, S, D)``."""
        self._check_ids("decoder_input_ids", tgt)
        x = self.shared(tgt)
        if self.decoder_positions is not None:
            x = self.decoder_positions(x, 0 if cache is None else cache.length)
        x = self.dropout(x)
        out = self.decoder(
            x,
            memory,
            tgt_mask,
            memory_mask,
            is_causal=True,
            need_weights=need_weights,
            cache=cache,
        )
        if need_weights:
            hidden, self_weights, cross_weights = out
            return self.dropout(hidden), self_weights, cross_weights
        return self.dropout(out)

    def project(self, hidden: Tensor) -> Tensor:
        """Decoder states ``(..., D)`` -> logits ``(..., V)`` (scaled first, as configured)."""
        if self.config.scales_outputs:
            hidden = hidden * self.config.d_model**-0.5
        return self.lm_head(hidden)

    def new_cache(self, batch_size: int, max_len: int, *, like: Tensor) -> DecoderCache:
        """Decoder KV caches for up to ``max_len`` target positions."""
        return self.decoder.new_cache(batch_size, max_len, like=like)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        decoder_input_ids: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        output_attentions: bool = False,
    ) -> Seq2SeqOutput:
        """Teacher-forced logits ``(B, T, V)``.

        Args:
            input_ids: ``(B, S)`` source ids.
            attention_mask: ``(B, S)``, true at real tokens (default: not ``pad_id``).
            decoder_input_ids: ``(B, T)``; default ``shift_right(labels)``.
            decoder_attention_mask: ``(B, T)``, true at real target tokens
                (default: all; the decoder is causal either way).
            labels: ``(B, T)`` targets, ``-100`` ignored; gives the mean token loss.
            output_attentions: return encoder, decoder and cross-attention weights.
        """
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("give decoder_input_ids or labels (to shift right)")
            decoder_input_ids = shift_right(
                labels, self.config.decoder_start_id, self.config.pad_id
            )
        src_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        tgt_mask = (
            None
            if decoder_attention_mask is None
            else decoder_attention_mask.bool()[:, None, None, :]
        )
        if src_mask is None:
            self._check_ids("input_ids", input_ids)
            src_mask = create_padding_mask(input_ids, self.config.pad_id)
        out = Seq2SeqOutput(logits=torch.empty(0))
        if output_attentions:
            memory, out.encoder_attentions = self.encode(input_ids, src_mask, need_weights=True)
            hidden, out.attentions, out.cross_attentions = self.decode(
                decoder_input_ids, memory, tgt_mask, src_mask, need_weights=True
            )
        else:
            memory = self.encode(input_ids, src_mask)
            hidden = self.decode(decoder_input_ids, memory, tgt_mask, src_mask)
        out.encoder_last_hidden_state = memory
        out.logits = self.project(hidden)
        if labels is not None:
            out.loss = F.cross_entropy(
                upcast(out.logits.flatten(0, 1)), labels.flatten(), ignore_index=IGNORE_INDEX
            )
        return out
