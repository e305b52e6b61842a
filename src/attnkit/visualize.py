"""``attnkit visualize``: run a checkpoint on one text and write its attention explorer.

Part of the command-line layer (it loads run directories through :mod:`attnkit.recipes`,
which :mod:`attnkit.analysis` must not import). Two kinds of checkpoint:

* a local **Hugging Face model directory** (``config.json`` and ``tokenizer.json``):
  BERT, GPT-2 or T5, read with :func:`attnkit.interop.from_pretrained`. The text is
  encoded with the directory's tokenizer, its special tokens included (BERT's
  ``[CLS]``/``[SEP]``, T5's ``</s>``), without the padding or truncation that the
  tokenizer file may ask for.
* an **``attnkit train`` run directory** (``recipe.yaml``): a translation run
  (Transformer or T5) or a language-model run (GPT).

Encoder-decoder models need a target: ``target`` is teacher-forced after the decoder's
start token (``<bos>``, or T5's ``decoder_start_token_id``); without one the model's
greedy output for the text is used (the decoder's input: the start token and the
generated tokens, the final ``<eos>`` left out). Every token string is the tokenizer's
own piece (``id_to_token``; decoded text per id for run tokenizers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from attnkit.analysis.capture import AttentionCapture, capture_attention
from attnkit.analysis.explorer import DEFAULT_TITLE, kind_tokens, write_attention_explorer
from attnkit.analysis.plots import plot_attention_heatmap
from attnkit.data import TextTokenizer
from attnkit.generation import greedy_decode
from attnkit.models import T5, Transformer, ViT

__all__ = ["TextExample", "capture_example", "load_example", "visualize"]

# Greedy targets are at most ``a * source length + b`` tokens (as translation decoding).
_MAX_LEN_A, _MAX_LEN_B = 1.5, 10


@dataclass
class TextExample:
    """Token ids of one forward pass and their display strings.

    ``source_*``: the encoder's input (the whole text of an encoder- or decoder-only
    model); ``target_*``: the decoder's input of an encoder-decoder model, else ``None``.
    """

    source_ids: list[int]
    source_tokens: list[str]
    target_ids: list[int] | None = None
    target_tokens: list[str] | None = None


def visualize(
    checkpoint: str | Path,
    text: str,
    out: str | Path,
    *,
    target: str | None = None,
    png: str | Path | None = None,
    kind: str | None = None,
    layer: int = 0,
    head: int = 0,
    which: str | None = None,
) -> list[Path]:
    """Write the explorer page (and, with ``png``, one head's heatmap); returns the paths.

    ``kind`` (default: ``cross`` when captured, else the first kind captured),
    ``layer`` and ``head`` choose the heatmap. ``which``: ``best``/``latest``
    checkpoint of a run directory.
    """
    model, example = load_example(checkpoint, text, target=target, which=which)
    capture = capture_example(model, example)
    heatmap = _heatmap_selection(capture, kind, layer, head) if png is not None else None
    written = [
        write_attention_explorer(
            out,
            capture,
            source_tokens=example.source_tokens,
            target_tokens=example.target_tokens,
            title=f"{DEFAULT_TITLE}: {Path(checkpoint).resolve().name}",
        )
    ]
    if heatmap is not None and png is not None:
        written.append(_write_heatmap(png, capture, example, *heatmap))
    return written


def load_example(
    checkpoint: str | Path, text: str, *, target: str | None = None, which: str | None = None
) -> tuple[nn.Module, TextExample]:
    """The model of ``checkpoint`` (eval mode) and the token ids to run it on."""
    directory = Path(checkpoint)
    if (directory / "config.json").is_file():
        return _hugging_face_example(directory, text, target)
    if (directory / "recipe.yaml").is_file():
        return _run_example(directory, text, target, which)
    raise FileNotFoundError(
        f"{directory}: neither a Hugging Face model directory (config.json) nor an "
        "`attnkit train` run directory (recipe.yaml)"
    )


def capture_example(model: nn.Module, example: TextExample) -> AttentionCapture:
    """Run ``model`` on ``example`` (batch of one, no gradients) and record its attention."""
    device = next(model.parameters()).device
    source = torch.tensor([example.source_ids], device=device)
    target = None
    if example.target_ids is not None:
        target = torch.tensor([example.target_ids], device=device)
    with torch.no_grad(), capture_attention(model) as capture:
        if target is None:
            model(source)
        elif isinstance(model, T5):
            model(source, decoder_input_ids=target)
        else:
            model(source, target)
    return capture


# ---------------------------------------------------------------- Hugging Face directories


def _hugging_face_example(
    directory: Path, text: str, target: str | None
) -> tuple[nn.Module, TextExample]:
    from attnkit.interop import from_pretrained, load_pretrained_tokenizer

    model = from_pretrained(directory)
    tokenizer = load_pretrained_tokenizer(directory)
    if isinstance(model, ViT):
        raise ValueError(
            f"{directory}: visualize supports text models (BERT, GPT-2, T5); "
            f"got {type(model).__name__}"
        )
    # Some tokenizer.json files pad or cut every text to a fixed length: show the text as
    # it is (a text too long for the model is reported by the model).
    tokenizer.no_padding()
    tokenizer.no_truncation()
    encoding = tokenizer.encode(text)
    source_ids = _nonempty(encoding.ids, "--text")
    source = TextExample(source_ids, list(encoding.tokens))
    if not isinstance(model, T5):
        _no_target(target, model, directory)
        return model, source
    config = model.config
    if target is not None:
        target_ids = _nonempty(tokenizer.encode(target, add_special_tokens=False).ids, "--target")
    else:
        target_ids = _greedy(
            model, source_ids, config.decoder_start_id, config.eos_id, config.pad_id
        )
    ids = [config.decoder_start_id, *target_ids]
    tokens = [tokenizer.id_to_token(i) or f"[{i}]" for i in ids]
    return model, TextExample(source.source_ids, source.source_tokens, ids, tokens)


# ---------------------------------------------------------------- run directories


def _run_example(
    run_dir: Path, text: str, target: str | None, which: str | None
) -> tuple[nn.Module, TextExample]:
    import yaml

    task = (yaml.safe_load((run_dir / "recipe.yaml").read_text()) or {}).get("task")
    if task == "translation":
        return _translation_example(run_dir, text, target, which)
    if task == "language_model":
        return _language_model_example(run_dir, text, target, which)
    raise ValueError(
        f"{run_dir}: visualize supports translation and language_model runs; got task {task!r}"
    )


def _translation_example(
    run_dir: Path, text: str, target: str | None, which: str | None
) -> tuple[nn.Module, TextExample]:
    from attnkit.recipes.translation import load_translator

    translator = load_translator(run_dir, which=which)
    model, tokenizer = translator.model, translator.tokenizer
    source_ids = _nonempty(tokenizer.encode(translator.source_prefix + text), "--text")
    if target is not None:
        target_ids = _nonempty(tokenizer.encode(target), "--target")
    else:
        target_ids = _greedy(
            model, source_ids, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id
        )
    ids = [tokenizer.bos_id, *target_ids]
    example = TextExample(
        source_ids, _run_tokens(tokenizer, source_ids), ids, _run_tokens(tokenizer, ids)
    )
    return model, example


def _language_model_example(
    run_dir: Path, text: str, target: str | None, which: str | None
) -> tuple[nn.Module, TextExample]:
    from attnkit.recipes.language_model import load_language_model

    model, tokenizer, _ = load_language_model(run_dir, which=which)
    _no_target(target, model, run_dir)
    ids = _nonempty(tokenizer.encode(text), "--text")
    return model, TextExample(ids, _run_tokens(tokenizer, ids))


def _run_tokens(tokenizer: TextTokenizer, ids: list[int]) -> list[str]:
    """Each id decoded on its own (specials shown), as the run's tokenizer writes it."""
    return [tokenizer.decode([i], skip_special=False) for i in ids]


# ---------------------------------------------------------------- shared


def _greedy(
    model: Transformer | T5, source_ids: list[int], bos: int, eos: int, pad: int
) -> list[int]:
    """The model's greedy output for ``source_ids``, without its final ``<eos>``."""
    limit = getattr(model.config, "max_len", None)
    max_new = int(_MAX_LEN_A * len(source_ids) + _MAX_LEN_B)
    if limit is not None:
        max_new = max(1, min(max_new, limit - 1))
    source = torch.tensor([source_ids], device=next(model.parameters()).device)
    generated = greedy_decode(
        model, source, max_new_tokens=max_new, bos_id=bos, eos_id=eos, pad_id=pad
    )[0].tolist()
    return generated[: generated.index(eos)] if eos in generated else generated


def _nonempty(ids: list[int], option: str) -> list[int]:
    if not ids:
        raise ValueError(f"{option} gives no tokens; give some text")
    return list(ids)


def _no_target(target: str | None, model: nn.Module, origin: Path) -> None:
    if target is not None:
        raise ValueError(
            f"--target is for encoder-decoder models (T5, translation runs); {origin} holds "
            f"a {type(model).__name__}"
        )


def _heatmap_selection(
    capture: AttentionCapture, kind: str | None, layer: int, head: int
) -> tuple[str, int, int]:
    """Check ``kind``/``layer``/``head`` against what was captured (kind defaulted)."""
    kinds = capture.kinds()
    kind = kind or ("cross" if "cross" in kinds else kinds[0])
    if kind not in kinds:
        raise ValueError(f"--kind must be one of {kinds} (captured from this model); got {kind!r}")
    layers = capture.layers(kind)
    if not 0 <= layer < len(layers):
        raise ValueError(f"--layer must be in [0, {len(layers)}) for {kind}; got {layer}")
    heads = layers[layer].shape[1]
    if not 0 <= head < heads:
        raise ValueError(f"--head must be in [0, {heads}) for {kind} layer {layer}; got {head}")
    return kind, layer, head


def _write_heatmap(
    path: str | Path,
    capture: AttentionCapture,
    example: TextExample,
    kind: str,
    layer: int,
    head: int,
) -> Path:
    queries, keys = kind_tokens(kind, example.source_tokens, example.target_tokens)
    return plot_attention_heatmap(
        capture.layers(kind)[layer][0, head],
        path,
        query_labels=queries,
        key_labels=keys,
        title=f"{kind}, layer {layer}, head {head}",
    )
