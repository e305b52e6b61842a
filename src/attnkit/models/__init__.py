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
from attnkit.models.bilstm import (
    BiLSTMAttentionClassifier,
    BiLSTMAttentionTagger,
    BiLSTMConfig,
    BiLSTMEncoder,
)
from attnkit.models.captioning import CaptioningConfig, ShowAttendTell, build_show_attend_tell
from attnkit.models.dqn import AttentionQNetwork, AttentionQNetworkConfig
from attnkit.models.fusion import CrossAttentionFusion, FusionConfig, build_fusion
from attnkit.models.gat import GAT, GATConfig, build_gat
from attnkit.models.gpt import GPT, GPTConfig, build_gpt, causal_lm_loss
from attnkit.models.outputs import ModelOutput
from attnkit.models.rnn_seq2seq import (
    RNNDecoderState,
    RNNEncoderOutput,
    RNNSeq2Seq,
    RNNSeq2SeqConfig,
    build_rnn_seq2seq,
)
from attnkit.models.t5 import T5, Seq2SeqOutput, T5Config, shift_right
from attnkit.models.transformer import (
    Transformer,
    TransformerAttention,
    TransformerConfig,
    TransformerLoss,
    build_transformer,
)
from attnkit.models.vit import ViT, ViTConfig

__all__ = [
    "GAT",
    "GPT",
    "T5",
    "AttentionQNetwork",
    "AttentionQNetworkConfig",
    "BertConfig",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertModel",
    "BiLSTMAttentionClassifier",
    "BiLSTMAttentionTagger",
    "BiLSTMConfig",
    "BiLSTMEncoder",
    "CaptioningConfig",
    "CrossAttentionFusion",
    "EncoderOutput",
    "FusionConfig",
    "GATConfig",
    "GPTConfig",
    "ModelOutput",
    "RNNDecoderState",
    "RNNEncoderOutput",
    "RNNSeq2Seq",
    "RNNSeq2SeqConfig",
    "Seq2SeqOutput",
    "ShowAttendTell",
    "T5Config",
    "Transformer",
    "TransformerAttention",
    "TransformerConfig",
    "TransformerLoss",
    "ViT",
    "ViTConfig",
    "build_fusion",
    "build_gat",
    "build_gpt",
    "build_rnn_seq2seq",
    "build_show_attend_tell",
    "build_transformer",
    "causal_lm_loss",
    "shift_right",
]
