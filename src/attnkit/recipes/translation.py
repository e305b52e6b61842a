"""Machine translation with an encoder-decoder (Transformer, T5 or attentive RNN),
from one YAML recipe.

``train_translation`` reads the corpora, trains (or reloads) the tokenizer,
builds the model, trains it with the :class:`~attnkit.train.Trainer` (BLEU on
a validation sample selects the best checkpoint), then translates the test set
with beam search and scores it with sacreBLEU. Everything lands in the run
directory, which ``load_translator`` reads back for ``attnkit translate`` and
``attnkit evaluate``:

```
runs/NAME/recipe.yaml      the resolved recipe
runs/NAME/tokenizer.json   the joint source/target tokenizer
runs/NAME/checkpoints/     step_*/ and best/ (safetensors + trainer state)
runs/NAME/metrics.jsonl    every logged metric; loss.png the curve
runs/NAME/results.json     test BLEU/chrF with sacreBLEU's signature
runs/NAME/test.hyp.txt     the test translations
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from attnkit.data import (
    ParallelCorpus,
    SubwordTokenizer,
    TextTokenizer,
    TokenBudgetBatcher,
    data_root,
    load_tokenizer,
    read_parallel,
)
from attnkit.data.number_words import NumberWordsTask
from attnkit.generation import beam_search, greedy_decode
from attnkit.metrics import corpus_bleu, corpus_chrf
from attnkit.models import (
    T5,
    RNNSeq2Seq,
    RNNSeq2SeqConfig,
    T5Config,
    Transformer,
    TransformerConfig,
)
from attnkit.recipes.common import (
    RunRecipe,
    best_or_latest,
    fit_recipe,
    load_run_recipe,
    prepare_run_dir,
    reject_derived_fields,
    write_results,
)
from attnkit.recipes.schema import ConfigError, from_dict
from attnkit.train import TrainConfig, load_model_weights, seq2seq_loss
from attnkit.train.checkpoint import list_checkpoints

__all__ = [
    "DecodeSettings",
    "TranslationData",
    "TranslationRecipe",
    "Translator",
    "evaluate_translation",
    "load_translator",
    "train_translation",
]

_VOCAB_PLACEHOLDER = 1_000_000  # vocab sizes come from the tokenizer
ARCHITECTURES: dict[str, type] = {
    "transformer": TransformerConfig,
    "t5": T5Config,
    "rnn": RNNSeq2SeqConfig,
}
# Config fields filled in from the tokenizer, per architecture.
_TOKENIZER_FIELDS = {
    "transformer": ("src_vocab_size", "tgt_vocab_size", "pad_id"),
    "t5": ("vocab_size", "pad_id", "eos_id", "decoder_start_id"),
    "rnn": ("src_vocab_size", "tgt_vocab_size", "pad_id"),
}


@dataclass
class TranslationData:
    """Where the parallel text comes from and how it is tokenised and batched.

    ``corpus: files`` reads ``{root}/{split}.{lang}{extension}`` for the train,
    valid and test prefixes (root: ``$ATTNKIT_DATA``, default ``../shared/data``).
    ``corpus: number_words`` generates English -> German number words instead.
    ``source_prefix`` is prepended to every source sentence (T5's task prefix,
    e.g. ``"translate German to English: "``).
    """

    corpus: Literal["files", "number_words"] = "files"
    root: str | None = None
    source_lang: str = "de"
    target_lang: str = "en"
    train: str = "multi30k/train"
    valid: str = "multi30k/val"
    test: str = "multi30k/test_2016_flickr"
    extension: str = ".gz"
    tokenizer: Literal["bpe", "wordpiece", "unigram"] = "bpe"
    vocab_size: int = 8000
    lowercase: bool = False
    max_tokens: int = 4096
    max_len: int = 100
    limit_train: int | None = None
    limit_valid: int | None = None
    limit_test: int | None = None
    number_max: int = 9999
    number_held_out: int = 1000
    source_prefix: str = ""


@dataclass
class DecodeSettings:
    """Decoding for evaluation and ``translate``: at most ``a * source_len + b`` new tokens."""

    strategy: Literal["greedy", "beam"] = "beam"
    beam_size: int = 4
    length_penalty: float = 1.0
    max_len_a: float = 1.5
    max_len_b: int = 10
    batch_size: int = 64


@dataclass
class TranslationRecipe(RunRecipe):
    """A translation experiment: data, model, training, decoding, evaluation.

    ``max_minutes`` stops training (after the current step) once that much wall
    time, periodic validation included, has passed in this process.
    """

    name: str = "translation"
    task: Literal["translation"] = "translation"
    output_dir: str | None = None
    data: TranslationData = field(default_factory=TranslationData)
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=1000))
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    label_smoothing: float = 0.1
    max_minutes: float | None = None
    valid_bleu_sentences: int | None = 500
    valid_decode: Literal["greedy", "beam"] = "greedy"

    def __post_init__(self) -> None:
        options = dict(self.model)
        architecture = options.pop("architecture", "transformer")
        if architecture not in ARCHITECTURES:
            raise ConfigError(
                f"model.architecture must be one of {sorted(ARCHITECTURES)}; got {architecture!r}"
            )
        reject_derived_fields(
            options, _TOKENIZER_FIELDS[architecture], "the tokenizer", "; remove it"
        )
        placeholders = dict.fromkeys(_TOKENIZER_FIELDS[architecture], 0)
        for name in ("src_vocab_size", "tgt_vocab_size", "vocab_size"):
            if name in placeholders:
                placeholders[name] = _VOCAB_PLACEHOLDER
        from_dict(ARCHITECTURES[architecture], {**options, **placeholders}, prefix="model")
        self._set_output_dir()

    @classmethod
    def from_dict(cls, data: dict) -> TranslationRecipe:
        return from_dict(cls, data)


@dataclass
class Corpora:
    """Train / valid / test sentence pairs."""

    train: list[tuple[str, str]]
    valid: list[tuple[str, str]]
    test: list[tuple[str, str]]
    reports: list[str] = field(default_factory=list)


def _limit(pairs: Sequence[tuple[str, str]], limit: int | None) -> list[tuple[str, str]]:
    return list(pairs if limit is None else pairs[:limit])


def load_corpora(data: TranslationData) -> Corpora:
    """Read (or generate) the three splits named by the recipe."""
    if data.corpus == "number_words":
        task = NumberWordsTask(max_number=data.number_max, held_out=data.number_held_out)
        train, held_out = task.split(seed=0)
        half = len(held_out) // 2
        valid, test, reports = held_out[:half], held_out[half:], []
    else:
        root = Path(data.root) if data.root else data_root()
        splits: list[ParallelCorpus] = [
            read_parallel(
                root / f"{prefix}.{data.source_lang}{data.extension}",
                root / f"{prefix}.{data.target_lang}{data.extension}",
            )
            for prefix in (data.train, data.valid, data.test)
        ]
        train, valid, test = (split.pairs for split in splits)
        reports = [split.report() for split in splits]
    return Corpora(
        _limit(train, data.limit_train),
        _limit(valid, data.limit_valid),
        _limit(test, data.limit_test),
        reports,
    )


def build_tokenizer(data: TranslationData, train_pairs: Sequence[tuple[str, str]]) -> TextTokenizer:
    """One joint subword vocabulary over both sides of the training pairs."""
    texts = [text for pair in train_pairs for text in pair]
    return SubwordTokenizer.train(
        texts, kind=data.tokenizer, vocab_size=data.vocab_size, lowercase=data.lowercase
    )


def build_model(
    recipe: TranslationRecipe, tokenizer: TextTokenizer
) -> Transformer | T5 | RNNSeq2Seq:
    """The recipe's model, sized to the tokenizer.

    ``model.architecture``: ``transformer`` (default; shared embeddings unless
    set otherwise), ``t5`` (decoding starts from the tokenizer's ``bos``) or
    ``rnn`` (:class:`~attnkit.models.RNNSeq2Seq`, attentive GRU/LSTM).
    """
    options = dict(recipe.model)
    architecture = options.pop("architecture", "transformer")
    if architecture == "rnn":
        return RNNSeq2Seq(
            RNNSeq2SeqConfig(
                src_vocab_size=tokenizer.vocab_size,
                tgt_vocab_size=tokenizer.vocab_size,
                pad_id=tokenizer.pad_id,
                **options,
            )
        )
    if architecture == "t5":
        return T5(
            T5Config(
                vocab_size=tokenizer.vocab_size,
                pad_id=tokenizer.pad_id,
                eos_id=tokenizer.eos_id,
                decoder_start_id=tokenizer.bos_id,
                **options,
            )
        )
    options = {"share_embeddings": True, "max_len": recipe.data.max_len + 2, **options}
    config = TransformerConfig(
        src_vocab_size=tokenizer.vocab_size,
        tgt_vocab_size=tokenizer.vocab_size,
        pad_id=tokenizer.pad_id,
        **options,
    )
    return Transformer.from_config(config)


@dataclass
class Translator:
    """A trained model with its tokenizer and decoding settings."""

    model: Transformer | T5 | RNNSeq2Seq
    tokenizer: TextTokenizer
    decode: DecodeSettings
    source_prefix: str = ""

    def translate(self, sentences: Sequence[str], *, strategy: str | None = None) -> list[str]:
        """Translate sentences in length-sorted batches; returns them in input order."""
        strategy = strategy or self.decode.strategy
        encoded = self.tokenizer.encode_batch([self.source_prefix + s for s in sentences])
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        outputs: list[str] = [""] * len(encoded)
        self.model.eval()
        for start in range(0, len(order), self.decode.batch_size):
            rows = order[start : start + self.decode.batch_size]
            ids = self._decode_batch([encoded[i] for i in rows], strategy)
            for row, text in zip(rows, self.tokenizer.decode_batch(ids), strict=True):
                outputs[row] = one_line(text)
        return outputs

    def _decode_batch(self, sources: list[list[int]], strategy: str) -> torch.Tensor:
        pad, device = self.tokenizer.pad_id, next(self.model.parameters()).device
        longest = max(1, max(len(s) for s in sources))
        # T5's relative positions have no maximum length.
        limit = getattr(self.model.config, "max_len", _VOCAB_PLACEHOLDER) - 1
        src = torch.full((len(sources), longest), pad, dtype=torch.long)
        for i, ids in enumerate(sources):
            src[i, : len(ids)] = torch.tensor(ids[:longest], dtype=torch.long)
        src = src[:, :limit].to(device)
        max_new = min(limit, int(self.decode.max_len_a * longest + self.decode.max_len_b))
        common = dict(
            max_new_tokens=max_new,
            bos_id=self.tokenizer.bos_id,
            eos_id=self.tokenizer.eos_id,
            pad_id=pad,
        )
        if strategy == "greedy":
            return greedy_decode(self.model, src, **common)
        result = beam_search(
            self.model,
            src,
            beam_size=self.decode.beam_size,
            length_penalty=self.decode.length_penalty,
            **common,
        )
        return result.sequences[:, 0]


def score_translations(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """sacreBLEU BLEU and chrF of detokenised text, with their signatures."""
    bleu = corpus_bleu(hypotheses, references)
    chrf = corpus_chrf(hypotheses, references)
    return {
        "bleu": bleu.score,
        "bleu_signature": bleu.signature,
        "chrf": chrf.score,
        "chrf_signature": chrf.signature,
        "sentences": len(hypotheses),
    }


def evaluate_translation(
    translator: Translator, pairs: Sequence[tuple[str, str]], *, strategy: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Translate the sources of ``pairs`` and score them against the targets."""
    hypotheses = translator.translate([src for src, _ in pairs], strategy=strategy)
    return score_translations(hypotheses, [tgt for _, tgt in pairs]), hypotheses


def _validation_fn(recipe: TranslationRecipe, tokenizer: TextTokenizer, corpora: Corpora):
    """``evaluate_fn`` for the Trainer: BLEU of a validation sample (greedy by default)."""
    sample = corpora.valid[: recipe.valid_bleu_sentences]

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        translator = Translator(model, tokenizer, recipe.decode, recipe.data.source_prefix)  # type: ignore[arg-type]
        scores, _ = evaluate_translation(translator, sample, strategy=recipe.valid_decode)
        return {"valid_bleu": scores["bleu"], "valid_chrf": scores["chrf"]}

    return evaluate


def _forward(recipe: TranslationRecipe):
    """Teacher-forced logits of the recipe's architecture (``None``: the Transformer's own)."""
    if recipe.model.get("architecture") != "t5":
        return None
    return lambda model, src, tgt_in: model(src, decoder_input_ids=tgt_in).logits


def _prepare_run(recipe: TranslationRecipe, corpora: Corpora, resume: bool) -> TextTokenizer:
    """Write the recipe and the tokenizer into the run directory (reuse them on resume)."""
    tokenizer_file = prepare_run_dir(recipe) / "tokenizer.json"
    if resume and tokenizer_file.is_file():
        return load_tokenizer(tokenizer_file)
    tokenizer = build_tokenizer(recipe.data, corpora.train)
    tokenizer.save(tokenizer_file)
    return tokenizer


def train_translation(recipe: TranslationRecipe, *, resume: bool = False) -> dict[str, Any]:
    """Train, select on validation BLEU, evaluate the best checkpoint on the test set."""
    corpora = load_corpora(recipe.data)
    for report in corpora.reports:
        print(report)
    tokenizer = _prepare_run(recipe, corpora, resume)
    model = build_model(recipe, tokenizer)
    source = TokenBudgetBatcher(
        list(
            zip(
                tokenizer.encode_batch([recipe.data.source_prefix + s for s, _ in corpora.train]),
                tokenizer.encode_batch([t for _, t in corpora.train]),
                strict=True,
            )
        ),
        recipe.data.max_tokens,
        pad_id=tokenizer.pad_id,
        bos_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
        seed=recipe.train.seed or 0,
        max_src_len=recipe.data.max_len,
        max_tgt_len=recipe.data.max_len,
    )
    summary, report = fit_recipe(
        model,
        seq2seq_loss(tokenizer.pad_id, recipe.label_smoothing, _forward(recipe)),
        source,
        recipe,
        evaluate_fn=_validation_fn(recipe, tokenizer, corpora),
        resume=resume,
        load_selected=False,  # load_translator loads them
    )
    if not report:
        return {"summary": summary.to_dict()}
    translator = load_translator(recipe.output_dir, model=model)  # type: ignore[arg-type]
    scores, hypotheses = evaluate_translation(translator, corpora.test)
    return _write_results(recipe, summary.to_dict(), scores, hypotheses)


def one_line(text: str) -> str:
    """A translation as one line: an untrained model's byte-level BPE output may hold
    line breaks or other control whitespace, which would misalign line-based files."""
    return " ".join(text.split())


def _write_results(
    recipe: TranslationRecipe, summary: dict, scores: dict, hypotheses: list[str]
) -> dict[str, Any]:
    out = Path(recipe.output_dir)  # type: ignore[arg-type]
    (out / "test.hyp.txt").write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    results = {"test": scores, "summary": summary, "decode": dataclasses.asdict(recipe.decode)}
    write_results(out, results)
    print(f"test BLEU {scores['bleu']:.2f} ({scores['bleu_signature']})")
    print(f"test chrF {scores['chrf']:.2f} ({scores['chrf_signature']})")
    return results


def load_translator(
    run_dir: str | Path, *, which: str | None = None, model: Transformer | None = None
) -> Translator:
    """Rebuild the model of a run directory and load its best (else latest) weights."""
    run_dir = Path(run_dir)
    recipe = load_run_recipe(run_dir, TranslationRecipe, "a translation run")
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    model = model if model is not None else build_model(recipe, tokenizer)
    if not list_checkpoints(run_dir / "checkpoints") and which is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoints to load")
    load_model_weights(model, run_dir, which or best_or_latest(run_dir))
    return Translator(model.eval(), tokenizer, recipe.decode, recipe.data.source_prefix)
