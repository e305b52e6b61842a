"""Losses and parameter groups: label smoothing against torch and a float64 formula,
padding ignored, the seq2seq and model-output losses, AdamW groups."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnkit.train import (
    LossOutput,
    TrainConfig,
    build_optimizer,
    label_smoothed_cross_entropy,
    model_output_loss,
    parameter_groups,
    seq2seq_loss,
)
from distributed_worker import PAD, copy_batch, tiny_transformer


def _smoothed_reference(logits, targets, pad_id, eps):
    """Float64: sum over non-pad positions of -sum_c q_c log p_c, q = (1-eps) 1_y + eps/V."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    vocab = logits.size(-1)
    q = torch.full_like(logp, eps / vocab)
    q.scatter_add_(-1, targets.unsqueeze(-1), torch.full_like(logp[..., :1], 1 - eps))
    per_token = -(q * logp).sum(-1)
    real = targets != pad_id
    return per_token[real].sum(), real.sum()


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_torch_and_formula(eps):
    logits = torch.randn(3, 7, 11, dtype=torch.float64)
    targets = torch.randint(0, 11, (3, 7))
    targets[0, 4:] = PAD
    targets[2, 1:] = PAD
    loss_sum, num_tokens = label_smoothed_cross_entropy(logits, targets, pad_id=PAD, smoothing=eps)
    expected, count = _smoothed_reference(logits, targets, PAD, eps)
    torch_sum = F.cross_entropy(
        logits.flatten(0, 1),
        targets.flatten(),
        ignore_index=PAD,
        label_smoothing=eps,
        reduction="sum",
    )
    assert int(num_tokens) == int(count) == int((targets != PAD).sum())
    torch.testing.assert_close(loss_sum, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(loss_sum, torch_sum, rtol=1e-10, atol=1e-10)


def test_label_smoothing_ignores_padding_and_upcasts_half():
    logits = torch.randn(2, 5, 9)
    targets = torch.randint(1, 9, (2, 5))
    base, _ = label_smoothed_cross_entropy(logits, targets, pad_id=0, smoothing=0.1)
    padded_logits = torch.cat([logits, torch.randn(2, 3, 9) * 100], dim=1)
    padded_targets = torch.cat([targets, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    padded, count = label_smoothed_cross_entropy(
        padded_logits, padded_targets, pad_id=0, smoothing=0.1
    )
    torch.testing.assert_close(padded, base)
    assert int(count) == 10
    half, _ = label_smoothed_cross_entropy(logits.bfloat16(), targets, pad_id=0, smoothing=0.1)
    assert half.dtype == torch.float32
    everything, n = label_smoothed_cross_entropy(logits, targets, pad_id=None)
    assert int(n) == 10 and torch.isfinite(everything)


def test_label_smoothing_rejects_bad_input():
    with pytest.raises(ValueError, match="logits must be targets' shape"):
        label_smoothed_cross_entropy(
            torch.randn(2, 5, 9), torch.zeros(2, 4, dtype=torch.long), pad_id=0
        )
    with pytest.raises(ValueError, match="smoothing"):
        label_smoothed_cross_entropy(
            torch.randn(2, 9), torch.zeros(2, dtype=torch.long), pad_id=0, smoothing=1.0
        )


def test_seq2seq_loss_on_attnkit_transformer():
    model = tiny_transformer()
    batch = copy_batch(4, 6, torch.Generator().manual_seed(0))
    output = seq2seq_loss(PAD, smoothing=0.1)(model, batch)
    logits = model(batch.src, batch.tgt_in)
    expected, count = label_smoothed_cross_entropy(logits, batch.tgt_out, pad_id=PAD, smoothing=0.1)
    assert isinstance(output, LossOutput)
    torch.testing.assert_close(output.loss_sum, expected)
    assert int(output.num_tokens) == int(count) == batch.num_tokens
    assert 0.0 <= float(output.logs["token_accuracy"]) <= 1.0
    output.loss_sum.backward()
    assert model.src_embedding.weight.grad is not None


def test_seq2seq_loss_fused_path_equals_the_logits_path():
    # Without ``forward`` an attnkit Transformer scores with labels=, never holding
    # the logits (the DDP and FSDP runs in test_train_distributed take this path too);
    # an explicit ``forward`` takes the logits path.
    model = tiny_transformer()
    batch = copy_batch(4, 6, torch.Generator().manual_seed(1))
    logits_forward = lambda m, src, tgt_in: m(src, tgt_in)  # noqa: E731

    def run(loss_fn, target):
        model.zero_grad()
        out = loss_fn(target, batch)
        out.loss_sum.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters()}

    fused, fused_grads = run(seq2seq_loss(PAD, smoothing=0.1), model)
    plain, plain_grads = run(seq2seq_loss(PAD, smoothing=0.1, forward=logits_forward), model)
    torch.testing.assert_close(fused.loss_sum, plain.loss_sum)
    assert int(fused.num_tokens) == int(plain.num_tokens)
    torch.testing.assert_close(fused.logs["token_accuracy"], plain.logs["token_accuracy"])
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, msg=name)


class _MeanLossModel(nn.Module):
    """Returns an output object with a mean ``loss`` (and optionally ``num_tokens``)."""

    def __init__(self, with_count: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)
        self.with_count = with_count

    def forward(self, x, y):
        loss = (self.linear(x).squeeze(-1) - y).pow(2).mean()
        out = type("Out", (), {"loss": loss})()
        if self.with_count:
            out.num_tokens = y.numel()
        return out


def test_model_output_loss_turns_the_mean_back_into_a_sum():
    x, y = torch.randn(5, 3), torch.randn(5)
    model = _MeanLossModel(True)
    counted = model_output_loss(model, {"x": x, "y": y})
    assert counted.num_tokens == 5
    model.with_count = False
    plain = model_output_loss(model, (x, y))
    assert plain.num_tokens == 1
    torch.testing.assert_close(counted.loss_sum, 5 * plain.loss_sum)
    with pytest.raises(ValueError, match=r"needs a model output with \.loss"):
        model_output_loss(nn.Linear(3, 1), torch.randn(2, 3))


def test_parameter_groups_do_not_decay_norms_biases_embeddings():
    model = tiny_transformer()
    groups = {group["name"]: group for group in parameter_groups(model, 0.1)}
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    decay = {id(p) for p in groups["decay"]["params"]}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    assert not no_decay & decay
    assert no_decay | decay == {id(p) for p in model.parameters()}
    for name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            full = f"{name}.{pname}"
            if isinstance(module, (nn.LayerNorm, nn.Embedding)) or pname == "bias":
                assert id(param) in no_decay, full
            elif isinstance(module, nn.Linear) and module is not model.output_projection:
                assert id(param) in decay, full
    # the output projection is tied to the target embedding: not decayed, listed once
    assert id(model.output_projection.weight) in no_decay
    counted = len(groups["decay"]["params"]) + len(groups["no_decay"]["params"])
    assert counted == len(list(model.parameters()))


def test_optimizer_is_fused_adamw_when_supported():
    optimizer = build_optimizer(tiny_transformer(), TrainConfig(max_steps=1, lr=1e-3))
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["fused"] or optimizer.defaults["foreach"]
    assert optimizer.defaults["fused"]  # CPU has a fused AdamW since torch 2.4
    assert [g["name"] for g in optimizer.param_groups] == ["decay", "no_decay"]


def test_adafactor_steps_scale_with_each_parameter():
    """T5's optimizer: a step moves a parameter in proportion to its root-mean-square."""
    model = nn.Sequential(nn.Embedding(16, 8), nn.Linear(8, 8, bias=False))
    with torch.no_grad():
        model[0].weight.normal_(0.0, 1.0)  # T5's embedding scale
        model[1].weight.normal_(0.0, 0.01)
    config = TrainConfig(max_steps=1, lr=1e-2, optimizer="adafactor", weight_decay=0.0)
    optimizer = build_optimizer(model, config)
    assert isinstance(optimizer, torch.optim.Adafactor)
    assert [g["name"] for g in optimizer.param_groups] == ["decay", "no_decay"]
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.arange(16)).square().sum().backward()
    optimizer.step()
    relative = [
        ((p - b).norm() / b.norm()).item() for p, b in zip(model.parameters(), before, strict=True)
    ]
    assert relative[0] == pytest.approx(relative[1], rel=0.5)  # alike, though 100x apart
    assert 1e-3 < relative[0] < 2e-2
    with pytest.raises(ValueError, match=r"optimizer must be one of \('adamw', 'adafactor'\)"):
        TrainConfig(max_steps=1, optimizer="sgd")


def _tiny_bert():
    from attnkit.models.bert import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=20, max_len=8, d_model=8, num_heads=2, num_layers=3, d_ff=16, num_labels=2
    )
    return BertForSequenceClassification(config)


def test_layer_lr_decay_scales_each_layer_and_keeps_the_schedule():
    """Layer-wise decay: head at lr, layer i of L at decay^(L-i), embeddings at decay^(L+1)."""
    from attnkit.train import build_scheduler

    model = _tiny_bert()
    config = TrainConfig(
        max_steps=10, lr=1e-3, layer_lr_decay=0.5, schedule="linear", warmup_steps=2
    )
    optimizer = build_optimizer(model, config)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    parameters = dict(model.named_parameters())
    expected = {
        "classifier.weight": 1e-3,
        "bert.pooler.weight": 1e-3,
        "bert.layers.2.self_attn.q_proj.weight": 5e-4,
        "bert.layers.2.ff_block.norm.bias": 5e-4,
        "bert.layers.0.feed_forward.linear1.weight": 1.25e-4,
        "bert.embeddings.word.weight": 6.25e-5,
        "bert.embeddings.norm.weight": 6.25e-5,
    }
    for name, lr in expected.items():
        assert lr_of[id(parameters[name])] == pytest.approx(lr), name
    assert len(lr_of) == len(parameters)  # every parameter in exactly one group
    assert optimizer.param_groups[0]["lr"] == 1e-3  # the logged lr is the head's
    decayed = {g["name"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decayed["decay.2"] == 0.01 and decayed["no_decay.2"] == 0.0
    scheduler = build_scheduler(optimizer, config, total_steps=10)
    ratios = [lr / scheduler.get_last_lr()[0] for lr in scheduler.get_last_lr()]
    for _ in range(3):  # the schedule multiplies every group alike
        optimizer.step()
        scheduler.step()
        now = scheduler.get_last_lr()
        assert [lr / now[0] for lr in now] == pytest.approx(ratios)


def test_layer_lr_decay_needs_one_layer_stack():
    with pytest.raises(ValueError, match=r"layer_lr_decay must be in \(0, 1\]; got 1.5"):
        TrainConfig(max_steps=1, layer_lr_decay=1.5)
    config = TrainConfig(max_steps=1, layer_lr_decay=0.8)
    with pytest.raises(ValueError, match=r"one stack .* found none"):
        build_optimizer(nn.Sequential(nn.Linear(2, 2)), config)
    with pytest.raises(ValueError, match=r"found \['decoder.layers', 'encoder.layers'\]"):
        build_optimizer(tiny_transformer(), config)
