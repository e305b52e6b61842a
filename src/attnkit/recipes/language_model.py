"""Language modelling with GPT on a text file (tiny-shakespeare, char-level), from one YAML recipe.

As nanoGPT's ``shakespeare_char``: the first ``train_fraction`` of the
characters train, the rest validate; batches are random ``block_size``
windows from a memory-mapped token stream. Validation loss is the mean
cross-entropy (nats per token) over ``eval_batches`` fixed windows. The run
directory holds:

```
runs/NAME/recipe.yaml, tokenizer.json, train.bin, val.bin (token streams)
runs/NAME/checkpoints/  runs/NAME/metrics.jsonl  runs/NAME/loss.png
runs/NAME/results.json  best val loss, bits per character, wall time, a sample
```
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.data import CharTokenizer, LMWindowSource, TextTokenizer, TokenStream, data_root
from attnkit.data.batching import LMBatch
from attnkit.data.tokenizers import load_tokenizer
from attnkit.generation import sample
from attnkit.generation.interface import check_positive_int
from attnkit.generation.processors import (
    check_repetition_penalty,
    check_temperature,
    check_top_k,
    check_top_p,
)
from attnkit.models import GPT, GPTConfig
from attnkit.recipes.common import (
    RunRecipe,
    best_or_latest,
    fit_recipe,
    load_run_recipe,
    prepare_run_dir,
    reject_derived_fields,
    run_timings,
    selected_scores,
    write_results,
)
from attnkit.recipes.schema import ConfigError, from_dict
from attnkit.train import LossOutput, TrainConfig, load_model_weights

__all__ = [
    "LanguageModelData",
    "LanguageModelRecipe",
    "SampleSettings",
    "load_language_model",
    "train_language_model",
]


@dataclass
class LanguageModelData:
    """The text, its split and the windows drawn from it.

    ``corpus`` is a text file under the data root (``$ATTNKIT_DATA``, default
    ``../shared/data``) unless ``root`` is given. Windows are random; an
    "epoch" is ``steps_per_epoch`` batches (it only numbers the data position).
    """

    corpus: str = "tinyshakespeare/input.txt"
    root: str | None = None
    tokenizer: Literal["char"] = "char"
    train_fraction: float = 0.9
    block_size: int = 64
    batch_size: int = 12
    steps_per_epoch: int = 1000
    limit_chars: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.train_fraction < 1.0:
            raise ConfigError(f"data.train_fraction must be in (0, 1); got {self.train_fraction}")


@dataclass
class SampleSettings:
    """Text generated at the end of training (and by ``attnkit generate``).

    The settings of :func:`attnkit.generation.sample`: ``top_k`` / ``top_p``
    ``None`` and ``repetition_penalty`` 1.0 are off. They are checked here, so a
    bad value stops the recipe when it is loaded, not after training.
    """

    prompt: str = "\n"
    max_new_tokens: int = 300
    temperature: float = 0.8
    top_k: int | None = 200
    top_p: float | None = None
    repetition_penalty: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int("max_new_tokens", self.max_new_tokens)
        check_temperature(self.temperature)
        if self.top_k is not None:
            check_top_k(self.top_k)
        if self.top_p is not None:
            check_top_p(self.top_p)
        check_repetition_penalty(self.repetition_penalty)


@dataclass
class LanguageModelRecipe(RunRecipe):
    """A GPT language-modelling experiment: data, model, training, evaluation, sampling.

    ``model`` holds :class:`attnkit.models.GPTConfig` fields (``vocab_size`` comes
    from the tokenizer; ``max_len`` defaults to ``block_size``).
    """

    name: str = "language_model"
    task: Literal["language_model"] = "language_model"
    output_dir: str | None = None
    data: LanguageModelData = field(default_factory=LanguageModelData)
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=2000))
    eval_batches: int = 200
    max_minutes: float | None = None
    sample: SampleSettings = field(default_factory=SampleSettings)

    def __post_init__(self) -> None:
        reject_derived_fields(self.model, ("vocab_size",), "the tokenizer", "; remove it")
        from_dict(GPTConfig, {**self.model, "vocab_size": 1}, prefix="model")
        self._set_output_dir()

    @classmethod
    def from_dict(cls, data: dict) -> LanguageModelRecipe:
        return from_dict(cls, data)


def read_corpus(data: LanguageModelData) -> str:
    """The corpus text (its first ``limit_chars`` characters when set)."""
    path = (Path(data.root) if data.root else data_root()) / data.corpus
    if not path.is_file():
        raise FileNotFoundError(f"{path}: corpus not found (set ATTNKIT_DATA or data.root)")
    text = path.read_text(encoding="utf-8")
    if data.limit_chars is not None:
        text = text[: data.limit_chars]
    if len(text) < 2 * (data.block_size + 1):
        raise ValueError(f"{path}: {len(text)} characters are too few for block_size")
    return text


def build_model(recipe: LanguageModelRecipe, tokenizer: TextTokenizer) -> GPT:
    options = {"max_len": recipe.data.block_size, **recipe.model}
    return GPT(GPTConfig(vocab_size=tokenizer.vocab_size, **options))


def lm_loss(model: torch.nn.Module, batch: LMBatch) -> LossOutput:
    """Summed next-token cross-entropy of ``batch.y`` given ``batch.x``."""
    logits = model(batch.x).logits
    loss = F.cross_entropy(logits.flatten(0, 1).float(), batch.y.flatten(), reduction="sum")
    return LossOutput(loss, batch.y.numel())


def mean_window_loss(
    model: torch.nn.Module,
    stream: TokenStream,
    data: LanguageModelData,
    num_batches: int,
    window_loss: Callable[[torch.nn.Module, Tensor, Tensor, torch.device], LossOutput],
) -> float:
    """Mean loss per predicted token over ``num_batches`` windows of ``stream``: the same
    windows at every call (a fixed seed), so evaluations compare.

    ``window_loss(model, x (B, T), y (B, T), device)`` gives one batch's summed loss.
    """
    generator = torch.Generator().manual_seed(1234)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for _ in range(num_batches):
            x, y = stream.random_windows(data.batch_size, data.block_size, generator)
            out = window_loss(model, x, y, device)
            total += float(out.loss_sum)
            count += out.num_tokens
    return total / max(count, 1)


def _validation_fn(recipe: LanguageModelRecipe, stream: TokenStream):
    """Mean validation loss over ``eval_batches`` windows, the same ones at every evaluation."""

    def next_token_loss(model, x, y, device) -> LossOutput:
        return lm_loss(model, LMBatch(x.to(device), y.to(device)))

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        loss = mean_window_loss(model, stream, recipe.data, recipe.eval_batches, next_token_loss)
        return {"val_loss": loss, "val_bpc": loss / math.log(2)}

    return evaluate


def prepare_token_streams(recipe: Any, text: str, resume: bool):
    """Character tokenizer and the train/val token streams, written into the run directory.

    ``recipe`` is any run recipe with a :class:`LanguageModelData` ``data`` section.
    """
    out = prepare_run_dir(recipe)
    tokenizer_file = out / "tokenizer.json"
    if resume and tokenizer_file.is_file():
        tokenizer = load_tokenizer(tokenizer_file)
    else:
        tokenizer = CharTokenizer.train([text])
        tokenizer.save(tokenizer_file)
    ids = tokenizer.encode(text)
    cut = int(len(ids) * recipe.data.train_fraction)
    train = TokenStream.build(ids[:cut], out / "train.bin")
    val = TokenStream.build(ids[cut:], out / "val.bin")
    return tokenizer, train, val


def generate_text(model: GPT, tokenizer: TextTokenizer, settings: SampleSettings) -> str:
    """Sample a continuation of ``settings.prompt`` (KV-cached, seeded).

    The special tokens are suppressed: raw training text never contains them,
    and they decode to nothing, so every new token is text.
    """
    prompt_ids = tokenizer.encode(settings.prompt) or [tokenizer.unk_id]
    # Positions 0 .. max_len - 1 are fed; the last new token is never fed back.
    room = model.config.max_len - len(prompt_ids) + 1
    if room < 1:
        raise ValueError(
            f"prompt of {len(prompt_ids)} tokens is longer than max_len={model.config.max_len}"
        )
    device = next(model.parameters()).device
    prompt = torch.tensor([prompt_ids], device=device)
    new = sample(
        model,
        prompt,
        max_new_tokens=min(settings.max_new_tokens, room),
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        repetition_penalty=settings.repetition_penalty,
        generator=torch.Generator(device=device).manual_seed(settings.seed),
        suppress_ids=[tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id],
    )
    return settings.prompt + tokenizer.decode(new[0].tolist())


def train_language_model(recipe: LanguageModelRecipe, *, resume: bool = False) -> dict[str, Any]:
    """Train GPT on the corpus, select on validation loss, report it with a sample."""
    started = time.monotonic()
    text = read_corpus(recipe.data)
    tokenizer, train_stream, val_stream = prepare_token_streams(recipe, text, resume)
    model = build_model(recipe, tokenizer)
    source = LMWindowSource(
        train_stream,
        recipe.data.batch_size,
        recipe.data.block_size,
        seed=recipe.train.seed or 0,
        steps_per_epoch=recipe.data.steps_per_epoch,
    )
    summary, report = fit_recipe(
        model,
        lm_loss,
        source,
        recipe,
        evaluate_fn=_validation_fn(recipe, val_stream),
        resume=resume,
        load_selected=False,  # load_language_model loads them
    )
    if not report:
        return {"summary": summary.to_dict()}
    model = load_language_model(recipe.output_dir, model=model)[0]  # type: ignore[arg-type]
    scores = selected_scores(summary, model, _validation_fn(recipe, val_stream))
    results = {
        "val_loss": scores["val_loss"],
        "val_bpc": scores["val_bpc"],
        **run_timings(summary, started),
        "sample": generate_text(model, tokenizer, recipe.sample),
    }
    write_results(recipe.output_dir, results)  # type: ignore[arg-type]
    print(f"val loss {scores['val_loss']:.4f} nats/char ({scores['val_bpc']:.4f} bits/char)")
    print(results["sample"])
    return results


def load_language_model(
    run_dir: str | Path, *, which: str | None = None, model: GPT | None = None
) -> tuple[GPT, TextTokenizer, LanguageModelRecipe]:
    """The GPT of a run directory with its best (else latest) weights, tokenizer and recipe."""
    run_dir = Path(run_dir)
    recipe = load_run_recipe(run_dir, LanguageModelRecipe)
    tokenizer = load_tokenizer(run_dir / "tokenizer.json")
    model = model if model is not None else build_model(recipe, tokenizer)
    load_model_weights(model, run_dir, which or best_or_latest(run_dir))
    return model.eval(), tokenizer, recipe
