"""ViT checkpoints (Hugging Face ``ViTForImageClassification`` / ``ViTModel``) <-> :class:`ViT`.

Two name layouts exist: the long-standing one of the hub checkpoints
(``vit.encoder.layer.0.attention.attention.query``) and the one recent
``transformers`` versions write (``vit.layers.0.attention.q_proj``). Both load;
``save_pretrained`` writes the long-standing one, which every version reads.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from attnkit.interop._checkpoint import WeightSource, activation_from_hf, activation_to_hf
from attnkit.models.vit import ViT, ViTConfig

MODEL_TYPE = "vit"
_LEGACY = {
    "q_proj": "attention.attention.query",
    "k_proj": "attention.attention.key",
    "v_proj": "attention.attention.value",
    "out_proj": "attention.output.dense",
    "linear1": "intermediate.dense",
    "linear2": "output.dense",
    "attn_norm": "layernorm_before",
    "ff_norm": "layernorm_after",
}
_RECENT = {
    "q_proj": "attention.q_proj",
    "k_proj": "attention.k_proj",
    "v_proj": "attention.v_proj",
    "out_proj": "attention.o_proj",
    "linear1": "mlp.fc1",
    "linear2": "mlp.fc2",
    "attn_norm": "layernorm_before",
    "ff_norm": "layernorm_after",
}
_ATTNKIT = {
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "out_proj": "self_attn.out_proj",
    "linear1": "feed_forward.linear1",
    "linear2": "feed_forward.linear2",
    "attn_norm": "attn_block.norm",
    "ff_norm": "ff_block.norm",
}


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> ViTConfig:
    """A :class:`ViTConfig` from a ViT ``config.json`` (plus field overrides)."""
    if not hf.get("qkv_bias", True):
        raise ValueError("ViT checkpoints with qkv_bias=False are not supported")
    num_labels = hf.get("num_labels") or len(hf.get("id2label") or {}) or 2
    values = {
        "image_size": hf.get("image_size", 224),
        "patch_size": hf.get("patch_size", 16),
        "num_channels": hf.get("num_channels", 3),
        "d_model": hf.get("hidden_size", 768),
        "num_heads": hf.get("num_attention_heads", 12),
        "num_layers": hf.get("num_hidden_layers", 12),
        "d_ff": hf.get("intermediate_size", 3072),
        "dropout": hf.get("hidden_dropout_prob", 0.0),
        "attention_dropout": hf.get("attention_probs_dropout_prob", 0.0),
        "activation": activation_from_hf(hf.get("hidden_act", "gelu"), "hidden_act"),
        "layer_norm_eps": hf.get("layer_norm_eps", 1e-12),
        "num_labels": num_labels,
        "init_std": hf.get("initializer_range", 0.02),
    }
    return ViTConfig(**{**values, **overrides})


def config_to_hf(config: ViTConfig) -> dict[str, Any]:
    if config.stem_channels or config.classifier_pooling != "cls" or not config.qkv_bias:
        raise ValueError(
            "Hugging Face's ViT has no convolutional stem, reads the class token and has "
            "attention biases; got "
            f"stem_channels={list(config.stem_channels)}, "
            f"classifier_pooling={config.classifier_pooling!r}, qkv_bias={config.qkv_bias} "
            "(save with model.state_dict())"
        )
    return {
        "model_type": MODEL_TYPE,
        "architectures": ["ViTForImageClassification"],
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "num_channels": config.num_channels,
        "hidden_size": config.d_model,
        "num_attention_heads": config.num_heads,
        "num_hidden_layers": config.num_layers,
        "intermediate_size": config.d_ff,
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "hidden_act": activation_to_hf(config.activation, "ViT"),
        "layer_norm_eps": config.layer_norm_eps,
        "num_labels": config.num_labels,
        "id2label": {str(i): f"LABEL_{i}" for i in range(config.num_labels)},
        "label2id": {f"LABEL_{i}": i for i in range(config.num_labels)},
        "initializer_range": config.init_std,
        "qkv_bias": True,
    }


def _names(config: ViTConfig, layout: dict[str, str], layers: str) -> list[tuple[str, str]]:
    out = [
        ("vit.embeddings.cls_token", "cls_token"),
        ("vit.embeddings.position_embeddings", "position_embeddings"),
        ("vit.embeddings.patch_embeddings.projection.weight", "patches.projection.weight"),
        ("vit.embeddings.patch_embeddings.projection.bias", "patches.projection.bias"),
        ("vit.layernorm.weight", "norm.weight"),
        ("vit.layernorm.bias", "norm.bias"),
    ]
    for i in range(config.num_layers):
        for part, hf_name in layout.items():
            for kind in ("weight", "bias"):
                out.append(
                    (f"{layers}.{i}.{hf_name}.{kind}", f"layers.{i}.{_ATTNKIT[part]}.{kind}")
                )
    return out


def _head() -> list[tuple[str, str]]:
    return [("classifier.weight", "classifier.weight"), ("classifier.bias", "classifier.bias")]


def weights_from_hf(source: WeightSource, model: ViT) -> dict[str, Tensor | None]:
    """attnkit ViT state-dict entries from either checkpoint layout."""
    prefix = "" if source.has("embeddings.cls_token") else "vit."
    recent = source.has(f"{prefix}layers.0.attention.q_proj.weight")
    layout, layers = (_RECENT, "vit.layers") if recent else (_LEGACY, "vit.encoder.layer")
    source.ignore = (*source.ignore, lambda name: "pooler." in name)
    out = {}
    for hf_name, ak_name in _names(model.config, layout, layers):
        out[ak_name] = source.take(prefix + hf_name.removeprefix("vit."))
    for hf_name, ak_name in _head():
        out[ak_name] = source.take(hf_name, optional=True)
    return out


def weights_to_hf(model: ViT) -> dict[str, Tensor]:
    state = model.state_dict()
    names = _names(model.config, _LEGACY, "vit.encoder.layer") + _head()
    return {hf_name: state[ak_name] for hf_name, ak_name in names}


def build(hf_config: dict[str, Any], task: str | None = None, **overrides: Any) -> ViT:
    """The attnkit ViT of a ``config.json`` (``task``: only ``"image_classification"``)."""
    if task not in (None, "image_classification"):
        raise ValueError(f"ViT checkpoints load for task 'image_classification'; got {task!r}")
    return ViT(config_from_hf(hf_config, **overrides))


def handles(model: object) -> bool:
    return type(model) is ViT


def fresh(name: str) -> bool:
    """A bare ``ViTModel`` checkpoint has no classifier: it starts fresh."""
    return name.startswith("classifier.")


def to_hf(model: ViT) -> tuple[dict[str, Any], dict[str, Tensor]]:
    return config_to_hf(model.config), weights_to_hf(model)
