"""The training-throughput benchmark: full training steps of encoder-decoder models.

One training step, the same for every implementation, on random token batches:
source and target embeddings, the encoder-decoder, the output projection to the
vocabulary, cross-entropy over the target tokens (label smoothing, padding
ignored), backward, ``clip_grad_norm_`` and an AdamW step, then ``zero_grad``.
Dropout is on everywhere (embeddings, attention weights, residuals, feed-forward).

Each implementation runs in a fresh worker process (see
:mod:`attnkit.bench._worker`, which hands the payload to :func:`run_worker`):
``warmup`` untimed steps (``torch.compile`` compiles there; their time is
reported as ``warmup_s``), then ``steps`` timed steps. Throughput is target
tokens per second, ``B * T / median step time`` (padding positions included,
as in every row of a batch of fixed shape).

Implementations are registered by name with :func:`register`: a ``build``
function turns a :class:`TrainCase` into a :class:`TrainStep`.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.bench.measure import MemoryProbe, run_in_worker, synchronizer

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
HF_MIN_POSITIONS = 64
CPU_INDUCTOR_OPTIONS = {"fallback_random": True}
MIN_VOCAB = 4  # pad, bos, eos and at least one ordinary token
MAX_MESSAGE = 600


@dataclass(frozen=True)
class TrainCase:
    """Sizes and settings of one training step (JSON-serialisable).

    ``dtype`` is the compute dtype: ``"float32"``, or ``"bfloat16"`` under
    ``torch.autocast`` (parameters and optimizer state stay float32).
    """

    batch: int = 32
    seq_len: int = 32
    vocab: int = 8000
    d_model: int = 256
    heads: int = 4
    layers: int = 3
    d_ff: int = 1024
    dropout: float = 0.1
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    pad_id: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    compile_mode: str = "default"
    compile_backend: str = "inductor"
    num_batches: int = 4

    def __post_init__(self) -> None:
        if self.d_model % self.heads != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.vocab < MIN_VOCAB:
            raise ValueError(f"vocab must be >= {MIN_VOCAB}; got {self.vocab}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}; got {self.dtype!r}")

    @property
    def target_tokens(self) -> int:
        """Target tokens per step, ``B * T``."""
        return self.batch * self.seq_len

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for plain float32."""
        return None if self.dtype == "float32" else DTYPES[self.dtype]


@dataclass
class Batch:
    """``src (B, S)``, decoder input ``tgt_in (B, T)``, labels ``tgt_out (B, T)``."""

    src: Tensor
    tgt_in: Tensor
    tgt_out: Tensor


def make_batches(case: TrainCase, seed: int = 0) -> list[Batch]:
    """``case.num_batches`` random batches with a little padding, from ``seed``.

    Token ids are drawn from ``[pad_id + 1, vocab)``. Each row keeps between
    7/8 of its length and all of it; the rest is ``pad_id``. The target is one
    sequence of ``T + 1`` tokens split into decoder input and labels.
    """
    generator = torch.Generator().manual_seed(seed)
    batches = []
    length = case.seq_len
    for _ in range(case.num_batches):
        src = _random_rows(case, length, generator)
        tgt = _random_rows(case, length + 1, generator)
        batches.append(
            Batch(
                src.to(case.device),
                tgt[:, :-1].contiguous().to(case.device),
                tgt[:, 1:].contiguous().to(case.device),
            )
        )
    return batches


def _random_rows(case: TrainCase, length: int, generator: torch.Generator) -> Tensor:
    tokens = torch.randint(case.pad_id + 1, case.vocab, (case.batch, length), generator=generator)
    shortest = length - length // 8
    lengths = torch.randint(shortest, length + 1, (case.batch, 1), generator=generator)
    return tokens.masked_fill(torch.arange(length)[None, :] >= lengths, case.pad_id)


# --------------------------------------------------------------------------- training step


@dataclass
class TrainStep:
    """A built implementation: ``step(batch)`` runs one full training step and
    returns the (detached) loss; ``parameters`` counts the trainable parameters;
    ``info`` holds facts for the report (optimizer, loss, what was compiled).
    """

    step: Callable[[Batch], Tensor]
    parameters: int
    info: dict = field(default_factory=dict)


def adamw(params: list[nn.Parameter], *, fused: bool) -> tuple[torch.optim.Optimizer, str]:
    """AdamW with torch's default hyper-parameters; ``fused`` falls back to foreach."""
    if fused:
        try:
            return torch.optim.AdamW(params, fused=True), "AdamW(fused=True)"
        except (RuntimeError, ValueError):
            return torch.optim.AdamW(params, foreach=True), "AdamW(foreach=True)"
    return torch.optim.AdamW(params), "AdamW()"


def training_step(
    case: TrainCase,
    model: nn.Module,
    loss_fn: Callable[[Batch], Tensor],
    optimizer: torch.optim.Optimizer,
) -> Callable[[Batch], Tensor]:
    """forward + loss (under autocast if asked), backward, clip, optimizer step, zero_grad."""
    params = [p for p in model.parameters() if p.requires_grad]
    device_type = torch.device(case.device).type
    autocast_dtype = case.autocast_dtype

    def step(batch: Batch) -> Tensor:
        context = (
            torch.autocast(device_type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with context:
            loss = loss_fn(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, case.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def _smoothed_cross_entropy(case: TrainCase, logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over non-pad labels with label smoothing; logits ``(B, T, V)``."""
    return F.cross_entropy(
        logits.flatten(0, 1).float(),
        labels.flatten(),
        ignore_index=case.pad_id,
        label_smoothing=case.label_smoothing,
    )


def count_parameters(model: nn.Module) -> int:
    """Distinct trainable parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- torch.nn.Transformer


class TorchSeq2Seq(nn.Module):
    """The plain baseline, as a PyTorch user writes it around ``torch.nn.Transformer``.

    Two embeddings scaled by ``sqrt(D)``, a fixed sinusoidal table plus dropout,
    ``nn.Transformer(batch_first=True)`` with a causal target mask from
    ``generate_square_subsequent_mask`` (``tgt_is_causal=True``) and additive
    key-padding masks, and an untied ``nn.Linear`` output layer.
    """

    def __init__(self, case: TrainCase, max_len: int) -> None:
        super().__init__()
        d = case.d_model
        self.pad_id = case.pad_id
        self.scale = math.sqrt(d)
        self.src_embedding = nn.Embedding(case.vocab, d, padding_idx=case.pad_id)
        self.tgt_embedding = nn.Embedding(case.vocab, d, padding_idx=case.pad_id)
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        inv_freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(1e4) / d))
        table = torch.zeros(max_len, d)
        table[:, 0::2] = torch.sin(position * inv_freq)
        table[:, 1::2] = torch.cos(position * inv_freq)
        self.register_buffer("positions", table, persistent=False)
        self.dropout = nn.Dropout(case.dropout)
        self.transformer = nn.Transformer(
            d,
            case.heads,
            case.layers,
            case.layers,
            case.d_ff,
            dropout=case.dropout,
            batch_first=True,
        )
        self.output = nn.Linear(d, case.vocab)

    def padding_mask(self, tokens: Tensor) -> Tensor:
        """Additive ``(B, T)`` key-padding mask, float like the causal mask (torch
        deprecates mixing a bool key-padding mask with a float attention mask)."""
        zeros = torch.zeros(tokens.shape, device=tokens.device)
        return zeros.masked_fill(tokens == self.pad_id, float("-inf"))

    def embed(self, embedding: nn.Embedding, tokens: Tensor) -> Tensor:
        return self.dropout(embedding(tokens) * self.scale + self.positions[: tokens.size(1)])

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        tgt_mask = nn.Transformer.generate_square_subsequent_mask(tgt.size(1), device=tgt.device)
        src_padding = self.padding_mask(src)
        hidden = self.transformer(
            self.embed(self.src_embedding, src),
            self.embed(self.tgt_embedding, tgt),
            tgt_mask=tgt_mask,
            src_key_padding_mask=src_padding,
            tgt_key_padding_mask=self.padding_mask(tgt),
            memory_key_padding_mask=src_padding,
            tgt_is_causal=True,
        )
        return self.output(hidden)


def _build_torch_transformer(case: TrainCase) -> TrainStep:
    model = TorchSeq2Seq(case, case.seq_len + 1).to(case.device).train()
    optimizer, optimizer_name = adamw(list(model.parameters()), fused=False)

    def loss_fn(batch: Batch) -> Tensor:
        return _smoothed_cross_entropy(case, model(batch.src, batch.tgt_in), batch.tgt_out)

    step = training_step(case, model, loss_fn, optimizer)
    info = {"optimizer": optimizer_name, "loss": "F.cross_entropy(label_smoothing)"}
    return TrainStep(step, count_parameters(model), info)


# --------------------------------------------------------------------------- Hugging Face


def transformers_available() -> str | None:
    try:
        import transformers  # noqa: F401
    except Exception as exc:
        return f"transformers is not importable ({type(exc).__name__}: {exc})"
    return None


def _hf_config_kwargs(case: TrainCase) -> dict:
    """The shared sizes as BartConfig / MarianConfig arguments (ReLU as the others use)."""
    return {
        "vocab_size": case.vocab,
        "d_model": case.d_model,
        "encoder_layers": case.layers,
        "decoder_layers": case.layers,
        "encoder_attention_heads": case.heads,
        "decoder_attention_heads": case.heads,
        "encoder_ffn_dim": case.d_ff,
        "decoder_ffn_dim": case.d_ff,
        "max_position_embeddings": max(HF_MIN_POSITIONS, case.seq_len + 1),
        "dropout": case.dropout,
        "attention_dropout": case.dropout,
        "activation_dropout": case.dropout,
        "activation_function": "relu",
        "pad_token_id": case.pad_id,
        "decoder_start_token_id": case.pad_id,
        "use_cache": False,
    }


def _build_hf(case: TrainCase, family: str) -> TrainStep:
    import transformers

    if family == "bart":
        config = transformers.BartConfig(**_hf_config_kwargs(case), bos_token_id=1, eos_token_id=2)
        model = transformers.BartForConditionalGeneration(config)
    else:
        config = transformers.MarianConfig(**_hf_config_kwargs(case), eos_token_id=2)
        model = transformers.MarianMTModel(config)
    model = model.to(case.device).train()
    optimizer, optimizer_name = adamw(list(model.parameters()), fused=False)

    def loss_fn(batch: Batch) -> Tensor:
        logits = model(
            input_ids=batch.src,
            attention_mask=(batch.src != case.pad_id).long(),
            decoder_input_ids=batch.tgt_in,
            decoder_attention_mask=(batch.tgt_in != case.pad_id).long(),
        ).logits
        return _smoothed_cross_entropy(case, logits, batch.tgt_out)

    step = training_step(case, model, loss_fn, optimizer)
    info = {
        "optimizer": optimizer_name,
        "loss": "F.cross_entropy(label_smoothing) on the model's logits",
        "attn_implementation": getattr(config, "_attn_implementation", None),
        "transformers": transformers.__version__,
    }
    return TrainStep(step, count_parameters(model), info)


# --------------------------------------------------------------------------- attnkit


def compile_kwargs(case: TrainCase) -> dict:
    """``torch.compile`` arguments for ``attnkit_compiled``.

    On CPU, inductor's own dropout random numbers (a scalar Philox call per
    element) cost more than the whole eager step saves by fusing, so with the
    default mode it keeps aten's random kernels (``fallback_random``); the
    pointwise work around them is still fused. ``mode`` and ``options``
    exclude each other in ``torch.compile``.
    """
    kwargs: dict = {"backend": case.compile_backend}
    if case.compile_mode != "default":
        kwargs["mode"] = case.compile_mode
    elif case.compile_backend == "inductor" and torch.device(case.device).type == "cpu":
        kwargs["options"] = dict(CPU_INDUCTOR_OPTIONS)
    return kwargs


def _attnkit_transformer(case: TrainCase) -> nn.Module:
    from attnkit.models.transformer import Transformer

    return Transformer(
        case.vocab,
        case.vocab,
        case.d_model,
        case.heads,
        case.layers,
        case.layers,
        case.d_ff,
        case.dropout,
        max_len=case.seq_len + 1,
        pad_id=case.pad_id,
    )


def _build_attnkit(case: TrainCase, *, compiled: bool) -> TrainStep:
    from attnkit.train.losses import seq2seq_loss

    model = _attnkit_transformer(case).to(case.device).train()
    optimizer, optimizer_name = adamw(list(model.parameters()), fused=True)
    trainer_loss = seq2seq_loss(case.pad_id, case.label_smoothing)

    def forward_loss(src: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> Tensor:
        # The loss attnkit's Trainer uses (a sum and its count), as a mean like the peers'.
        out = trainer_loss(model, Batch(src, tgt_in, tgt_out))
        return out.loss_sum / out.num_tokens

    info = {
        "optimizer": optimizer_name,
        "loss": "attnkit.train.seq2seq_loss (the Trainer's; sum / count)",
        "tie_output": model.config.tie_output,
    }
    if compiled:
        kwargs = compile_kwargs(case)
        forward_loss = torch.compile(forward_loss, **kwargs)
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        info["compiled"] = f"torch.compile(forward + loss, {shown})"

    def loss_fn(batch: Batch) -> Tensor:
        return forward_loss(batch.src, batch.tgt_in, batch.tgt_out)

    step = training_step(case, model, loss_fn, optimizer)
    return TrainStep(step, count_parameters(model), info)


# --------------------------------------------------------------------------- registry


# (rows, in, out): one linear map applied to ``rows`` vectors
Product = tuple[int, int, int]
MATMUL_FLOOR_DESCRIPTION = (
    "not a training step: only the matrix products of the step's linear maps "
    "(forward, input gradient, weight gradient), which every implementation runs; "
    "attention, loss, norms and optimizer left out: a floor under any step time"
)


def matmul_floor(
    products: Sequence[Product],
    model: nn.Module,
    device: str,
    dtype: torch.dtype = torch.float32,
) -> TrainStep:
    """A step that runs only the matrix products of ``model``'s linear maps.

    For each ``(rows, in, out)`` it multiplies as a training step must: the
    forward product, the input gradient and the weight gradient, in ``dtype``
    (the dtype autocast gives the other implementations' products). Attention,
    loss, norms, activations and the optimizer are left out, so no
    implementation's step can take less time than this one. ``model`` (not
    run) gives the parameter count the report shows.
    """
    pairs = []
    for rows, fan_in, fan_out in products:
        x = torch.randn(rows, fan_in, device=device, dtype=dtype)
        weight = torch.randn(fan_in, fan_out, device=device, dtype=dtype)
        grad = torch.randn(rows, fan_out, device=device, dtype=dtype)
        pairs += [(x, weight), (grad, weight.T), (x.T, grad)]

    def step(batch: Any) -> Tensor:
        for left, right in pairs:
            torch.mm(left, right)
        return torch.zeros((), device=device)

    return TrainStep(step, count_parameters(model), {"floor": True})


def encoder_decoder_products(case: TrainCase) -> list[Product]:
    """``(rows, in, out)`` of every linear map of the encoder-decoder for one batch."""
    d, d_ff, n = case.d_model, case.d_ff, case.batch * case.seq_len  # source = target length
    encoder = [(n, d, 3 * d), (n, d, d), (n, d, d_ff), (n, d_ff, d)]  # qkv, out, feed-forward
    cross = [(n, d, d), (n, d, 2 * d), (n, d, d)]  # query, memory keys and values, out
    decoder = [(n, d, 3 * d), (n, d, d), *cross, (n, d, d_ff), (n, d_ff, d)]
    return encoder * case.layers + decoder * case.layers + [(n, d, case.vocab)]


@dataclass(frozen=True)
class TrainImplementation:
    """A registered implementation; ``available`` returns None or why it cannot run here."""

    name: str
    description: str
    build: Callable[[TrainCase], TrainStep]
    available: Callable[[], str | None] = field(default=lambda: None)


IMPLEMENTATIONS: dict[str, TrainImplementation] = {}


def register(impl: TrainImplementation) -> None:
    """Add (or replace) an implementation selectable with ``--impls``."""
    IMPLEMENTATIONS[impl.name] = impl


for _impl in (
    TrainImplementation(
        "torch_transformer",
        "torch.nn.Transformer(batch_first=True) + 2 nn.Embedding + sinusoidal positions + "
        "untied nn.Linear output; causal mask from generate_square_subsequent_mask "
        "(tgt_is_causal=True) and key-padding masks; torch.optim.AdamW() defaults",
        _build_torch_transformer,
    ),
    TrainImplementation(
        "hf_bart",
        "transformers BartForConditionalGeneration from a BartConfig of the same sizes "
        "(ReLU, learned positions, shared embeddings tied to the output); the same "
        "label-smoothed loss on its logits; AdamW() defaults",
        lambda case: _build_hf(case, "bart"),
        transformers_available,
    ),
    TrainImplementation(
        "hf_marian",
        "transformers MarianMTModel from a MarianConfig of the same sizes "
        "(ReLU, sinusoidal positions, shared embeddings tied to the output); the same "
        "label-smoothed loss on its logits; AdamW() defaults",
        lambda case: _build_hf(case, "marian"),
        transformers_available,
    ),
    TrainImplementation(
        "attnkit",
        "attnkit.models.Transformer (its defaults: post-LN, sinusoidal positions, "
        "tie_output=True, attention backend 'auto' = fused); the loss of attnkit's "
        "Trainer (seq2seq_loss: the same label-smoothed values as the peers', with the output "
        "projection and loss fused a chunk of rows at a time); AdamW(fused=True)",
        lambda case: _build_attnkit(case, compiled=False),
    ),
    TrainImplementation(
        "attnkit_compiled",
        "the same as attnkit, with the forward pass and the loss under torch.compile "
        "(compile time is in the warm-up, reported, not timed)",
        lambda case: _build_attnkit(case, compiled=True),
    ),
    TrainImplementation(
        "matmul_floor",
        MATMUL_FLOOR_DESCRIPTION,
        lambda case: matmul_floor(
            encoder_decoder_products(case),
            _attnkit_transformer(case),
            case.device,
            case.autocast_dtype or torch.float32,
        ),
    ),
):
    register(_impl)

DEFAULT_IMPLS: tuple[str, ...] = tuple(IMPLEMENTATIONS)
BASELINE = "torch_transformer"


# --------------------------------------------------------------------------- worker side


def short_message(exc: BaseException) -> str:
    """``Type: first line ... last line`` of an exception, at most MAX_MESSAGE characters."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(lines) > 1:
        text += " ... " + lines[-1]
    message = f"{type(exc).__name__}: {text}"
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def measure_training(impl: str, case: TrainCase, steps: int, warmup: int, seed: int = 0) -> dict:
    """Build ``impl``'s step and time it on :func:`make_batches` (see :func:`time_steps`)."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    built = IMPLEMENTATIONS[impl].build(case)
    build_s = time.perf_counter() - start
    batches = make_batches(case, seed)
    device = torch.device(case.device)
    result = time_steps(built, batches, case.target_tokens, steps, warmup, device)
    return {**result, "build_s": build_s}


def time_steps(
    built: TrainStep,
    batches: Sequence[Any],
    tokens_per_step: int,
    steps: int,
    warmup: int,
    device: torch.device,
) -> dict:
    """Run ``warmup`` untimed and ``steps`` timed steps of ``built`` over ``batches`` in turn.

    ``tokens_per_s`` is ``tokens_per_step / median step time``. ``peak_mem_bytes``
    is the resident-set (or CUDA allocator) high-water mark over the timed steps
    above the baseline taken here, after the model and the batches were built:
    gradients, optimizer state and one step's activations (and, when compiled,
    what the compiler kept). ``step_mem_bytes`` is the part above the usage right
    before the timed steps: what one step allocates and frees again.
    ``step_cpu_s`` is the median process CPU time of a step, over all threads.
    """
    sync = synchronizer(device)
    model_probe = MemoryProbe(device)
    model_probe.set_baseline()
    model_probe.start_phase()
    warmup_times = [_timed(built.step, batches[i % len(batches)], sync)[0] for i in range(warmup)]
    warmup_peak = model_probe.peak()

    step_probe = MemoryProbe(device)
    step_probe.set_baseline()
    step_probe.start_phase()
    times, cpu_times, losses = [], [], []
    for i in range(steps):
        batch = batches[(warmup + i) % len(batches)]
        wall, cpu = _timed(lambda b: losses.append(built.step(b)), batch, sync)
        times.append(wall)
        cpu_times.append(cpu)
    step_mem = step_probe.peak()
    peak = step_mem + max(0, step_probe.baseline - model_probe.baseline)
    step_s = statistics.median(times)
    return {
        "tokens_per_s": tokens_per_step / step_s,
        "step_s": step_s,
        "step_min_s": min(times),
        "step_max_s": max(times),
        "step_times_s": times,
        "step_cpu_s": statistics.median(cpu_times),
        "steps": steps,
        "warmup": warmup,
        "warmup_s": sum(warmup_times),
        "first_step_s": warmup_times[0] if warmup_times else None,
        "peak_mem_bytes": peak,
        "step_mem_bytes": step_mem,
        "warmup_peak_mem_bytes": warmup_peak,
        "baseline_mem_bytes": model_probe.baseline,
        "mem_method": step_probe.method,
        "threads": torch.get_num_threads(),
        "parameters": built.parameters,
        "first_loss": float(losses[0]) if losses else None,
        "last_loss": float(losses[-1]) if losses else None,
        **built.info,
    }


def _timed(
    fn: Callable[[Any], object], batch: Any, sync: Callable[[], None]
) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call ``fn(batch)``, synchronised."""
    sync()
    cpu = time.process_time()
    start = time.perf_counter()
    fn(batch)
    sync()
    return time.perf_counter() - start, time.process_time() - cpu


def run_worker(payload: dict) -> dict:
    """Worker hook: measure one implementation; errors become error records."""
    case = TrainCase(**payload["case"])
    return worker_record(
        lambda: measure_training(
            payload["impl"],
            case,
            int(payload["steps"]),
            int(payload["warmup"]),
            int(payload.get("seed", 0)),
        )
    )


def worker_record(measure: Callable[[], dict], times_key: str = "step_times_s") -> dict:
    """``{"status": "ok", ...}`` with what ``measure()`` returns, or an error record
    with a short message when it raises or a time in ``result[times_key]`` is not finite."""
    try:
        result = measure()
    except torch.OutOfMemoryError as exc:
        return {"status": "error", "message": f"out of memory: {short_message(exc)}"}
    except Exception as exc:
        return {"status": "error", "message": short_message(exc)}
    if not all(math.isfinite(x) for x in result[times_key]):
        return {"status": "error", "message": f"non-finite time in {times_key}"}
    return {"status": "ok", "message": "", **result}


# --------------------------------------------------------------------------- run loop


@dataclass(frozen=True)
class TrainSettings:
    """Everything one ``attnkit bench train`` run needs."""

    case: TrainCase = field(default_factory=TrainCase)
    impls: tuple[str, ...] = DEFAULT_IMPLS
    steps: int = 20
    warmup: int = 3
    threads: int | None = None
    seed: int = 0
    timeout_s: float | None = None
    rounds: int = 1


def _base_record(impl: str, settings: TrainSettings, round_: int) -> dict:
    return {"impl": impl, "round": round_, **asdict(settings.case)}


def run_impl(settings: TrainSettings, impl_name: str, round_: int = 0) -> dict:
    """Run (or skip) one implementation in a fresh worker; returns its record."""
    record = _base_record(impl_name, settings, round_)
    unavailable = IMPLEMENTATIONS[impl_name].available()
    if unavailable:
        return {**record, "status": "skipped", "skip_reason": "unavailable", "message": unavailable}
    payload = {
        "suite": "train",
        "impl": impl_name,
        "case": asdict(settings.case),
        "steps": settings.steps,
        "warmup": settings.warmup,
        "threads": settings.threads,
        "seed": settings.seed,
    }
    return {**record, **run_in_worker(payload, timeout=settings.timeout_s)}


def run_train(
    settings: TrainSettings, on_record: Callable[[dict], None] | None = None
) -> list[dict]:
    """Every implementation in turn, ``settings.rounds`` times over (round-robin, so that
    a busy spell on the machine hits one round, not one implementation); ``on_record``
    sees each record as it arrives. Unavailable implementations are recorded once."""
    records = []
    for round_ in range(settings.rounds):
        for impl_name in settings.impls:
            if round_ and IMPLEMENTATIONS[impl_name].available():
                continue
            record = run_impl(settings, impl_name, round_)
            records.append(record)
            if on_record is not None:
                on_record(record)
    return records


def best_records(records: list[dict]) -> dict[str, dict]:
    """Per implementation, the round with the highest throughput (or, with no good
    round, its last record): on a shared machine the fastest round is the one that
    was disturbed least."""
    best: dict[str, dict] = {}
    for record in records:
        current = best.get(record["impl"])
        faster = (
            current is not None
            and record["status"] == "ok"
            and record["tokens_per_s"] > current.get("tokens_per_s", 0.0)
        )
        if current is None or current["status"] != "ok" or faster:
            best[record["impl"]] = record
    return best
