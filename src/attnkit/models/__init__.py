"""Model families composed from attnkit.nn parts."""

from attnkit.models.bert import (
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    EncoderOutput,
)
from attnkit.models.gpt import GPT, GPTConfig, build_gpt, causal_lm_loss
from attnkit.models.outputs import ModelOutput
from attnkit.models.transformer import (
    Transformer,
    TransformerAttention,
    TransformerConfig,
    build_transformer,
)

__all__ = [
    "GPT",
    "BertConfig",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "EncoderOutput",
    "GPTConfig",
    "ModelOutput",
    "Transformer",
    "TransformerAttention",
    "TransformerConfig",
    "build_gpt",
    "build_transformer",
    "causal_lm_loss",
]
