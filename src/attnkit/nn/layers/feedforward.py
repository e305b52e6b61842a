"""Position-wise feed-forward networks, plain and gated (GLU variants, Shazeer 2020)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.nn.layers.dropout import Dropout

__all__ = ["ACTIVATIONS", "FeedForward", "PositionwiseFeedForward"]

ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], bool]] = {
    # name: (activation, gated)
    "relu": (F.relu, False),
    "gelu": (F.gelu, False),
    # partial, not a lambda: modules holding it must pickle (torch.save of a whole model)
    "gelu_tanh": (partial(F.gelu, approximate="tanh"), False),
    "silu": (F.silu, False),
    "swiglu": (F.silu, True),
    "geglu": (F.gelu, True),
    "geglu_tanh": (partial(F.gelu, approximate="tanh"), True),  # T5 v1.1 "gated-gelu"
}


class FeedForward(nn.Module):
    """``linear2(dropout(act(linear1(x))))``; gated variants use ``act(gate(x)) * linear1(x)``.

    Shapes: ``(..., d_model) -> (..., d_model)`` through ``d_ff`` hidden units.

    Args:
        d_model: input and output width.
        d_ff: hidden width.
        dropout: dropout on the hidden activations (training only).
        activation: ``"relu"`` (the paper), ``"gelu"``, ``"gelu_tanh"``, ``"silu"``,
            ``"swiglu"``, ``"geglu"`` or ``"geglu_tanh"``; or a callable
            ``Tensor -> Tensor`` (ungated), as ``torch.nn.TransformerEncoderLayer`` takes.
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
        activation: str | Callable[[Tensor], Tensor] = "relu",
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if callable(activation):
            self.activation_name = getattr(activation, "__name__", type(activation).__name__)
            self.activation, gated = activation, False
        elif activation in ACTIVATIONS:
            self.activation_name = activation
            self.activation, gated = ACTIVATIONS[activation]
        else:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)} or a callable; got {activation!r}"
            )
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
