"""BiLSTM with attention: pooling classifier and self-attention tagger, and the SST-2 recipe."""

import json
from pathlib import Path

import pytest
import torch

from attnkit.cli import main
from attnkit.models import BiLSTMAttentionClassifier, BiLSTMAttentionTagger, BiLSTMConfig
from attnkit.recipes import ConfigError, load_recipe
from attnkit.recipes.text_classification import BiLSTMAttentionModel, PretrainedModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _config(**overrides) -> BiLSTMConfig:
    fields = {"vocab_size": 30, "embed_dim": 12, "hidden_size": 8, "num_heads": 2}
    return BiLSTMConfig(**{**fields, **overrides})


def _padded_batch(lengths: list[int], vocab: int = 30, seed: int = 0):
    """Random right-padded ids (pad id 0 at padding, real ids >= 1) and their mask."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(lengths), max(lengths)), generator=generator)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    return ids.masked_fill(~mask, 0), mask


@pytest.mark.parametrize("model_class", [BiLSTMAttentionClassifier, BiLSTMAttentionTagger])
def test_padding_gets_exactly_zero_attention(model_class):
    torch.manual_seed(0)
    model = model_class(_config()).eval()
    ids, mask = _padded_batch([6, 3, 1])
    # The classifier always returns its pooling weights; the tagger when asked.
    tagger = model_class is BiLSTMAttentionTagger
    out = model(ids, mask, output_attentions=True) if tagger else model(ids, mask)
    weights = out.attentions[0]  # (B, H, Tq, Tk)
    assert weights.shape[0] == 3 and weights.shape[-1] == 6
    keys_masked = ~mask[:, None, None, :].expand_as(weights)
    assert torch.all(weights[keys_masked] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert torch.isfinite(out.logits).all()


def test_classifier_padded_batch_equals_each_sentence_alone():
    torch.manual_seed(0)
    model = BiLSTMAttentionClassifier(_config(num_layers=2)).double().eval()
    lengths = [7, 2, 5, 1]
    ids, mask = _padded_batch(lengths)
    batch = model(ids, mask)
    for row, length in enumerate(lengths):
        alone = model(ids[row : row + 1, :length])
        torch.testing.assert_close(batch.logits[row], alone.logits[0], rtol=0, atol=1e-12)
        weights = batch.extra["pooling_weights"][row]
        torch.testing.assert_close(
            weights[:length], alone.extra["pooling_weights"][0], atol=1e-12, rtol=0
        )


def test_tagger_padded_batch_equals_each_sentence_alone():
    torch.manual_seed(0)
    model = BiLSTMAttentionTagger(_config()).double().eval()
    lengths = [4, 6, 1]
    ids, mask = _padded_batch(lengths, seed=1)
    batch = model(ids, mask).logits
    for row, length in enumerate(lengths):
        alone = model(ids[row : row + 1, :length]).logits[0]
        torch.testing.assert_close(batch[row, :length], alone, rtol=0, atol=1e-12)


def test_attention_pooling_matches_a_float64_hand_computation():
    """Pooling = softmax over real tokens of v . tanh(W_q q + W_k h + b) and sum of h."""
    torch.manual_seed(0)
    model = BiLSTMAttentionClassifier(_config(attention_dim=5)).double().eval()
    ids, mask = _padded_batch([5, 3])
    out = model(ids, mask)
    states = model.encoder(ids, mask)  # (B, T, 2H), eval mode: deterministic
    attention = model.pooling
    for row, length in enumerate([5, 3]):
        h = states[row, :length]
        hidden = torch.tanh(
            attention.query_proj.weight @ model.query
            + h @ attention.key_proj.weight.T
            + attention.key_proj.bias
        )
        scores = hidden @ attention.energy.weight[0]
        expected_weights = torch.exp(scores - scores.max())
        expected_weights = expected_weights / expected_weights.sum()
        pooled = expected_weights @ h
        logits = model.classifier.weight @ pooled + model.classifier.bias
        torch.testing.assert_close(
            out.extra["pooling_weights"][row, :length], expected_weights, rtol=0, atol=1e-12
        )
        torch.testing.assert_close(out.logits[row], logits, rtol=0, atol=1e-12)


def test_packing_keeps_padding_out_of_the_lstm_states():
    torch.manual_seed(0)
    model = BiLSTMAttentionClassifier(_config()).double().eval()
    ids, mask = _padded_batch([4, 2])
    states = model.encoder(ids, mask)
    assert torch.all(states[1, 2:] == 0)
    # Whatever sits in the padded slots (even real word ids) changes nothing.
    other = ids.clone()
    other[1, 2:] = 7
    torch.testing.assert_close(model(other, mask).logits, model(ids, mask).logits)


def _sentiment_data(count: int, seed: int):
    """Token 1 = "good", 2 = "bad"; a sentence holds one of them among filler ids 3..19."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 10, (count,), generator=generator).tolist()
    ids, mask = _padded_batch(lengths, vocab=20, seed=seed)
    ids = torch.where(mask, ids.clamp(min=3), ids)
    labels = torch.randint(0, 2, (count,), generator=generator)
    where = (torch.rand(count, generator=generator) * torch.tensor(lengths)).long()
    ids[torch.arange(count), where] = torch.where(labels == 1, 1, 2)
    return ids, mask, labels


def _train(model, ids, mask, labels, steps: int, batch: int = 64) -> None:
    """Adam (lr 1e-2) on consecutive ``batch``-row slices of the data, cycling; then eval mode."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    slices = len(ids) // batch
    for step in range(steps):
        rows = slice(batch * (step % slices), batch * (step % slices + 1))
        loss = model(ids[rows], mask[rows], labels=labels[rows]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def test_classifier_learns_which_word_decides_the_label():
    torch.manual_seed(0)
    config = BiLSTMConfig(vocab_size=20, embed_dim=16, hidden_size=16, dropout=0.0)
    model = BiLSTMAttentionClassifier(config)
    ids, mask, labels = _sentiment_data(512, seed=0)
    test_ids, test_mask, test_labels = _sentiment_data(256, seed=1)
    _train(model, ids, mask, labels, steps=60)
    with torch.no_grad():
        out = model(test_ids, test_mask)
    accuracy = (out.logits.argmax(-1) == test_labels).float().mean().item()
    assert accuracy > 0.95, accuracy
    # The pooling attends to the deciding word: it gets most of the weight.
    decisive = (test_ids == 1) | (test_ids == 2)
    weight_on_it = (out.extra["pooling_weights"] * decisive).sum(1).mean().item()
    assert weight_on_it > 0.5, weight_on_it


def _neighbour_tags(count: int, seed: int, vocab: int = 6):
    """Tag of token t = (left neighbour + right neighbour) mod 3, with 0 beyond the ends;
    ids 1..vocab-1 (value = id), so both directions are needed."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 12, (count,), generator=generator).tolist()
    ids, mask = _padded_batch(lengths, vocab=vocab, seed=seed)
    padded = torch.nn.functional.pad(ids, (1, 1))
    tags = (padded[:, :-2] + padded[:, 2:]) % 3
    return ids, mask, tags.masked_fill(~mask, -100)


def test_tagger_learns_a_tag_that_depends_on_both_neighbours():
    torch.manual_seed(0)
    config = BiLSTMConfig(vocab_size=6, embed_dim=16, hidden_size=24, num_labels=3, num_heads=2)
    config.dropout = config.embedding_dropout = 0.0
    model = BiLSTMAttentionTagger(config)
    ids, mask, tags = _neighbour_tags(1024, seed=0)
    test_ids, test_mask, test_tags = _neighbour_tags(256, seed=1)
    _train(model, ids, mask, tags, steps=150)
    with torch.no_grad():
        predicted = model(test_ids, test_mask).logits.argmax(-1)
    accuracy = (predicted == test_tags)[test_mask].float().mean().item()
    assert accuracy > 0.97, accuracy


def test_tagger_loss_ignores_padding_and_minus_100():
    torch.manual_seed(0)
    model = BiLSTMAttentionTagger(_config(num_labels=3)).double().eval()
    ids, mask = _padded_batch([5, 2])
    labels = torch.randint(0, 3, ids.shape)
    base = model(ids, mask, labels=labels).loss
    changed = labels.clone()
    changed[1, 2:] = (changed[1, 2:] + 1) % 3  # padded positions only
    torch.testing.assert_close(model(ids, mask, labels=changed).loss, base)
    # Hand computation: mean negative log-likelihood over the 7 real tokens.
    log_probs = model(ids, mask).logits.log_softmax(-1)
    picked = log_probs.gather(-1, labels[..., None])[..., 0]
    torch.testing.assert_close(base, -picked[mask].mean(), rtol=0, atol=1e-12)
    nothing = torch.full_like(labels, -100)
    assert model(ids, mask, labels=nothing).loss.item() == 0.0


def test_bad_inputs_raise_clear_errors():
    model = BiLSTMAttentionClassifier(_config())
    tagger = BiLSTMAttentionTagger(_config())
    ids, mask = _padded_batch([3, 2])
    with pytest.raises(ValueError, match="attention_mask must be bool"):
        model(ids, mask.long())
    with pytest.raises(
        ValueError, match=r"attention_mask must have the shape of input_ids \(2, 3\)"
    ):
        model(ids, mask[:, :2])
    with pytest.raises(ValueError, match="right-padded"):
        model(ids, torch.tensor([[True, True, True], [False, True, True]]))
    with pytest.raises(ValueError, match="at least one real token"):
        model(ids, torch.tensor([[True, True, True], [False, False, False]]))
    with pytest.raises(ValueError, match=r"input_ids must be in \[0, 30\)"):
        model(ids + 100, mask)
    with pytest.raises(ValueError, match=r"input_ids must have shape \(B, T\)"):
        model(ids[0], mask[0])
    with pytest.raises(ValueError, match="input_ids must be int32 or int64"):
        model(ids.float(), mask)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        model(ids, mask, labels=torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\); got 5"):
        model(ids, mask, labels=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\) or -100; got -3"):
        tagger(ids, mask, labels=torch.full(ids.shape, -3))
    with pytest.raises(ValueError, match=r"divisible by num_heads \(3\)"):
        _config(num_heads=3)
    with pytest.raises(ValueError, match="dropout must be in"):
        _config(dropout=1.0)
    with pytest.raises(ValueError, match="hidden_size must be >= 1"):
        _config(hidden_size=0)


def test_sst2_configs_pick_their_model_section():
    bilstm = load_recipe(CONFIGS / "sst2_bilstm.yaml")
    assert isinstance(bilstm.model, BiLSTMAttentionModel)
    assert bilstm.task == "text_classification" and bilstm.max_minutes <= 15
    minilm = load_recipe(CONFIGS / "sst2_minilm.yaml")
    assert isinstance(minilm.model, PretrainedModel) and minilm.model.architecture == "bert"
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['model.hiden_size'\]"):
        load_recipe(CONFIGS / "sst2_bilstm.yaml", ["model.hiden_size=64"])
    with pytest.raises(ConfigError, match="hidden_size must be >= 1"):
        load_recipe(CONFIGS / "sst2_bilstm.yaml", ["model.hidden_size=0"])


def test_sst2_bilstm_recipe_learns_on_a_slice(tmp_path):
    run = tmp_path / "bilstm"
    args = [
        "train",
        str(CONFIGS / "sst2_bilstm.yaml"),
        f"output_dir={run}",
        "data.limit_train=4000",
        "data.limit_valid=300",
        "model.vocab_size=3000",
        "model.embed_dim=48",
        "model.hidden_size=48",
        "model.dropout=0.1",
        "model.embedding_dropout=0.1",
        "train.lr=5e-3",
        "train.schedule=constant",
        "train.max_epochs=null",
        "train.max_steps=120",
        "train.warmup_steps=10",
        "train.eval_every=60",
        "train.checkpoint_every=60",
    ]
    assert main(args) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["valid_sentences"] == 300 and results["architecture"] == "bilstm_attention"
    assert (run / "tokenizer.json").is_file()
    # Chance is 50% (one standard deviation over 300 sentences: 2.9 points); seeds 0-2
    # measured 65-71% here.
    assert results["valid_accuracy"] > 0.6, results["valid_accuracy"]
    # Resuming keeps the run's own vocabulary (WordPiece training is not reproducible).
    vocabulary = (run / "tokenizer.json").read_bytes()
    written = (run / "tokenizer.json").stat().st_mtime_ns
    more = [a if not a.startswith("train.max_steps") else "train.max_steps=150" for a in args]
    assert main([*more, "--resume"]) == 0
    assert (run / "tokenizer.json").read_bytes() == vocabulary
    assert (run / "tokenizer.json").stat().st_mtime_ns == written  # read, not retrained
    assert json.loads((run / "results.json").read_text())["summary"]["steps"] == 150


def test_two_runs_sharing_a_tokenizer_file_are_the_same_run(tmp_path):
    """WordPiece training is not bit-reproducible; a shared tokenizer.json makes one seed
    give one run."""
    from attnkit.recipes import load_recipe, run_recipe

    def run(name, *extra):
        overrides = [
            f"output_dir={tmp_path / name}", "data.limit_train=600", "data.limit_valid=50",
            "model.vocab_size=400", "model.embed_dim=16", "model.hidden_size=16",
            "train.max_epochs=null", "train.max_steps=4", "train.eval_every=4",
            "train.progress=false", *extra,
        ]  # fmt: skip
        run_recipe(load_recipe(CONFIGS / "sst2_bilstm.yaml", overrides))
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines if '"kind": "train"' in line]

    first = run("first", "train.log_every=1")
    shared = f"model.tokenizer_file={tmp_path / 'first' / 'tokenizer.json'}"
    assert run("second", "train.log_every=1", shared) == run("third", "train.log_every=1", shared)
    assert (tmp_path / "second" / "tokenizer.json").read_bytes() == (
        tmp_path / "first" / "tokenizer.json"
    ).read_bytes()
    assert run("fourth", "train.log_every=1", shared) == first
