"""Bidirectional LSTMs with attention: the "attentive BiLSTM" sentence classifier and a
BiLSTM + self-attention token tagger.

* :class:`BiLSTMAttentionClassifier` (in the spirit of Zhou et al. 2016 and Yang et al.
  2016): embeddings -> BiLSTM -> attention pooling, where a learned query vector scores
  every BiLSTM state with additive (Bahdanau) attention -> a linear classifier.
* :class:`BiLSTMAttentionTagger`: embeddings -> BiLSTM -> multi-head self-attention over
  the BiLSTM states -> per-token logits from each state and its attention context.

Both read right-padded ``input_ids (B, T)`` with a bool ``attention_mask (B, T)`` (True =
real token). The BiLSTM runs on packed sequences, so padding never reaches a real
token's state, and attention gives padded tokens exactly zero weight: a padded batch
gives the same outputs as each sentence alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnkit.models._config import check_positive
from attnkit.models.outputs import ModelOutput, upcast
from attnkit.nn import BahdanauAttention, MultiHeadAttention

__all__ = [
    "IGNORE_INDEX",
    "BiLSTMAttentionClassifier",
    "BiLSTMAttentionTagger",
    "BiLSTMConfig",
    "BiLSTMEncoder",
]

IGNORE_INDEX = -100  # tagger labels with this value (and padded positions) carry no loss


@dataclass
class BiLSTMConfig:
    """Hyper-parameters of the BiLSTM models.

    Attributes:
        vocab_size: number of token ids; ``pad_id`` its padding id (a zero embedding).
        embed_dim: word embedding size (embeddings start random: nothing is downloaded).
        hidden_size: LSTM state size per direction; the BiLSTM outputs ``2 * hidden_size``.
        num_layers: stacked BiLSTM layers.
        num_labels: classes (sentence classes, or tags for the tagger).
        attention_dim: the additive scorer's tanh size (default ``2 * hidden_size``).
        num_heads: heads of the tagger's self-attention (must divide ``2 * hidden_size``).
        dropout: on the BiLSTM outputs, between BiLSTM layers and before the classifier.
        embedding_dropout: on the word embeddings.
        attention_dropout: on the tagger's self-attention weights.

    Example:
        >>> from attnkit.models import BiLSTMConfig
        >>> config = BiLSTMConfig(vocab_size=20, embed_dim=8, hidden_size=4, num_labels=3)
        >>> config.output_size, config.to_dict()["num_labels"]
        (8, 3)
    """

    vocab_size: int
    embed_dim: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    num_labels: int = 2
    attention_dim: int | None = None
    num_heads: int = 1
    dropout: float = 0.3
    embedding_dropout: float = 0.2
    attention_dropout: float = 0.0
    pad_id: int = 0

    def __post_init__(self) -> None:
        check_positive(self, "vocab_size", "embed_dim", "hidden_size", "num_layers")
        check_positive(self, "num_labels", "num_heads")
        if self.attention_dim is not None and self.attention_dim < 1:
            raise ValueError(f"attention_dim must be >= 1 or None; got {self.attention_dim}")
        for name in ("dropout", "embedding_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1); got {getattr(self, name)}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad_id must be in [0, {self.vocab_size}); got {self.pad_id}")
        if self.output_size % self.num_heads:
            raise ValueError(
                f"2 * hidden_size ({self.output_size}) must be divisible by num_heads "
                f"({self.num_heads})"
            )

    @property
    def output_size(self) -> int:
        """Width of a BiLSTM state: both directions concatenated."""
        return 2 * self.hidden_size

    def to_dict(self) -> dict:
        return asdict(self)


def _checked_mask(input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """A right-padded bool ``(B, T)`` mask with a real token in every row (all True if None)."""
    if input_ids.dim() != 2 or input_ids.size(1) == 0:
        raise ValueError(f"input_ids must have shape (B, T) with T >= 1; got {input_ids.shape}")
    if input_ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"input_ids must be int32 or int64; got {input_ids.dtype}")
    if attention_mask is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask.dtype != torch.bool:
        raise ValueError(
            f"attention_mask must be bool (True = real token); got {attention_mask.dtype}"
        )
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}; "
            f"got {tuple(attention_mask.shape)}"
        )
    lengths = attention_mask.sum(1)
    if bool((lengths == 0).any()):
        raise ValueError("every sequence needs at least one real token; got an empty row")
    positions = torch.arange(input_ids.size(1), device=input_ids.device)
    if not torch.equal(attention_mask, positions[None, :] < lengths[:, None]):
        raise ValueError("attention_mask must be right-padded: each row True then False")
    return attention_mask


class BiLSTMEncoder(nn.Module):
    """Embeddings and a (packed) bidirectional LSTM.

    ``input_ids (B, T)`` and a right-padded ``mask (B, T)`` -> states ``(B, T, 2 * hidden)``,
    exactly zero at padded positions.

    Example:
        >>> import torch
        >>> from attnkit.models import BiLSTMConfig, BiLSTMEncoder
        >>> encoder = BiLSTMEncoder(BiLSTMConfig(vocab_size=20, embed_dim=8, hidden_size=4)).eval()
        >>> mask = torch.tensor([[True, True, True], [True, True, False]])
        >>> states = encoder(torch.tensor([[3, 4, 5], [6, 7, 0]]), mask)
        >>> tuple(states.shape), states[1, 2].abs().sum().item()  # padding stays zero
        ((2, 3, 8), 0.0)
    """

    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, config.pad_id)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.lstm = nn.LSTM(
            config.embed_dim,
            config.hidden_size,
            config.num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.output_dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: Tensor, mask: Tensor) -> Tensor:
        """States of every position; ``mask`` as checked by the models (right-padded)."""
        too_big = input_ids >= self.config.vocab_size
        if bool((too_big | (input_ids < 0)).any()):
            raise ValueError(
                f"input_ids must be in [0, {self.config.vocab_size}); got values from "
                f"{int(input_ids.min())} to {int(input_ids.max())}"
            )
        x = self.embedding_dropout(self.embedding(input_ids))
        # Packing runs each direction over the real tokens only: the backward LSTM of a
        # short sentence starts at its own last token, not at the padding.
        lengths = mask.sum(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=input_ids.size(1))
        return self.output_dropout(states)


class BiLSTMAttentionClassifier(nn.Module):
    """Sentence classifier: BiLSTM states pooled by additive attention with a learned query.

    ``input_ids (B, T)``, ``attention_mask (B, T)`` -> :class:`ModelOutput` with
    ``logits (B, num_labels)``, ``loss`` (mean cross-entropy) when ``labels (B,)`` are
    given, ``attentions = [pooling weights (B, 1, 1, T)]`` (one head, one query, in the
    library's ``(B, H, Tq, Tk)`` layout; they are computed anyway, so always returned)
    and ``extra = {"pooling_weights": (B, T), "pooled": (B, 2 * hidden)}``.

    Example:
        >>> import torch
        >>> from attnkit.models import BiLSTMAttentionClassifier, BiLSTMConfig
        >>> config = BiLSTMConfig(vocab_size=20, embed_dim=8, hidden_size=4, num_labels=3)
        >>> mask = torch.tensor([[True, True, True], [True, False, False]])
        >>> out = BiLSTMAttentionClassifier(config)(torch.tensor([[3, 4, 5], [6, 0, 0]]), mask)
        >>> pooling = out.extra["pooling_weights"]  # (B, T)
        >>> tuple(out.logits.shape), pooling[1, 1:].tolist()
        ((2, 3), [0.0, 0.0])
    """

    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__()
        self.config = config
        width = config.output_size
        self.encoder = BiLSTMEncoder(config)
        self.query = nn.Parameter(torch.empty(width))
        self.pooling = BahdanauAttention(width, width, config.attention_dim or width)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(width, config.num_labels)
        nn.init.normal_(self.query, std=width**-0.5)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        labels: Tensor | None = None,
    ) -> ModelOutput:
        """Classify each sentence of ``input_ids (B, T)`` (mask default: no padding)."""
        mask = _checked_mask(input_ids, attention_mask)
        states = self.encoder(input_ids, mask)
        query = self.query.to(states.dtype).expand(states.size(0), -1)
        pooled, weights = self.pooling(query, states, mask=mask)  # (B, 2H), (B, T)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            _check_labels(labels, (logits.size(0),), self.config.num_labels, ignore=False)
            loss = F.cross_entropy(upcast(logits), labels)
        extra = {"pooling_weights": weights, "pooled": pooled}
        return ModelOutput(logits, loss, [weights[:, None, None, :]], extra=extra)


class BiLSTMAttentionTagger(nn.Module):
    """Token tagger: BiLSTM states, multi-head self-attention over them (padding masked),
    and per-token logits from ``[state; attention context]``.

    ``input_ids (B, T)``, ``attention_mask (B, T)`` -> :class:`ModelOutput` with
    ``logits (B, T, num_labels)`` and, when ``labels (B, T)`` are given, the mean
    cross-entropy over real tokens whose label is not ``-100``. With
    ``output_attentions=True``, ``attentions = [(B, H, T, T)]`` (padded keys get 0).

    Example:
        >>> import torch
        >>> from attnkit.models import BiLSTMAttentionTagger, BiLSTMConfig
        >>> config = BiLSTMConfig(vocab_size=20, embed_dim=8, hidden_size=4, num_labels=5)
        >>> out = BiLSTMAttentionTagger(config)(torch.tensor([[3, 4, 5]]), output_attentions=True)
        >>> tuple(out.logits.shape), tuple(out.attentions[0].shape)
        ((1, 3, 5), (1, 1, 3, 3))
    """

    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__()
        self.config = config
        width = config.output_size
        self.encoder = BiLSTMEncoder(config)
        self.attention = MultiHeadAttention(width, config.num_heads, config.attention_dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(2 * width, config.num_labels)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        labels: Tensor | None = None,
        output_attentions: bool = False,
    ) -> ModelOutput:
        """Tag every token of ``input_ids (B, T)`` (mask default: no padding)."""
        mask = _checked_mask(input_ids, attention_mask)
        states = self.encoder(input_ids, mask)
        # Keys are masked; padded queries still see real keys (no empty row), and their
        # logits are ignored by the loss.
        context, weights = self.attention(
            states, states, states, mask[:, None, None, :], need_weights=output_attentions
        )
        features = self.dropout(torch.cat([states, context], dim=-1))
        logits = self.classifier(features)
        loss = None
        if labels is not None:
            _check_labels(labels, tuple(input_ids.shape), self.config.num_labels, ignore=True)
            loss = _token_loss(logits, labels.masked_fill(~mask, IGNORE_INDEX))
        attentions = [weights] if output_attentions else None
        return ModelOutput(logits, loss, attentions, extra={"states": states})


def _check_labels(labels: Tensor, shape: tuple[int, ...], num_labels: int, ignore: bool) -> None:
    """Labels of the expected shape, integer, in ``[0, num_labels)`` (or -100 if ``ignore``)."""
    if tuple(labels.shape) != shape:
        raise ValueError(f"labels must have shape {shape}; got {tuple(labels.shape)}")
    if labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64 class ids; got {labels.dtype}")
    valid = (labels >= 0) & (labels < num_labels)
    if ignore:
        valid |= labels == IGNORE_INDEX
    if not bool(valid.all()):
        allowed = f"[0, {num_labels})" + (f" or {IGNORE_INDEX}" if ignore else "")
        raise ValueError(f"labels must be in {allowed}; got {labels[~valid][0].item()}")


def _token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over labelled tokens; 0 (not NaN) when none is labelled."""
    total = F.cross_entropy(
        upcast(logits).flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)
