"""ViT: the Vision Transformer (Dosovitskiy et al. 2021) for image classification.

Images become a sequence of patch tokens (:class:`attnkit.nn.PatchEmbedding`),
a learned class token is prepended, learned positions are added (resized
bicubically for other image sizes), a pre-LN encoder runs over them, and
the class token's final state, layer-normed, is classified.

Two options beyond Hugging Face's ViT, both off by default: ``stem_channels``
(the paper's hybrid input: a few convolutions before the patches) and
``classifier_pooling="mean"`` (classify the mean of the patch tokens, as
timm's ``global_pool="avg"``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.models._config import check_classifier_pooling, check_divisible, check_positive
from attnkit.models.outputs import ModelOutput, upcast
from attnkit.nn import (
    Dropout,
    MultiHeadAttention,
    PatchEmbedding,
    TransformerEncoderLayer,
    interpolate_grid_positions,
)

__all__ = ["ViT", "ViTConfig"]


@dataclass
class ViTConfig:
    """Hyper-parameters of :class:`ViT` (defaults: ViT-B/16 at 224 pixels).

    Attributes:
        image_size, patch_size, num_channels: input geometry (square images).
        d_model, num_heads, num_layers, d_ff: encoder sizes.
        dropout, attention_dropout: on residual branches / attention weights.
        activation: feed-forward activation (``"gelu"``).
        layer_norm_eps: 1e-12 as in Hugging Face's ViT.
        num_labels: classes.
        qkv_bias: biases in the attention projections (query, key, value, output).
        init_std: truncated-normal initialisation's standard deviation.
        stem_channels: widths of 3x3 convolutions (+ BatchNorm + ReLU) run at
            full resolution before the patches (see :class:`attnkit.nn.PatchEmbedding`);
            ``()`` is the plain ViT that Hugging Face checkpoints hold.
        classifier_pooling: what the classifier reads: ``"cls"`` (the class
            token, as ViT and Hugging Face) or ``"mean"`` (the mean of the patch tokens).

    Example:
        >>> from attnkit.models import ViTConfig
        >>> config = ViTConfig(image_size=32, patch_size=8, num_channels=3, num_labels=10)
        >>> (config.image_size // config.patch_size) ** 2  # tokens per image, besides [CLS]
        16
    """

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    d_model: int = 768
    num_heads: int = 12
    num_layers: int = 12
    d_ff: int = 3072
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    num_labels: int = 1000
    qkv_bias: bool = True
    init_std: float = 0.02
    stem_channels: tuple[int, ...] = ()
    classifier_pooling: str = "cls"

    def __post_init__(self) -> None:
        check_positive(self, "image_size", "patch_size", "num_channels", "d_model", "num_heads")
        self.stem_channels = tuple(self.stem_channels)
        if not all(
            isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in self.stem_channels
        ):
            raise ValueError(
                f"stem_channels must be positive integers (channel widths); "
                f"got {list(self.stem_channels)}"
            )
        check_classifier_pooling(self.classifier_pooling)
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size})"
            )
        check_divisible(self.d_model, self.num_heads)

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side

    def to_dict(self) -> dict:
        return asdict(self)


class ViT(nn.Module):
    """``pixel_values (B, C, H, W)`` -> :class:`ModelOutput` with ``logits (B, num_labels)``.

    Example:
        >>> import torch
        >>> from attnkit.models import ViT, ViTConfig
        >>> config = ViTConfig(image_size=28, patch_size=4, num_channels=1, d_model=32,
        ...                    num_heads=4, num_layers=2, d_ff=64, num_labels=10)
        >>> out = ViT(config)(torch.randn(2, 1, 28, 28), output_attentions=True)
        >>> tuple(out.logits.shape), tuple(out.attentions[0].shape)  # 49 patches + [CLS]
        ((2, 10), (2, 4, 50, 50))
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.patches = PatchEmbedding(
            config.patch_size, config.num_channels, config.d_model, config.stem_channels
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.d_model))
        num_positions = config.grid[0] * config.grid[1] + 1
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_positions, config.d_model))
        self.dropout = Dropout(config.dropout)
        self.layers = nn.ModuleList(_layer(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal weights, zero biases, unit norms (as the reference ViT)."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
        nn.init.trunc_normal_(self.position_embeddings, std=std)
        nn.init.trunc_normal_(self.cls_token, std=std)

    def embedding_parameter_names(self) -> tuple[str, ...]:
        """The learned tables held as bare parameters: class token and positions.

        ``attnkit.train`` treats them as embeddings (no weight decay unless
        ``decay_embeddings``), as it does the tables of embedding modules.
        """
        return ("cls_token", "position_embeddings")

    def positions(self, grid: tuple[int, int]) -> Tensor:
        """``(1, 1 + gh * gw, D)`` positions for a ``grid`` of patches (resized if needed)."""
        table = self.position_embeddings[0]
        patches = interpolate_grid_positions(table[1:], self.config.grid, grid)
        return torch.cat([table[:1], patches]).unsqueeze(0)

    def embed(self, pixel_values: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, 1 + N, D)``: class token + patches + positions."""
        tokens = self.patches(pixel_values)
        grid = self.patches.grid(*pixel_values.shape[-2:])
        cls = self.cls_token.expand(tokens.size(0), -1, -1)
        return self.dropout(torch.cat([cls, tokens], dim=1) + self.positions(grid))

    def forward(
        self,
        pixel_values: Tensor,
        *,
        labels: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        """Classify ``pixel_values (B, C, H, W)``; ``H``, ``W`` multiples of the patch size.

        Other sizes than ``image_size`` use bicubically resized positions.
        ``labels (B,)`` give the mean cross-entropy ``loss``. ``hidden_states``
        are the embeddings and each layer's output ``(B, 1 + N, D)``.
        """
        x = self.embed(pixel_values)
        hidden_states = [x] if output_hidden_states else None
        attentions: list[Tensor] | None = [] if output_attentions else None
        for layer in self.layers:
            if attentions is not None:
                x, weights = layer(x, need_weights=True)
                attentions.append(weights)
            else:
                x = layer(x)
            if hidden_states is not None:
                hidden_states.append(x)
        x = self.norm(x)
        pooled = x[:, 0] if self.config.classifier_pooling == "cls" else x[:, 1:].mean(dim=1)
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:1]:
                raise ValueError(
                    f"labels must have shape ({logits.size(0)},); got {tuple(labels.shape)}"
                )
            loss = F.cross_entropy(upcast(logits), labels)
        out = ModelOutput(logits, loss, attentions, hidden_states)
        out.extra = {"last_hidden_state": x}
        return out


def _layer(config: ViTConfig) -> TransformerEncoderLayer:
    attention = MultiHeadAttention(
        config.d_model, config.num_heads, config.attention_dropout, bias=config.qkv_bias
    )
    return TransformerEncoderLayer(
        config.d_model,
        config.num_heads,
        config.d_ff,
        config.dropout,
        config.activation,
        norm_first=True,
        layer_norm_eps=config.layer_norm_eps,
        self_attention=attention,
    )
