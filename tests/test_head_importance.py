"""Head masks, gradient importance, ablation and pruning (Michel et al. 2019; issue 6)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkit.analysis import (
    HeadScores,
    attention_modules,
    head_ablation,
    head_importance,
    head_masks,
    plot_head_scores,
    prune_heads,
)
from attnkit.models import GPT, T5, GPTConfig, T5Config
from attnkit.nn import (
    LinearAttention,
    MultiHeadAttention,
    RelativePositionAttention,
    SlidingWindowAttention,
)
from attnkit.nn.attention.lsh import LSHAttention
from attnkit.nn.position import ALiBi

D, H = 32, 4


def gpt(**overrides) -> GPT:
    values = dict(vocab_size=30, max_len=32, d_model=D, num_heads=H, num_layers=2, dropout=0.0)
    return GPT(GPTConfig(**{**values, **overrides})).eval()


IDS = torch.randint(1, 30, (3, 9), generator=torch.Generator().manual_seed(0))


def lm_loss(model, batch) -> torch.Tensor:
    return model(batch, labels=batch).loss  # in the model's dtype (float64 here)


# ---------------------------------------------------------------- head mask


def test_head_mask_scales_each_heads_output():
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H).eval()
    x = torch.randn(2, 5, D)
    heads = {}

    def keep_heads(module, args, output):
        heads["merged"] = args[0]

    mha.out_proj.register_forward_hook(keep_heads)
    mha(x)
    full = heads["merged"].unflatten(-1, (H, D // H))
    mask = torch.tensor([1.0, 0.0, 0.5, 2.0])
    mha(x, head_mask=mask)
    masked = heads["merged"].unflatten(-1, (H, D // H))
    torch.testing.assert_close(masked, full * mask[:, None])
    per_example = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0]])
    mha(x, head_mask=per_example)
    masked = heads["merged"].unflatten(-1, (H, D // H))
    torch.testing.assert_close(masked, full * per_example[:, None, :, None])


def test_head_mask_shape_is_checked():
    mha = MultiHeadAttention(D, H)
    expected = r"head_mask must have shape \(4,\) or \(2, 4\); got \(3,\)"
    with pytest.raises(ValueError, match=expected):
        mha(torch.randn(2, 5, D), head_mask=torch.ones(3))


def test_head_masks_context_reaches_named_modules_and_rejects_unknown_names():
    model = gpt()
    with torch.no_grad():
        plain = model(IDS).logits
        ones = {name: torch.ones(H) for name, _ in attention_modules(model)}
        with head_masks(model, ones):
            same = model(IDS).logits
        with head_masks(model, {"layers.0.self_attn": torch.zeros(H)}):
            silenced = model(IDS).logits
    torch.testing.assert_close(same, plain)
    assert not torch.allclose(silenced, plain)
    unknown = pytest.raises(ValueError, match=r"no attention modules named \['nope'\]")
    with unknown, head_masks(model, {"nope": torch.ones(H)}):
        pass


# ---------------------------------------------------------------- importance


def test_importance_equals_finite_differences_of_the_loss():
    torch.manual_seed(0)
    model = gpt().double()
    assert lm_loss(model, IDS).dtype == torch.float64  # float64 models keep float64 losses
    scores = head_importance(model, [IDS], lm_loss, normalize=False)
    assert scores.names == ["layers.0.self_attn", "layers.1.self_attn"]
    eps = 1e-6
    for name, score in zip(scores.names, scores.scores, strict=True):
        for head in range(H):
            bump = torch.zeros(H, dtype=torch.float64)
            bump[head] = eps
            with torch.no_grad():
                with head_masks(model, {name: 1 + bump}):
                    up = lm_loss(model, IDS)
                with head_masks(model, {name: 1 - bump}):
                    down = lm_loss(model, IDS)
            finite_difference = ((up - down) / (2 * eps)).abs()
            torch.testing.assert_close(score[head], finite_difference, atol=1e-7, rtol=1e-5)


def test_importance_averages_batches_and_normalises_per_layer():
    torch.manual_seed(0)
    model = gpt().double()
    first = head_importance(model, [IDS[:1]], lm_loss, normalize=False)
    second = head_importance(model, [IDS[1:]], lm_loss, normalize=False)
    both = head_importance(model, [IDS[:1], IDS[1:]], lm_loss, normalize=False)
    for a, b, mean in zip(first.scores, second.scores, both.scores, strict=True):
        torch.testing.assert_close(mean, (a + b) / 2)
    normalised = head_importance(model, [IDS], lm_loss)
    for score in normalised.scores:
        torch.testing.assert_close(score.norm(), torch.tensor(1.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least one batch"):
        head_importance(model, [], lm_loss)


def test_ablation_is_the_loss_change_with_one_head_masked():
    torch.manual_seed(0)
    model = gpt()
    scores = head_ablation(model, [IDS], lambda m, b: lm_loss(m, b))
    with torch.no_grad():
        base = float(lm_loss(model, IDS))
        mask = torch.ones(H)
        mask[2] = 0
        with head_masks(model, {"layers.1.self_attn": mask}):
            masked = float(lm_loss(model, IDS))
    assert scores.scores[1][2].item() == pytest.approx(masked - base, abs=1e-6)
    assert scores.as_matrix().shape == (2, H)
    assert len(scores.ranked()) == 2 * H


def test_head_scores_plot_writes_a_labelled_figure(tmp_path):
    scores = HeadScores(["a", "b"], [torch.tensor([0.1, 0.9, 0.5]), torch.tensor([0.3, 0.2])])
    matrix = scores.as_matrix()
    assert torch.isnan(matrix[1, 2])
    svg = plot_head_scores(matrix, tmp_path / "importance.svg", row_labels=scores.names)
    text = svg.read_text()
    assert "head importance" in text and "0.90" in text and ">layer<" in text.replace(" ", "")


# ------------------------------------------------------------------- pruning


def _prune_matches_mask(module: MultiHeadAttention, pruned: list[int], x: torch.Tensor, **kw):
    mask = torch.ones(module.num_heads, dtype=x.dtype)
    mask[pruned] = 0
    with torch.no_grad():
        expected, _ = module(x, head_mask=mask, **kw)
        before = sum(p.numel() for p in module.parameters())
        module.prune_heads(pruned)
        after = sum(p.numel() for p in module.parameters())
        got, _ = module(x, **kw)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)
    assert after < before
    return module


def _alibi_mha() -> MultiHeadAttention:
    return MultiHeadAttention(D, H, score_bias=ALiBi(H))


MODULES = {
    "dense": lambda: MultiHeadAttention(D, H),
    "alibi": _alibi_mha,
    "shaw": lambda: RelativePositionAttention(D, H, max_relative_position=3),
    "sliding_window": lambda: SlidingWindowAttention(D, H, window=3),
    "linear": lambda: LinearAttention(D, H),
    "lsh": lambda: LSHAttention(D, H, num_buckets=2, chunk_size=4),
}


@pytest.mark.parametrize("kind", MODULES)
def test_pruning_equals_masking(kind):
    torch.manual_seed(0)
    module = MODULES[kind]().double().eval()
    x = torch.randn(2, 8, D, dtype=torch.float64)
    module = _prune_matches_mask(module, [0, 2], x, is_causal=True)
    assert module.num_heads == 2 and module.q_proj.out_features == 2 * (D // H)
    assert module.out_proj.in_features == 2 * (D // H)
    # pruning again counts heads as they are now (original heads 1 and 3 remain)
    _prune_matches_mask(module, [1], x, is_causal=True)
    assert module.kept_heads.tolist() == [1]


def test_pruning_grouped_query_attention_removes_whole_groups_only():
    torch.manual_seed(0)
    x = torch.randn(2, 6, D, dtype=torch.float64)
    module = MultiHeadAttention(D, H, num_kv_heads=2).double().eval()
    _prune_matches_mask(module, [0, 1], x)  # the whole first group
    assert (module.num_heads, module.num_kv_heads) == (2, 1)
    module = MultiHeadAttention(D, H, num_kv_heads=2).double().eval()
    _prune_matches_mask(module, [0, 2], x)  # one head of each group: both kv heads stay
    assert (module.num_heads, module.num_kv_heads) == (2, 2)
    with pytest.raises(ValueError, match=r"every group must keep the same number.*\[1, 2\]"):
        MultiHeadAttention(D, H, num_kv_heads=2).prune_heads([0])


def test_pruning_rejects_bad_heads():
    module = MultiHeadAttention(D, H)
    with pytest.raises(ValueError, match=r"heads to prune must be in \[0, 4\); got \[7\]"):
        module.prune_heads([7])
    with pytest.raises(ValueError, match="at least one of the 4 heads must remain"):
        module.prune_heads(range(4))


def test_pruning_a_model_equals_masking_it_gpt_and_t5_shared_bias():
    torch.manual_seed(0)
    model = gpt(positional="alibi").double()
    with torch.no_grad(), head_masks(model, {"layers.1.self_attn": torch.tensor([1.0, 0, 0, 1])}):
        expected = model(IDS).logits
    prune_heads(model, {"layers.1.self_attn": [1, 2]})
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, expected)
        # cached decoding still equals the full forward after pruning
        cache = model.new_cache(3, 9)
        steps = [model(IDS[:, :5], cache=cache).logits] + [
            model(IDS[:, t : t + 1], cache=cache).logits for t in range(5, 9)
        ]
        torch.testing.assert_close(torch.cat(steps, 1), expected)

    config = T5Config(vocab_size=30, d_model=D, d_kv=8, d_ff=64, num_heads=H, num_layers=2,
                      dropout=0.0, num_buckets=8, max_distance=16)  # fmt: skip
    t5 = T5(config).double().eval()
    tgt = IDS[:, :4]
    chosen = {"encoder.layers.0.self_attn": [3], "decoder.layers.1.cross_attn": [0, 1]}
    masks = {name: torch.ones(H).index_fill(0, torch.tensor(h), 0) for name, h in chosen.items()}
    with torch.no_grad():
        with head_masks(t5, masks):
            expected = t5(IDS, decoder_input_ids=tgt).logits
        prune_heads(t5, chosen)
        got = t5(IDS, decoder_input_ids=tgt).logits
    torch.testing.assert_close(got, expected)
    assert t5.encoder.layers[1].self_attn.num_heads == H  # the shared bias still serves 4 heads
    with pytest.raises(ValueError, match="no attention modules named"):
        prune_heads(t5, {"encoder.layers.9.self_attn": [0]})


def test_pruned_training_step_runs():
    model = gpt().train()
    prune_heads(model, {"layers.0.self_attn": [0]})
    loss = F.cross_entropy(model(IDS).logits.flatten(0, 1), IDS.flatten())
    loss.backward()
    assert model.layers[0].self_attn.q_proj.weight.grad.shape == (3 * (D // H), D)
