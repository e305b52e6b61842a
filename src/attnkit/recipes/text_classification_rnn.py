"""Sentence classification with a BiLSTM and attention pooling, trained from scratch.

The ``text_classification`` task runs this when ``model.architecture`` is
``bilstm_attention`` (see :class:`attnkit.recipes.text_classification.BiLSTMAttentionModel`).
A subword tokenizer is trained on the training split with Hugging Face ``tokenizers``
(WordPiece by default: close to a word vocabulary, with pieces for rare words) and saved
as ``tokenizer.json`` in the run directory; embeddings start random (no downloads).
Dev accuracy selects the best checkpoint and is reported in ``runs/NAME/results.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from attnkit.data import SubwordTokenizer
from attnkit.data.tokenizers import UNK_ID, TextTokenizer, load_tokenizer
from attnkit.models import BiLSTMAttentionClassifier
from attnkit.recipes.common import prepare_run_dir
from attnkit.recipes.text_classification import (
    BiLSTMAttentionModel,
    TextClassificationRecipe,
    fit_classifier,
    read_split,
)

__all__ = ["build_tokenizer", "encode_texts", "train_bilstm_classification"]


def build_tokenizer(
    settings: BiLSTMAttentionModel, texts: list[str], run_dir: Path, *, resume: bool
) -> TextTokenizer:
    """Train the subword tokenizer on ``texts`` (or read ``settings.tokenizer_file``) and
    save it in the run, or reuse the run's on resume (WordPiece training is not
    bit-reproducible, so a resumed run must keep its ids)."""
    saved = run_dir / "tokenizer.json"
    if resume and saved.is_file():
        return load_tokenizer(saved)
    if settings.tokenizer_file is not None:
        tokenizer = load_tokenizer(settings.tokenizer_file)
    else:
        tokenizer = SubwordTokenizer.train(
            texts,
            kind=settings.tokenizer,
            vocab_size=settings.vocab_size,
            lowercase=settings.lowercase,
        )
    tokenizer.save(saved)
    return tokenizer


def encode_texts(tokenizer: TextTokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    """Ids of each text cut to ``max_len``; an empty text becomes ``[<unk>]`` (the BiLSTM
    needs at least one token)."""
    return [ids[:max_len] or [UNK_ID] for ids in tokenizer.encode_batch(texts)]


def train_bilstm_classification(
    recipe: TextClassificationRecipe, *, resume: bool = False
) -> dict[str, Any]:
    """Train the BiLSTM with attention pooling, select on dev accuracy, report it."""
    started = time.monotonic()
    settings = recipe.model
    if not isinstance(settings, BiLSTMAttentionModel):
        raise ValueError(f"model.architecture must be bilstm_attention; got {settings!r}")
    out = prepare_run_dir(recipe)
    train_texts, train_labels = read_split(recipe, "train")
    valid_texts, valid_labels = read_split(recipe, "valid")
    tokenizer = build_tokenizer(settings, train_texts, out, resume=resume)
    max_len = recipe.data.max_len
    train = list(zip(encode_texts(tokenizer, train_texts, max_len), train_labels, strict=True))
    valid = list(zip(encode_texts(tokenizer, valid_texts, max_len), valid_labels, strict=True))
    model = BiLSTMAttentionClassifier(settings.model_config(tokenizer.vocab_size, tokenizer.pad_id))
    details = {
        "architecture": "bilstm_attention",
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": tokenizer.vocab_size,
        "train_sentences": len(train),
    }
    return fit_classifier(
        recipe,
        model,
        train,
        valid,
        tokenizer.pad_id,
        resume=resume,
        started=started,
        details=details,
    )
