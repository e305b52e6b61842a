"""GPT-2 checkpoints (Hugging Face ``GPT2LMHeadModel``) <-> :class:`attnkit.models.GPT`.

GPT-2 stores its projections as ``Conv1D`` layers, whose weights are the
transpose of ``nn.Linear``'s, and fuses the query, key and value projections
into one ``c_attn``; conversion transposes and splits them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attnkit.interop._checkpoint import (
    WeightSource,
    activation_from_hf,
    activation_to_hf,
    split_rows,
)
from attnkit.models import GPT, GPTConfig

MODEL_TYPE = "gpt2"


def config_from_hf(hf: dict[str, Any]) -> GPTConfig:
    """A :class:`GPTConfig` from a GPT-2 ``config.json``; unsupported options raise."""
    if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx"):
        raise ValueError(
            "GPT-2 checkpoints with scale_attn_weights=False or "
            "scale_attn_by_inverse_layer_idx=True are not supported"
        )
    if hf.get("add_cross_attention"):
        raise ValueError("GPT-2 with add_cross_attention=True is not supported")
    activation = activation_from_hf(
        hf.get("activation_function", "gelu_new"), "activation_function"
    )
    return GPTConfig(
        vocab_size=hf["vocab_size"],
        max_len=hf.get("n_positions", 1024),
        d_model=hf.get("n_embd", 768),
        num_heads=hf.get("n_head", 12),
        num_layers=hf.get("n_layer", 12),
        d_ff=hf.get("n_inner"),
        dropout=hf.get("resid_pdrop", 0.1),
        attention_dropout=hf.get("attn_pdrop", 0.1),
        embedding_dropout=hf.get("embd_pdrop", 0.1),
        activation=activation,
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        tie_embeddings=hf.get("tie_word_embeddings", True),
        init_std=hf.get("initializer_range", 0.02),
    )


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """The GPT-2 ``config.json`` of a GPT-2-layout :class:`GPTConfig`; other layouts raise."""
    layout = {
        "positional": ("learned", config.positional),
        "norm": ("layernorm", config.norm),
        "bias": (True, config.bias),
        "num_kv_heads": ((None, config.num_heads), config.num_kv_heads),
    }
    for name, (allowed, value) in layout.items():
        if value != allowed and not (isinstance(allowed, tuple) and value in allowed):
            raise ValueError(f"GPT-2 format needs {name}={allowed!r}; this model has {value!r}")
    return {
        "model_type": MODEL_TYPE,
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size,
        "n_positions": config.max_len,
        "n_embd": config.d_model,
        "n_head": config.num_heads,
        "n_layer": config.num_layers,
        "n_inner": config.d_ff,
        "activation_function": activation_to_hf(config.activation, "GPT-2"),
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout
        if config.embedding_dropout is None
        else config.embedding_dropout,
        "attn_pdrop": config.dropout
        if config.attention_dropout is None
        else config.attention_dropout,
        "layer_norm_epsilon": config.layer_norm_eps,
        "initializer_range": config.init_std,
        "tie_word_embeddings": config.tie_embeddings,
    }


def _prefix(source: WeightSource) -> str:
    """``transformer.`` for ``GPT2LMHeadModel`` checkpoints, ``""`` for bare ``GPT2Model``."""
    return "transformer." if source.has("transformer.wte.weight") else ""


def _is_buffer(name: str) -> bool:
    # Older GPT-2 checkpoints store the causal mask as ``attn.bias`` / ``attn.masked_bias``.
    return name.endswith((".attn.bias", ".attn.masked_bias"))


def weights_from_hf(source: WeightSource, model: GPT) -> dict[str, Tensor | None]:
    """attnkit GPT state-dict entries from GPT-2 checkpoint tensors."""
    config = model.config
    source.ignore = (*source.ignore, _is_buffer)
    p = _prefix(source)
    out: dict[str, Tensor | None] = {
        "token_embedding.weight": source.take(f"{p}wte.weight"),
        "position_embedding.embedding.weight": source.take(f"{p}wpe.weight"),
        "final_norm.weight": source.take(f"{p}ln_f.weight"),
        "final_norm.bias": source.take(f"{p}ln_f.bias"),
    }
    for i in range(config.num_layers):
        out.update(_layer_from_hf(source, f"{p}h.{i}.", f"layers.{i}."))
    if config.tie_embeddings:
        out["lm_head.weight"] = out["token_embedding.weight"]
        source.mark_used("lm_head.weight")
    else:
        out["lm_head.weight"] = source.take("lm_head.weight")
    return out


def _layer_from_hf(source: WeightSource, hf: str, ak: str) -> dict[str, Tensor | None]:
    out: dict[str, Tensor | None] = {}
    for hf_norm, ak_norm in (("ln_1", "attn_block.norm"), ("ln_2", "ff_block.norm")):
        out[f"{ak}{ak_norm}.weight"] = source.take(f"{hf}{hf_norm}.weight")
        out[f"{ak}{ak_norm}.bias"] = source.take(f"{hf}{hf_norm}.bias")
    qkv_weight = source.take(f"{hf}attn.c_attn.weight")
    qkv_bias = source.take(f"{hf}attn.c_attn.bias")
    names = ("q_proj", "k_proj", "v_proj")
    if qkv_weight is not None:
        for name, part in zip(names, split_rows(qkv_weight.t(), 3), strict=True):
            out[f"{ak}self_attn.{name}.weight"] = part
    if qkv_bias is not None:
        for name, part in zip(names, split_rows(qkv_bias, 3), strict=True):
            out[f"{ak}self_attn.{name}.bias"] = part
    conv1d = (
        ("attn.c_proj", "self_attn.out_proj"),
        ("mlp.c_fc", "feed_forward.linear1"),
        ("mlp.c_proj", "feed_forward.linear2"),
    )
    for hf_name, ak_name in conv1d:
        weight = source.take(f"{hf}{hf_name}.weight")
        out[f"{ak}{ak_name}.weight"] = None if weight is None else weight.t()
        out[f"{ak}{ak_name}.bias"] = source.take(f"{hf}{hf_name}.bias")
    return out


def weights_to_hf(model: GPT) -> dict[str, Tensor]:
    """GPT-2 (``GPT2LMHeadModel``) checkpoint tensors of an attnkit GPT."""
    state = model.state_dict()
    out = {
        "transformer.wte.weight": state["token_embedding.weight"],
        "transformer.wpe.weight": state["position_embedding.embedding.weight"],
        "transformer.ln_f.weight": state["final_norm.weight"],
        "transformer.ln_f.bias": state["final_norm.bias"],
    }
    for i in range(model.config.num_layers):
        hf, ak = f"transformer.h.{i}.", f"layers.{i}."
        for hf_norm, ak_norm in (("ln_1", "attn_block.norm"), ("ln_2", "ff_block.norm")):
            out[f"{hf}{hf_norm}.weight"] = state[f"{ak}{ak_norm}.weight"]
            out[f"{hf}{hf_norm}.bias"] = state[f"{ak}{ak_norm}.bias"]
        projections = [f"{ak}self_attn.{name}" for name in ("q_proj", "k_proj", "v_proj")]
        out[f"{hf}attn.c_attn.weight"] = _cat_rows(state, projections, "weight").t()
        out[f"{hf}attn.c_attn.bias"] = _cat_rows(state, projections, "bias")
        for hf_name, ak_name in (
            ("attn.c_proj", "self_attn.out_proj"),
            ("mlp.c_fc", "feed_forward.linear1"),
            ("mlp.c_proj", "feed_forward.linear2"),
        ):
            out[f"{hf}{hf_name}.weight"] = state[f"{ak}{ak_name}.weight"].t()
            out[f"{hf}{hf_name}.bias"] = state[f"{ak}{ak_name}.bias"]
    if not model.config.tie_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    return out


def _cat_rows(state: dict[str, Tensor], modules: list[str], kind: str) -> Tensor:
    return torch.cat([state[f"{module}.{kind}"] for module in modules], dim=0)


def build(hf_config: dict[str, Any], task: str | None = None, **overrides: Any) -> GPT:
    """The attnkit GPT of a GPT-2 ``config.json`` (``task``: only ``"causal_lm"``)."""
    if task not in (None, "causal_lm"):
        raise ValueError(f"GPT-2 checkpoints load for task 'causal_lm'; got {task!r}")
    config = config_from_hf(hf_config)
    return GPT(GPTConfig(**{**config.to_dict(), **overrides}))


def handles(model: object) -> bool:
    return type(model) is GPT


def fresh(name: str) -> bool:
    """GPT-2 checkpoints hold every weight: nothing may stay newly initialised."""
    return False


def to_hf(model: GPT) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``config.json`` contents and tensors of ``model`` in GPT-2 format."""
    return config_to_hf(model.config), weights_to_hf(model)


__all__ = [
    "MODEL_TYPE",
    "build",
    "config_from_hf",
    "config_to_hf",
    "fresh",
    "handles",
    "to_hf",
    "weights_from_hf",
    "weights_to_hf",
]
