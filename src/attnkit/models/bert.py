"""BERT: a bidirectional Transformer encoder (Devlin et al. 2019) and its task heads.

``BertModel`` is the encoder: word + position + token-type embeddings summed
and layer-normed, a post-LN :class:`attnkit.nn.TransformerEncoder` and a tanh
pooler over the first (``[CLS]``) token. The heads follow Hugging Face's
names so that checkpoints and habits carry over:

- :class:`BertForMaskedLM` — masked-LM head tied to the word embeddings;
- :class:`BertForPreTraining` — masked LM + next-sentence prediction;
- :class:`BertForSequenceClassification` — pooled ``[CLS]`` -> labels
  (regression when ``num_labels == 1``);
- :class:`BertForTokenClassification` — one label per token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.models._config import (
    check_attention,
    check_classifier_pooling,
    check_divisible,
    check_positional,
    check_positive,
)
from attnkit.models.outputs import ModelOutput, upcast
from attnkit.nn import (
    Dropout,
    FeedForward,
    PositionScheme,
    TransformerEncoderLayer,
    build_self_attention,
    position_scheme,
)
from attnkit.nn.layers.feedforward import ACTIVATIONS

__all__ = [
    "BertConfig",
    "BertEmbeddings",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "EncoderOutput",
]

IGNORE_INDEX = -100


@dataclass
class BertConfig:
    """Hyper-parameters of BERT (defaults: BERT-base, uncased vocabulary).

    Attributes:
        vocab_size, max_len, type_vocab_size: word, position and segment tables.
        d_model, num_heads, num_layers, d_ff: encoder sizes.
        dropout: on embeddings and residual branches; ``attention_dropout``
            on attention weights.
        activation: feed-forward activation (``"gelu"``, exact, as BERT).
        layer_norm_eps: 1e-12 as in BERT.
        pad_id: padding token id (the attention mask default).
        num_labels: outputs of the classification heads.
        classifier_dropout: dropout before classification heads (default ``dropout``).
        classifier_pooling: what the sequence classifier reads: ``"cls"`` (BERT's
            pooler over ``[CLS]``) or ``"mean"`` (the mean of the real tokens' final
            states, the readout sentence-embedding checkpoints are trained with).
        init_std: standard deviation of the normal initialisation.
        tie_embeddings: the masked-LM decoder shares the word embedding matrix
            (BERT's layout; ``False`` gives the decoder its own matrix).
        positional: ``"learned"`` (BERT's own table) or any other scheme of
            :func:`attnkit.nn.position_scheme` (bidirectional); ``position_options``
            its settings.
        attention, attention_options: the self-attention variant
            (``"dense"`` or ``"sliding_window"`` with ``window``; see
            :func:`attnkit.nn.build_self_attention`).

    Example:
        >>> from attnkit.models import BertConfig, BertModel
        >>> config = BertConfig(vocab_size=1000, d_model=64, num_heads=4, num_layers=2, d_ff=128)
        >>> config.max_len, config.layer_norm_eps, len(BertModel(config).layers)
        (512, 1e-12, 2)
    """

    vocab_size: int = 30522
    max_len: int = 512
    type_vocab_size: int = 2
    d_model: int = 768
    num_heads: int = 12
    num_layers: int = 12
    d_ff: int = 3072
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    pad_id: int = 0
    num_labels: int = 2
    classifier_dropout: float | None = None
    classifier_pooling: str = "cls"
    init_std: float = 0.02
    tie_embeddings: bool = True
    positional: str = "learned"
    position_options: dict = field(default_factory=dict)
    attention: str = "dense"
    attention_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_positional(self.positional)
        check_attention(self)
        check_positive(self, "vocab_size", "max_len", "d_model", "num_heads", "num_layers", "d_ff")
        check_divisible(self.d_model, self.num_heads)
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be >= 1; got {self.num_labels}")
        check_classifier_pooling(self.classifier_pooling)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EncoderOutput:
    """What :class:`BertModel` returns.

    Attributes:
        last_hidden_state: ``(B, T, D)``.
        pooled: ``(B, D)``, ``tanh(W h_[CLS] + b)``; ``None`` without a pooler.
        hidden_states: embeddings and each layer's output, when asked for.
        attentions: per layer ``(B, H, T, T)``, when asked for.

    Example:
        >>> import torch
        >>> from attnkit.models import EncoderOutput
        >>> out = EncoderOutput(last_hidden_state=torch.zeros(2, 5, 8), pooled=None)
        >>> tuple(out.last_hidden_state.shape), out.attentions is None
        ((2, 5, 8), True)
    """

    last_hidden_state: Tensor
    pooled: Tensor | None
    hidden_states: list[Tensor] | None = None
    attentions: list[Tensor] | None = None


class BertEmbeddings(nn.Module):
    """``LayerNorm(word + position + token_type)`` then dropout: ``(B, T)`` -> ``(B, T, D)``.

    ``absolute`` replaces BERT's learned position table by another absolute
    scheme; with rotary / bias schemes there is no position term here at all.
    """

    def __init__(self, config: BertConfig, absolute: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.word = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_id)
        learned = config.positional == "learned"
        self.position = nn.Embedding(config.max_len, config.d_model) if learned else None
        self.absolute = absolute
        self.token_type = nn.Embedding(config.type_vocab_size, config.d_model)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        length = input_ids.size(1)
        if length > self.config.max_len:
            raise ValueError(f"sequence of {length} tokens exceeds max_len={self.config.max_len}")
        x = self.word(input_ids)
        if self.position is not None:
            x = x + self.position(torch.arange(length, device=input_ids.device))
        elif self.absolute is not None:
            x = self.absolute(x)
        if token_type_ids is None:
            x = x + self.token_type.weight[0]
        else:
            x = x + self.token_type(token_type_ids)
        return self.dropout(self.norm(x))


def _check_inputs(
    input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None
) -> None:
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids)
        raise ValueError(f"input_ids must have shape (B, T); got {shape}")
    if input_ids.is_floating_point():
        raise ValueError(f"input_ids must be integer token ids; got {input_ids.dtype}")
    for name, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if tensor is not None and tensor.shape != input_ids.shape:
            raise ValueError(
                f"{name} must have the shape of input_ids {tuple(input_ids.shape)}; "
                f"got {tuple(tensor.shape)}"
            )


class BertModel(nn.Module):
    """The BERT encoder with its pooler. ``input_ids (B, T)`` -> :class:`EncoderOutput`.

    ``pooler=False`` leaves the pooler out (``pooled`` is then ``None``), as the
    masked-LM and token-classification models do.

    Example:
        >>> import torch
        >>> from attnkit.models import BertConfig, BertModel
        >>> config = BertConfig(vocab_size=100, d_model=32, num_heads=4, num_layers=2, d_ff=64)
        >>> ids = torch.tensor([[2, 15, 16, 3, 0]])  # the last position is padding
        >>> out = BertModel(config)(ids, ids != 0, output_attentions=True)
        >>> tuple(out.last_hidden_state.shape), tuple(out.pooled.shape), len(out.attentions)
        ((1, 5, 32), (1, 32), 2)
    """

    def __init__(self, config: BertConfig, *, pooler: bool = True) -> None:
        super().__init__()
        self.config = config
        scheme = _scheme(config)
        self.embeddings = BertEmbeddings(config, scheme.absolute)
        self.layers = nn.ModuleList(_layer(config, scheme) for _ in range(config.num_layers))
        self.pooler = nn.Linear(config.d_model, config.d_model) if pooler else None
        self.apply(lambda module: _init(module, config.init_std))

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        *,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> EncoderOutput:
        """Encode ``input_ids (B, T)``.

        Args:
            attention_mask: ``(B, T)`` bool or 0/1, true at real tokens (default:
                every token that is not ``pad_id``).
            token_type_ids: ``(B, T)`` segment ids (default 0).
            output_attentions: return per-layer weights ``(B, H, T, T)``.
            output_hidden_states: return the embeddings and each layer's output.
        """
        _check_inputs(input_ids, attention_mask, token_type_ids)
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_id
        mask = attention_mask.bool()[:, None, None, :]
        x = self.embeddings(input_ids, token_type_ids)
        hidden_states = [x] if output_hidden_states else None
        attentions: list[Tensor] | None = [] if output_attentions else None
        for layer in self.layers:
            if attentions is not None:
                x, weights = layer(x, mask, need_weights=True)
                attentions.append(weights)
            else:
                x = layer(x, mask)
            if hidden_states is not None:
                hidden_states.append(x)
        pooled = None if self.pooler is None else torch.tanh(self.pooler(x[:, 0]))
        return EncoderOutput(x, pooled, hidden_states, attentions)


def _scheme(config: BertConfig) -> PositionScheme:
    """The bidirectional scheme (BERT's own learned table needs none from the factory)."""
    kind = "none" if config.positional == "learned" else config.positional
    return position_scheme(
        kind,
        d_model=config.d_model,
        num_heads=config.num_heads,
        head_dim=config.d_model // config.num_heads,
        max_len=config.max_len,
        causal=False,
        options=config.position_options,
    )


def _layer(config: BertConfig, scheme: PositionScheme) -> TransformerEncoderLayer:
    attention = build_self_attention(
        config.attention,
        config.d_model,
        config.num_heads,
        config.attention_dropout,
        scheme=scheme,
        options=config.attention_options,
    )
    return TransformerEncoderLayer(
        config.d_model,
        config.num_heads,
        config.d_ff,
        config.dropout,
        config.activation,
        norm_first=False,
        layer_norm_eps=config.layer_norm_eps,
        self_attention=attention,
        # BERT drops out only the residual branch, not the hidden activations.
        feed_forward=FeedForward(config.d_model, config.d_ff, 0.0, config.activation),
    )


def _init(module: nn.Module, std: float) -> None:
    """BERT's initialisation: N(0, std) weights, zero biases, unit norms."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=std)
        if module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class MaskedLMHead(nn.Module):
    """``decoder(LayerNorm(gelu(dense(h)))) + bias``; the decoder is the word embedding
    matrix unless ``config.tie_embeddings`` is false."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.activation = ACTIVATIONS[config.activation][0]
        self.decoder = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.decoder.weight = word_embeddings.weight
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: Tensor) -> Tensor:
        """``(B, T, D)`` -> ``(B, T, V)``."""
        h = self.norm(self.activation(self.dense(hidden)))
        return self.decoder(h) + self.bias


def _token_loss(logits: Tensor, labels: Tensor | None) -> Tensor | None:
    """Mean cross-entropy over positions whose label is not ``-100``."""
    if labels is None:
        return None
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must have shape {tuple(logits.shape[:-1])}; got {tuple(labels.shape)}"
        )
    return F.cross_entropy(
        upcast(logits.flatten(0, -2)), labels.flatten(), ignore_index=IGNORE_INDEX
    )


class _BertWithHead(nn.Module):
    """A :class:`BertModel` (``self.bert``) plus a task head."""

    uses_pooler = True

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config, pooler=self.wants_pooler(config))

    @classmethod
    def wants_pooler(cls, config: BertConfig) -> bool:
        """Whether this head reads BERT's pooler (its weights are then loaded and trained)."""
        return cls.uses_pooler


class BertForMaskedLM(_BertWithHead):
    """BERT with the masked-LM head: ``logits (B, T, V)``; loss where ``labels != -100``.

    Example:
        >>> import torch
        >>> from attnkit.models import BertConfig, BertForMaskedLM
        >>> config = BertConfig(vocab_size=100, d_model=32, num_heads=4, num_layers=2, d_ff=64)
        >>> ids = torch.tensor([[2, 15, 4, 17, 3]])  # id 4 stands for [MASK] here
        >>> labels = torch.tensor([[-100, -100, 16, -100, -100]])  # predict position 2 only
        >>> out = BertForMaskedLM(config)(ids, labels=labels)
        >>> tuple(out.logits.shape), out.loss.dim()
        ((1, 5, 100), 0)
    """

    uses_pooler = False

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.mlm = MaskedLMHead(config, self.bert.embeddings.word)
        _init(self.mlm.dense, config.init_std)
        if not config.tie_embeddings:
            _init(self.mlm.decoder, config.init_std)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, *, labels=None, **kwargs
    ) -> ModelOutput:
        encoded = self.bert(input_ids, attention_mask, **kwargs)
        logits = self.mlm(encoded.last_hidden_state)
        return ModelOutput(
            logits, _token_loss(logits, labels), encoded.attentions, encoded.hidden_states
        )


class BertForPreTraining(BertForMaskedLM):
    """Masked LM + next-sentence prediction; ``extra["nsp_logits"] (B, 2)``.

    The loss is the MLM loss plus the NSP cross-entropy when both
    ``labels`` and ``next_sentence_label (B,)`` are given (as in the paper).

    Example:
        >>> import torch
        >>> from attnkit.models import BertConfig, BertForPreTraining
        >>> config = BertConfig(vocab_size=100, d_model=32, num_heads=4, num_layers=2, d_ff=64)
        >>> ids = torch.tensor([[2, 15, 4, 3, 17, 18, 3]])  # 2: CLS, 3: SEP, 4: MASK
        >>> types = torch.tensor([[0, 0, 0, 0, 1, 1, 1]])  # sentence A, then sentence B
        >>> labels = torch.tensor([[-100, -100, 16, -100, -100, -100, -100]])
        >>> out = BertForPreTraining(config)(ids, token_type_ids=types, labels=labels,
        ...                                  next_sentence_label=torch.tensor([0]))
        >>> tuple(out.logits.shape), tuple(out.extra["nsp_logits"].shape), out.loss.dim()
        ((1, 7, 100), (1, 2), 0)
    """

    uses_pooler = True

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.nsp = nn.Linear(config.d_model, 2)
        _init(self.nsp, config.init_std)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        labels: Tensor | None = None,
        next_sentence_label: Tensor | None = None,
        **kwargs,
    ) -> ModelOutput:
        encoded = self.bert(input_ids, attention_mask, **kwargs)
        logits = self.mlm(encoded.last_hidden_state)
        nsp_logits = self.nsp(encoded.pooled)
        loss = _token_loss(logits, labels)
        if loss is not None and next_sentence_label is not None:
            loss = loss + F.cross_entropy(upcast(nsp_logits), next_sentence_label.view(-1))
        out = ModelOutput(logits, loss, encoded.attentions, encoded.hidden_states)
        out.extra = {"nsp_logits": nsp_logits}
        return out


class BertForSequenceClassification(_BertWithHead):
    """``dropout(pooled) -> Linear(D, num_labels)``: ``logits (B, num_labels)``.

    ``pooled`` is BERT's pooler over ``[CLS]`` or, with
    ``config.classifier_pooling="mean"``, the mean of the real tokens' states
    (no pooler is built then).

    Loss: cross-entropy over ``labels (B,)``, or mean squared error when
    ``num_labels == 1`` (regression), as Hugging Face does.

    Example:
        >>> import torch
        >>> from attnkit.models import BertConfig, BertForSequenceClassification
        >>> config = BertConfig(vocab_size=100, d_model=32, num_heads=4, num_layers=2, d_ff=64,
        ...                     num_labels=3)
        >>> ids = torch.randint(4, 100, (2, 6))
        >>> out = BertForSequenceClassification(config)(ids, labels=torch.tensor([0, 2]))
        >>> tuple(out.logits.shape), out.loss.dim()
        ((2, 3), 0)
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        dropout = config.dropout if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = Dropout(dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        _init(self.classifier, config.init_std)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, *, labels=None, **kwargs
    ) -> ModelOutput:
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_id
        encoded = self.bert(input_ids, attention_mask, **kwargs)
        logits = self.classifier(self.dropout(self._sentence_vector(encoded, attention_mask)))
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                if labels.numel() != logits.size(0):
                    raise ValueError(
                        f"regression labels must be ({logits.size(0)},) or "
                        f"({logits.size(0)}, 1); got {tuple(labels.shape)}"
                    )
                target = labels.reshape(-1).to(upcast(logits).dtype)
                loss = F.mse_loss(upcast(logits.squeeze(-1)), target)
            else:
                loss = F.cross_entropy(upcast(logits), labels.view(-1))
        return ModelOutput(logits, loss, encoded.attentions, encoded.hidden_states)

    @classmethod
    def wants_pooler(cls, config: BertConfig) -> bool:
        return config.classifier_pooling == "cls"

    def _sentence_vector(self, encoded: EncoderOutput, attention_mask: Tensor) -> Tensor:
        """``(B, D)``: the pooled ``[CLS]`` state, or the mean over real tokens."""
        if self.config.classifier_pooling == "cls":
            return encoded.pooled
        states = encoded.last_hidden_state
        weights = attention_mask.to(states.dtype).unsqueeze(-1)  # (B, T, 1)
        # clamp: a row without real tokens gives zeros, not 0/0
        return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class BertForTokenClassification(_BertWithHead):
    """``dropout(h) -> Linear(D, num_labels)`` per token: ``logits (B, T, num_labels)``.

    The loss is the cross-entropy over ``labels (B, T)`` where they are not ``-100``.

    Example:
        >>> import torch
        >>> from attnkit.models import BertConfig, BertForTokenClassification
        >>> config = BertConfig(vocab_size=100, d_model=32, num_heads=4, num_layers=2, d_ff=64,
        ...                     num_labels=5)
        >>> ids = torch.tensor([[2, 15, 16, 17, 3, 0]])  # CLS, three words, SEP, padding
        >>> tags = torch.tensor([[-100, 1, 2, 0, -100, -100]])  # specials and padding ignored
        >>> out = BertForTokenClassification(config)(ids, ids != 0, labels=tags)
        >>> tuple(out.logits.shape), out.loss.dim()
        ((1, 6, 5), 0)
    """

    uses_pooler = False

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        dropout = config.dropout if config.classifier_dropout is None else config.classifier_dropout
        self.dropout = Dropout(dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        _init(self.classifier, config.init_std)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, *, labels=None, **kwargs
    ) -> ModelOutput:
        encoded = self.bert(input_ids, attention_mask, **kwargs)
        logits = self.classifier(self.dropout(encoded.last_hidden_state))
        return ModelOutput(
            logits, _token_loss(logits, labels), encoded.attentions, encoded.hidden_states
        )
