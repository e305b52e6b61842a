"""Show, Attend and Tell on Fashion-MNIST mosaics, from one YAML recipe.

Training mosaics are composed afresh every epoch from train-split images
(:class:`attnkit.data.mosaics.MosaicBatcher`); validation mosaics of held-out
train-split images select the best checkpoint (validation BLEU); the test
mosaics are made of test-split images only. The run directory holds:

```
runs/NAME/recipe.yaml         the resolved recipe
runs/NAME/checkpoints/        step_*/ and best/
runs/NAME/metrics.jsonl       logged metrics (``cross_entropy`` apart from the regulariser)
runs/NAME/results.json        test BLEU-4, exact match, object accuracy, localisation
runs/NAME/test.hyp.txt        the generated test captions
runs/NAME/attention/*.png     per-word attention overlays of a few test mosaics
```

Metrics (test mosaics, captions decoded greedily or by beam search):

* ``bleu``: sacreBLEU corpus BLEU-4 of the generated captions against the reference.
* ``exact_match``: fraction of captions identical to the reference.
* ``object_accuracy``: fraction of the four object words (word 1, 4, 7, 10 of
  a caption) generated equal to the reference word at that position.
* ``localisation``: over the object words that are generated *correctly* (the
  word at position ``j`` equals the reference object at ``j``, whose quadrant
  is ``q``), the fraction whose attention map -- the weights the decoder used
  when it emitted that word -- puts the most mass on quadrant ``q`` (mass =
  sum of the weights of the quadrant's ``g/2 x g/2`` cells).
  ``counted`` says over how many words it was taken.
* ``teacher_forced_localisation``: the same for every object word of the
  reference captions, fed to the decoder (teacher forcing).

The regulariser's floor is ``L (1 - T / L)^2`` (e.g. 172.7 for ``T = 12``
steps over ``L = 196`` cells), so the logged ``loss`` sits near that value; the
cross-entropy is logged apart.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.data.mosaics import (
    CLASS_WORDS,
    OBJECT_WORD_QUADRANTS,
    PIXEL_MEAN,
    PIXEL_STD,
    CaptionBatch,
    MosaicBatcher,
    Mosaics,
    WordVocabulary,
    caption_vocabulary,
    load_mosaic_splits,
    quadrant_attention,
)
from attnkit.generation.captioning import caption_images
from attnkit.metrics import corpus_bleu
from attnkit.models.captioning import CaptioningConfig, ShowAttendTell
from attnkit.recipes.common import (
    RunRecipe,
    fit_recipe,
    prepare_run_dir,
    reject_derived_fields,
    run_timings,
    training_order_seed,
    with_vocabulary,
    write_results,
)
from attnkit.recipes.schema import ConfigError, from_dict
from attnkit.train import LossOutput, TrainConfig

__all__ = [
    "CaptionDecode",
    "CaptionScores",
    "CaptioningRecipe",
    "MosaicData",
    "evaluate_captions",
    "save_attention_overlay",
    "score_objects",
    "train_captioning",
]

_SLOTS = list(OBJECT_WORD_QUADRANTS)  # word index of each quadrant's object, in quadrant order


@dataclass
class MosaicData:
    """Fashion-MNIST mosaics (``root``: the Fashion-MNIST folder; default the data root).

    ``valid_images`` train-split images are held out (``valid_images / 4``
    validation mosaics); ``limit_*`` cut the data for quick runs. ``seed`` fixes the
    hold-out and the test mosaics; ``train.seed`` the training mosaics and their order.
    """

    dataset: Literal["fashion_mnist_mosaics"] = "fashion_mnist_mosaics"
    root: str | None = None
    seed: int = 0
    batch_size: int = 64
    eval_batch_size: int = 250
    valid_images: int = 2000
    limit_train_images: int | None = None
    limit_valid: int | None = None
    limit_test: int | None = None


@dataclass
class CaptionDecode:
    """``beam_size`` 1 decodes greedily; ``length_penalty`` as in beam search."""

    beam_size: int = 1
    max_new_tokens: int = 16
    length_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.beam_size < 1 or self.max_new_tokens < 1:
            raise ValueError(
                f"beam_size and max_new_tokens must be >= 1; got {self.beam_size}, "
                f"{self.max_new_tokens}"
            )


@dataclass
class CaptioningRecipe(RunRecipe):
    """A captioning experiment; ``model`` holds :class:`CaptioningConfig` fields
    (``vocab_size`` and ``pad_id`` come from the caption vocabulary)."""

    name: str = "captioning"
    task: Literal["captioning"] = "captioning"
    output_dir: str | None = None
    data: MosaicData = field(default_factory=MosaicData)
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=3000))
    decode: CaptionDecode = field(default_factory=CaptionDecode)
    overlays: int = 4
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        reject_derived_fields(self.model, ("vocab_size", "pad_id"), "the caption vocabulary")
        config = from_dict(CaptioningConfig, _model_fields(self.model), prefix="model")
        if config.grid_size % 2:
            raise ConfigError(
                f"model: the feature grid must have an even side (quadrants of whole cells); "
                f"got {config.grid_size}"
            )
        if self.overlays < 0:
            raise ConfigError(f"overlays must be >= 0; got {self.overlays}")
        self._set_output_dir()


def _model_fields(model: dict[str, Any]) -> dict[str, Any]:
    return with_vocabulary(caption_vocabulary(), model)


def build_model(recipe: CaptioningRecipe) -> ShowAttendTell:
    """The recipe's :class:`ShowAttendTell`."""
    return ShowAttendTell(CaptioningConfig(**_model_fields(recipe.model)))


def caption_loss(model: torch.nn.Module, batch: CaptionBatch) -> LossOutput:
    """The model's loss (mean cross-entropy + regulariser) as a sum over target tokens."""
    output = model(batch.pixel_values, batch.input_ids, labels=batch.labels)
    tokens = batch.num_tokens
    extra = output.extra
    logs = {"cross_entropy": extra["cross_entropy"].detach()}
    logs["attention_penalty"] = extra["attention_penalty"].detach()
    return LossOutput(output.loss * tokens, tokens, logs)


# ----------------------------------------------------------------------------- evaluation


@dataclass
class CaptionScores:
    """Scores of generated captions (see the module docstring) and the captions themselves."""

    bleu: float
    bleu_signature: str
    exact_match: float
    object_accuracy: float
    localisation: float | None
    localisation_counted: int
    teacher_forced_localisation: float
    mosaics: int
    hypotheses: list[str]

    def metrics(self) -> dict[str, Any]:
        """Everything but the captions."""
        return {k: v for k, v in asdict(self).items() if k != "hypotheses"}


def _localised(alphas: Tensor, grid: int) -> Tensor:
    """``(B, T, L)`` weights -> ``(B, 4)``: does each object word attend most to its quadrant?"""
    slots = [j for j in _SLOTS if j < alphas.size(1)]
    quadrants = quadrant_attention(alphas[:, slots], grid).argmax(-1)  # (B, <=4)
    hits = quadrants == torch.arange(len(slots), device=alphas.device)
    return F.pad(hits, (0, 4 - len(slots)), value=False)


def score_objects(
    generated: Tensor,
    alphas: Tensor,
    object_labels: Tensor,
    vocabulary: WordVocabulary,
    grid: int,
) -> tuple[Tensor, Tensor]:
    """Which object words are right, and which of those are localised (module docstring).

    Args:
        generated: ``(B, L)`` generated ids (without ``<bos>``).
        alphas: ``(B, L, grid * grid)`` the weights each generated word was emitted with.
        object_labels: ``(B, 4)`` the reference class of each quadrant.

    Returns:
        ``(matches, localised)``, bool ``(B, 4)`` per quadrant: the word at the
        quadrant's position is the reference object; and, for those, its
        attention puts the most mass on that quadrant.
    """
    if alphas.shape[:2] != generated.shape or object_labels.shape != (generated.size(0), 4):
        raise ValueError(
            f"need generated (B, L), alphas (B, L, cells), object_labels (B, 4); got "
            f"{tuple(generated.shape)}, {tuple(alphas.shape)}, {tuple(object_labels.shape)}"
        )
    table = torch.tensor([vocabulary.stoi[w] for w in CLASS_WORDS], device=object_labels.device)
    at_slots = F.pad(generated, (0, max(0, _SLOTS[-1] + 1 - generated.size(1))), value=-1)
    matches = at_slots[:, _SLOTS] == table[object_labels]
    return matches, _localised(alphas, grid) & matches


@torch.no_grad()
def _score_batch(
    model: ShowAttendTell, batch: CaptionBatch, vocabulary: WordVocabulary, decode: CaptionDecode
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Generated ids ``(B, L)``, object matches, their localisation hits and the
    teacher-forced hits, each ``(B, 4)``."""
    generated = caption_images(
        model,
        batch.pixel_values,
        bos_id=vocabulary.bos_id,
        eos_id=vocabulary.eos_id,
        pad_id=vocabulary.pad_id,
        max_new_tokens=decode.max_new_tokens,
        beam_size=decode.beam_size,
        length_penalty=decode.length_penalty,
    )
    grid = model.config.grid_size
    # The weights used to emit each generated word: rerun the decoder on the generated
    # prefix (deterministic in eval mode, so these are the decoding's own weights).
    bos = torch.full_like(generated[:, :1], vocabulary.bos_id)
    inputs = torch.cat([bos, generated[:, :-1]], dim=1)
    alphas = model(batch.pixel_values, inputs).extra["alphas"]
    matches, located = score_objects(generated, alphas, batch.object_labels, vocabulary, grid)
    forced = _localised(model(batch.pixel_values, batch.input_ids).extra["alphas"], grid)
    return generated, matches, located, forced


def evaluate_captions(
    model: ShowAttendTell,
    mosaics: Mosaics,
    vocabulary: WordVocabulary,
    decode: CaptionDecode,
    batch_size: int = 250,
) -> CaptionScores:
    """Caption ``mosaics`` and score them (model in eval mode, restored after)."""
    was_training = model.training
    model.eval()
    hypotheses, matches, located, forced = [], [], [], []
    device = next(model.parameters()).device
    try:
        for batch in mosaics.batches(batch_size, vocabulary):
            generated, match, hit, forced_hit = _score_batch(
                model, batch.to(device), vocabulary, decode
            )
            hypotheses += vocabulary.decode_batch(generated.cpu())
            matches.append(match.cpu())
            located.append(hit.cpu())
            forced.append(forced_hit.cpu())
    finally:
        model.train(was_training)
    references = mosaics.captions()
    bleu = corpus_bleu(hypotheses, references)
    match, hits = torch.cat(matches), torch.cat(located)
    counted = int(match.sum())
    return CaptionScores(
        bleu=bleu.score,
        bleu_signature=bleu.signature,
        exact_match=sum(h == r for h, r in zip(hypotheses, references, strict=True))
        / len(references),
        object_accuracy=float(match.float().mean()),
        localisation=int(hits.sum()) / counted if counted else None,
        localisation_counted=counted,
        teacher_forced_localisation=float(torch.cat(forced).float().mean()),
        mosaics=len(references),
        hypotheses=hypotheses,
    )


# ----------------------------------------------------------------------------- overlays


def save_attention_overlay(
    image: Tensor,
    words: list[str],
    alphas: Tensor,
    path: str | Path,
    *,
    gates: Tensor | None = None,
) -> Path:
    """One PNG: the image, then one panel per word with its attention map laid over it.

    Args:
        image: ``(S, S)`` grey image (any scale).
        words: the ``T`` generated words (``<eos>`` included if wanted).
        alphas: ``(T, g * g)`` the weights each word was emitted with.
        gates: optional ``(T,)`` beta gates, shown in the titles.
    """
    if alphas.dim() != 2 or alphas.size(0) != len(words):
        raise ValueError(
            f"alphas must be (T, cells) with T = {len(words)} words; got {tuple(alphas.shape)}"
        )
    grid = round(alphas.size(1) ** 0.5)
    if grid * grid != alphas.size(1) or image.dim() != 2:
        raise ValueError(
            f"need a square grid of cells and a (S, S) image; got {alphas.size(1)} cells "
            f"and image {tuple(image.shape)}"
        )
    size = image.shape[-2:]
    maps = F.interpolate(
        alphas.detach().float().reshape(-1, 1, grid, grid), size=size, mode="bilinear"
    )[:, 0]
    columns = 6
    rows = -(-(len(words) + 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.2 * rows), squeeze=False)
    picture = image.detach().float().cpu().numpy()
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(picture, cmap="gray")
    axes.flat[0].set_title("image")
    for index, word in enumerate(words):
        ax = axes.flat[index + 1]
        ax.imshow(picture, cmap="gray")
        ax.imshow(maps[index].cpu().numpy(), cmap="jet", alpha=0.45, vmin=0.0)
        gate = "" if gates is None else f" (β={float(gates[index]):.2f})"
        ax.set_title(f"{word}{gate}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


@torch.no_grad()
def _write_overlays(
    model: ShowAttendTell,
    mosaics: Mosaics,
    vocabulary: WordVocabulary,
    decode: CaptionDecode,
    out: Path,
    count: int,
) -> list[str]:
    """Per-word attention overlays of the first ``count`` mosaics; returns their paths."""
    if count == 0:
        return []
    model.eval()
    device = next(model.parameters()).device
    batch = next(mosaics.head(count).batches(count, vocabulary)).to(device)
    generated = caption_images(
        model, batch.pixel_values, bos_id=vocabulary.bos_id, eos_id=vocabulary.eos_id,
        pad_id=vocabulary.pad_id, max_new_tokens=decode.max_new_tokens,
        beam_size=decode.beam_size, length_penalty=decode.length_penalty,
    )  # fmt: skip
    inputs = torch.cat([torch.full_like(generated[:, :1], vocabulary.bos_id), generated], 1)
    output = model(batch.pixel_values, inputs[:, :-1])
    paths = []
    for row in range(generated.size(0)):
        ids = generated[row].tolist()
        length = ids.index(vocabulary.eos_id) + 1 if vocabulary.eos_id in ids else len(ids)
        words = [vocabulary.itos[i] for i in ids[:length]]
        image = batch.pixel_values[row, 0] * PIXEL_STD + PIXEL_MEAN
        path = out / "attention" / f"test_{row:03d}.png"
        extra = output.extra
        save_attention_overlay(
            image, words, extra["alphas"][row, :length], path, gates=extra["gates"][row, :length]
        )
        paths.append(str(path))
    return paths


# ----------------------------------------------------------------------------- training


def train_captioning(recipe: CaptioningRecipe, *, resume: bool = False) -> dict[str, Any]:
    """Train Show, Attend and Tell, select on validation BLEU, score the test mosaics."""
    started = time.monotonic()
    data = recipe.data
    splits = load_mosaic_splits(
        data.root,
        seed=data.seed,
        valid_images=data.valid_images,
        limit_train_images=data.limit_train_images,
        limit_test=data.limit_test,
    )
    valid = splits.valid.head(data.limit_valid)
    vocabulary = caption_vocabulary()
    out = prepare_run_dir(recipe)
    model = build_model(recipe)
    source = MosaicBatcher(
        splits.train_images,
        splits.train_labels,
        data.batch_size,
        vocabulary,
        seed=training_order_seed(recipe),
    )

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        scores = evaluate_captions(model, valid, vocabulary, recipe.decode, data.eval_batch_size)
        return {"valid_bleu": scores.bleu, "valid_exact_match": scores.exact_match}

    summary, report = fit_recipe(
        model, caption_loss, source, recipe, evaluate_fn=evaluate, resume=resume
    )
    if not report:
        return {"summary": summary.to_dict()}
    scores = evaluate_captions(model, splits.test, vocabulary, recipe.decode, data.eval_batch_size)
    (out / "test.hyp.txt").write_text("\n".join(scores.hypotheses) + "\n", encoding="utf-8")
    overlays = _write_overlays(
        model, splits.test, vocabulary, recipe.decode, out, min(recipe.overlays, len(splits.test))
    )
    results = write_results(
        out,
        {
            "test": scores.metrics(),
            "decode": asdict(recipe.decode),
            "overlays": overlays,
            **run_timings(summary, started),
        },
    )
    localisation = scores.localisation
    print(
        f"test BLEU {scores.bleu:.2f}, exact match {100 * scores.exact_match:.1f}%, "
        f"localisation {'n/a' if localisation is None else f'{100 * localisation:.1f}%'} "
        f"over {scores.localisation_counted} object words ({scores.mosaics} mosaics)"
    )
    return results
