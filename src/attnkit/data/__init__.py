"""Data: tokenizers, datasets, batching and built-in synthetic tasks.

* ``tokenizers``: ``CharTokenizer``, ``SubwordTokenizer`` (BPE/WordPiece/Unigram via Hugging
  Face ``tokenizers``), ``load_tokenizer``; specials ``<pad>=0 <bos>=1 <eos>=2 <unk>=3``.
* ``datasets``: ``data_root``, ``read_parallel``, ``read_classification_tsv``, ``read_lines``.
* ``token_stream``: ``TokenStream`` (memory-mapped ids) and ``LMWindowSource``.
* ``samplers``: ``TokenBudgetBatcher``, ``ClassificationBatcher``; all three batch sources
  follow the resumable protocol of ``resumable`` (``state_dict``/``load_state_dict``).
* ``cora``: ``load_cora`` (Planetoid Cora via a restricted unpickler) -> ``CoraData``.
* ``batching``: ``Seq2SeqBatch``, ``LMBatch``, ``ClassificationBatch`` and collate functions.
"""

from attnkit.data.batching import (
    ClassificationBatch,
    LMBatch,
    Seq2SeqBatch,
    collate_classification,
    collate_seq2seq,
    pad_sequences,
)
from attnkit.data.cora import CoraData, load_cora
from attnkit.data.datasets import (
    ClassificationData,
    ParallelCorpus,
    data_path,
    data_root,
    read_classification_tsv,
    read_lines,
    read_parallel,
)
from attnkit.data.mosaics import MosaicBatcher, WordVocabulary, load_mosaic_splits
from attnkit.data.resumable import ResumableBatches
from attnkit.data.samplers import ClassificationBatcher, TokenBudgetBatcher
from attnkit.data.synthetic import ReversalTask
from attnkit.data.token_stream import LMWindowSource, TokenStream
from attnkit.data.tokenizers import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    CharTokenizer,
    SubwordTokenizer,
    TextTokenizer,
    load_tokenizer,
)
from attnkit.data.visual_questions import QuestionBatcher, load_question_splits

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "SPECIAL_TOKENS",
    "UNK_ID",
    "CharTokenizer",
    "ClassificationBatch",
    "ClassificationBatcher",
    "ClassificationData",
    "CoraData",
    "LMBatch",
    "LMWindowSource",
    "MosaicBatcher",
    "ParallelCorpus",
    "QuestionBatcher",
    "ResumableBatches",
    "ReversalTask",
    "Seq2SeqBatch",
    "SubwordTokenizer",
    "TextTokenizer",
    "TokenBudgetBatcher",
    "TokenStream",
    "WordVocabulary",
    "collate_classification",
    "collate_seq2seq",
    "data_path",
    "data_root",
    "load_cora",
    "load_mosaic_splits",
    "load_question_splits",
    "load_tokenizer",
    "pad_sequences",
    "read_classification_tsv",
    "read_lines",
    "read_parallel",
]
