"""GPT benchmarks: training throughput (``gpt-train``) and generation speed (``generate``).

Training: one full step on random token batches, the same for every
implementation: forward, cross-entropy of every next token (computed outside the
model on its logits), backward, ``clip_grad_norm_(1.0)``, an AdamW step and
``zero_grad``. Throughput is ``B * T / median step time``.

Generation: batch 1, a random prompt, greedy decoding of a fixed number of new
tokens with no stop token. Every implementation loads the same weights: a
Hugging Face ``GPT2LMHeadModel`` built from the seed and saved to a temporary
directory, which attnkit reads with :func:`attnkit.interop.from_pretrained`;
so attnkit's tokens can be compared with Hugging Face's
(:func:`compare_tokens`).

Each implementation runs in a fresh worker process; :func:`run_worker` is the
worker hook and dispatches on ``payload["kind"]`` (``"train"`` or ``"generate"``).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.bench.measure import run_in_worker, synchronizer
from attnkit.bench.train import (
    MATMUL_FLOOR_DESCRIPTION,
    Product,
    TrainImplementation,
    TrainStep,
    adamw,
    best_records,
    compile_kwargs,
    count_parameters,
    matmul_floor,
    time_steps,
    training_step,
    transformers_available,
    worker_record,
)

MIN_VOCAB = 2
WARMUP_NEW_TOKENS = 8


@dataclass(frozen=True)
class GPTSize:
    """A named model and batch size for ``gpt-train``."""

    layers: int
    heads: int
    d_model: int
    block: int
    batch: int


SIZES: dict[str, GPTSize] = {
    "tiny": GPTSize(layers=4, heads=4, d_model=128, block=64, batch=12),  # nanoGPT CPU char
    "small": GPTSize(layers=6, heads=6, d_model=384, block=256, batch=8),
}


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class GPTTrainCase:
    """Sizes and settings of one GPT training step (JSON-serialisable; float32 only).

    It has the fields :func:`attnkit.bench.train.training_step` and
    :func:`~attnkit.bench.train.compile_kwargs` read (``device``, ``clip_norm``,
    ``compile_mode``, ``compile_backend``, ``autocast_dtype``).
    """

    size: str = "tiny"
    batch: int = 12
    block: int = 64
    vocab: int = 65
    d_model: int = 128
    heads: int = 4
    layers: int = 4
    dropout: float = 0.0
    clip_norm: float = 1.0
    device: str = "cpu"
    compile_mode: str = "default"
    compile_backend: str = "inductor"
    num_batches: int = 4

    def __post_init__(self) -> None:
        if self.d_model % self.heads != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.vocab < MIN_VOCAB:
            raise ValueError(f"vocab must be >= {MIN_VOCAB}; got {self.vocab}")

    @property
    def tokens(self) -> int:
        """Tokens per step, ``B * T``."""
        return self.batch * self.block

    @property
    def autocast_dtype(self) -> None:
        """No autocast: the GPT benchmark runs in float32."""
        return None


def train_case(size: str, **overrides) -> GPTTrainCase:
    """The case of the named size (``tiny`` or ``small``) with field ``overrides``."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}; got {size!r}")
    return GPTTrainCase(size=size, **{**asdict(SIZES[size]), **overrides})


@dataclass
class TokenBatch:
    """``inputs (B, T)`` and the next tokens ``targets (B, T)``."""

    inputs: Tensor
    targets: Tensor


def make_token_batches(case: GPTTrainCase, seed: int = 0) -> list[TokenBatch]:
    """``case.num_batches`` batches of random tokens from ``seed``: rows of ``T + 1``
    tokens split into inputs and targets shifted by one, as nanoGPT samples them."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(case.num_batches):
        rows = torch.randint(0, case.vocab, (case.batch, case.block + 1), generator=generator)
        rows = rows.to(case.device)
        batches.append(TokenBatch(rows[:, :-1].contiguous(), rows[:, 1:].contiguous()))
    return batches


def next_token_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits (B, T, V)`` against ``targets (B, T)``."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def gpt2_config(case: GPTTrainCase | GenerateCase, dropout: float, **extra):
    """A ``transformers.GPT2Config`` of the case's sizes (``vocab``, ``block``,
    ``d_model``, ``heads``, ``layers``) with SDPA attention and no bos/eos tokens
    (GPT-2's 50256 lies outside a small vocabulary)."""
    import transformers

    return transformers.GPT2Config(
        vocab_size=case.vocab,
        n_positions=case.block,
        n_embd=case.d_model,
        n_head=case.heads,
        n_layer=case.layers,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation="sdpa",
        **extra,
    )


def _build_hf_train(case: GPTTrainCase) -> TrainStep:
    import transformers

    config = gpt2_config(case, case.dropout, activation_function="gelu", use_cache=False)
    model = transformers.GPT2LMHeadModel(config).to(case.device).train()
    optimizer, optimizer_name = adamw(list(model.parameters()), fused=False)

    def loss_fn(batch: TokenBatch) -> Tensor:
        return next_token_loss(model(input_ids=batch.inputs).logits, batch.targets)

    info = {
        "optimizer": optimizer_name,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "transformers": transformers.__version__,
    }
    step = training_step(case, model, loss_fn, optimizer)
    return TrainStep(step, count_parameters(model), info)


def _attnkit_train_model(case: GPTTrainCase) -> nn.Module:
    from attnkit.models import GPT, GPTConfig

    config = GPTConfig(
        vocab_size=case.vocab,
        max_len=case.block,
        d_model=case.d_model,
        num_heads=case.heads,
        num_layers=case.layers,
        dropout=case.dropout,
        activation="gelu",
        positional="learned",
        bias=True,  # as GPT2LMHeadModel: the same parameters, the same work
        tie_embeddings=True,
    )
    return GPT(config).to(case.device).train()


def _build_attnkit_train(case: GPTTrainCase, *, compiled: bool) -> TrainStep:
    model = _attnkit_train_model(case)
    optimizer, optimizer_name = adamw(list(model.parameters()), fused=True)

    def forward_loss(inputs: Tensor, targets: Tensor) -> Tensor:
        return next_token_loss(model(inputs).logits, targets)

    info = {"optimizer": optimizer_name}
    if compiled:
        kwargs = compile_kwargs(case)  # reads device, compile_mode, compile_backend
        forward_loss = torch.compile(forward_loss, **kwargs)
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        info["compiled"] = f"torch.compile(forward + loss, {shown})"

    def loss_fn(batch: TokenBatch) -> Tensor:
        return forward_loss(batch.inputs, batch.targets)

    step = training_step(case, model, loss_fn, optimizer)
    return TrainStep(step, count_parameters(model), info)


def gpt_products(case: GPTTrainCase) -> list[Product]:
    """``(rows, in, out)`` of every linear map of a GPT-2 stack and its head for one batch."""
    d, n = case.d_model, case.tokens
    per_layer = [(n, d, 3 * d), (n, d, d), (n, d, 4 * d), (n, 4 * d, d)]  # qkv, out, fc, proj
    return per_layer * case.layers + [(n, d, case.vocab)]


TRAIN_IMPLEMENTATIONS: dict[str, TrainImplementation] = {
    impl.name: impl
    for impl in (
        TrainImplementation(
            "hf_gpt2",
            "transformers GPT2LMHeadModel from a GPT2Config of the same sizes (exact GELU, "
            "biases, attn_implementation='sdpa', tied output); the same loss on its logits; "
            "AdamW() defaults",
            _build_hf_train,
            transformers_available,
        ),
        TrainImplementation(
            "attnkit",
            "attnkit.models.GPT (learned positions, exact GELU, biases like GPT-2, tied output, "
            "attention backend 'auto' = fused); AdamW(fused=True)",
            lambda case: _build_attnkit_train(case, compiled=False),
        ),
        TrainImplementation(
            "attnkit_compiled",
            "the same as attnkit, with the forward pass and the loss under torch.compile "
            "(compile time is in the warm-up, reported, not timed)",
            lambda case: _build_attnkit_train(case, compiled=True),
        ),
        TrainImplementation(
            "matmul_floor",
            MATMUL_FLOOR_DESCRIPTION,
            lambda case: matmul_floor(gpt_products(case), _attnkit_train_model(case), case.device),
        ),
    )
}
TRAIN_BASELINE = "hf_gpt2"


def measure_gpt_training(
    impl: str, case: GPTTrainCase, steps: int, warmup: int, seed: int = 0
) -> dict:
    """Build ``impl``'s step and time it (see :func:`attnkit.bench.train.time_steps`)."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    built = TRAIN_IMPLEMENTATIONS[impl].build(case)
    build_s = time.perf_counter() - start
    batches = make_token_batches(case, seed)
    device = torch.device(case.device)
    return {**time_steps(built, batches, case.tokens, steps, warmup, device), "build_s": build_s}


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class GenerateCase:
    """Model sizes and decoding settings of the generation benchmark (JSON-serialisable).

    The model has GPT-2's layout (learned positions, GELU tanh, biases, tied
    output); ``block`` is its ``n_positions``; its weights are drawn from
    ``N(0, init_std)`` (GPT-2's 0.02; a larger one makes a random model's greedy
    tokens more varied, so comparing them says more).
    """

    vocab: int = 65
    d_model: int = 384
    heads: int = 6
    layers: int = 6
    block: int = 512
    prompt_len: int = 16
    new_tokens: int = 256
    repeats: int = 3
    init_std: float = 0.02
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.d_model % self.heads != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.vocab < MIN_VOCAB:
            raise ValueError(f"vocab must be >= {MIN_VOCAB}; got {self.vocab}")
        if self.prompt_len + self.new_tokens > self.block:
            raise ValueError(
                f"prompt_len + new_tokens must fit in block = {self.block}; "
                f"got {self.prompt_len} + {self.new_tokens}"
            )


@dataclass
class Generator:
    """A built implementation: ``generate(prompts (1, P), n)`` returns the ``(1, n)`` new
    tokens; ``parameters`` counts the model's parameters; ``info`` goes into the record."""

    generate: Callable[[Tensor, int], Tensor]
    parameters: int
    info: dict = field(default_factory=dict)


def _hf_generate_model(case: GenerateCase):
    """A ``GPT2LMHeadModel`` with fresh weights from the current torch seed, in eval mode."""
    import transformers

    config = gpt2_config(case, 0.0, initializer_range=case.init_std)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.bos_token_id = None
    return model.to(case.device)


def _build_hf_generate(case: GenerateCase, *, use_cache: bool) -> Generator:
    import transformers

    model = _hf_generate_model(case)

    def generate(prompts: Tensor, new_tokens: int) -> Tensor:
        with torch.no_grad():
            out = model.generate(
                prompts,
                attention_mask=torch.ones_like(prompts),
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                use_cache=use_cache,
                pad_token_id=0,
                eos_token_id=None,
            )
        return out[:, prompts.size(1) :]

    info = {
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "transformers": transformers.__version__,
    }
    return Generator(generate, count_parameters(model), info)


def _attnkit_generate_model(case: GenerateCase) -> tuple[nn.Module, str]:
    """attnkit's GPT with the Hugging Face model's weights (through a saved directory),
    or, without ``transformers``, a GPT-2-layout GPT initialised from the seed."""
    from attnkit.interop import from_pretrained
    from attnkit.models import GPT

    if transformers_available() is None:
        hf_model = _hf_generate_model(case).cpu()
        with tempfile.TemporaryDirectory() as directory:
            hf_model.save_pretrained(directory)
            model = from_pretrained(directory)
        return model.to(case.device), "Hugging Face weights via from_pretrained"
    model = GPT(_attnkit_generate_config(case))
    return model.to(case.device).eval(), "fresh weights (transformers not importable)"


def _attnkit_generate_config(case: GenerateCase):
    """The GPT-2-layout ``GPTConfig`` of ``case``."""
    from attnkit.models import GPTConfig

    return GPTConfig(
        vocab_size=case.vocab,
        max_len=case.block,
        d_model=case.d_model,
        num_heads=case.heads,
        num_layers=case.layers,
        dropout=0.0,
        init_std=case.init_std,
    )


def _build_attnkit_generate(case: GenerateCase, *, use_cache: bool) -> Generator:
    from attnkit.generation import DecoderOnlyAdapter, greedy_decode

    model, weights = _attnkit_generate_model(case)

    def generate(prompts: Tensor, new_tokens: int) -> Tensor:
        if use_cache:
            return greedy_decode(model, prompts, max_new_tokens=new_tokens)
        adapter = DecoderOnlyAdapter(model, prompts, use_cache=False)
        return greedy_decode(adapter, None, max_new_tokens=new_tokens)

    return Generator(generate, count_parameters(model), {"weights": weights})


def _build_weights_floor(case: GenerateCase) -> Generator:
    """The memory-traffic floor of batch-1 decoding, not a generator.

    At batch 1 every new token reads every weight once, so no implementation
    can decode faster than the machine streams them. Each "token" here is one
    matrix-vector product over a float32 matrix with as many entries as the
    model has parameters, and nothing else; it returns zeros, not tokens.
    """
    from attnkit.models import GPT

    parameters = count_parameters(GPT(_attnkit_generate_config(case)))
    rows = -(-parameters // case.d_model)
    weights = torch.randn(rows, case.d_model, device=case.device)
    vector = torch.randn(case.d_model, device=case.device)

    def generate(prompts: Tensor, new_tokens: int) -> Tensor:
        for _ in range(new_tokens):
            torch.mv(weights, vector)
        return torch.zeros(1, new_tokens, dtype=torch.long)

    return Generator(generate, parameters, {"floor": True})


@dataclass(frozen=True)
class GenerateImplementation:
    """A registered generator; ``available`` returns None or why it cannot run here."""

    name: str
    description: str
    build: Callable[[GenerateCase], Generator]
    available: Callable[[], str | None] = field(default=lambda: None)


GENERATE_IMPLEMENTATIONS: dict[str, GenerateImplementation] = {
    impl.name: impl
    for impl in (
        GenerateImplementation(
            "hf_cached",
            "transformers GPT2LMHeadModel.generate(do_sample=False, use_cache=True), "
            "attn_implementation='sdpa', no eos",
            lambda case: _build_hf_generate(case, use_cache=True),
            transformers_available,
        ),
        GenerateImplementation(
            "hf_uncached",
            "the same with use_cache=False (every step reruns the whole sequence)",
            lambda case: _build_hf_generate(case, use_cache=False),
            transformers_available,
        ),
        GenerateImplementation(
            "attnkit_cached",
            "attnkit.generation.greedy_decode on attnkit.models.GPT with its KV cache",
            lambda case: _build_attnkit_generate(case, use_cache=True),
        ),
        GenerateImplementation(
            "attnkit_uncached",
            "greedy_decode over DecoderOnlyAdapter(use_cache=False): every step reruns "
            "the whole sequence",
            lambda case: _build_attnkit_generate(case, use_cache=False),
        ),
        GenerateImplementation(
            "weights_floor",
            "not a generator: per token, one float32 matrix-vector product over as many "
            "weights as the model has (each read once, nothing else): the memory-traffic "
            "floor of batch-1 decoding",
            _build_weights_floor,
        ),
    )
}
GENERATE_BASELINE = "hf_cached"


def make_prompt(case: GenerateCase, seed: int = 0) -> Tensor:
    """A ``(1, prompt_len)`` random prompt from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, case.vocab, (1, case.prompt_len), generator=generator)
    return prompt.to(case.device)


def measure_generation(impl: str, case: GenerateCase, seed: int = 0) -> dict:
    """Build ``impl``, warm it up with a short generation, then time ``case.repeats``
    generations of ``case.new_tokens`` tokens; new tokens/s from the median time."""
    sync = synchronizer(torch.device(case.device))
    torch.manual_seed(seed)
    start = time.perf_counter()
    built = GENERATE_IMPLEMENTATIONS[impl].build(case)
    build_s = time.perf_counter() - start
    prompt = make_prompt(case, seed)
    warmup_s, _ = _timed_generation(built, prompt, min(WARMUP_NEW_TOKENS, case.new_tokens), sync)
    runs = [_timed_generation(built, prompt, case.new_tokens, sync) for _ in range(case.repeats)]
    times = [seconds for seconds, _ in runs]
    tokens = runs[-1][1][0].tolist()
    if len(tokens) != case.new_tokens:
        raise RuntimeError(f"expected {case.new_tokens} new tokens; got {len(tokens)}")
    median = statistics.median(times)
    return {
        "new_tokens_per_s": case.new_tokens / median,
        "gen_s": median,
        "gen_min_s": min(times),
        "gen_max_s": max(times),
        "gen_times_s": times,
        "ms_per_token": median / case.new_tokens * 1e3,
        # float32 weights, each read once per token at batch 1
        "weight_gb_per_s": built.parameters * 4 * case.new_tokens / median / 1e9,
        "warmup_s": warmup_s,
        "build_s": build_s,
        "parameters": built.parameters,
        "threads": torch.get_num_threads(),
        "tokens": tokens,
        "distinct_tokens": len(set(tokens)),
        **built.info,
    }


def _timed_generation(
    built: Generator, prompt: Tensor, new_tokens: int, sync: Callable[[], None]
) -> tuple[float, Tensor]:
    """Seconds of one synchronised generation and its ``(1, new_tokens)`` tokens."""
    sync()
    start = time.perf_counter()
    tokens = built.generate(prompt, new_tokens)
    sync()
    return time.perf_counter() - start, tokens


def compare_tokens(records: list[dict]) -> None:
    """Set ``same_tokens_as_hf`` (and ``first_difference``, the first differing index
    or None) on every successful record but the baseline's, against ``hf_cached``."""
    baseline = next(
        (r for r in records if r["impl"] == GENERATE_BASELINE and r["status"] == "ok"), None
    )
    for record in records:
        if record["status"] != "ok" or record["impl"] == GENERATE_BASELINE or record.get("floor"):
            continue
        if baseline is None:
            record["same_tokens_as_hf"] = None
            continue
        pairs = zip(record["tokens"], baseline["tokens"], strict=False)
        first = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
        record["same_tokens_as_hf"] = first is None and record["tokens"] == baseline["tokens"]
        record["first_difference"] = first


# --------------------------------------------------------------------------- worker side


def run_worker(payload: dict) -> dict:
    """Worker hook: measure one implementation (``payload["kind"]``: ``train`` or
    ``generate``); errors become error records."""
    seed = int(payload.get("seed", 0))
    if payload["kind"] == "train":
        case = GPTTrainCase(**payload["case"])
        steps, warmup = int(payload["steps"]), int(payload["warmup"])
        return worker_record(
            lambda: measure_gpt_training(payload["impl"], case, steps, warmup, seed)
        )
    if payload["kind"] == "generate":
        generate_case = GenerateCase(**payload["case"])
        return worker_record(
            lambda: measure_generation(payload["impl"], generate_case, seed), "gen_times_s"
        )
    return {"status": "error", "message": f"kind must be train or generate; got {payload['kind']}"}


# --------------------------------------------------------------------------- run loops


@dataclass(frozen=True)
class GPTTrainSettings:
    """Everything one ``attnkit bench gpt-train`` run needs (one case per size)."""

    cases: tuple[GPTTrainCase, ...] = (train_case("tiny"), train_case("small"))
    impls: tuple[str, ...] = tuple(TRAIN_IMPLEMENTATIONS)
    steps: int = 20
    warmup: int = 3
    rounds: int = 1
    threads: int | None = None
    seed: int = 0
    timeout_s: float | None = None


@dataclass(frozen=True)
class GenerateSettings:
    """Everything one ``attnkit bench generate`` run needs."""

    case: GenerateCase = field(default_factory=GenerateCase)
    impls: tuple[str, ...] = tuple(GENERATE_IMPLEMENTATIONS)
    threads: int | None = None
    seed: int = 0
    timeout_s: float | None = None


def _run(
    kind: str, impl: str, available: Callable[[], str | None], case: dict, base: dict, extra: dict
) -> dict:
    """One implementation in a fresh worker (or its 'unavailable' record); the record
    holds ``base``, the case's fields and what the worker returned."""
    record = {"impl": impl, **base, **case}
    unavailable = available()
    if unavailable:
        return {**record, "status": "skipped", "skip_reason": "unavailable", "message": unavailable}
    payload = {"suite": "gpt", "kind": kind, "impl": impl, "case": case, **extra}
    return {**record, **run_in_worker(payload, timeout=extra["timeout_s"])}


def run_gpt_train(
    settings: GPTTrainSettings, on_record: Callable[[dict], None] | None = None
) -> list[dict]:
    """Every size and implementation, ``settings.rounds`` times over, round-robin;
    ``on_record`` sees each record as it arrives. Unavailable ones are recorded once."""
    extra = {"steps": settings.steps, "warmup": settings.warmup, "threads": settings.threads}
    extra |= {"seed": settings.seed, "timeout_s": settings.timeout_s}
    records = []
    for round_ in range(settings.rounds):
        for case in settings.cases:
            for impl in settings.impls:
                available = TRAIN_IMPLEMENTATIONS[impl].available
                if round_ and available():
                    continue
                base = {"round": round_}
                records.append(_run("train", impl, available, asdict(case), base, extra))
                if on_record is not None:
                    on_record(records[-1])
    return records


def best_by_size(records: list[dict]) -> dict[str, dict[str, dict]]:
    """size -> implementation -> its fastest round (see ``train.best_records``)."""
    sizes = dict.fromkeys(r["size"] for r in records)
    return {size: best_records([r for r in records if r["size"] == size]) for size in sizes}


def run_generate(
    settings: GenerateSettings, on_record: Callable[[dict], None] | None = None
) -> list[dict]:
    """Every implementation in turn, then :func:`compare_tokens` on the records."""
    extra = {"threads": settings.threads, "seed": settings.seed, "timeout_s": settings.timeout_s}
    records = []
    for impl in settings.impls:
        available = GENERATE_IMPLEMENTATIONS[impl].available
        records.append(_run("generate", impl, available, asdict(settings.case), {}, extra))
        if on_record is not None:
            on_record(records[-1])
    compare_tokens(records)
    return records
