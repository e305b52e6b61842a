"""The Trainer end to end on CPU: exact resume, signals, NaN steps, accumulation, precision,
evaluation, early stopping, best/keep-last checkpoints and the run's logs."""

import copy
import math
import os
import re
import signal
import sys
from dataclasses import dataclass

import pytest
import torch

from attnkit.train import (
    Callback,
    CheckpointError,
    TrainConfig,
    Trainer,
    list_checkpoints,
    move_to_device,
    parameter_groups,
    read_checkpoint,
    read_metrics,
    seq2seq_loss,
)
from distributed_worker import PAD, CopyBatch, CopySource, copy_batch, tiny_transformer

pytestmark = pytest.mark.usefixtures("single_thread")


def _config(output_dir, **overrides):
    settings = dict(
        max_steps=10,
        lr=3e-3,
        schedule="cosine",
        warmup_steps=3,
        accumulation_steps=2,
        log_every=1,
        output_dir=output_dir,
        progress=False,
        device="cpu",
        seed=0,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


class Recorder(Callback):
    """Records step losses; optionally stops, signals or checks something at a step."""

    def __init__(self, at_step=None, action=None):
        self.losses, self.steps, self.evals, self.saved = [], [], [], []
        self.at_step, self.action = at_step, action

    def on_step_end(self, trainer, metrics):
        self.losses.append(metrics["loss"])
        self.steps.append(metrics["step"])
        if metrics["step"] == self.at_step:
            self.action(trainer)

    def on_evaluate(self, trainer, metrics):
        self.evals.append(metrics)

    def on_checkpoint(self, trainer, path):
        self.saved.append(path)


def _fit(output_dir, *, model_seed=0, callbacks=(), resume=False, **overrides):
    model = tiny_transformer(seed=model_seed, dropout=0.1)
    recorder = Recorder()
    trainer = Trainer(
        model,
        seq2seq_loss(PAD, smoothing=0.1),
        CopySource(num_batches=7),
        _config(output_dir, **overrides),
        callbacks=[recorder, *callbacks],
    )
    return trainer, trainer.fit(resume=resume), recorder


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 10-step run (dropout on, accumulation, cosine schedule)."""
    trainer, summary, recorder = _fit(tmp_path_factory.mktemp("straight"), plot=True)
    return trainer, summary, recorder


def test_resume_gives_identical_losses_and_weights(tmp_path, straight):
    trainer, summary, recorder = straight
    assert summary.steps == 10 and summary.stop_reason == "max_steps"
    stop = Recorder(at_step=5, action=lambda t: t.request_stop("preempted"))
    _, first, first_rec = _fit(tmp_path, callbacks=[stop])
    assert first.stop_reason == "callback" and first.steps == 5
    assert [step for step, _ in list_checkpoints(tmp_path)] == [5]
    # a differently initialised model: everything must come from the checkpoint
    resumed, _, second_rec = _fit(tmp_path, model_seed=123, resume=True)
    assert second_rec.steps == list(range(6, 11))
    assert first_rec.losses + second_rec.losses == recorder.losses  # exact, float32 on CPU
    for name, tensor in resumed.module.state_dict().items():
        assert torch.equal(tensor, trainer.module.state_dict()[name]), name
    logged = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")]
    assert logged == list(range(1, 11))


def test_adafactor_run_resumes_with_identical_losses(tmp_path):
    """Adafactor's factored second moments and step counts travel in the checkpoint too."""
    _, _, straight = _fit(tmp_path / "straight", optimizer="adafactor", lr=1e-2)
    stop = Recorder(at_step=4, action=lambda t: t.request_stop("preempted"))
    _, _, first = _fit(tmp_path / "run", callbacks=[stop], optimizer="adafactor", lr=1e-2)
    resumed, _, second = _fit(
        tmp_path / "run", model_seed=123, resume=True, optimizer="adafactor", lr=1e-2
    )
    assert isinstance(resumed.optimizer, torch.optim.Adafactor)
    assert first.losses + second.losses == straight.losses


def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path, straight):
    previous = signal.getsignal(signal.SIGTERM)
    kill = Recorder(at_step=3, action=lambda t: os.kill(os.getpid(), signal.SIGTERM))
    _, summary, _ = _fit(tmp_path, callbacks=[kill], checkpoint_every=100)
    assert summary.stop_reason == "signal" and summary.signal == "SIGTERM"
    assert summary.steps == 3 and "SIGTERM" in summary.message
    assert signal.getsignal(signal.SIGTERM) is previous
    assert summary.checkpoint == tmp_path / "checkpoints" / "step_00000003"
    assert read_checkpoint(summary.checkpoint).step == 3
    _, resumed, recorder = _fit(tmp_path, resume=True)
    assert resumed.steps == 10 and recorder.steps == list(range(4, 11))
    assert recorder.losses == straight[2].losses[3:]


def test_sigint_stops_cleanly_after_the_step(tmp_path):
    interrupt = Recorder(at_step=2, action=lambda t: os.kill(os.getpid(), signal.SIGINT))
    _, summary, recorder = _fit(tmp_path, callbacks=[interrupt])
    assert summary.stop_reason == "signal" and summary.signal == "SIGINT"
    assert recorder.steps == [1, 2] and read_checkpoint(summary.checkpoint).step == 2


def test_resuming_a_truncated_checkpoint_fails_clearly_and_touches_nothing(tmp_path):
    _fit(tmp_path, max_steps=2)
    state_file = tmp_path / "checkpoints" / "step_00000002" / "trainer_state.pt"
    state_file.write_bytes(state_file.read_bytes()[:100])
    model = tiny_transformer(seed=5)
    before = copy.deepcopy(model.state_dict())
    trainer = Trainer(model, seq2seq_loss(PAD), CopySource(), _config(tmp_path))
    with pytest.raises(CheckpointError, match=r"trainer_state\.pt is truncated"):
        trainer.fit(resume=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert trainer.step == 0


def test_metrics_log_plot_and_checkpoint_contents(straight):
    trainer, summary, _ = straight
    output_dir = trainer.config.output_dir
    records = read_metrics(output_dir / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 11))
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "peak_memory_mb", "token_accuracy"):
        assert all(isinstance(r[key], float) for r in train), key
    assert train[-1]["loss"] == pytest.approx(summary.final_loss)
    events = [r["event"] for r in records if r["kind"] == "event"]
    assert events[0] == "start" and events[-1] == "stop" and "checkpoint" in events
    assert (output_dir / "loss.png").stat().st_size > 1000
    checkpoint = read_checkpoint(summary.checkpoint)
    state = checkpoint.trainer_state
    assert state["counters"]["step"] == 10
    assert state["ranks"][0]["data"] == {"epoch": 2, "position": 6}  # 20 micro-batches of 7/epoch
    assert set(state["ranks"][0]["rng"]) >= {"python", "numpy", "torch"}
    assert state["scheduler"]["last_epoch"] == 10


def test_nan_step_is_skipped_and_counted(tmp_path):
    calls = {"n": 0}
    base = seq2seq_loss(PAD)

    def flaky(model, batch):
        calls["n"] += 1
        output = base(model, batch)
        if calls["n"] in (3, 4):  # both micro-batches of step 2
            output.loss_sum = output.loss_sum * float("nan")
        return output

    model = tiny_transformer()
    trainer = Trainer(model, flaky, CopySource(), _config(tmp_path, max_steps=4, max_bad_steps=2))
    summary = trainer.fit()
    assert summary.steps == 4 and summary.bad_steps == 1 and summary.stop_reason == "max_steps"
    assert all(math.isfinite(loss) for loss in trainer.losses)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    events = read_metrics(tmp_path / "metrics.jsonl", "event")
    assert [r["step"] for r in events if r["event"] == "non_finite_loss"] == [1]


def test_training_stops_after_max_bad_steps_in_a_row(tmp_path, caplog):
    def always_nan(model, batch):
        output = seq2seq_loss(PAD)(model, batch)
        output.loss_sum = output.loss_sum + float("inf")
        return output

    model = tiny_transformer()
    before = copy.deepcopy(model.state_dict())
    trainer = Trainer(model, always_nan, CopySource(), _config(tmp_path, max_bad_steps=3))
    summary = trainer.fit()
    assert summary.stop_reason == "non_finite_loss"
    assert summary.steps == 0 and summary.bad_steps == 3
    assert "3 steps in a row" in summary.message and "max_bad_steps=3" in summary.message
    assert summary.message in caplog.text  # logged as an error, not only returned
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


@dataclass
class _ListSource:
    batches: list

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def test_accumulation_equals_one_big_batch_in_float64():
    generator = torch.Generator().manual_seed(0)
    big = [copy_batch(8, 6, generator) for _ in range(2)]  # lengths vary: tokens differ per half
    halves = [
        CopyBatch(*(t[rows] for t in (b.src, b.tgt_in, b.tgt_out)))
        for b in big
        for rows in (slice(0, 4), slice(4, 8))
    ]
    assert halves[0].num_tokens != halves[1].num_tokens

    def train(batches, accumulation):
        model = tiny_transformer().double()
        config = _config(
            None,
            max_steps=2,
            accumulation_steps=accumulation,
            schedule="constant",
            warmup_steps=0,
            weight_decay=0.1,
        )
        Trainer(model, seq2seq_loss(PAD, 0.1), _ListSource(batches), config).fit()
        return model

    accumulated, single = train(halves, 2), train(big, 1)
    reference = tiny_transformer().double()
    optimizer = torch.optim.AdamW(
        parameter_groups(reference, 0.1), lr=3e-3, betas=(0.9, 0.98), eps=1e-9, foreach=True
    )
    for batch in big:
        output = seq2seq_loss(PAD, 0.1)(reference, batch)
        (output.loss_sum / output.num_tokens).backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(accumulated.state_dict()[name], tensor, rtol=0, atol=1e-10)
        torch.testing.assert_close(single.state_dict()[name], tensor, rtol=0, atol=1e-10)


def test_bf16_autocast_runs_on_cpu(tmp_path):
    dtypes = []
    base = seq2seq_loss(PAD)

    def spy(model, batch):
        dtypes.append(model(batch.src, batch.tgt_in).dtype)  # logits of a Linear
        return base(model, batch)

    model = tiny_transformer()
    config = _config(None, max_steps=3, precision="bf16")
    trainer = Trainer(model, spy, CopySource(), config)
    summary = trainer.fit()
    assert summary.steps == 3 and trainer.scaler is None
    assert set(dtypes) == {torch.bfloat16}
    assert all(math.isfinite(loss) for loss in trainer.losses)
    assert next(model.parameters()).dtype == torch.float32


def test_fp16_uses_a_grad_scaler(tmp_path):
    trainer = Trainer(
        tiny_transformer(),
        seq2seq_loss(PAD),
        CopySource(),
        _config(tmp_path, max_steps=4, precision="fp16"),
    )
    assert isinstance(trainer.scaler, torch.amp.GradScaler) and trainer.scaler.is_enabled()
    summary = trainer.fit()
    assert summary.steps == 4 and summary.overflow_steps <= 2
    assert all(math.isfinite(loss) for loss in trainer.losses)
    scaler_state = read_checkpoint(summary.checkpoint).trainer_state["scaler"]
    assert scaler_state["scale"] > 0


def test_evaluation_best_checkpoint_keep_last_and_early_stopping(tmp_path):
    values = iter([3.0, 2.0, 2.5, 2.6, 1.0])
    modes = []

    def evaluate(model):
        modes.append(model.training)
        return {"loss": next(values), "other": 1.0}

    config = _config(
        tmp_path, eval_every=1, best_metric="loss", patience=2, checkpoint_every=1, keep_last=2
    )
    recorder = Recorder()
    model = tiny_transformer()
    trainer = Trainer(
        model, seq2seq_loss(PAD), CopySource(), config, evaluate_fn=evaluate, callbacks=[recorder]
    )
    summary = trainer.fit()
    assert summary.stop_reason == "early_stopping" and summary.steps == 4
    assert summary.best_value == 2.0 and summary.best_step == 2
    assert "did not improve for 2 evaluations" in summary.message
    assert modes == [False] * 4 and model.training
    assert [e["loss"] for e in recorder.evals] == [3.0, 2.0, 2.5, 2.6]  # no extra final eval
    assert [step for step, _ in list_checkpoints(tmp_path)] == [3, 4]
    best = read_checkpoint(summary.best_checkpoint)
    assert best.step == 2 and best.meta["best_value"] == 2.0
    evals = read_metrics(tmp_path / "metrics.jsonl", "eval")
    assert [(r["step"], r["loss"]) for r in evals] == [(1, 3.0), (2, 2.0), (3, 2.5), (4, 2.6)]


def test_max_epochs_with_a_partial_last_step():
    config = _config(None, max_steps=None, max_epochs=2, accumulation_steps=3)
    trainer = Trainer(tiny_transformer(), seq2seq_loss(PAD), CopySource(num_batches=8), config)
    assert trainer.total_steps() == 6  # ceil(16 micro-batches / 3)
    summary = trainer.fit()
    assert summary.stop_reason == "max_epochs" and summary.steps == 6 and summary.epochs == 2


@pytest.mark.parametrize("eager", [False, True])
def test_resume_at_an_epoch_end_counts_epochs_right(tmp_path, eager):
    def run(output_dir, stop_at=None, resume=False):
        stop = Recorder(at_step=stop_at, action=lambda t: t.request_stop())
        config = _config(output_dir, max_steps=None, max_epochs=2)
        source = CopySource(num_batches=4, eager=eager)  # 2 steps per epoch
        trainer = Trainer(tiny_transformer(), seq2seq_loss(PAD), source, config, callbacks=[stop])
        return trainer.fit(resume=resume), stop.losses

    straight, losses = run(tmp_path / "straight")
    _, first = run(tmp_path / "split", stop_at=2)  # stops exactly at the end of epoch 1
    resumed, rest = run(tmp_path / "split", resume=True)
    assert straight.steps == resumed.steps == 4 and resumed.stop_reason == "max_epochs"
    assert straight.epochs == resumed.epochs == 2
    assert first + rest == losses


def test_fresh_run_refuses_a_used_output_dir_and_missing_resume(tmp_path):
    _fit(tmp_path, max_steps=1)
    with pytest.raises(FileExistsError, match="resume=True"):
        _fit(tmp_path, max_steps=2)
    trainer = Trainer(tiny_transformer(), seq2seq_loss(PAD), CopySource(), _config(None))
    with pytest.raises(CheckpointError, match="no checkpoint under"):
        trainer.fit(resume_from=tmp_path / "nowhere")
    _, summary, _ = _fit(tmp_path / "fresh", resume=True, max_steps=1)  # nothing to resume: fresh
    assert summary.steps == 1


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        _fit(tmp_path, max_steps=1, tensorboard=True)


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one():
    def losses(compile):
        config = _config(None, max_steps=3, compile=compile)
        trainer = Trainer(tiny_transformer(), seq2seq_loss(PAD), CopySource(), config)
        trainer.fit()
        return trainer.losses

    torch.testing.assert_close(losses("aot_eager"), losses(False), rtol=0, atol=1e-5)


def test_move_to_device_handles_containers():
    @dataclass
    class Pair:
        a: torch.Tensor
        b: list

    moved = move_to_device(
        {"x": torch.ones(1), "pair": Pair(torch.zeros(1), [torch.ones(2), 3])}, torch.device("cpu")
    )
    assert torch.equal(moved["pair"].b[0], torch.ones(2)) and moved["pair"].b[1] == 3


def test_config_round_trip_and_validation():
    config = TrainConfig(max_steps=5, betas=[0.9, 0.99], output_dir="runs/x")
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"max_steps": 1, "learning_rate": 1.0})
    with pytest.raises(ValueError, match="max_steps or max_epochs"):
        TrainConfig()
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(max_steps=1, precision="fp8")
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(max_steps=1, patience=3)


def test_decay_embeddings_moves_embedding_tables_to_the_decayed_group():
    from attnkit.train.optim import parameter_groups

    model = torch.nn.Sequential(
        torch.nn.Embedding(10, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 3)
    )
    default = {g["name"]: len(g["params"]) for g in parameter_groups(model, 0.1)}
    decayed = {
        g["name"]: len(g["params"]) for g in parameter_groups(model, 0.1, decay_embeddings=True)
    }
    assert default == {"decay": 1, "no_decay": 4}  # linear weight | embedding, norm x2, bias
    assert decayed == {"decay": 2, "no_decay": 3}


def _raw_weights(trainer) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in trainer.module.state_dict().items()}


def test_weight_average_follows_its_formula_and_is_what_evaluation_sees(tmp_path):
    """ema_decay: average_1 = weights_1, average_k = d * average_(k-1) + (1 - d) * weights_k."""
    seen = []

    class Snapshot(Callback):
        def __init__(self):
            self.weights = []

        def on_step_end(self, trainer, metrics):
            self.weights.append(_raw_weights(trainer))

    def evaluate(model):
        seen.append({name: t.clone() for name, t in model.state_dict().items()})
        return {"loss": -float(len(seen))}  # improves every time: every eval is the best

    snapshot = Snapshot()
    config = _config(tmp_path, max_steps=4, ema_decay=0.5, eval_every=2, best_metric="loss")
    trainer = Trainer(
        tiny_transformer(dropout=0.1),
        seq2seq_loss(PAD),
        CopySource(),
        config,
        evaluate_fn=evaluate,
        callbacks=[snapshot],
    )
    trainer.fit()
    average = dict(snapshot.weights[0])
    expected = {}
    for step, weights in enumerate(snapshot.weights[1:], start=2):
        average = {k: 0.5 * v + 0.5 * weights[k] if v.is_floating_point() else weights[k]
                   for k, v in average.items()}  # fmt: skip
        expected[step] = average
    assert len(seen) == 2  # steps 2 and 4, no extra final evaluation
    for got, step in zip(seen, (2, 4), strict=True):
        for name, tensor in expected[step].items():
            torch.testing.assert_close(got[name], tensor, rtol=1e-6, atol=1e-7, msg=name)
    assert not torch.equal(
        seen[1]["output_projection.weight"], snapshot.weights[-1]["output_projection.weight"]
    )
    # the checkpoint's model weights are the average; the trained weights ride in its state
    last = read_checkpoint(tmp_path / "checkpoints" / "step_00000004")
    for name, tensor in expected[4].items():
        torch.testing.assert_close(last.model_state[name], tensor, rtol=1e-6, atol=1e-7)
    for name, tensor in snapshot.weights[-1].items():
        assert torch.equal(last.trainer_state["ema"]["weights"][name], tensor), name
    assert last.trainer_state["ema"]["updates"] == 4
    best = read_checkpoint(tmp_path / "checkpoints" / "best")
    assert best.step == 4 and torch.equal(
        best.model_state["output_projection.weight"], last.model_state["output_projection.weight"]
    )


def test_weight_average_resumes_exactly_and_refuses_a_mismatched_checkpoint(tmp_path):
    straight, _, recorder = _fit(tmp_path / "straight", ema_decay=0.8)
    stop = Recorder(at_step=4, action=lambda t: t.request_stop("preempted"))
    _, _, first = _fit(tmp_path / "run", callbacks=[stop], ema_decay=0.8)
    resumed, _, second = _fit(tmp_path / "run", model_seed=123, resume=True, ema_decay=0.8)
    assert first.losses + second.losses == recorder.losses
    for mine, theirs in (
        (resumed.ema.module, straight.ema.module),
        (resumed.module, straight.module),
    ):
        for name, tensor in mine.state_dict().items():
            assert torch.equal(tensor, theirs.state_dict()[name]), name
    with pytest.raises(
        CheckpointError, match=r"saved with a weight average; this run has ema_decay=None"
    ):
        _fit(tmp_path / "run", resume=True, max_steps=12)
    with pytest.raises(ValueError, match=r"ema_decay must be in \(0, 1\) or None; got 1.0"):
        _config(None, ema_decay=1.0)


def _inf_gradient(every=lambda attempt: True, *, signal_at=None, limit=80):
    """seq2seq_loss plus ``sqrt(0 * sum(w))``: the loss stays finite, its gradient is not
    (on the optimizer-step attempts ``every`` picks; SIGTERM during attempt ``signal_at``).
    Raises after ``limit`` calls, so a run that never stops fails instead of hanging."""
    calls = {"n": 0}
    base = seq2seq_loss(PAD)

    def loss_fn(model, batch):
        calls["n"] += 1
        if calls["n"] > limit:
            raise RuntimeError(f"the run did not stop within {limit} loss calls")
        attempt = (calls["n"] - 1) // 2 + 1  # 2 micro-batches per step
        if attempt == signal_at and calls["n"] % 2:
            os.kill(os.getpid(), signal.SIGTERM)
        output = base(model, batch)
        if every(attempt):
            weight = model.output_projection.weight
            output.loss_sum = output.loss_sum + torch.sqrt(weight.sum() * 0.0)
        return output

    return loss_fn


def test_fp16_overflow_in_every_step_stops_once_the_scale_is_below_one(tmp_path):
    """The scaler starts at 2**16 and halves on each overflow: the 17th leaves 0.5."""
    model = tiny_transformer()
    before = copy.deepcopy(model.state_dict())
    config = _config(tmp_path, max_steps=5, precision="fp16", max_bad_steps=3)
    summary = Trainer(model, _inf_gradient(), CopySource(), config).fit()
    assert summary.stop_reason == "non_finite_loss" and summary.steps == 0
    assert summary.overflow_steps == 17 and summary.bad_steps == 0
    assert "17 steps in a row had a non-finite fp16 gradient" in summary.message
    assert "loss scale down to 0.5" in summary.message
    assert "max_bad_steps=3" in summary.message
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_fp16_overflows_in_a_row_reset_after_a_step_and_survive_a_resume(tmp_path):
    """Every attempt but the 2nd overflows, SIGTERM during the 4th: attempt 2's step resets
    the count, the checkpoint carries 2 in a row and the scaler's 2**13, and the resumed
    run stops at the 16th overflow in a row (the 17th in all), which leaves 0.5."""
    overflows = _inf_gradient(lambda attempt: attempt != 2, signal_at=4)
    config = _config(tmp_path, max_steps=30, precision="fp16", max_bad_steps=3)
    first = Trainer(tiny_transformer(), overflows, CopySource(), config).fit()
    assert first.stop_reason == "signal" and first.steps == 1 and first.overflow_steps == 3
    assert read_checkpoint(first.checkpoint).trainer_state["counters"]["consecutive_overflows"] == 2
    resumed = Trainer(tiny_transformer(), overflows, CopySource(), config).fit(resume=True)
    assert resumed.stop_reason == "non_finite_loss" and resumed.steps == 1
    assert resumed.overflow_steps == 17 and "16 steps in a row" in resumed.message


def test_a_non_finite_loss_after_settling_overflows_is_one_bad_step(tmp_path):
    """fp16 overflows while the scale settles and a NaN loss are counted apart: four
    overflows then one NaN loss, with max_bad_steps=3, skip five steps and go on."""
    calls = {"n": 0}
    overflows = _inf_gradient(lambda attempt: attempt <= 4)

    def loss_fn(model, batch):
        calls["n"] += 1
        output = overflows(model, batch)
        if calls["n"] in (9, 10):  # both micro-batches of attempt 5
            output.loss_sum = output.loss_sum * float("nan")
        return output

    config = _config(tmp_path, max_steps=3, precision="fp16", max_bad_steps=3)
    summary = Trainer(tiny_transformer(), loss_fn, CopySource(), config).fit()
    assert summary.stop_reason == "max_steps" and summary.steps == 3
    assert summary.overflow_steps == 4 and summary.bad_steps == 1


def _evaluate_from(values):
    values = iter(values)
    return lambda model: {"loss": next(values)}


def test_resuming_an_early_stopped_run_trains_no_further(tmp_path):
    config = _config(tmp_path, eval_every=1, best_metric="loss", patience=2)
    trainer = Trainer(
        tiny_transformer(),
        seq2seq_loss(PAD),
        CopySource(),
        config,
        evaluate_fn=_evaluate_from([3.0, 2.0, 2.5, 2.6]),
    )
    first = trainer.fit()
    assert first.stop_reason == "early_stopping" and first.steps == 4
    recorder = Recorder()
    model = tiny_transformer(seed=123)
    resumed = Trainer(
        model,
        seq2seq_loss(PAD),
        CopySource(),
        config,
        evaluate_fn=_evaluate_from([]),  # any evaluation would raise StopIteration
        callbacks=[recorder],
    )
    summary = resumed.fit(resume=True)
    assert summary.stop_reason == "early_stopping" and summary.steps == 4
    assert "already stopped at step 4" in summary.message
    assert recorder.steps == [] and recorder.evals == []
    assert summary.best_step == 2 and summary.best_value == 2.0
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, trainer.module.state_dict()[name]), name


def test_a_best_checkpoint_alone_marks_the_output_dir_as_used(tmp_path):
    """Run 1 kept only best/ (save_final off): a fresh run refuses the directory, and
    resume=True continues from best/ rather than starting over beside it."""
    settings = dict(max_steps=4, save_final=False, eval_every=2, best_metric="loss")
    run_1 = Trainer(
        tiny_transformer(),
        seq2seq_loss(PAD),
        CopySource(),
        _config(tmp_path, **settings),
        evaluate_fn=_evaluate_from([1.0, 2.0]),  # the best is step 2's
    )
    run_1.fit()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best"]
    with pytest.raises(FileExistsError, match=r"holds checkpoints of an earlier run \(best\)"):
        _fit(tmp_path, max_steps=4)
    recorder = Recorder()
    resumed = Trainer(
        tiny_transformer(seed=123),
        seq2seq_loss(PAD),
        CopySource(),
        _config(tmp_path, **settings),
        evaluate_fn=_evaluate_from([0.5]),
        callbacks=[recorder],
    )
    summary = resumed.fit(resume=True)
    assert recorder.steps == [3, 4] and summary.best_step == 4


def test_resuming_from_an_earlier_best_drops_the_abandoned_later_checkpoints(tmp_path):
    values = [3.0, 2.0, 2.5, 2.6, 2.7, 2.8]
    settings = dict(max_steps=6, eval_every=1, best_metric="loss", checkpoint_every=1)
    first = Trainer(
        tiny_transformer(),
        seq2seq_loss(PAD),
        CopySource(),
        _config(tmp_path, keep_last=2, **settings),
        evaluate_fn=_evaluate_from(values),
    ).fit()
    assert first.best_step == 2
    assert [step for step, _ in list_checkpoints(tmp_path)] == [5, 6]
    stop = Recorder(at_step=3, action=lambda t: t.request_stop("branch"))
    trainer = Trainer(
        tiny_transformer(),
        seq2seq_loss(PAD),
        CopySource(),
        _config(tmp_path, keep_last=2, **settings),
        evaluate_fn=_evaluate_from([2.9]),
        callbacks=[stop],
    )
    summary = trainer.fit(resume_from="best")
    assert summary.steps == 3 and summary.checkpoint.is_dir()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [3]
    assert trainer.checkpoints.latest() == summary.checkpoint
    events = read_metrics(tmp_path / "metrics.jsonl", "event")
    discarded = [r for r in events if r["event"] == "discard"]
    assert discarded[0]["paths"] == "step_00000005, step_00000006"


def test_fit_recipe_without_any_saved_checkpoint_keeps_the_evaluated_weights(tmp_path):
    """save_final off, no best_metric, no checkpoint_every: nothing to load, so the model
    keeps the run's weights (their moving average with ema_decay, as evaluations see)."""
    from types import SimpleNamespace

    from attnkit.recipes.common import fit_recipe

    for ema_decay in (None, 0.5):
        settings = dict(max_steps=3, save_final=False, ema_decay=ema_decay)
        reference = Trainer(
            tiny_transformer(), seq2seq_loss(PAD), CopySource(), _config(None, **settings)
        )
        reference.fit()
        expected = reference.evaluated_module.state_dict()
        out = tmp_path / str(ema_decay)
        recipe = SimpleNamespace(
            train=_config(out, **settings), max_minutes=None, output_dir=str(out)
        )
        model = tiny_transformer()
        summary, report = fit_recipe(model, seq2seq_loss(PAD), CopySource(), recipe)
        assert report and summary.steps == 3 and summary.checkpoint is None
        assert not (out / "checkpoints").exists()
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, expected[name]), (ema_decay, name)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"grad_clip": float("nan")}, "grad_clip must be a finite number > 0 or None; got nan"),
        ({"grad_clip": 0.0}, "grad_clip must be a finite number > 0 or None; got 0.0"),
        ({"noam_factor": -1.0}, "noam_factor must be a finite number > 0; got -1.0"),
        ({"noam_d_model": 0}, "noam_d_model must be an int >= 1 or None; got 0 (int)"),
        ({"noam_d_model": -16}, "noam_d_model must be an int >= 1 or None; got -16 (int)"),
        ({"min_delta": -1.0}, "min_delta must be a finite number >= 0; got -1.0"),
        ({"betas": (0.9, 1.5)}, "betas[1] must be in [0, 1); got 1.5"),
        ({"betas": (0.9,)}, "betas must be a pair of numbers (beta1, beta2); got (0.9,)"),
        ({"eps": -1.0}, "eps must be a finite number >= 0; got -1.0"),
        ({"lr": float("nan")}, "lr must be a finite number > 0; got nan"),
        ({"max_steps": 2.5}, "max_steps must be an int >= 1 or None; got 2.5 (float)"),
        ({"accumulation_steps": 2.0}, "accumulation_steps must be an int >= 1; got 2.0 (float)"),
        ({"eval_every": True}, "eval_every must be an int >= 1 or None; got True (bool)"),
        ({"fsdp_units": ["Block", ""]}, "fsdp_units must be a class name or a list of"),
    ],
)
def test_config_rejects_bad_values_saying_what_was_expected(overrides, message):
    settings = {"max_steps": 10, "schedule": "noam", "warmup_steps": 4} | overrides
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**settings)


def test_config_takes_one_fsdp_unit_name_as_a_string():
    assert TrainConfig(max_steps=1, fsdp_units="GPTBlock").fsdp_units == ("GPTBlock",)
    assert TrainConfig(max_steps=1, fsdp_units=["A", "B"]).fsdp_units == ("A", "B")


def test_vit_class_token_and_positions_are_embeddings_for_weight_decay():
    from attnkit.models import ViT, ViTConfig
    from attnkit.train.optim import declared_embeddings

    vit = ViT(
        ViTConfig(image_size=8, patch_size=4, num_channels=1, d_model=8, num_heads=2,
                  num_layers=1, d_ff=16, num_labels=3)
    )  # fmt: skip
    names = {id(p): name for name, p in vit.named_parameters()}
    tables = {"cls_token", "position_embeddings"}

    def grouped(**kwargs):
        return {
            g["name"]: {names[id(p)] for p in g["params"]}
            for g in parameter_groups(vit, 0.1, **kwargs)
        }

    assert tables <= grouped()["no_decay"]
    assert tables <= grouped(decay_embeddings=True)["decay"]  # like embedding tables

    class Bad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.zeros(2, 2))

        def embedding_parameter_names(self):
            return ("tabel",)

    with pytest.raises(ValueError, match=r"Bad.embedding_parameter_names\(\) must name its"):
        declared_embeddings(Bad())
