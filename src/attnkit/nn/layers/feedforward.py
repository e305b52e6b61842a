"""Position-wise feed-forward networks, plain and gated (GLU variants, Shazeer 2020)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.nn.layers.dropout import Dropout

__all__ = ["ACTIVATIONS", "FeedForward", "PositionwiseFeedForward"]

ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], bool]] = {
    # name: (activation, gated)
    "relu": (F.relu, False),
    "gelu": (F.gelu, False),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), False),
    "silu": (F.silu, False),
    "swiglu": (F.silu, True),
    "geglu": (F.gelu, True),
    "geglu_tanh": (lambda x: F.gelu(x, approximate="tanh"), True),  # T5 v1.1 "gated-gelu"
}


class FeedForward(nn.Module):
    """``linear2(dropout(act(linear1(x))))``; gated variants use ``act(gate(x)) * linear1(x)``.

    Shapes: ``(..., d_model) -> (..., d_model)`` through ``d_ff`` hidden units.

    Args:
        d_model: input and output width.
        d_ff: hidden width.
        dropout: dropout on the hidden activations (training only).
        activation: ``"relu"`` (the paper), ``"gelu"``, ``"gelu_tanh"``, ``"silu"``,
            ``"swiglu"``, ``"geglu"`` or ``"geglu_tanh"``.
        bias: learn biases in the linear layers.

    Example:
        >>> import torch
        >>> from attnkit.nn import FeedForward
        >>> ffn = FeedForward(d_model=8, d_ff=32, activation="swiglu")
        >>> tuple(ffn(torch.randn(2, 5, 8)).shape)  # each position on its own
        (2, 5, 8)
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "relu",
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {activation!r}")
        self.activation_name = activation
        self.activation, gated = ACTIVATIONS[activation]
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.gate = nn.Linear(d_model, d_ff, bias=bias) if gated else None
        self.dropout = Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.gate is None:
            hidden = self.activation(self.linear1(x))
        else:
            hidden = self.activation(self.gate(x)) * self.linear1(x)
        return self.linear2(self.dropout(hidden))

    def extra_repr(self) -> str:
        return f"activation={self.activation_name!r}"


PositionwiseFeedForward = FeedForward
