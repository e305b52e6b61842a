"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017).

``TransformerConfig`` describes it, ``build_transformer(config)`` builds it,
and ``Transformer(src_vocab_size, tgt_vocab_size, ...)`` takes the same
arguments directly, as ``torch.nn.Transformer`` users expect.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import Tensor, nn

from attnkit.functional import create_padding_mask, linear_cross_entropy
from attnkit.models._config import (
    check_attention,
    check_divisible,
    check_positional,
    check_positive,
)
from attnkit.nn import (
    DecoderCache,
    Dropout,
    MultiHeadAttention,
    PositionScheme,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    build_self_attention,
    make_norm,
    position_scheme,
)

__all__ = [
    "Transformer",
    "TransformerAttention",
    "TransformerConfig",
    "TransformerLoss",
    "build_transformer",
]


@dataclass
class TransformerConfig:
    """Hyper-parameters of :class:`Transformer` (defaults: the paper's base model).

    ``positional`` / ``position_options`` and ``attention`` / ``attention_options``
    select the positional scheme and the self-attention variant of both stacks
    (:func:`attnkit.nn.position_scheme`, :func:`attnkit.nn.build_self_attention`);
    cross-attention is always dense.

    Example:
        >>> from attnkit.models import Transformer, TransformerConfig
        >>> config = TransformerConfig(src_vocab_size=100, tgt_vocab_size=120, d_model=64,
        ...                            num_heads=4, norm_first=True, positional="rotary")
        >>> model = Transformer.from_config(config)
        >>> model.config.num_encoder_layers, model.output_projection.out_features
        (6, 120)
    """

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 512
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1
    attention_dropout: float | None = None
    max_len: int = 5000
    activation: str = "relu"
    norm_first: bool = False
    norm: str = "layernorm"
    layer_norm_eps: float = 1e-5
    positional: str = "sinusoidal"
    position_options: dict = field(default_factory=dict)
    attention: str = "dense"
    attention_options: dict = field(default_factory=dict)
    share_embeddings: bool = False
    tie_output: bool = True
    scale_embeddings: bool = True
    pad_id: int = 0

    def __post_init__(self) -> None:
        check_positive(
            self, "src_vocab_size", "tgt_vocab_size", "d_model", "num_heads", "d_ff", "max_len"
        )
        check_divisible(self.d_model, self.num_heads)
        check_positional(self.positional)
        check_attention(self)
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(
                "share_embeddings needs src_vocab_size == tgt_vocab_size; got "
                f"{self.src_vocab_size} and {self.tgt_vocab_size}"
            )
        if not 0 <= self.pad_id < min(self.src_vocab_size, self.tgt_vocab_size):
            raise ValueError(f"pad_id must be a valid token id; got {self.pad_id}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TransformerAttention:
    """Attention weights of every layer, each ``(B, H, Tq, Tk)``.

    Attributes:
        encoder_self: per encoder layer ``(B, H, S, S)``.
        decoder_self: per decoder layer ``(B, H, T, T)`` (causal: zero above the diagonal).
        cross: per decoder layer ``(B, H, T, S)``.

    Example:
        >>> import torch
        >>> from attnkit.models import Transformer, TransformerAttention
        >>> model = Transformer(vocab_size=100, d_model=32, num_heads=4, num_layers=2, d_ff=64)
        >>> src, tgt = torch.randint(3, 100, (2, 7)), torch.randint(3, 100, (2, 5))
        >>> _, attention = model.eval()(src, tgt, return_attention=True)
        >>> isinstance(attention, TransformerAttention), len(attention.encoder_self)
        (True, 2)
        >>> tuple(attention.decoder_self[0].shape), tuple(attention.cross[0].shape)
        ((2, 4, 5, 5), (2, 4, 5, 7))
        >>> torch.allclose(attention.cross[1].sum(-1), torch.ones(2, 4, 5))  # rows sum to 1
        True
    """

    encoder_self: list[Tensor] = field(default_factory=list)
    decoder_self: list[Tensor] = field(default_factory=list)
    cross: list[Tensor] = field(default_factory=list)


@dataclass
class TransformerLoss:
    """Teacher-forced loss of :class:`Transformer` called with ``labels``.

    Attributes:
        loss_sum: float32 scalar, the (label-smoothed) cross-entropy summed over
            the counted labels (divide by ``num_tokens`` for the mean).
        num_tokens: int64 scalar, the labels that are not ``ignore_index``.
        correct: int64 scalar, counted labels that score highest among the logits.

    Example:
        >>> import torch
        >>> from attnkit.models import Transformer, TransformerLoss
        >>> model = Transformer(vocab_size=20, d_model=16, num_heads=2, num_layers=1, d_ff=32)
        >>> src, tgt = torch.randint(3, 20, (2, 5)), torch.randint(3, 20, (2, 4))
        >>> labels = torch.tensor([[4, 5, 6, 0], [7, 8, 0, 0]])  # 0 = pad, not counted
        >>> out = model(src, tgt, labels=labels, label_smoothing=0.1)
        >>> isinstance(out, TransformerLoss), out.num_tokens.item(), out.loss_sum.shape
        (True, 5, torch.Size([]))
    """

    loss_sum: Tensor
    num_tokens: Tensor
    correct: Tensor


def _self_attention(config: TransformerConfig, scheme: PositionScheme) -> MultiHeadAttention:
    dropout = config.dropout if config.attention_dropout is None else config.attention_dropout
    return build_self_attention(
        config.attention,
        config.d_model,
        config.num_heads,
        dropout,
        scheme=scheme,
        options=config.attention_options,
    )


def _layer_options(config: TransformerConfig) -> dict:
    return {
        "norm": config.norm,
        "layer_norm_eps": config.layer_norm_eps,
        "attention_dropout": config.attention_dropout,
    }


def _encoder(config: TransformerConfig, scheme: PositionScheme) -> TransformerEncoder:
    layers = [
        TransformerEncoderLayer(
            config.d_model,
            config.num_heads,
            config.d_ff,
            config.dropout,
            config.activation,
            config.norm_first,
            self_attention=_self_attention(config, scheme),
            **_layer_options(config),
        )
        for _ in range(config.num_encoder_layers)
    ]
    return TransformerEncoder(layers, norm=_final_norm(config))


def _decoder(config: TransformerConfig, scheme: PositionScheme) -> TransformerDecoder:
    layers = [
        TransformerDecoderLayer(
            config.d_model,
            config.num_heads,
            config.d_ff,
            config.dropout,
            config.activation,
            config.norm_first,
            self_attention=_self_attention(config, scheme),
            **_layer_options(config),
        )
        for _ in range(config.num_decoder_layers)
    ]
    return TransformerDecoder(layers, norm=_final_norm(config))


def _scheme(config: TransformerConfig, *, causal: bool) -> PositionScheme:
    return position_scheme(
        config.positional,
        d_model=config.d_model,
        num_heads=config.num_heads,
        head_dim=config.d_model // config.num_heads,
        max_len=config.max_len,
        causal=causal,
        options=config.position_options,
    )


class _EmbeddingPositions(nn.Module):
    """The absolute table of a scheme (if any) added to embeddings, then dropout."""

    def __init__(self, absolute: nn.Module | None, dropout: float) -> None:
        super().__init__()
        self.absolute = absolute
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        if self.absolute is not None:
            x = self.absolute(x, offset)
        return self.dropout(x)


def _final_norm(config: TransformerConfig) -> nn.Module | None:
    """Pre-LN stacks end with a norm; the paper's post-LN stacks already do."""
    return (
        make_norm(config.norm, config.d_model, config.layer_norm_eps) if config.norm_first else None
    )


def _check_mask(name: str, mask: Tensor, full: tuple[int, int, int, int]) -> None:
    """Raise unless ``mask`` is bool and broadcasts to ``full`` ``(B, 1, Tq, Tk)``."""
    try:
        fits = torch.broadcast_shapes(mask.shape, full) == torch.Size(full)
    except RuntimeError:
        fits = False
    if mask.dtype != torch.bool or not fits:
        raise ValueError(
            f"{name} must be bool, True where attention may go, broadcastable to "
            f"(B, 1, Tq, Tk) = {full} (key padding: (B, 1, 1, Tk), i.e. mask[:, None, None, :] "
            f"of a (B, Tk) one); got {mask.dtype} {tuple(mask.shape)}"
        )


def _arguments_beside_config(**values: object) -> list[str]:
    """Names of :class:`Transformer` arguments given other than their defaults."""
    parameters = inspect.signature(Transformer.__init__).parameters
    return [name for name, value in values.items() if value != parameters[name].default]


class Transformer(nn.Module):
    """Encoder-decoder Transformer with token embeddings and an output projection.

    Args:
        src_vocab_size, tgt_vocab_size: vocabulary sizes (or ``vocab_size`` for both).
        d_model, num_heads, d_ff, dropout, max_len: as in the paper.
        num_encoder_layers, num_decoder_layers: stack depths (or ``num_layers`` for both).
        **options: any other :class:`TransformerConfig` field, e.g. ``norm_first``,
            ``activation``, ``positional``, ``share_embeddings``, ``tie_output``,
            ``scale_embeddings``, ``pad_id``.

    The decoder self-attention is always causal; ``tgt_mask`` adds to it.

    Example:
        >>> import torch
        >>> from attnkit.models import Transformer
        >>> model = Transformer(vocab_size=100, d_model=32, num_heads=4, num_layers=2, d_ff=64)
        >>> src, tgt = torch.randint(3, 100, (2, 7)), torch.randint(3, 100, (2, 5))
        >>> logits, attention = model(src, tgt, return_attention=True)
        >>> tuple(logits.shape), tuple(attention.cross[-1].shape)  # cross: (B, H, T, S)
        ((2, 5, 100), (2, 4, 5, 7))
    """

    def __init__(
        self,
        src_vocab_size: int | None = None,
        tgt_vocab_size: int | None = None,
        d_model: int = 512,
        num_heads: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        d_ff: int = 2048,
        dropout: float = 0.1,
        max_len: int = 5000,
        *,
        vocab_size: int | None = None,
        num_layers: int | None = None,
        config: TransformerConfig | None = None,
        **options,
    ) -> None:
        super().__init__()
        if config is not None:
            beside = _arguments_beside_config(
                src_vocab_size=src_vocab_size,
                tgt_vocab_size=tgt_vocab_size,
                d_model=d_model,
                num_heads=num_heads,
                num_encoder_layers=num_encoder_layers,
                num_decoder_layers=num_decoder_layers,
                d_ff=d_ff,
                dropout=dropout,
                max_len=max_len,
                vocab_size=vocab_size,
                num_layers=num_layers,
            )
            if beside or options:
                raise TypeError(
                    "Transformer(config=...) takes no other settings (change the config "
                    f"instead); got {beside + sorted(options)}"
                )
        else:
            unknown = set(options) - {f.name for f in fields(TransformerConfig)}
            if unknown:
                raise TypeError(f"Transformer got unknown option(s): {sorted(unknown)}")
            src_vocab_size = src_vocab_size or vocab_size
            tgt_vocab_size = tgt_vocab_size or vocab_size or src_vocab_size
            if src_vocab_size is None or tgt_vocab_size is None:
                raise ValueError("give src_vocab_size and tgt_vocab_size, or vocab_size")
            config = TransformerConfig(
                src_vocab_size=src_vocab_size,
                tgt_vocab_size=tgt_vocab_size,
                d_model=d_model,
                num_heads=num_heads,
                num_encoder_layers=num_layers or num_encoder_layers,
                num_decoder_layers=num_layers or num_decoder_layers,
                d_ff=d_ff,
                dropout=dropout,
                max_len=max_len,
                **options,
            )
        self.config = config
        self.src_embedding = nn.Embedding(config.src_vocab_size, config.d_model, config.pad_id)
        self.tgt_embedding = (
            self.src_embedding
            if config.share_embeddings
            else nn.Embedding(config.tgt_vocab_size, config.d_model, config.pad_id)
        )
        src_scheme = _scheme(config, causal=False)
        tgt_scheme = _scheme(config, causal=True)
        self.src_positions = _EmbeddingPositions(src_scheme.absolute, config.dropout)
        self.tgt_positions = _EmbeddingPositions(tgt_scheme.absolute, config.dropout)
        self.encoder = _encoder(config, src_scheme)
        self.decoder = _decoder(config, tgt_scheme)
        self.output_projection = nn.Linear(config.d_model, config.tgt_vocab_size, bias=False)
        self._embedding_scale = math.sqrt(config.d_model) if config.scale_embeddings else 1.0
        self._reset_parameters()

    @classmethod
    def from_config(cls, config: TransformerConfig) -> Transformer:
        return cls(config=config)

    def _reset_parameters(self) -> None:
        """Xavier-uniform matrices (as torch.nn.Transformer); N(0, d^-1/2) embeddings."""
        for name, param in self.named_parameters():
            if "embedding" in name:
                nn.init.normal_(param, std=self.config.d_model**-0.5)
            elif param.dim() > 1:
                nn.init.xavier_uniform_(param)
        for embedding in (self.src_embedding, self.tgt_embedding):
            embedding.weight.data[self.config.pad_id].zero_()
        if self.config.tie_output:
            self.output_projection.weight = self.tgt_embedding.weight

    def _check_tokens(self, name: str, tokens: Tensor, vocab_size: int) -> None:
        if tokens.dim() != 2 or tokens.dtype.is_floating_point:
            raise ValueError(
                f"{name} must be integer token ids of shape (B, T); got {tuple(tokens.shape)} "
                f"{tokens.dtype}"
            )
        if torch.compiler.is_compiling():
            return  # data-dependent checks would split the compiled graph
        if tokens.numel() and bool(((tokens < 0) | (tokens >= vocab_size)).any()):
            raise ValueError(
                f"{name} ids must be in [0, {vocab_size}); got range "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )

    def encode(
        self, src: Tensor, src_mask: Tensor | None = None, *, need_weights: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """``src (B, S)`` -> memory ``(B, S, D)``; masks padding unless ``src_mask`` is given.

        ``src_mask`` is bool, True where attention may go, broadcastable to
        ``(B, 1, S, S)``: key padding is ``(B, 1, 1, S)`` (``mask[:, None, None, :]`` of
        a ``(B, S)`` one); a 2-D mask is ``(S, S)``, as torch's ``src_mask``.
        """
        self._check_tokens("src", src, self.config.src_vocab_size)
        if src_mask is None:
            src_mask = create_padding_mask(src, self.config.pad_id)
        else:
            _check_mask("src_mask", src_mask, (src.size(0), 1, src.size(1), src.size(1)))
        x = self.src_positions(self.src_embedding(src) * self._embedding_scale)
        return self.encoder(x, src_mask, need_weights=need_weights)

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
        """Decoder hidden states ``(B, T, D)`` for ``tgt (B, T)`` given ``memory (B, S, D)``.

        Self-attention is causal. Without a cache and ``tgt_mask``, target
        padding is masked. Masks broadcast as in :meth:`encode`: ``tgt_mask`` to
        ``(B, 1, T, T)``, ``memory_mask`` to ``(B, 1, T, S)`` (source padding:
        ``(B, 1, 1, S)``). With a cache the ``T`` tokens continue the cached prefix
        (their positions start at ``cache.length``).
        """
        self._check_tokens("tgt", tgt, self.config.tgt_vocab_size)
        if tgt_mask is None and cache is None:
            tgt_mask = create_padding_mask(tgt, self.config.pad_id)
        if memory_mask is not None:
            _check_mask("memory_mask", memory_mask, (tgt.size(0), 1, tgt.size(1), memory.size(1)))
        offset = 0 if cache is None else cache.length
        x = self.tgt_positions(self.tgt_embedding(tgt) * self._embedding_scale, offset)
        return self.decoder(
            x,
            memory,
            tgt_mask,
            memory_mask,
            is_causal=True,
            need_weights=need_weights,
            cache=cache,
        )

    def project(self, hidden: Tensor) -> Tensor:
        """Decoder hidden states ``(..., D)`` -> logits ``(..., tgt_vocab_size)``."""
        return self.output_projection(hidden)

    def new_cache(self, batch_size: int, max_len: int, *, like: Tensor) -> DecoderCache:
        """Decoder KV caches for up to ``max_len`` target positions."""
        return self.decoder.new_cache(batch_size, max_len, like=like)

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
        *,
        return_attention: bool = False,
        labels: Tensor | None = None,
        label_smoothing: float = 0.0,
        ignore_index: int | None = None,
    ) -> Tensor | tuple[Tensor, TransformerAttention] | TransformerLoss:
        """Teacher-forced logits ``(B, T, tgt_vocab_size)`` for ``src (B, S)``, ``tgt (B, T)``.

        ``src_mask`` (as in :meth:`encode`; key padding ``(B, 1, 1, S)``, True =
        real token) defaults to the source padding mask and also masks
        cross-attention; ``tgt_mask`` as in :meth:`decode`. With ``return_attention`` also
        returns every layer's weights per head.

        With ``labels (B, T)`` returns a :class:`TransformerLoss` instead: the
        cross-entropy of the logits against the labels (``ignore_index``,
        default ``pad_id``, left out; ``label_smoothing`` as in
        ``F.cross_entropy``), computed by
        :func:`attnkit.functional.linear_cross_entropy` a chunk of rows at a
        time, so the ``(B, T, V)`` logits are never held.
        """
        if src_mask is None:  # encode() validates src
            src_mask = create_padding_mask(src, self.config.pad_id)
        if labels is not None:
            if return_attention:
                raise ValueError("return_attention cannot be combined with labels")
            memory = self.encode(src, src_mask)
            hidden = self.decode(tgt, memory, tgt_mask, src_mask)
            return self._loss(hidden, labels, label_smoothing, ignore_index)
        if not return_attention:
            memory = self.encode(src, src_mask)
            return self.project(self.decode(tgt, memory, tgt_mask, src_mask))
        memory, encoder_weights = self.encode(src, src_mask, need_weights=True)
        hidden, self_weights, cross_weights = self.decode(
            tgt, memory, tgt_mask, src_mask, need_weights=True
        )
        attention = TransformerAttention(encoder_weights, self_weights, cross_weights)
        return self.project(hidden), attention

    def _loss(
        self, hidden: Tensor, labels: Tensor, smoothing: float, ignore_index: int | None
    ) -> TransformerLoss:
        """Summed cross-entropy of ``project(hidden)`` against ``labels``, logits never held."""
        if labels.shape != hidden.shape[:-1]:
            raise ValueError(
                f"labels must be (B, T) = {tuple(hidden.shape[:-1])}; got {tuple(labels.shape)}"
            )
        ignore = self.config.pad_id if ignore_index is None else ignore_index
        flat_labels = labels.reshape(-1)
        loss_sum, correct = linear_cross_entropy(
            hidden.reshape(-1, hidden.size(-1)),
            self.output_projection.weight,
            flat_labels,
            ignore_index=ignore,
            label_smoothing=smoothing,
            reduction="sum",
        )
        return TransformerLoss(loss_sum, (flat_labels != ignore).sum(), correct)


def build_transformer(config: TransformerConfig) -> Transformer:
    """Build a :class:`Transformer` from its config.

    Example:
        >>> from attnkit.models import TransformerConfig, build_transformer
        >>> config = TransformerConfig(100, 100, d_model=32, num_heads=4, num_decoder_layers=2)
        >>> model = build_transformer(config)
        >>> len(model.encoder.layers), len(model.decoder.layers)
        (6, 2)
    """
    return Transformer.from_config(config)
