"""An attention Q-network: a DQN's value function that reads an observation as tokens.

Each of the ``obs_dim`` components of a (vector) observation becomes a token
``(value / scale_i) * w_i + e_i``: a learned value direction and a learned component
embedding per component, so the network knows which component it reads. A small pre-LN
Transformer encoder (:class:`attnkit.nn.TransformerEncoderLayer`) lets the components
attend to one another; the token states are pooled and an MLP head gives one Q-value per
action.

Pooling: ``"flatten"`` (default) concatenates the component states, ``"mean"`` averages
them, ``"cls"`` reads a learned ``[CLS]`` token prepended to the components. Why
flatten and no final LayerNorm by default: a LayerNorm over a token ``v * w + e``
keeps little of the magnitude of ``v``, and Q-values need it; the pre-LN residual stream
keeps it, and the head reads that stream directly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from attnkit.models._config import check_divisible, check_positive
from attnkit.models.outputs import ModelOutput
from attnkit.nn import TransformerEncoderLayer

__all__ = ["POOLINGS", "AttentionQNetwork", "AttentionQNetworkConfig"]

POOLINGS = ("cls", "mean", "flatten")


@dataclass
class AttentionQNetworkConfig:
    """Hyper-parameters of :class:`AttentionQNetwork` (defaults: CartPole-sized).

    Attributes:
        obs_dim: observation components (tokens); ``num_actions``: Q-values out.
        d_model, num_heads, num_layers, d_ff: encoder sizes.
        dropout: in the encoder (0 for value learning: targets are noisy enough).
        pooling: ``"flatten"`` (component states concatenated), ``"mean"`` (averaged) or
            ``"cls"`` (a learned token's final state).
        final_norm: a LayerNorm on the encoder output before pooling.
        head_hidden: width of the Q head's hidden layer (0: a single linear layer).
        obs_scale: per-component divisors applied first (observations of very different
            ranges, e.g. CartPole's angle ~0.2 and velocities ~2, made comparable); None: 1.

    Example:
        >>> from attnkit.models import AttentionQNetworkConfig
        >>> config = AttentionQNetworkConfig(obs_dim=4, num_actions=2, d_model=16, pooling="mean")
        >>> config.d_model // config.num_heads, config.pooling
        (8, 'mean')
    """

    obs_dim: int = 4
    num_actions: int = 2
    d_model: int = 32
    num_heads: int = 2
    num_layers: int = 1
    d_ff: int = 64
    dropout: float = 0.0
    pooling: Literal["cls", "mean", "flatten"] = "flatten"
    final_norm: bool = False
    head_hidden: int = 64
    obs_scale: list[float] | None = None

    def __post_init__(self) -> None:
        check_positive(self, "obs_dim", "num_actions", "d_model", "num_heads", "num_layers")
        check_positive(self, "d_ff")
        check_divisible(self.d_model, self.num_heads)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {self.pooling!r}")
        if self.head_hidden < 0:
            raise ValueError(f"head_hidden must be >= 0; got {self.head_hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.obs_scale is not None:
            self.obs_scale = [float(s) for s in self.obs_scale]
            if len(self.obs_scale) != self.obs_dim or min(self.obs_scale) <= 0:
                raise ValueError(
                    f"obs_scale must hold obs_dim={self.obs_dim} positive numbers; "
                    f"got {self.obs_scale}"
                )

    def to_dict(self) -> dict:
        return asdict(self)


class AttentionQNetwork(nn.Module):
    """``obs (B, obs_dim)`` -> :class:`ModelOutput` with ``logits`` = Q-values ``(B, A)``.

    With ``output_attentions=True``, ``attentions`` holds each layer's weights
    ``(B, H, S, S)`` over the ``S`` tokens (``[CLS]`` first when ``pooling="cls"``, then
    the components in observation order); each row sums to 1.

    Example:
        >>> import torch
        >>> from attnkit.models import AttentionQNetwork, AttentionQNetworkConfig
        >>> net = AttentionQNetwork(AttentionQNetworkConfig(obs_dim=4, num_actions=2, d_model=16))
        >>> out = net(torch.randn(3, 4), output_attentions=True)  # 3 observations
        >>> tuple(out.logits.shape), tuple(out.attentions[0].shape)
        ((3, 2), (3, 2, 4, 4))
    """

    def __init__(self, config: AttentionQNetworkConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        scale = torch.ones(config.obs_dim) if config.obs_scale is None else config.obs_scale
        self.register_buffer("obs_scale", torch.as_tensor(scale, dtype=torch.float32))
        self.value_embedding = nn.Parameter(torch.randn(config.obs_dim, d))
        self.component_embedding = nn.Parameter(torch.randn(config.obs_dim, d))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if config.pooling == "cls" else None
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(
                d, config.num_heads, config.d_ff, config.dropout, "gelu", norm_first=True
            )
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(d) if config.final_norm else nn.Identity()
        pooled = d * config.obs_dim if config.pooling == "flatten" else d
        if config.head_hidden:
            self.head: nn.Module = nn.Sequential(
                nn.Linear(pooled, config.head_hidden),
                nn.GELU(),
                nn.Linear(config.head_hidden, config.num_actions),
            )
        else:
            self.head = nn.Linear(pooled, config.num_actions)

    def tokens(self, obs: Tensor) -> Tensor:
        """``(B, obs_dim)`` -> ``(B, S, D)``: component tokens, after ``[CLS]`` if used."""
        if obs.dim() != 2 or obs.size(1) != self.config.obs_dim:
            raise ValueError(
                f"obs must have shape (B, obs_dim={self.config.obs_dim}); got {tuple(obs.shape)}"
            )
        if not obs.is_floating_point():
            raise ValueError(f"obs must be a float tensor; got {obs.dtype}")
        values = (obs / self.obs_scale.to(obs.dtype))[:, :, None]  # (B, obs_dim, 1)
        x = values * self.value_embedding + self.component_embedding
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.to(x.dtype).expand(x.size(0), -1, -1), x], dim=1)
        return x

    def forward(self, obs: Tensor, *, output_attentions: bool = False) -> ModelOutput:
        """Q-values of every action for each observation (shapes in the class docstring)."""
        x = self.tokens(obs)
        attentions: list[Tensor] | None = [] if output_attentions else None
        for layer in self.layers:
            if attentions is not None:
                x, weights = layer(x, need_weights=True)
                attentions.append(weights)
            else:
                x = layer(x)
        x = self.norm(x)
        if self.config.pooling == "cls":
            pooled = x[:, 0]
        else:
            pooled = x.flatten(1) if self.config.pooling == "flatten" else x.mean(1)
        return ModelOutput(self.head(pooled), attentions=attentions)

    def q_values(self, obs: Tensor) -> Tensor:
        """``(B, obs_dim)`` -> ``(B, num_actions)``."""
        return self.forward(obs).logits
