"""GPT: a decoder-only Transformer language model (Radford et al. 2018, 2019).

The default configuration is GPT-2's layout: learned absolute positions,
pre-LN blocks, GELU (tanh form), a final layer norm and an output layer tied
to the token embeddings. The modern options are switches of the same config:
rotary positions (or ALiBi), RMSNorm, SwiGLU, grouped-query attention, no
biases (a Llama-style model).

Every block is an :class:`attnkit.nn.TransformerEncoderLayer` run causally
with a KV cache. Generation lives one layer up, in :mod:`attnkit.generation`:
``generate(gpt, prompts, "greedy", src_mask=attention_mask, max_new_tokens=50)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.functional import positions_from_mask
from attnkit.models._config import (
    check_attention,
    check_divisible,
    check_positional,
    check_positive,
)
from attnkit.models.outputs import ModelOutput, upcast
from attnkit.nn import (
    Dropout,
    KVCacheStack,
    PositionScheme,
    TransformerEncoderLayer,
    build_self_attention,
    make_norm,
    position_scheme,
)

__all__ = ["GPT", "GPTConfig", "build_gpt", "causal_lm_loss"]

IGNORE_INDEX = -100


@dataclass
class GPTConfig:
    """Hyper-parameters of :class:`GPT` (defaults: GPT-2 small, 124M parameters).

    Attributes:
        vocab_size, max_len: vocabulary size and longest sequence (``n_positions``).
        d_model, num_heads, num_layers: width, heads, blocks.
        d_ff: feed-forward width (default ``4 * d_model``).
        num_kv_heads: key/value heads for GQA/MQA (default ``num_heads``).
        dropout: on embeddings and residual branches; ``attention_dropout``
            on attention weights and ``embedding_dropout`` on the embeddings
            (each default ``dropout``; GPT-2's ``attn_pdrop`` and ``embd_pdrop``).
        activation: ``"gelu_tanh"`` (GPT-2), ``"gelu"``, ``"relu"``, ``"swiglu"``, ...
        norm: ``"layernorm"`` or ``"rmsnorm"``; ``layer_norm_eps`` its epsilon.
        positional: ``"learned"`` (GPT-2), ``"sinusoidal"``, ``"rotary"``,
            ``"alibi"``, ``"t5"`` or ``"none"`` (see :func:`attnkit.nn.position_scheme`).
        rope_base, rope_scaling, rope_factor: rotary settings (see
            :class:`attnkit.nn.RotaryEmbedding`).
        position_options: other settings of the scheme (T5: ``num_buckets``,
            ``max_distance``).
        attention, attention_options: the self-attention variant
            (``"dense"`` or ``"sliding_window"`` with ``window``; see
            :func:`attnkit.nn.build_self_attention`).
        bias: biases in projections and norms.
        tie_embeddings: the output layer shares the token embedding matrix.
        init_std: standard deviation of the normal initialisation; residual
            output projections use ``init_std / sqrt(2 * num_layers)`` (GPT-2).

    Example:
        >>> from attnkit.models import GPT, GPTConfig
        >>> llama_style = GPTConfig(vocab_size=100, d_model=64, num_heads=4, num_layers=2,
        ...                         positional="rotary", norm="rmsnorm", activation="swiglu",
        ...                         num_kv_heads=2, bias=False)
        >>> GPT(llama_style).layers[0].self_attn.num_kv_heads
        2
    """

    vocab_size: int = 50257
    max_len: int = 1024
    d_model: int = 768
    num_heads: int = 12
    num_layers: int = 12
    d_ff: int | None = None
    num_kv_heads: int | None = None
    dropout: float = 0.1
    attention_dropout: float | None = None
    embedding_dropout: float | None = None
    activation: str = "gelu_tanh"
    norm: str = "layernorm"
    layer_norm_eps: float = 1e-5
    positional: str = "learned"
    rope_base: float = 10000.0
    rope_scaling: str = "none"
    rope_factor: float = 1.0
    position_options: dict = field(default_factory=dict)
    attention: str = "dense"
    attention_options: dict = field(default_factory=dict)
    bias: bool = True
    tie_embeddings: bool = True
    init_std: float = 0.02

    def __post_init__(self) -> None:
        check_positive(self, "vocab_size", "max_len", "d_model", "num_heads", "num_layers")
        check_divisible(self.d_model, self.num_heads)
        check_positional(self.positional)
        check_attention(self)
        if self.num_kv_heads is not None and self.num_kv_heads < 1:
            raise ValueError(f"num_kv_heads must be >= 1 (or None); got {self.num_kv_heads}")
        for name in ("dropout", "attention_dropout", "embedding_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1); got {value}")

    @property
    def ff_width(self) -> int:
        return self.d_ff or 4 * self.d_model

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def to_dict(self) -> dict:
        return asdict(self)


def causal_lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy: ``logits[:, t]`` predicts ``labels[:, t + 1]``.

    ``logits (B, T, V)``, ``labels (B, T)``; positions labelled ``-100`` are
    ignored (the Hugging Face convention).

    Example:
        >>> import torch
        >>> from attnkit.models import causal_lm_loss
        >>> logits = torch.zeros(1, 4, 10)  # uniform over a vocabulary of 10
        >>> round(causal_lm_loss(logits, torch.tensor([[1, 2, 3, -100]])).item(), 4)  # log(10)
        2.3026
    """
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"labels must have shape (B, T) = {tuple(logits.shape[:2])}; got {tuple(labels.shape)}"
        )
    shifted = upcast(logits[:, :-1].flatten(0, 1))
    return F.cross_entropy(shifted, labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)


class GPT(nn.Module):
    """Decoder-only Transformer language model. ``input_ids (B, T)`` -> ``logits (B, T, V)``.

    Build it from a :class:`GPTConfig` (``GPT(config)`` or :func:`build_gpt`).

    Example:
        >>> import torch
        >>> from attnkit.models import GPT, GPTConfig
        >>> gpt = GPT(GPTConfig(vocab_size=100, max_len=32, d_model=32, num_heads=4, num_layers=2))
        >>> ids = torch.randint(0, 100, (2, 10))
        >>> out = gpt(ids, labels=ids)  # the labels are shifted inside
        >>> tuple(out.logits.shape), out.loss.dim()
        ((2, 10, 100), 0)
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        scheme = _scheme(config)
        self.position_embedding = scheme.absolute
        self.embedding_dropout = Dropout(
            config.dropout if config.embedding_dropout is None else config.embedding_dropout
        )
        self.layers = nn.ModuleList(_block(config, scheme) for _ in range(config.num_layers))
        self.final_norm = make_norm(
            config.norm, config.d_model, config.layer_norm_eps, bias=config.bias
        )
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.reset_parameters()
        if config.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, init_std), residual outputs scaled by 1/sqrt(2L)."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
        residual_std = std / math.sqrt(2 * self.config.num_layers)
        for layer in self.layers:
            nn.init.normal_(layer.self_attn.out_proj.weight, std=residual_std)
            nn.init.normal_(layer.feed_forward.linear2.weight, std=residual_std)

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    @property
    def max_positions(self) -> int | None:
        """How many positions (``0 .. max_positions - 1``) the position table covers:
        ``config.max_len`` for learned and sinusoidal positions, ``None`` for schemes
        without a table (rotary, ALiBi, T5, relative, none), which set no limit."""
        return None if self.position_embedding is None else self.config.max_len

    def new_cache(self, batch_size: int, max_len: int) -> KVCacheStack:
        """Empty per-layer KV caches for ``max_len`` positions (prompt + new tokens)."""
        like = self.token_embedding.weight
        return KVCacheStack(
            [layer.self_attn.new_cache(batch_size, max_len, like=like) for layer in self.layers]
        )

    def embed(self, input_ids: Tensor, positions: Tensor | None, offset: int) -> Tensor:
        """Token (+ learned position) embeddings with dropout: ``(B, T)`` -> ``(B, T, D)``."""
        x = self.token_embedding(input_ids)
        if self.position_embedding is not None:
            x = self.position_embedding(x, offset, positions)
        return self.embedding_dropout(x)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        labels: Tensor | None = None,
        positions: Tensor | None = None,
        cache: KVCacheStack | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> ModelOutput:
        """Score every next token.

        Args:
            input_ids: ``(B, T)`` token ids (the new tokens when decoding with a cache).
            attention_mask: ``(B, T_total)`` bool or 0/1, true at real tokens;
                ``T_total`` = cached + new positions. ``None``: all real.
            labels: ``(B, T)``; the loss is the mean cross-entropy of predicting
                ``labels[:, t + 1]`` from position ``t`` (``-100`` ignored), as in
                Hugging Face; pass ``labels=input_ids`` for language modelling.
            positions: ``(B, T)`` position ids; default: from ``attention_mask``
                (``cumsum - 1``, so left padding is skipped), else the cache length onward.
                With a position table (learned, sinusoidal) every position must be
                below ``max_len``; padding slots do not count.
            cache: a :class:`attnkit.nn.KVCacheStack` from :meth:`new_cache`, filled in place.
            output_attentions: return per-layer weights ``(B, H, T, T_total)``
                (the math backend runs for this call).
            output_hidden_states: return the embeddings and every layer's output.

        Returns:
            :class:`ModelOutput` with ``logits (B, T, V)`` and, as asked, ``loss``,
            ``attentions``, ``hidden_states``, ``cache``.
        """
        offset = cache.length if cache is not None else 0
        self._check_inputs(input_ids, attention_mask, offset)
        mask = None
        if attention_mask is not None:
            mask = attention_mask.bool()[:, None, None, :]
            if positions is None:
                positions = positions_from_mask(attention_mask)[:, -input_ids.size(1) :]
        self._check_positions(input_ids.size(1), offset, positions)
        x = self.embed(input_ids, positions, offset)
        hidden_states = [x] if output_hidden_states else None
        attentions: list[Tensor] | None = [] if output_attentions else None
        for i, layer in enumerate(self.layers):
            out = layer(
                x,
                mask,
                is_causal=True,
                need_weights=output_attentions,
                cache=None if cache is None else cache[i],
                positions=positions,
            )
            if output_attentions:
                x, weights = out
                attentions.append(weights)  # type: ignore[union-attr]
            else:
                x = out
            if hidden_states is not None and i < len(self.layers) - 1:
                hidden_states.append(x)
        x = self.final_norm(x)
        if hidden_states is not None:
            hidden_states.append(x)
        logits = self.lm_head(x)
        loss = None if labels is None else causal_lm_loss(logits, labels)
        return ModelOutput(logits, loss, attentions, hidden_states, cache)

    def _check_inputs(self, input_ids: Tensor, attention_mask: Tensor | None, offset: int) -> None:
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
            shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids)
            raise ValueError(f"input_ids must have shape (B, T); got {shape}")
        if input_ids.is_floating_point():
            raise ValueError(f"input_ids must be integer token ids; got {input_ids.dtype}")
        total = offset + input_ids.size(1)
        if attention_mask is not None and attention_mask.shape != (input_ids.size(0), total):
            raise ValueError(
                f"attention_mask must have shape (B, cached + new) = {(input_ids.size(0), total)}; "
                f"got {tuple(attention_mask.shape)}"
            )

    def _check_positions(self, new: int, offset: int, positions: Tensor | None) -> None:
        """Raise if a position of the ``new`` tokens lies outside the position table.

        Without ``positions`` the tokens sit at ``offset .. offset + new - 1``; with
        them (given, or counted from the mask) only their largest value matters,
        so left-padding slots do not count against ``max_len``. That value is read
        (a device sync) only when there are more slots than table rows; explicit
        positions beyond the table are otherwise left to the table's own check.
        """
        limit = self.max_positions
        if limit is None or offset + new <= limit:
            return  # no more slots than table rows (positions from a mask count real tokens)
        if positions is None:
            raise ValueError(f"sequence of {offset + new} positions exceeds max_len={limit}")
        if torch.compiler.is_compiling():
            return  # a data-dependent check would break the graph
        if positions.numel() and int(positions.max()) >= limit:  # padding slots beyond it
            raise ValueError(
                f"position {int(positions.max())} exceeds max_len={limit} "
                f"(positions 0..{limit - 1})"
            )


def _scheme(config: GPTConfig) -> PositionScheme:
    """The causal positional scheme of ``config`` (rotary settings from its ``rope_*``)."""
    options = dict(config.position_options)
    if config.positional == "rotary":
        rope = {"base": config.rope_base, "scaling": config.rope_scaling}
        options = {**rope, "factor": config.rope_factor, **options}
    return position_scheme(
        config.positional,
        d_model=config.d_model,
        num_heads=config.num_heads,
        head_dim=config.head_dim,
        max_len=config.max_len,
        causal=True,
        options=options,
    )


def _block(config: GPTConfig, scheme: PositionScheme) -> TransformerEncoderLayer:
    attention_dropout = (
        config.dropout if config.attention_dropout is None else config.attention_dropout
    )
    attention = build_self_attention(
        config.attention,
        config.d_model,
        config.num_heads,
        attention_dropout,
        scheme=scheme,
        options=config.attention_options,
        num_kv_heads=config.num_kv_heads,
        bias=config.bias,
    )
    return TransformerEncoderLayer(
        config.d_model,
        config.num_heads,
        config.ff_width,
        config.dropout,
        config.activation,
        norm_first=True,
        norm=config.norm,
        layer_norm_eps=config.layer_norm_eps,
        bias=config.bias,
        self_attention=attention,
    )


def build_gpt(config: GPTConfig | None = None, **overrides: Any) -> GPT:
    """A :class:`GPT` from ``config`` (GPT-2 small by default) with field ``overrides``.

    Example:
        >>> from attnkit.models import build_gpt
        >>> gpt = build_gpt(vocab_size=65, d_model=32, num_heads=4, num_layers=2)
        >>> gpt.config.max_len, gpt.config.num_layers
        (1024, 2)
    """
    base = asdict(config) if config is not None else {}
    return GPT(GPTConfig(**{**base, **overrides}))
