"""Record attention weights from any attnkit model during a forward pass.

Every attention module of attnkit is a :class:`attnkit.nn.MultiHeadAttention`
(or a subclass) called with keyword options. Capturing adds two hooks to each:
a pre-hook that asks for ``need_weights=True`` (the math path, which returns
weights; fused kernels return none) and a hook that stores the weights and
hands the caller what it asked for. Leaving the context removes the hooks, so
the modules go back to their usual (fused) path.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from attnkit.nn import MultiHeadAttention

__all__ = [
    "ATTENTION_KINDS",
    "AttentionCapture",
    "AttentionRecord",
    "attention_modules",
    "capture_attention",
    "layer_index",
]

#: Kinds of attention, as labelled in records.
ATTENTION_KINDS = ("encoder_self", "decoder_self", "cross")

_LAYER_NUMBER = re.compile(r"\.(\d+)(?:\.|$)")


@dataclass
class AttentionRecord:
    """The weights of one call of one attention module.

    Attributes:
        name: module path in the model (``"encoder.layers.0.self_attn"``).
        kind: ``"encoder_self"``, ``"decoder_self"`` or ``"cross"``.
        layer: layer number from the path (0 when it has none).
        weights: ``(B, H, Tq, Tk)``, detached, on the model's device.
    """

    name: str
    kind: str
    layer: int
    weights: Tensor


@dataclass
class AttentionCapture:
    """What :func:`capture_attention` recorded, in call order."""

    records: list[AttentionRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[AttentionRecord]:
        """Records of one kind, in call (= layer) order."""
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"kind must be one of {ATTENTION_KINDS}; got {kind!r}")
        return [record for record in self.records if record.kind == kind]

    def kinds(self) -> list[str]:
        """The kinds that were recorded, in :data:`ATTENTION_KINDS` order."""
        seen = {record.kind for record in self.records}
        return [kind for kind in ATTENTION_KINDS if kind in seen]

    def layers(self, kind: str) -> list[Tensor]:
        """Per-layer weights ``(B, H, Tq, Tk)`` of one kind (first call of each module)."""
        first: dict[str, Tensor] = {}
        for record in self.of_kind(kind):
            first.setdefault(record.name, record.weights)
        return list(first.values())

    def clear(self) -> None:
        self.records.clear()


def layer_index(name: str) -> int:
    """The first number in a module path (``"layers.3.self_attn"`` -> 3), else 0."""
    match = _LAYER_NUMBER.search("." + name)
    return int(match.group(1)) if match else 0


def attention_modules(model: nn.Module) -> list[tuple[str, MultiHeadAttention]]:
    """Every attnkit attention module of ``model`` with its path, in registration order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, MultiHeadAttention)
    ]


def _kind(name: str, args: tuple, kwargs: dict[str, Any]) -> str:
    """Cross if the keys come from elsewhere; decoder self if causal or in a decoder."""
    query = args[0] if args else kwargs.get("query")
    key = args[1] if len(args) > 1 else kwargs.get("key")
    if name.rsplit(".", 1)[-1].startswith("cross") or (key is not None and key is not query):
        return "cross"
    if kwargs.get("is_causal") or "decoder" in name:
        return "decoder_self"
    return "encoder_self"


@contextmanager
def capture_attention(model: nn.Module) -> Iterator[AttentionCapture]:
    """Record every attention module's weights while the context is open.

    Usage::

        with capture_attention(model) as capture:
            model(input_ids)
        capture.layers("encoder_self")  # [(B, H, T, T) per layer]

    Outputs are unchanged (the weight-returning path computes the same
    attention). Modules that cannot return weights (LSH attention) run as
    usual and are listed in ``capture.skipped`` (with a warning).
    """
    capture = AttentionCapture()
    handles = []
    for name, module in attention_modules(model):
        if not module.returns_weights:
            capture.skipped.append(name)
            continue
        ask, record = _hooks(name, capture)
        handles.append(module.register_forward_pre_hook(ask, with_kwargs=True))
        handles.append(module.register_forward_hook(record, with_kwargs=True))
    if capture.skipped:
        warnings.warn(
            f"these attention modules return no weights and are not captured: {capture.skipped}",
            stacklevel=3,
        )
    try:
        yield capture
    finally:
        for handle in handles:
            handle.remove()


def _hooks(name: str, capture: AttentionCapture):
    """A pre-hook forcing ``need_weights=True`` and a hook recording the weights.

    The caller's own ``need_weights`` is kept on a stack (calls may nest through
    re-entrant models), so the caller gets back exactly what it asked for.
    """
    wanted: list[bool] = []

    def ask(module: nn.Module, args: tuple, kwargs: dict[str, Any]):
        wanted.append(bool(kwargs.get("need_weights", False)))
        return args, {**kwargs, "need_weights": True}

    def record(module: nn.Module, args: tuple, kwargs: dict[str, Any], output):
        out, weights = output
        caller_wanted = wanted.pop()
        kind = _kind(name, args, kwargs)
        capture.records.append(AttentionRecord(name, kind, layer_index(name), weights.detach()))
        return out, (weights if caller_wanted else None)

    return ask, record
