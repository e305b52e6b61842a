"""Multimodal fusion with cross-attention: a question attends to image patches.

Image: :class:`attnkit.nn.PatchEmbedding` patches plus learned positions, then
``image_layers`` pre-LN Transformer encoder layers. Text: word embeddings plus
learned positions, then ``text_layers`` encoder layers (padding masked).
Fusion: ``fusion_layers`` blocks in which the text tokens self-attend, then
*cross-attend to the image patches* (:class:`attnkit.nn.MultiHeadAttention`
inside a :class:`attnkit.nn.TransformerDecoderLayer`, without a causal mask),
then a feed-forward. With ``bidirectional`` each block but the last also lets
the patches cross-attend to the text tokens (co-attention, in parallel: both
directions read the other modality's previous states; the last block's updated
patches would have no reader, since the classifier reads the text). The real text tokens are
mean-pooled, layer-normed and classified (``num_answers`` logits: no / yes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.models._config import check_divisible, check_positive
from attnkit.models.outputs import ModelOutput, upcast
from attnkit.nn import PatchEmbedding, TransformerDecoderLayer, TransformerEncoderLayer

__all__ = ["CrossAttentionFusion", "FusionConfig", "build_fusion"]


@dataclass
class FusionConfig:
    """Hyper-parameters of :class:`CrossAttentionFusion`.

    Attributes:
        vocab_size: question vocabulary; ``pad_id`` its padding id.
        image_size, patch_size, num_channels: input geometry (square images; the
            model accepts exactly ``image_size``, its patch positions are learned).
        d_model, num_heads, d_ff, dropout: sizes shared by every layer.
        image_layers, text_layers: unimodal encoder layers (0 allowed).
        fusion_layers: text-to-image cross-attention blocks (>= 1).
        bidirectional: patches also cross-attend to the text in every fusion block
            but the last (so it needs ``fusion_layers >= 2``).
        max_question_len: longest question (learned text positions).
        num_answers: output classes (2: no / yes).

    Example:
        >>> from attnkit.models import FusionConfig
        >>> config = FusionConfig(vocab_size=30, image_size=8, patch_size=4, d_model=16)
        >>> config.num_patches, config.num_answers
        (4, 2)
    """

    vocab_size: int
    image_size: int = 28
    patch_size: int = 4
    num_channels: int = 1
    d_model: int = 64
    num_heads: int = 4
    d_ff: int = 128
    dropout: float = 0.1
    image_layers: int = 2
    text_layers: int = 1
    fusion_layers: int = 2
    bidirectional: bool = False
    max_question_len: int = 16
    num_answers: int = 2
    pad_id: int = 0

    def __post_init__(self) -> None:
        check_positive(self, "vocab_size", "image_size", "patch_size", "num_channels")
        check_positive(self, "d_model", "num_heads", "d_ff", "fusion_layers")
        check_positive(self, "max_question_len", "num_answers")
        check_divisible(self.d_model, self.num_heads)
        if self.bidirectional and self.fusion_layers < 2:
            raise ValueError(
                "bidirectional needs fusion_layers >= 2 (the patches attend to the text "
                f"before the last block, which the classifier reads); got {self.fusion_layers}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size})"
            )
        if min(self.image_layers, self.text_layers) < 0:
            raise ValueError(
                f"image_layers and text_layers must be >= 0; got {self.image_layers}, "
                f"{self.text_layers}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad_id must be in [0, {self.vocab_size}); got {self.pad_id}")

    @property
    def num_patches(self) -> int:
        """``N``: image tokens."""
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict:
        return asdict(self)


class CrossAttentionFusion(nn.Module):
    """``(pixel_values, input_ids)`` -> answer logits (see the module docstring).

    ``forward`` returns a :class:`ModelOutput`: ``logits (B, num_answers)``,
    ``loss`` with ``labels``, ``attentions`` the text-to-image cross-attention
    weights of every fusion block ``(B, H, T, N)`` when asked for, and
    ``extra["image_to_text"]`` ``(fusion_layers - 1, B, H, N, T)`` when bidirectional.

    Example:
        >>> import torch
        >>> from attnkit.models import CrossAttentionFusion, FusionConfig
        >>> config = FusionConfig(vocab_size=30, image_size=8, patch_size=4, d_model=16, d_ff=32)
        >>> model = CrossAttentionFusion(config)
        >>> out = model(torch.rand(2, 1, 8, 8), torch.tensor([[3, 4, 5], [6, 7, 0]]))
        >>> tuple(out.logits.shape)
        (2, 2)
    """

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.patches = PatchEmbedding(config.patch_size, config.num_channels, d)
        self.image_positions = nn.Parameter(torch.randn(1, config.num_patches, d) * 0.02)
        self.embedding = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_id)
        self.text_positions = nn.Parameter(torch.randn(1, config.max_question_len, d) * 0.02)
        self.image_encoder = nn.ModuleList(
            _encoder_layer(config) for _ in range(config.image_layers)
        )
        self.text_encoder = nn.ModuleList(_encoder_layer(config) for _ in range(config.text_layers))
        self.text_to_image = nn.ModuleList(
            _fusion_layer(config) for _ in range(config.fusion_layers)
        )
        self.image_to_text = (
            nn.ModuleList(_fusion_layer(config) for _ in range(config.fusion_layers - 1))
            if config.bidirectional
            else None
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.num_answers)

    # ------------------------------------------------------------------ checks

    def _check(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> None:
        config = self.config
        expected = (config.num_channels, config.image_size, config.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must have shape (B, {', '.join(map(str, expected))}) (the "
                f"model's num_channels and image_size); got {tuple(pixel_values.shape)}"
            )
        batch = pixel_values.size(0)
        if input_ids.dim() != 2 or input_ids.size(0) != batch:
            raise ValueError(
                f"input_ids must have shape ({batch}, T); got {tuple(input_ids.shape)}"
            )
        if not 1 <= input_ids.size(1) <= config.max_question_len:
            raise ValueError(
                f"questions must have 1 to max_question_len = {config.max_question_len} "
                f"tokens; got {input_ids.size(1)}"
            )
        if bool(((input_ids < 0) | (input_ids >= config.vocab_size)).any()):
            raise ValueError(f"input_ids must lie in [0, {config.vocab_size}) (the vocabulary)")
        if attention_mask.shape != input_ids.shape or attention_mask.dtype != torch.bool:
            raise ValueError(
                f"attention_mask must be bool {tuple(input_ids.shape)} (True = real token); "
                f"got {attention_mask.dtype} {tuple(attention_mask.shape)}"
            )
        if not bool(attention_mask.any(dim=1).all()):
            raise ValueError("every question needs at least one real token; got an empty one")

    # ------------------------------------------------------------------ parts

    def encode_image(self, pixel_values: Tensor) -> Tensor:
        """``(B, C, S, S)`` -> patch states ``(B, N, D)``."""
        x = self.patches(pixel_values) + self.image_positions
        for layer in self.image_encoder:
            x = layer(x)
        return x

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``(B, T)`` ids -> token states ``(B, T, D)`` (padding masked as keys)."""
        x = self.embedding(input_ids) + self.text_positions[:, : input_ids.size(1)]
        keys = attention_mask[:, None, None, :]
        for layer in self.text_encoder:
            x = layer(x, keys)
        return x

    def forward(
        self,
        pixel_values: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        labels: Tensor | None = None,
        output_attentions: bool = False,
    ) -> ModelOutput:
        """Answer questions ``input_ids (B, T)`` about ``pixel_values (B, C, S, S)``.

        ``attention_mask (B, T)`` is True at real tokens (default: ``input_ids !=
        pad_id``); ``labels (B,)`` answer ids give the mean cross-entropy ``loss``.
        """
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_id
        self._check(pixel_values, input_ids, attention_mask)
        image = self.encode_image(pixel_values)
        text = self.encode_text(input_ids, attention_mask)
        text_keys = attention_mask[:, None, None, :]
        weights = output_attentions or self.image_to_text is not None
        to_image, to_text = [], []
        for index, layer in enumerate(self.text_to_image):
            new_text = layer(text, image, text_keys, None, need_weights=weights)
            if weights:
                new_text, (_, cross) = new_text
                to_image.append(cross)
            if self.image_to_text is not None and index < len(self.image_to_text):
                image, (_, back) = self.image_to_text[index](
                    image, text, None, text_keys, need_weights=True
                )
                to_text.append(back)
            text = new_text
        logits = self.head(_masked_mean(self.norm(text), attention_mask))
        output = ModelOutput(logits, attentions=to_image if output_attentions else None)
        if to_text and output_attentions:
            output.extra = {"image_to_text": torch.stack(to_text)}
        if labels is not None:
            if labels.shape != logits.shape[:1]:
                raise ValueError(
                    f"labels must have shape ({logits.size(0)},); got {tuple(labels.shape)}"
                )
            output.loss = F.cross_entropy(upcast(logits), labels)
        return output


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x (B, T, D)`` over the positions where ``mask (B, T)`` is True."""
    weights = mask.to(x.dtype)[..., None]
    return (x * weights).sum(dim=1) / weights.sum(dim=1)


def _encoder_layer(config: FusionConfig) -> TransformerEncoderLayer:
    return TransformerEncoderLayer(
        config.d_model, config.num_heads, config.d_ff, config.dropout, "gelu", norm_first=True
    )


def _fusion_layer(config: FusionConfig) -> TransformerDecoderLayer:
    """Self-attention, cross-attention (queries: this modality; keys: the other), feed-forward."""
    return TransformerDecoderLayer(
        config.d_model, config.num_heads, config.d_ff, config.dropout, "gelu", norm_first=True
    )


def build_fusion(config: FusionConfig) -> CrossAttentionFusion:
    """The model of ``config`` (the builder every model family has).

    Example:
        >>> import torch
        >>> from attnkit.models import FusionConfig, build_fusion
        >>> model = build_fusion(FusionConfig(vocab_size=30, image_size=8, d_model=16, d_ff=32))
        >>> out = model(torch.rand(1, 1, 8, 8), torch.tensor([[3, 4]]), output_attentions=True)
        >>> tuple(out.attentions[0].shape)  # (B, H, T, N): text queries over 2 x 2 patches
        (1, 4, 2, 4)
    """
    return CrossAttentionFusion(config)
