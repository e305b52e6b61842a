"""Sentence classification with a BiLSTM and attention pooling, trained from scratch.

The ``text_classification`` task runs this when ``model.architecture`` is
``bilstm_attention`` (see :class:`attnkit.recipes.text_classification.BiLSTMAttentionModel`).
A subword tokenizer is trained on the training split with Hugging Face ``tokenizers``
(WordPiece by default: close to a word vocabulary, with pieces for rare words) and saved
as ``tokenizer.json`` in the run directory; embeddings start random (no downloads).
Dev accuracy selects the best checkpoint and is reported in ``runs/NAME/results.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from attnkit.data import ClassificationBatcher, SubwordTokenizer, data_root, read_classification_tsv
from attnkit.data.tokenizers import UNK_ID, TextTokenizer, load_tokenizer
from attnkit.models import BiLSTMAttentionClassifier
from attnkit.recipes.text_classification import (
    BiLSTMAttentionModel,
    TextClassificationRecipe,
    accuracy,
    classification_loss,
)
from attnkit.train import TimeLimit, Trainer, load_model_weights

__all__ = ["build_tokenizer", "encode_texts", "train_bilstm_classification"]


def _read(recipe: TextClassificationRecipe, split: str) -> tuple[list[str], list[int]]:
    """Texts and labels of ``split`` (``"train"`` or ``"valid"``), cut to its limit."""
    data = recipe.data
    root = Path(data.root) if data.root else data_root()
    table = read_classification_tsv(
        root / getattr(data, split), data.text_column, data.label_column
    )
    limit = data.limit_train if split == "train" else data.limit_valid
    return list(table.texts[:limit]), [int(label) for label in table.labels[:limit]]


def build_tokenizer(
    settings: BiLSTMAttentionModel, texts: list[str], run_dir: Path, *, resume: bool
) -> TextTokenizer:
    """Train the subword tokenizer on ``texts`` and save it, or reuse the run's on resume
    (WordPiece training is not bit-reproducible, so a resumed run must keep its ids)."""
    saved = run_dir / "tokenizer.json"
    if resume and saved.is_file():
        return load_tokenizer(saved)
    tokenizer = SubwordTokenizer.train(
        texts, kind=settings.tokenizer, vocab_size=settings.vocab_size, lowercase=settings.lowercase
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
    out = Path(recipe.output_dir)  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    train_texts, train_labels = _read(recipe, "train")
    valid_texts, valid_labels = _read(recipe, "valid")
    tokenizer = build_tokenizer(settings, train_texts, out, resume=resume)
    max_len = recipe.data.max_len
    train = list(zip(encode_texts(tokenizer, train_texts, max_len), train_labels, strict=True))
    valid = list(zip(encode_texts(tokenizer, valid_texts, max_len), valid_labels, strict=True))
    model = BiLSTMAttentionClassifier(settings.model_config(tokenizer.vocab_size, tokenizer.pad_id))
    seed, batch_size = recipe.train.seed or 0, recipe.data.batch_size
    source = ClassificationBatcher(
        train,
        batch_size,
        pad_id=tokenizer.pad_id,
        seed=seed,
        bucket_batches=recipe.data.bucket_batches,
    )
    valid_source = ClassificationBatcher(
        valid, batch_size, pad_id=tokenizer.pad_id, seed=seed, shuffle=False
    )
    trainer = Trainer(
        model,
        classification_loss,
        source,
        recipe.train,
        evaluate_fn=lambda m: {"valid_accuracy": accuracy(m, valid_source)},
        callbacks=[TimeLimit(recipe.max_minutes)] if recipe.max_minutes else [],
    )
    summary = trainer.fit(resume=resume)
    if not trainer.is_main or summary.stop_reason == "signal":
        return {"summary": summary.to_dict()}
    best = (out / "checkpoints" / "best").is_dir()
    load_model_weights(model, out, "best" if best else "latest")
    dev_accuracy = accuracy(model, valid_source)
    results = {
        "valid_accuracy": dev_accuracy,
        "valid_sentences": len(valid),
        "architecture": "bilstm_attention",
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": tokenizer.vocab_size,
        "train_sentences": len(train),
        "train_wall_s": summary.elapsed_s,
        "total_wall_s": time.monotonic() - started,
        "summary": summary.to_dict(),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"dev accuracy {100 * dev_accuracy:.2f}% on {len(valid)} sentences")
    return results
