"""The ``attnkit`` command line.

```
attnkit demo                               the main job (reversal, number words, Shakespeare GPT)
attnkit train CONFIG.yaml [key=value ...]  train a recipe (--resume continues the run)
attnkit evaluate --checkpoint RUN_DIR      BLEU/chrF of a trained run on a split
attnkit translate --checkpoint RUN_DIR     stdin -> stdout, one sentence per line
attnkit generate --checkpoint RUN_DIR      sample: continue stdin lines (GPT runs) or
                                           translate them (translation runs)
attnkit visualize --checkpoint DIR --text TEXT --out PAGE.html
                                           attention explorer (one HTML file) of a Hugging
                                           Face model directory or a run on one text
attnkit bench attention|train|gpt-train|generate|scaling   benchmarks
```
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["build_parser", "main"]


def _demo(args: argparse.Namespace) -> int:
    from attnkit.demo import run_demo

    for flag in ("steps", "translation_steps", "gpt_steps"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1; got {value}")
    run_demo(
        args.output,
        steps=args.steps,
        translation_steps=args.translation_steps,
        gpt_steps=args.gpt_steps,
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from attnkit.bench import main as bench_main

    return bench_main(args.bench_args)


def _train(args: argparse.Namespace) -> int:
    from attnkit.recipes import load_recipe, run_recipe

    recipe = load_recipe(args.config, args.overrides)
    results = run_recipe(recipe, resume=args.resume)
    summary = results.get("summary", {})
    print(f"stopped: {summary.get('message', summary.get('stop_reason'))}")
    return 130 if summary.get("stop_reason") == "signal" else 0


def _translator(args: argparse.Namespace):
    from attnkit.recipes.translation import load_translator

    translator = load_translator(args.checkpoint, which=args.which)
    for name in ("beam_size", "length_penalty", "batch_size"):
        if getattr(args, name, None) is not None:
            setattr(translator.decode, name, getattr(args, name))
    return translator


def _evaluate(args: argparse.Namespace) -> int:
    from attnkit.recipes import load_recipe
    from attnkit.recipes.translation import evaluate_translation, load_corpora

    translator = _translator(args)
    recipe = load_recipe(f"{args.checkpoint}/recipe.yaml")
    pairs = getattr(load_corpora(recipe.data), args.split)
    scores, _ = evaluate_translation(translator, pairs, strategy=args.strategy)
    print(json.dumps(scores, indent=2))
    return 0


def _translate(args: argparse.Namespace) -> int:
    translator = _translator(args)
    lines = [line.rstrip("\n") for line in sys.stdin]
    for line in translator.translate(lines, strategy=args.strategy):
        print(line)
    return 0


def _run_task(run_dir: str) -> str | None:
    """The ``task`` of a run directory's recipe (``None`` if it has none)."""
    from pathlib import Path

    import yaml

    recipe_file = Path(run_dir) / "recipe.yaml"
    if not recipe_file.is_file():
        return None
    return (yaml.safe_load(recipe_file.read_text()) or {}).get("task")


# `attnkit generate` options a language-model run's recipe also holds (its `sample:`
# section) -> the value a translation run, which has none, uses when it is not given.
_SAMPLING_DEFAULTS = {
    "max_new_tokens": 64,
    "temperature": 1.0,
    "top_k": None,
    "top_p": None,
    "repetition_penalty": 1.0,
    "seed": 0,
}


def _sampling_options(args: argparse.Namespace) -> dict:
    """The sampling options given on the command line (``--top-k 0``: no limit)."""
    given = {name: getattr(args, name) for name in _SAMPLING_DEFAULTS}
    given = {name: value for name, value in given.items() if value is not None}
    if given.get("top_k") == 0:
        given["top_k"] = None
    return given


def _generate_text(args: argparse.Namespace) -> int:
    """Continue each stdin line (an empty line: from scratch) with a trained GPT.

    Options left out keep the run's own sample settings.
    """
    import dataclasses

    from attnkit.recipes.language_model import generate_text, load_language_model

    model, tokenizer, recipe = load_language_model(args.checkpoint, which=args.which)
    settings = dataclasses.replace(recipe.sample, **_sampling_options(args))  # checks them
    for line in sys.stdin:
        prompted = dataclasses.replace(settings, prompt=line.rstrip("\n") or "\n")
        print(generate_text(model, tokenizer, prompted))
    return 0


def _generate(args: argparse.Namespace) -> int:
    import torch

    from attnkit.generation import sample

    if _run_task(args.checkpoint) == "language_model":
        return _generate_text(args)
    settings = {**_SAMPLING_DEFAULTS, **_sampling_options(args)}
    translator = _translator(args)
    tokenizer, model = translator.tokenizer, translator.model
    generator = torch.Generator().manual_seed(settings.pop("seed"))
    for line in sys.stdin:
        src = torch.tensor([tokenizer.encode(line.strip())[: model.config.max_len - 1]])
        ids = sample(
            model,
            src,
            bos_id=tokenizer.bos_id,
            eos_id=tokenizer.eos_id,
            pad_id=tokenizer.pad_id,
            generator=generator,
            **settings,
        )
        print(tokenizer.decode(ids[0]))
    return 0


def _visualize(args: argparse.Namespace) -> int:
    from attnkit.visualize import visualize

    written = visualize(
        args.checkpoint,
        args.text,
        args.out,
        target=args.target,
        png=args.png,
        kind=args.kind,
        layer=args.layer,
        head=args.head,
        which=args.which,
    )
    for path in written:
        print(f"wrote {path}")
    return 0


def _checkpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="run directory of `attnkit train`")
    parser.add_argument("--which", default=None, help="'best' (default if present) or 'latest'")


def _decoding_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategy", choices=["greedy", "beam"], default=None)
    parser.add_argument("--beam-size", type=int, default=None)
    parser.add_argument("--length-penalty", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)


def _add_demo(commands) -> None:
    demo = commands.add_parser("demo", help="the main job: reversal, number words, Shakespeare GPT")
    demo.add_argument("--output", default="runs/demo", help="folder for heatmaps and summaries")
    demo.add_argument("--steps", type=int, default=None, help="reversal training steps")
    demo.add_argument("--translation-steps", type=int, default=None, help="number-words steps")
    demo.add_argument("--gpt-steps", type=int, default=None, help="Shakespeare GPT steps")
    demo.set_defaults(handler=_demo)


def _add_train(commands) -> None:
    train = commands.add_parser("train", help="train a recipe (configs/*.yaml)")
    train.add_argument("config", help="recipe YAML file")
    train.add_argument("overrides", nargs="*", help="key.path=value overrides")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.set_defaults(handler=_train)


def _add_inference(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="BLEU/chrF of a run on a split")
    _checkpoint_options(evaluate)
    _decoding_options(evaluate)
    evaluate.add_argument("--split", choices=["train", "valid", "test"], default="test")
    evaluate.set_defaults(handler=_evaluate)

    translate = commands.add_parser("translate", help="translate stdin to stdout")
    _checkpoint_options(translate)
    _decoding_options(translate)
    translate.set_defaults(handler=_translate)

    generate = commands.add_parser(
        "generate",
        help="sample continuations/translations of stdin",
        description="Sample a continuation (language-model runs) or a translation "
        "(translation runs) of each line of stdin. A sampling option left out keeps the "
        "run's recipe value (its `sample:` section) for a language-model run; a "
        "translation run has none, and uses the default shown.",
    )
    _checkpoint_options(generate)
    _sampling_arguments(generate)
    generate.set_defaults(handler=_generate)


def _sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """``attnkit generate``'s sampling options, all defaulting to ``None``: the run's value."""
    options = [
        ("--max-new-tokens", int, "number of tokens to generate"),
        ("--temperature", float, "> 0; lower is closer to greedy"),
        ("--top-k", int, "keep the K most likely tokens; 0: no limit"),
        ("--top-p", float, "nucleus sampling, in (0, 1]; 1: off"),
        ("--repetition-penalty", float, "> 0; 1: off"),
        ("--seed", int, "seed of the sampling generator"),
    ]
    for flag, kind, what in options:
        name = flag[2:].replace("-", "_")
        fallback = "off" if _SAMPLING_DEFAULTS[name] is None else _SAMPLING_DEFAULTS[name]
        help_text = f"{what} (default: the run's sample.{name}; translation runs: {fallback})"
        parser.add_argument(flag, type=kind, default=None, help=help_text)


def _add_visualize(commands) -> None:
    visualize = commands.add_parser(
        "visualize", help="attention explorer (HTML) and heatmap of a checkpoint on a text"
    )
    visualize.add_argument(
        "--checkpoint",
        required=True,
        help="Hugging Face model directory (BERT, GPT-2, T5) or run directory of `attnkit train`",
    )
    visualize.add_argument("--which", default=None, help="runs: 'best' (default) or 'latest'")
    visualize.add_argument("--text", required=True, help="the input (source) text")
    visualize.add_argument(
        "--target", default=None, help="encoder-decoder: target text (default: greedy output)"
    )
    visualize.add_argument("--out", required=True, help="HTML file to write")
    visualize.add_argument("--png", default=None, help="also write a heatmap of one head")
    visualize.add_argument(
        "--kind",
        choices=["encoder_self", "decoder_self", "cross"],
        default=None,
        help="heatmap: attention kind (default: cross if any, else the first)",
    )
    visualize.add_argument("--layer", type=int, default=0, help="heatmap: layer")
    visualize.add_argument("--head", type=int, default=0, help="heatmap: head")
    visualize.set_defaults(handler=_visualize)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnkit", description="Attention mechanisms and Transformer models."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo(commands)
    _add_train(commands)
    _add_inference(commands)
    _add_visualize(commands)
    bench = commands.add_parser(
        "bench", help="benchmarks (see `attnkit bench --help`)", add_help=False
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        # bench has its own parser, --help included: hand it everything after the name.
        return _bench(argparse.Namespace(bench_args=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        # Bad configs, data or checkpoints: say what, without a traceback.
        print(f"attnkit {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
