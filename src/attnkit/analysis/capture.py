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

import torch
from torch import Tensor, nn

from attnkit.nn import AttentionLayer, BahdanauAttention, LuongAttention, MultiHeadAttention

# Attention of RNN decoders and the single-head teaching layer: they always return
# their weights, so capturing only records them.
_ALWAYS_WEIGHTED = (BahdanauAttention, LuongAttention, AttentionLayer)

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

    Example:
        >>> import torch
        >>> from attnkit.analysis import capture_attention
        >>> from attnkit.models import Transformer
        >>> model = Transformer(vocab_size=50, d_model=32, num_heads=4, num_layers=2, d_ff=64)
        >>> with torch.no_grad(), capture_attention(model.eval()) as capture:
        ...     _ = model(torch.randint(3, 50, (1, 6)), torch.randint(3, 50, (1, 4)))
        >>> record = capture.of_kind("cross")[1]  # an AttentionRecord
        >>> record.name, record.kind, record.layer, tuple(record.weights.shape)
        ('decoder.layers.1.cross_attn', 'cross', 1, (1, 4, 4, 6))
    """

    name: str
    kind: str
    layer: int
    weights: Tensor


@dataclass
class AttentionCapture:
    """What :func:`capture_attention` recorded, in call order.

    Attributes:
        records: one :class:`AttentionRecord` per call of an attention module.
        skipped: paths of the modules that return no weights (not recorded).

    Example:
        >>> import torch
        >>> from attnkit.analysis import capture_attention
        >>> from attnkit.models import RNNSeq2SeqConfig, build_rnn_seq2seq
        >>> config = RNNSeq2SeqConfig(20, 30, embedding_dim=8, decoder_hidden_size=16)
        >>> model = build_rnn_seq2seq(config).eval()
        >>> with torch.no_grad(), capture_attention(model) as capture:
        ...     _ = model(torch.randint(1, 20, (2, 5)), torch.randint(1, 30, (2, 3)))
        >>> len(capture.records), capture.kinds(), capture.skipped  # one record per decoder step
        (3, ['cross'], [])
        >>> tuple(capture.stacked("attention").shape)  # (B, 1 head, steps, S)
        (2, 1, 3, 5)
    """

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
        """Per-layer weights ``(B, H, Tq, Tk)`` of one kind, one entry per module.

        A module called several times over the same keys (an RNN decoder's
        attention, one call per step) gives its calls stacked along ``Tq``;
        calls over growing keys (KV-cache decoding) give the first call.
        """
        names = dict.fromkeys(record.name for record in self.of_kind(kind))
        layers = []
        for name in names:
            calls = [record.weights for record in self.records if record.name == name]
            same_keys = len({w.size(-1) for w in calls}) == 1
            layers.append(torch.cat(calls, dim=2) if same_keys else calls[0])
        return layers

    def stacked(self, name: str) -> Tensor:
        """Every call of one module, queries concatenated: ``(B, H, sum of Tq, Tk)``.

        For modules called once per decoding step (an RNN decoder's attention):
        row ``t`` is step ``t``. The calls must share ``Tk``.
        """
        calls = [record.weights for record in self.records if record.name == name]
        if not calls:
            raise ValueError(f"no calls of {name!r} were recorded")
        key_lengths = sorted({w.size(-1) for w in calls})
        if len(key_lengths) > 1:
            raise ValueError(
                f"calls of {name!r} attend to different numbers of keys: {key_lengths}"
            )
        return torch.cat(calls, dim=2)

    def clear(self) -> None:
        self.records.clear()


def layer_index(name: str) -> int:
    """The first number in a module path (``"layers.3.self_attn"`` -> 3), else 0."""
    match = _LAYER_NUMBER.search("." + name)
    return int(match.group(1)) if match else 0


def attention_modules(model: nn.Module) -> list[tuple[str, MultiHeadAttention]]:
    """Every attnkit attention module of ``model`` with its path, in registration order.

    Example:
        >>> from attnkit.analysis import attention_modules
        >>> from attnkit.models import BiLSTMAttentionTagger, BiLSTMConfig
        >>> tagger = BiLSTMAttentionTagger(BiLSTMConfig(vocab_size=20, embed_dim=8, hidden_size=4))
        >>> print(*(name for name, _ in attention_modules(tagger)))
        attention
    """
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

    Example:
        >>> import torch
        >>> from attnkit.analysis import capture_attention
        >>> from attnkit.models import Transformer
        >>> model = Transformer(vocab_size=50, d_model=32, num_heads=4, num_layers=2, d_ff=64)
        >>> with torch.no_grad(), capture_attention(model.eval()) as capture:
        ...     _ = model(torch.randint(3, 50, (1, 6)), torch.randint(3, 50, (1, 4)))
        >>> capture.kinds(), [tuple(w.shape) for w in capture.layers("cross")]
        (['encoder_self', 'decoder_self', 'cross'], [(1, 4, 4, 6), (1, 4, 4, 6)])
    """
    capture = AttentionCapture()
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, _ALWAYS_WEIGHTED):
            handles.append(module.register_forward_hook(_recorder(name, capture), with_kwargs=True))
            continue
        if not isinstance(module, MultiHeadAttention):
            continue
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


def _recorder(name: str, capture: AttentionCapture):
    """Records the weights of a module that always returns ``(context, weights)``.

    Weights ``(B, Tk)`` (one decoder step) or ``(B, Tq, Tk)`` are stored as
    ``(B, 1, Tq, Tk)``: one head. Additive/multiplicative RNN attention reads an
    encoder, so it is ``cross``; the single-head layer is self-attention unless
    given a ``context``.
    """

    def record(module: nn.Module, args: tuple, kwargs: dict[str, Any], output):
        weights = output[1].detach()
        weights = weights[:, None, None, :] if weights.dim() == 2 else weights[:, None]
        if isinstance(module, AttentionLayer):
            kind = "encoder_self" if kwargs.get("context") is None else "cross"
        else:
            kind = "cross"
        capture.records.append(AttentionRecord(name, kind, layer_index(name), weights))

    return record
