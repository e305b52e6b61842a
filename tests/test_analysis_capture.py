"""Attention capture, statistics, rollout/flow and the analyzer (issue 6)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import attnkit.functional.attention as attention_module
from attnkit.analysis import (
    AttentionAnalyzer,
    attention_entropy,
    attention_flow,
    attention_rollout,
    capture_attention,
    mean_attention_distance,
    residual_attention,
    special_token_attention,
)
from attnkit.models import GPT, T5, GPTConfig, T5Config, Transformer, TransformerConfig, ViT
from attnkit.models.bert import BertConfig, BertModel
from attnkit.models.vit import ViTConfig
from attnkit.nn import AttentionLayer, BahdanauAttention


def transformer() -> Transformer:
    config = TransformerConfig(
        src_vocab_size=30, tgt_vocab_size=30, d_model=32, num_heads=4,
        num_encoder_layers=2, num_decoder_layers=2, d_ff=64, dropout=0.0,
    )  # fmt: skip
    return Transformer.from_config(config).eval()


def gpt(**overrides) -> GPT:
    values = dict(vocab_size=30, max_len=32, d_model=32, num_heads=4, num_layers=2, dropout=0.0)
    return GPT(GPTConfig(**{**values, **overrides})).eval()


def bert() -> BertModel:
    config = BertConfig(
        vocab_size=30, max_len=32, d_model=32, num_heads=4, num_layers=2, d_ff=64,
        dropout=0.0, attention_dropout=0.0,
    )  # fmt: skip
    return BertModel(config).eval()


def t5() -> T5:
    config = T5Config(
        vocab_size=30, d_model=32, d_kv=8, d_ff=64, num_heads=4, num_layers=2, dropout=0.0,
        num_buckets=8, max_distance=16,
    )  # fmt: skip
    return T5(config).eval()


def vit() -> ViT:
    config = ViTConfig(
        image_size=28, patch_size=7, num_channels=1, d_model=32, num_heads=4, num_layers=2,
        d_ff=64, num_labels=10,
    )  # fmt: skip
    return ViT(config).eval()


def logits(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    return getattr(output, "logits", None) if hasattr(output, "logits") else output[0]


SRC = torch.randint(1, 30, (2, 7), generator=torch.Generator().manual_seed(0))
TGT = torch.randint(1, 30, (2, 5), generator=torch.Generator().manual_seed(1))
IMAGES = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))

# model, call, expected (kind, layers, Tq, Tk) groups
CASES = {
    "transformer": (
        transformer,
        lambda m: m(SRC, TGT),
        [("encoder_self", 2, 7, 7), ("decoder_self", 2, 5, 5), ("cross", 2, 5, 7)],
    ),
    "gpt": (gpt, lambda m: m(SRC), [("decoder_self", 2, 7, 7)]),
    "bert": (bert, lambda m: m(SRC).last_hidden_state, [("encoder_self", 2, 7, 7)]),
    "t5": (
        t5,
        lambda m: m(SRC, decoder_input_ids=TGT),
        [("encoder_self", 2, 7, 7), ("decoder_self", 2, 5, 5), ("cross", 2, 5, 7)],
    ),
    "vit": (vit, lambda m: m(IMAGES), [("encoder_self", 2, 17, 17)]),
}


@pytest.mark.parametrize("family", CASES)
def test_capture_keeps_outputs_and_labels_every_module(family):
    build, call, groups = CASES[family]
    torch.manual_seed(0)
    model = build()
    with torch.no_grad():
        plain = logits(call(model))
        with capture_attention(model) as capture:
            captured = logits(call(model))
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-5)
    assert capture.kinds() == [kind for kind, *_ in groups]
    for kind, layers, tq, tk in groups:
        weights = capture.layers(kind)
        assert len(weights) == layers
        for w in weights:
            assert w.shape == (2, 4, tq, tk)
            torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, tq))
    assert [r.layer for r in capture.of_kind(groups[0][0])] == list(range(groups[0][1]))


def test_captured_weights_equal_the_models_own_attentions():
    model = gpt()
    with torch.no_grad():
        own = model(SRC, output_attentions=True).attentions
        with capture_attention(model) as capture:
            out = model(SRC, output_attentions=True)
    mine_all = capture.layers("decoder_self")
    for mine, theirs, returned in zip(mine_all, own, out.attentions, strict=True):
        torch.testing.assert_close(mine, theirs)
        torch.testing.assert_close(returned, theirs)  # a caller asking for weights still gets them


def test_after_the_context_the_fused_backend_runs_again(monkeypatch):
    calls = {"fused": 0, "math": 0}
    for name in calls:
        original = attention_module._BACKENDS[name]

        def counting(*args, _name=name, _fn=original.fn, **kwargs):
            calls[_name] += 1
            return _fn(*args, **kwargs)

        counted = dataclasses.replace(original, fn=counting)
        monkeypatch.setitem(attention_module._BACKENDS, name, counted)
    model = gpt()
    with torch.no_grad():
        model(SRC)
        assert calls == {"fused": 2, "math": 0}
        with capture_attention(model):
            model(SRC)
        assert calls == {"fused": 2, "math": 2}
        model(SRC)
    assert calls == {"fused": 4, "math": 2}
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_modules_without_weights_are_skipped_with_a_warning():
    model = gpt(attention="lsh", attention_options={"num_buckets": 2, "chunk_size": 8})
    warning = pytest.warns(UserWarning, match="return no weights")
    with warning, capture_attention(model) as capture, torch.no_grad():
        model(SRC)
    assert capture.records == [] and capture.skipped == ["layers.0.self_attn", "layers.1.self_attn"]


def test_capture_during_cached_decoding_records_every_step():
    model = gpt()
    cache = model.new_cache(1, 8)
    with torch.no_grad(), capture_attention(model) as capture:
        model(SRC[:1, :3], cache=cache)
        model(SRC[:1, 3:4], cache=cache)
    shapes = [tuple(r.weights.shape) for r in capture.records]
    assert shapes == [(1, 4, 3, 3)] * 2 + [(1, 4, 1, 4)] * 2


# ---------------------------------------------------------------- statistics


def test_entropy_of_uniform_and_one_hot_rows():
    uniform = torch.full((1, 2, 3, 4), 0.25)
    one_hot = torch.eye(4)[:3].expand(1, 2, 3, 4)
    torch.testing.assert_close(attention_entropy(uniform), torch.full((2,), math.log(4)))
    torch.testing.assert_close(attention_entropy(one_hot), torch.zeros(2))


def test_mean_distance_and_special_share_by_hand():
    # one head, 3 queries over 3 keys; query i attends to key 0 with weight 1
    weights = torch.zeros(1, 1, 3, 3)
    weights[..., 0] = 1.0
    torch.testing.assert_close(mean_attention_distance(weights), torch.tensor([1.0]))  # (0+1+2)/3
    special = torch.tensor([[True, False, False]])
    torch.testing.assert_close(special_token_attention(weights, special), torch.tensor([1.0]))
    # the padding query (index 2) left out: distances (0 + 1) / 2
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(mean_attention_distance(weights, mask), torch.tensor([0.5]))


def test_statistics_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, H, Tq, Tk\)"):
        attention_entropy(torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"special_keys must have shape \(1, 3\)"):
        special_token_attention(torch.ones(1, 1, 3, 3), torch.ones(1, 4, dtype=torch.bool))


# ------------------------------------------------------------ rollout / flow

LAYER1 = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])  # (1, 1, 2, 2)
LAYER2 = torch.tensor([[[[0.2, 0.8], [0.0, 1.0]]]])


def test_rollout_of_two_layers_equals_a_hand_computation():
    # with the residual: A~ = 0.5 A + 0.5 I (rows already sum to 1)
    a1 = [[1.0, 0.0], [0.25, 0.75]]
    a2 = [[0.6, 0.4], [0.0, 1.0]]
    # A~2 @ A~1
    expected = [
        [0.6 * 1.0 + 0.4 * 0.25, 0.6 * 0.0 + 0.4 * 0.75],
        [0.0 * 1.0 + 1.0 * 0.25, 0.0 * 0.0 + 1.0 * 0.75],
    ]
    torch.testing.assert_close(attention_rollout([LAYER1, LAYER2])[0], torch.tensor(expected))
    torch.testing.assert_close(residual_attention(LAYER2)[0], torch.tensor(a2))
    torch.testing.assert_close(residual_attention(LAYER1)[0], torch.tensor(a1))
    raw = attention_rollout([LAYER1, LAYER2], residual=False)[0]
    torch.testing.assert_close(raw, LAYER2[0, 0] @ LAYER1[0, 0])


def test_flow_of_two_layers_is_the_sum_of_path_bottlenecks():
    # From output i to input j every path goes i -> k -> j through distinct k:
    # flow = sum_k min(A~2[i, k], A~1[k, j]).
    a1, a2 = residual_attention(LAYER1)[0], residual_attention(LAYER2)[0]
    expected = torch.minimum(a2[:, :, None], a1[None, :, :]).sum(1)
    torch.testing.assert_close(attention_flow([LAYER1, LAYER2])[0], expected)
    torch.testing.assert_close(attention_flow([LAYER1])[0], residual_attention(LAYER1)[0])


def test_rollout_checks_its_input():
    with pytest.raises(ValueError, match="at least one layer"):
        attention_rollout([])
    with pytest.raises(ValueError, match=r"\(B, H, T, T\)"):
        attention_rollout([torch.ones(1, 1, 2, 3)])
    with pytest.raises(ValueError, match="head_fusion"):
        attention_rollout([LAYER1], head_fusion="median")


# ------------------------------------------------------------------ analyzer


def test_analyzer_runs_stores_and_summarises(tmp_path):
    model = transformer()
    analyzer = AttentionAnalyzer(model)
    with pytest.raises(RuntimeError, match="analyze_attention"):
        analyzer.layers()
    out = analyzer.analyze_attention(SRC, TGT)
    with torch.no_grad():
        torch.testing.assert_close(logits(out), logits(model(SRC, TGT)))
    assert analyzer.weights(1, "cross").shape == (2, 4, 5, 7)
    stats = analyzer.statistics("encoder_self")
    assert stats["entropy"].shape == stats["distance"].shape == (2, 4)
    assert "distance" not in analyzer.statistics("cross")
    assert analyzer.rollout("encoder_self").shape == (2, 7, 7)
    with pytest.raises(ValueError, match="cross"):
        analyzer.rollout("cross")
    with pytest.raises(IndexError, match=r"layer_idx must be in \[0, 2\)"):
        analyzer.weights(5)
    path = analyzer.visualize_attention(1, 2, kind="cross", path=tmp_path / "h.png")
    assert path.stat().st_size > 1000
    with pytest.raises(IndexError, match=r"head_idx must be in \[0, 4\)"):
        analyzer.visualize_attention(0, 9, path=tmp_path / "bad.png")


def test_analyzer_restores_training_mode():
    model = gpt().train()
    AttentionAnalyzer(model).analyze_attention(SRC)
    assert model.training


class _AttentiveDecoderLoop(torch.nn.Module):
    """An RNN-style decoder: one Bahdanau call per step over a fixed encoder output."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = BahdanauAttention(8, 6)
        self.self_attention = AttentionLayer(6, 6)

    def forward(self, states: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor):
        memory, _ = self.self_attention(memory, mask)
        return [self.attention(state, memory, mask=mask)[1] for state in states.unbind(1)]


def test_capture_records_rnn_attention_per_step_and_stacks_the_steps():
    torch.manual_seed(0)
    model = _AttentiveDecoderLoop()
    states, memory = torch.randn(2, 3, 8), torch.randn(2, 5, 6)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    with capture_attention(model) as capture:
        per_step = model(states, memory, mask)
    assert capture.kinds() == ["encoder_self", "cross"]
    stacked = capture.stacked("attention")
    assert stacked.shape == (2, 1, 3, 5)
    torch.testing.assert_close(stacked[:, 0], torch.stack(per_step, 1))
    assert torch.all(stacked[1, 0, :, 3:] == 0)  # padded source positions get no attention
    assert capture.layers("encoder_self")[0].shape == (2, 1, 5, 5)
    with pytest.raises(ValueError, match="no calls of 'nothing'"):
        capture.stacked("nothing")
