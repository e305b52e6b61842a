"""BERT checkpoints (Hugging Face ``Bert*`` models) <-> :mod:`attnkit.models.bert`.

Hugging Face stores the encoder under ``bert.`` in task models and bare in
``BertModel`` (sentence-transformers' MiniLM, for one). A task head that the
checkpoint does not have (fine-tuning a bare encoder for classification) is
initialised fresh and named in a warning, as ``transformers`` does.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import Tensor, nn

from attnkit.interop._checkpoint import WeightSource, activation_from_hf, activation_to_hf
from attnkit.models.bert import (
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)

MODEL_TYPE = "bert"
logger = logging.getLogger(__name__)
TASKS: dict[str, type[nn.Module]] = {
    "base": BertModel,
    "masked_lm": BertForMaskedLM,
    "pretraining": BertForPreTraining,
    "sequence_classification": BertForSequenceClassification,
    "token_classification": BertForTokenClassification,
}
_ARCHITECTURES = {
    "BertModel": "base",
    "BertForMaskedLM": "masked_lm",
    "BertForPreTraining": "pretraining",
    "BertForSequenceClassification": "sequence_classification",
    "BertForTokenClassification": "token_classification",
}
_HF_ARCHITECTURE = {task: name for name, task in _ARCHITECTURES.items()}
_HEAD_PREFIXES = ("mlm.", "nsp.", "classifier.")


def task_of(hf: dict[str, Any]) -> str:
    """The task of a checkpoint from its ``architectures`` (``"base"`` if none is known)."""
    for name in hf.get("architectures") or []:
        if name in _ARCHITECTURES:
            return _ARCHITECTURES[name]
    return "base"


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> BertConfig:
    """A :class:`BertConfig` from a BERT ``config.json`` (plus field overrides)."""
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            "BERT checkpoints with position_embedding_type "
            f"{hf['position_embedding_type']!r} are not supported (only 'absolute')"
        )
    num_labels = hf.get("num_labels") or len(hf.get("id2label") or {}) or 2
    values = {
        "vocab_size": hf["vocab_size"],
        "max_len": hf.get("max_position_embeddings", 512),
        "type_vocab_size": hf.get("type_vocab_size", 2),
        "d_model": hf.get("hidden_size", 768),
        "num_heads": hf.get("num_attention_heads", 12),
        "num_layers": hf.get("num_hidden_layers", 12),
        "d_ff": hf.get("intermediate_size", 3072),
        "dropout": hf.get("hidden_dropout_prob", 0.1),
        "attention_dropout": hf.get("attention_probs_dropout_prob", 0.1),
        "activation": activation_from_hf(hf.get("hidden_act", "gelu"), "hidden_act"),
        "layer_norm_eps": hf.get("layer_norm_eps", 1e-12),
        "pad_id": hf.get("pad_token_id") or 0,
        "num_labels": num_labels,
        "classifier_dropout": hf.get("classifier_dropout"),
        "classifier_pooling": hf.get("classifier_pooling", "cls"),
        "init_std": hf.get("initializer_range", 0.02),
        "tie_embeddings": hf.get("tie_word_embeddings", True),
    }
    return BertConfig(**{**values, **overrides})


def config_to_hf(config: BertConfig, task: str) -> dict[str, Any]:
    """The ``config.json`` of a BERT model for ``task`` (learned positions only)."""
    if config.positional != "learned":
        raise ValueError(
            f"BERT format needs positional='learned'; this model has {config.positional!r}"
        )
    if task == "sequence_classification" and config.classifier_pooling != "cls":
        logger.warning(
            "classifier_pooling=%r is saved for attnkit only: transformers' "
            "BertForSequenceClassification reads [CLS] through its pooler, so it will "
            "give other logits for this directory",
            config.classifier_pooling,
        )
    return {
        "model_type": MODEL_TYPE,
        "architectures": [_HF_ARCHITECTURE[task]],
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_len,
        "type_vocab_size": config.type_vocab_size,
        "hidden_size": config.d_model,
        "num_attention_heads": config.num_heads,
        "num_hidden_layers": config.num_layers,
        "intermediate_size": config.d_ff,
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "hidden_act": activation_to_hf(config.activation, "BERT"),
        "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": config.pad_id,
        "num_labels": config.num_labels,
        "id2label": {str(i): f"LABEL_{i}" for i in range(config.num_labels)},
        "label2id": {f"LABEL_{i}": i for i in range(config.num_labels)},
        "classifier_dropout": config.classifier_dropout,
        # not a transformers key (transformers keeps it and reads [CLS]); attnkit reads it back
        "classifier_pooling": config.classifier_pooling,
        "initializer_range": config.init_std,
        "tie_word_embeddings": config.tie_embeddings,
        "position_embedding_type": "absolute",
    }


def _pairs(hf: str, ak: str) -> list[tuple[str, str]]:
    """(hf name, attnkit name) for a weight and a bias."""
    return [(f"{hf}.weight", f"{ak}.weight"), (f"{hf}.bias", f"{ak}.bias")]


def encoder_names(config: BertConfig, hf: str, ak: str, *, pooler: bool) -> list[tuple[str, str]]:
    """(hf, attnkit) names of the encoder, with prefixes ``hf`` and ``ak``."""
    names = [
        (f"{hf}embeddings.word_embeddings.weight", f"{ak}embeddings.word.weight"),
        (f"{hf}embeddings.position_embeddings.weight", f"{ak}embeddings.position.weight"),
        (f"{hf}embeddings.token_type_embeddings.weight", f"{ak}embeddings.token_type.weight"),
        *_pairs(f"{hf}embeddings.LayerNorm", f"{ak}embeddings.norm"),
    ]
    for i in range(config.num_layers):
        h, a = f"{hf}encoder.layer.{i}.", f"{ak}layers.{i}."
        for hf_name, ak_name in (
            ("attention.self.query", "self_attn.q_proj"),
            ("attention.self.key", "self_attn.k_proj"),
            ("attention.self.value", "self_attn.v_proj"),
            ("attention.output.dense", "self_attn.out_proj"),
            ("attention.output.LayerNorm", "attn_block.norm"),
            ("intermediate.dense", "feed_forward.linear1"),
            ("output.dense", "feed_forward.linear2"),
            ("output.LayerNorm", "ff_block.norm"),
        ):
            names += _pairs(h + hf_name, a + ak_name)
    if pooler:
        names += _pairs(f"{hf}pooler.dense", f"{ak}pooler")
    return names


def head_names(task: str) -> list[tuple[str, str]]:
    """(hf, attnkit) names of the task head (the tied decoder weight excluded)."""
    mlm = [
        *_pairs("cls.predictions.transform.dense", "mlm.dense"),
        *_pairs("cls.predictions.transform.LayerNorm", "mlm.norm"),
        ("cls.predictions.bias", "mlm.bias"),
    ]
    return {
        "base": [],
        "masked_lm": mlm,
        "pretraining": [*mlm, *_pairs("cls.seq_relationship", "nsp")],
        "sequence_classification": _pairs("classifier", "classifier"),
        "token_classification": _pairs("classifier", "classifier"),
    }[task]


def _task_of_model(model: nn.Module) -> str:
    for task, model_class in TASKS.items():
        if type(model) is model_class:
            return task
    raise TypeError(f"not a BERT model: {type(model).__name__}")


def _is_foreign(name: str) -> bool:
    """Checkpoint tensors that a model for another task may leave unused."""
    return name.startswith(("cls.", "classifier.")) or "pooler." in name


def weights_from_hf(source: WeightSource, model: nn.Module) -> dict[str, Tensor | None]:
    """attnkit state-dict entries for ``model`` from BERT checkpoint tensors."""
    task = _task_of_model(model)
    config: BertConfig = model.config  # type: ignore[assignment]
    source.ignore = (*source.ignore, _is_foreign, lambda name: name.endswith("position_ids"))
    hf_prefix = "bert." if source.has("bert.embeddings.word_embeddings.weight") else ""
    ak_prefix = "" if task == "base" else "bert."
    out: dict[str, Tensor | None] = {}
    encoder = model if task == "base" else model.bert
    pooler = encoder.pooler is not None
    for hf_name, ak_name in encoder_names(config, hf_prefix, ak_prefix, pooler=pooler):
        # A pooler is optional: masked-LM checkpoints have none.
        optional = ".pooler" in ak_name or ak_name.startswith("pooler")
        out[ak_name] = source.take(hf_name, optional=optional)
    for hf_name, ak_name in head_names(task):
        out[ak_name] = source.take(hf_name, optional=True)
    if task in ("masked_lm", "pretraining"):
        if config.tie_embeddings:
            out["mlm.decoder.weight"] = out[f"{ak_prefix}embeddings.word.weight"]
            source.mark_used("cls.predictions.decoder.weight")
        else:
            out["mlm.decoder.weight"] = source.take("cls.predictions.decoder.weight")
        source.mark_used("cls.predictions.decoder.bias")  # a copy of cls.predictions.bias
    return out


def fresh(name: str) -> bool:
    """Parameters that may be newly initialised: task heads and the pooler."""
    return name.startswith(_HEAD_PREFIXES) or "pooler." in name


def weights_to_hf(model: nn.Module) -> dict[str, Tensor]:
    """Hugging Face tensors of an attnkit BERT model (encoder under ``bert.`` for heads)."""
    task = _task_of_model(model)
    state = model.state_dict()
    hf_prefix, ak_prefix = ("", "") if task == "base" else ("bert.", "bert.")
    pooler = f"{ak_prefix}pooler.weight" in state
    names = encoder_names(model.config, hf_prefix, ak_prefix, pooler=pooler)  # type: ignore[arg-type]
    # The decoder weight and bias are tied to the embeddings and ``cls.predictions.bias``:
    # transformers re-ties them on load, so they are not written twice. An untied
    # decoder matrix is written under its own name.
    out = {hf_name: state[ak_name] for hf_name, ak_name in [*names, *head_names(task)]}
    if task in ("masked_lm", "pretraining") and not model.config.tie_embeddings:  # type: ignore[union-attr]
        out["cls.predictions.decoder.weight"] = state["mlm.decoder.weight"]
    return out


def build(hf_config: dict[str, Any], task: str | None = None, **overrides: Any) -> nn.Module:
    """The attnkit BERT model for ``task`` (default: the checkpoint's own)."""
    task = task or task_of(hf_config)
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}; got {task!r}")
    return TASKS[task](config_from_hf(hf_config, **overrides))


def handles(model: object) -> bool:
    return type(model) in TASKS.values()


def to_hf(model: nn.Module) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``config.json`` contents and tensors of ``model`` in Hugging Face BERT format."""
    return config_to_hf(model.config, _task_of_model(model)), weights_to_hf(model)  # type: ignore[arg-type]
