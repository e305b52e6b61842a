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
from attnkit.models.t5 import T5, Seq2SeqOutput, T5Config, shift_right
from attnkit.models.transformer import (
    Transformer,
    TransformerAttention,
    TransformerConfig,
    build_transformer,
)
from attnkit.models.vit import ViT, ViTConfig

__all__ = [
    "GPT",
    "T5",
    "BertConfig",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "EncoderOutput",
    "GPTConfig",
    "ModelOutput",
    "Seq2SeqOutput",
    "T5Config",
    "Transformer",
    "TransformerAttention",
    "TransformerConfig",
    "ViT",
    "ViTConfig",
    "build_gpt",
    "build_transformer",
    "causal_lm_loss",
    "shift_right",
]
