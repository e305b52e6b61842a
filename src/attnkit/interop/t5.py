"""T5 checkpoints (Hugging Face ``T5ForConditionalGeneration``) <-> :class:`attnkit.models.T5`.

Hugging Face keeps the relative position table in the first block of each
stack (``block.0.layer.0.SelfAttention.relative_attention_bias``); attnkit
keeps one shared module per stack (``encoder_bias`` / ``decoder_bias``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from attnkit.interop._checkpoint import WeightSource
from attnkit.models.t5 import T5, T5Config

MODEL_TYPE = "t5"
_FEED_FORWARD = {"relu": "relu", "gated-gelu": "geglu_tanh", "gelu": "gelu"}
_HF_FEED_FORWARD = {value: key for key, value in _FEED_FORWARD.items()}


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> T5Config:
    """A :class:`T5Config` from a T5 ``config.json`` (plus field overrides)."""
    projection = hf.get("feed_forward_proj", "relu")
    if projection not in _FEED_FORWARD:
        raise ValueError(
            f"feed_forward_proj must be one of {sorted(_FEED_FORWARD)}; got {projection!r}"
        )
    tied = hf.get("tie_word_embeddings", True)
    values = {
        "vocab_size": hf["vocab_size"],
        "d_model": hf.get("d_model", 512),
        "d_kv": hf.get("d_kv", 64),
        "d_ff": hf.get("d_ff", 2048),
        "num_heads": hf.get("num_heads", 8),
        "num_layers": hf.get("num_layers", 6),
        "num_decoder_layers": hf.get("num_decoder_layers"),
        "num_buckets": hf.get("relative_attention_num_buckets", 32),
        "max_distance": hf.get("relative_attention_max_distance", 128),
        "dropout": hf.get("dropout_rate", 0.1),
        "layer_norm_eps": hf.get("layer_norm_epsilon", 1e-6),
        "activation": _FEED_FORWARD[projection],
        "tie_embeddings": tied,
        # Older configs signal v1.1 (no scaling) by tie_word_embeddings=False alone.
        "scale_decoder_outputs": hf.get("scale_decoder_outputs", tied),
        "pad_id": hf.get("pad_token_id", 0),
        "eos_id": hf.get("eos_token_id", 1),
        "decoder_start_id": hf.get("decoder_start_token_id", hf.get("pad_token_id", 0)),
        "init_factor": hf.get("initializer_factor", 1.0),
    }
    return T5Config(**{**values, **overrides})


def config_to_hf(config: T5Config) -> dict[str, Any]:
    if config.positional != "t5":
        raise ValueError(f"T5 format needs positional='t5'; this model has {config.positional!r}")
    if config.activation not in _HF_FEED_FORWARD:
        raise ValueError(
            f"T5 format needs activation in {sorted(_HF_FEED_FORWARD)}; got {config.activation!r}"
        )
    return {
        "model_type": MODEL_TYPE,
        "architectures": ["T5ForConditionalGeneration"],
        "is_encoder_decoder": True,
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "d_kv": config.d_kv,
        "d_ff": config.d_ff,
        "num_heads": config.num_heads,
        "num_layers": config.num_layers,
        "num_decoder_layers": config.decoder_layers,
        "relative_attention_num_buckets": config.num_buckets,
        "relative_attention_max_distance": config.max_distance,
        "dropout_rate": config.dropout,
        "layer_norm_epsilon": config.layer_norm_eps,
        "feed_forward_proj": _HF_FEED_FORWARD[config.activation],
        "tie_word_embeddings": config.tie_embeddings,
        "scale_decoder_outputs": config.scales_outputs,
        "pad_token_id": config.pad_id,
        "eos_token_id": config.eos_id,
        "decoder_start_token_id": config.decoder_start_id,
        "initializer_factor": config.init_factor,
    }


def _attention(hf: str, ak: str) -> list[tuple[str, str]]:
    return [
        (f"{hf}.{h}.weight", f"{ak}.{a}.weight")
        for h, a in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "out_proj"))
    ]


def _feed_forward(hf: str, ak: str, gated: bool) -> list[tuple[str, str]]:
    if gated:
        pairs = (("wi_0", "gate"), ("wi_1", "linear1"), ("wo", "linear2"))
    else:
        pairs = (("wi", "linear1"), ("wo", "linear2"))
    return [(f"{hf}.DenseReluDense.{h}.weight", f"{ak}.{a}.weight") for h, a in pairs]


def names(config: T5Config) -> list[tuple[str, str]]:
    """(hf name, attnkit name) of every T5 weight."""
    gated = config.activation.startswith("geglu")
    out = [
        ("shared.weight", "shared.weight"),
        ("encoder.final_layer_norm.weight", "encoder.norm.weight"),
        ("decoder.final_layer_norm.weight", "decoder.norm.weight"),
        (
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            "encoder_bias.embedding.weight",
        ),
        (
            "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            "decoder_bias.embedding.weight",
        ),
    ]
    for i in range(config.num_layers):
        hf, ak = f"encoder.block.{i}.layer.", f"encoder.layers.{i}."
        out += _attention(f"{hf}0.SelfAttention", f"{ak}self_attn")
        out.append((f"{hf}0.layer_norm.weight", f"{ak}attn_block.norm.weight"))
        out += _feed_forward(f"{hf}1", f"{ak}feed_forward", gated)
        out.append((f"{hf}1.layer_norm.weight", f"{ak}ff_block.norm.weight"))
    for i in range(config.decoder_layers):
        hf, ak = f"decoder.block.{i}.layer.", f"decoder.layers.{i}."
        out += _attention(f"{hf}0.SelfAttention", f"{ak}self_attn")
        out.append((f"{hf}0.layer_norm.weight", f"{ak}self_attn_block.norm.weight"))
        out += _attention(f"{hf}1.EncDecAttention", f"{ak}cross_attn")
        out.append((f"{hf}1.layer_norm.weight", f"{ak}cross_attn_block.norm.weight"))
        out += _feed_forward(f"{hf}2", f"{ak}feed_forward", gated)
        out.append((f"{hf}2.layer_norm.weight", f"{ak}ff_block.norm.weight"))
    if not config.tie_embeddings:
        out.append(("lm_head.weight", "lm_head.weight"))
    return out


def weights_from_hf(source: WeightSource, model: T5) -> dict[str, Tensor | None]:
    """attnkit T5 state-dict entries from T5 checkpoint tensors."""
    out = {ak: source.take(hf) for hf, ak in names(model.config)}
    # Tied copies some checkpoints also store.
    for tied in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        source.mark_used(tied)
    if model.config.tie_embeddings:
        source.mark_used("lm_head.weight")
    return out


def weights_to_hf(model: T5) -> dict[str, Tensor]:
    state = model.state_dict()
    return {hf: state[ak] for hf, ak in names(model.config)}


def build(hf_config: dict[str, Any], task: str | None = None, **overrides: Any) -> T5:
    """The attnkit T5 of a ``config.json`` (``task``: only ``"seq2seq"``)."""
    if task not in (None, "seq2seq"):
        raise ValueError(f"T5 checkpoints load for task 'seq2seq'; got {task!r}")
    return T5(config_from_hf(hf_config, **overrides))


def handles(model: object) -> bool:
    return type(model) is T5


def fresh(name: str) -> bool:
    return False


def to_hf(model: T5) -> tuple[dict[str, Any], dict[str, Tensor]]:
    return config_to_hf(model.config), weights_to_hf(model)
