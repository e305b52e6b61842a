"""Show, Attend and Tell (Xu et al. 2015): a CNN feature grid and an attentive LSTM decoder.

Encoder: a small CNN turns an image ``(B, C, S, S)`` into a grid of ``L = g * g``
feature vectors ``a (B, L, Df)`` (row-major cells), optionally plus a learned
embedding per cell. The paper's VGG features carry position implicitly (their
receptive fields reach the borders); a small CNN's do not, and the decoder must
tell quadrants apart, hence the learned cell positions (``learned_positions``).

Decoder, at every step ``t`` (the paper's soft attention):

* ``alpha_t = softmax_i(v^T tanh(W_h h_{t-1} + W_a a_i))`` by
  :class:`attnkit.nn.BahdanauAttention` (the key projection ``W_a a`` is
  computed once per image);
* gate ``beta_t = sigmoid(f_beta(h_{t-1}))`` scales the context:
  ``z_t = beta_t * sum_i alpha_ti a_i`` (paper section 4.2.1);
* ``h_t, c_t = LSTM([E y_{t-1}; z_t], (h_{t-1}, c_{t-1}))``, with ``h_0, c_0``
  linear maps of the mean feature (``tanh`` for ``h_0``);
* deep output (paper eq. 7): ``logits_t = L_o(E y_{t-1} + L_h h_t + L_z z_t)``.

Loss: mean cross-entropy over the non-pad targets plus the doubly stochastic
regulariser ``lambda * sum_i (1 - sum_t alpha_ti)^2`` (eq. 14; averaged over the
batch, the sum over ``t`` taken over the non-pad steps), which asks the decoder
to look at every part of the image over the whole caption.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.models._config import check_positive
from attnkit.models.outputs import ModelOutput, upcast
from attnkit.nn import BahdanauAttention

__all__ = [
    "CaptionState",
    "CaptionStep",
    "CaptioningConfig",
    "ShowAttendTell",
    "build_show_attend_tell",
    "doubly_stochastic_penalty",
]


@dataclass
class CaptioningConfig:
    """Hyper-parameters of :class:`ShowAttendTell`.

    Attributes:
        vocab_size: output and embedding vocabulary.
        image_size, in_channels: input geometry (square images ``S x S``); the
            model only accepts exactly this size (the cell positions are learned).
        channels: output channels of the conv blocks (3x3 conv, batch norm, ReLU).
        num_pools: a 2x2 max-pool follows each of the first ``num_pools`` blocks, so
            the feature grid is ``g = image_size / 2 ** num_pools`` cells a side;
            ``Df = channels[-1]``.
        embed_dim, hidden_dim, attention_dim: word embedding, LSTM and additive
            attention sizes.
        dropout: before the output layer.
        attention_penalty: ``lambda`` of the doubly stochastic regulariser (0 turns it off).
        gate: use the ``beta`` gate (off: ``beta = 1``).
        learned_positions: add a learned embedding to every grid cell.
        pad_id: padding id of inputs and targets (ignored by the loss).

    Example:
        >>> from attnkit.models import CaptioningConfig
        >>> config = CaptioningConfig(vocab_size=50, image_size=32, num_pools=2)
        >>> config.image_size // 2**config.num_pools, config.channels[-1]  # grid side, Df
        (8, 64)
    """

    vocab_size: int
    image_size: int = 56
    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 64)
    num_pools: int = 2
    embed_dim: int = 64
    hidden_dim: int = 128
    attention_dim: int = 64
    dropout: float = 0.1
    attention_penalty: float = 1.0
    gate: bool = True
    learned_positions: bool = True
    pad_id: int = 0

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        sizes = ("vocab_size", "image_size", "in_channels", "embed_dim", "hidden_dim")
        check_positive(self, *sizes, "attention_dim")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(
                f"channels must be a non-empty list of sizes >= 1; got {self.channels}"
            )
        if not 0 <= self.num_pools <= len(self.channels):
            raise ValueError(
                f"num_pools must be in [0, len(channels) = {len(self.channels)}]; "
                f"got {self.num_pools}"
            )
        stride = 2**self.num_pools
        if self.image_size % stride:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of 2 ** num_pools = {stride}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.attention_penalty < 0:
            raise ValueError(f"attention_penalty must be >= 0; got {self.attention_penalty}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad_id must be in [0, {self.vocab_size}); got {self.pad_id}")

    @property
    def grid_size(self) -> int:
        """``g``: cells per side of the feature grid."""
        return self.image_size // 2**self.num_pools

    @property
    def num_cells(self) -> int:
        """``L = g * g``: positions attended over."""
        return self.grid_size**2

    def to_dict(self) -> dict:
        return {**asdict(self), "channels": list(self.channels)}


def doubly_stochastic_penalty(alphas: Tensor, step_mask: Tensor | None = None) -> Tensor:
    """``sum_i (1 - sum_t alpha_ti)^2`` per image (Xu et al. 2015, eq. 14).

    Args:
        alphas: ``(B, T, L)`` attention weights of ``T`` steps over ``L`` cells.
        step_mask: bool ``(B, T)``, True at the steps that count (real targets).

    Returns:
        ``(B,)`` penalties.
    """
    if alphas.dim() != 3:
        raise ValueError(f"alphas must have shape (B, T, L); got {tuple(alphas.shape)}")
    if step_mask is not None:
        if step_mask.shape != alphas.shape[:2] or step_mask.dtype != torch.bool:
            raise ValueError(
                f"step_mask must be bool (B, T) = {tuple(alphas.shape[:2])}; got "
                f"{step_mask.dtype} {tuple(step_mask.shape)}"
            )
        alphas = alphas * step_mask[..., None].to(alphas.dtype)
    return (1.0 - alphas.sum(dim=1)).pow(2).sum(dim=-1)


@dataclass
class CaptionState:
    """Decoder state between steps (rows = images or beams).

    Attributes:
        features: ``(N, L, Df)`` the feature grid; ``keys``: ``(N, L, A)`` its
            projection by the attention (computed once).
        hidden, cell: ``(N, H)`` the LSTM state.
    """

    features: Tensor
    keys: Tensor
    hidden: Tensor
    cell: Tensor

    def index_select(self, indices: Tensor) -> CaptionState:
        """The state of rows ``indices (N',)`` (beam expansion and reordering)."""
        return CaptionState(
            *(
                t.index_select(0, indices)
                for t in (self.features, self.keys, self.hidden, self.cell)
            )
        )


class CaptionStep(NamedTuple):
    """One decoder step: ``logits (N, V)``, ``attention (N, L)``, ``gate (N,)``, next state."""

    logits: Tensor
    attention: Tensor
    gate: Tensor
    state: CaptionState


class _ConvEncoder(nn.Module):
    """``(B, C, S, S)`` -> ``(B, g * g, Df)``: conv blocks, a 2x2 pool after the first few."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], num_pools: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for index, width in enumerate(channels):
            layers += [
                nn.Conv2d(previous, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
            if index < num_pools:
                layers.append(nn.MaxPool2d(2))
            previous = width
        self.layers = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images).flatten(2).transpose(1, 2)


class ShowAttendTell(nn.Module):
    """Image captioner with soft visual attention (see the module docstring).

    ``forward(pixel_values, input_ids, labels=)`` is teacher-forced;
    ``start`` and ``step`` decode one token at a time
    (:class:`attnkit.generation.captioning.CaptioningAdapter` runs greedy and beam
    search on them).

    Example:
        >>> import torch
        >>> from attnkit.models import CaptioningConfig, ShowAttendTell
        >>> model = ShowAttendTell(CaptioningConfig(vocab_size=50, image_size=56, hidden_dim=32))
        >>> words = torch.randint(4, 50, (2, 6))
        >>> out = model(torch.randn(2, 1, 56, 56), words, labels=words)
        >>> tuple(out.logits.shape), out.loss.dim()
        ((2, 6, 50), 0)
    """

    def __init__(self, config: CaptioningConfig) -> None:
        super().__init__()
        self.config = config
        features = config.channels[-1]
        self.encoder = _ConvEncoder(config.in_channels, config.channels, config.num_pools)
        self.positions = (
            nn.Parameter(torch.randn(1, config.num_cells, features) * 0.02)
            if config.learned_positions
            else None
        )
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        self.attention = BahdanauAttention(config.hidden_dim, features, config.attention_dim)
        self.init_hidden = nn.Linear(features, config.hidden_dim)
        self.init_cell = nn.Linear(features, config.hidden_dim)
        self.gate = nn.Linear(config.hidden_dim, 1) if config.gate else None
        self.lstm = nn.LSTMCell(config.embed_dim + features, config.hidden_dim)
        self.out_hidden = nn.Linear(config.hidden_dim, config.embed_dim)
        self.out_context = nn.Linear(features, config.embed_dim, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.embed_dim, config.vocab_size)

    # ------------------------------------------------------------------ checks

    def _check_images(self, pixel_values: Tensor) -> None:
        config = self.config
        expected = (config.in_channels, config.image_size, config.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must have shape (B, {', '.join(map(str, expected))}) (the "
                f"model's in_channels and image_size); got {tuple(pixel_values.shape)}"
            )
        if not pixel_values.is_floating_point():
            raise ValueError(f"pixel_values must be floating point; got {pixel_values.dtype}")

    def _check_ids(self, name: str, ids: Tensor, batch: int) -> None:
        if ids.dim() != 2 or ids.size(0) != batch or ids.size(1) < 1:
            raise ValueError(
                f"{name} must have shape ({batch}, T) with T >= 1; got {tuple(ids.shape)}"
            )
        if ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{name} must hold integer ids; got {ids.dtype}")
        vocab = self.config.vocab_size
        if bool(((ids < 0) | (ids >= vocab)).any()):
            raise ValueError(
                f"{name} must lie in [0, {vocab}) (the vocabulary); got "
                f"min {int(ids.min())}, max {int(ids.max())}"
            )

    # ------------------------------------------------------------------ encoder / decoder

    def encode(self, pixel_values: Tensor) -> Tensor:
        """``(B, C, S, S)`` -> the feature grid ``(B, L, Df)``."""
        self._check_images(pixel_values)
        features = self.encoder(pixel_values)
        return features if self.positions is None else features + self.positions

    def start(self, pixel_values: Tensor) -> CaptionState:
        """Encode the images and initialise the LSTM from the mean feature."""
        features = self.encode(pixel_values)
        mean = features.mean(dim=1)
        return CaptionState(
            features,
            self.attention.project_keys(features),
            torch.tanh(self.init_hidden(mean)),
            self.init_cell(mean),
        )

    def step(self, state: CaptionState, tokens: Tensor) -> CaptionStep:
        """Read ``tokens (N,)`` (the previous words); score the next word."""
        embedded = self.embedding(tokens)
        context, alpha = self.attention(state.hidden, state.features, projected_keys=state.keys)
        if self.gate is None:
            beta = torch.ones_like(alpha[:, :1])
        else:
            beta = torch.sigmoid(self.gate(state.hidden))
        z = beta * context
        hidden, cell = self.lstm(torch.cat([embedded, z], dim=-1), (state.hidden, state.cell))
        deep = embedded + self.out_hidden(hidden) + self.out_context(z)
        logits = self.output(self.dropout(deep))
        next_state = CaptionState(state.features, state.keys, hidden, cell)
        return CaptionStep(logits, alpha, beta.squeeze(-1), next_state)

    def forward(
        self, pixel_values: Tensor, input_ids: Tensor, *, labels: Tensor | None = None
    ) -> ModelOutput:
        """Teacher-forced decoding.

        Args:
            pixel_values: ``(B, C, S, S)`` float images (``S`` = ``image_size``).
            input_ids: ``(B, T)`` decoder inputs (``<bos>`` then the caption).
            labels: ``(B, T)`` targets (the caption then ``<eos>``; ``pad_id`` ignored).

        Returns:
            :class:`ModelOutput` with ``logits (B, T, V)``; ``loss`` (cross-entropy +
            the regulariser) when ``labels`` are given; ``attentions`` one tensor
            ``(B, 1, T, L)`` (one "layer" and "head"); ``extra``: ``alphas (B, T, L)``
            (each row sums to 1 over the grid), ``gates (B, T)`` and, with labels,
            ``cross_entropy`` and ``attention_penalty`` (batch mean, before ``lambda``).
        """
        self._check_images(pixel_values)
        batch = pixel_values.size(0)
        self._check_ids("input_ids", input_ids, batch)
        if labels is not None:
            self._check_ids("labels", labels, batch)
            if labels.shape != input_ids.shape:
                raise ValueError(
                    f"labels must have input_ids' shape {tuple(input_ids.shape)}; "
                    f"got {tuple(labels.shape)}"
                )
        state = self.start(pixel_values)
        logits, alphas, gates = [], [], []
        for t in range(input_ids.size(1)):
            out = self.step(state, input_ids[:, t])
            logits.append(out.logits)
            alphas.append(out.attention)
            gates.append(out.gate)
            state = out.state
        output = ModelOutput(torch.stack(logits, dim=1))
        alpha = torch.stack(alphas, dim=1)
        output.attentions = [alpha[:, None]]
        output.extra = {"alphas": alpha, "gates": torch.stack(gates, dim=1)}
        if labels is not None:
            self._add_loss(output, alpha, labels)
        return output

    def _add_loss(self, output: ModelOutput, alphas: Tensor, labels: Tensor) -> None:
        """Mean cross-entropy over real targets + ``lambda`` * mean doubly stochastic penalty."""
        real = labels != self.config.pad_id
        if not bool(real.any()):
            raise ValueError("labels hold no real (non-pad) target; cannot compute a loss")
        logits = upcast(output.logits)
        cross_entropy = F.cross_entropy(
            logits.flatten(0, 1), labels.flatten(), ignore_index=self.config.pad_id
        )
        penalty = doubly_stochastic_penalty(upcast(alphas), real).mean()
        output.loss = cross_entropy + self.config.attention_penalty * penalty
        assert output.extra is not None
        output.extra.update(cross_entropy=cross_entropy, attention_penalty=penalty)


def build_show_attend_tell(config: CaptioningConfig) -> ShowAttendTell:
    """The model of ``config`` (the builder every model family has).

    Example:
        >>> import torch
        >>> from attnkit.models import CaptioningConfig, build_show_attend_tell
        >>> model = build_show_attend_tell(CaptioningConfig(vocab_size=20, image_size=16))
        >>> words = torch.randint(4, 20, (2, 5))
        >>> tuple(model(torch.randn(2, 1, 16, 16), words).logits.shape)
        (2, 5, 20)
    """
    return ShowAttendTell(config)
