"""BERT: embeddings, heads and losses, the MLM collator's statistics, learning and bad input."""

import copy

import pytest
import torch

from attnkit.data.collators import MaskedLMCollator
from attnkit.models import (
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def config(**overrides) -> BertConfig:
    values = {
        "vocab_size": 50,
        "max_len": 32,
        "d_model": 32,
        "num_heads": 4,
        "num_layers": 2,
        "d_ff": 64,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "num_labels": 3,
    }
    return BertConfig(**{**values, **overrides})


def test_shapes_of_every_head():
    ids = torch.randint(1, 50, (2, 9))
    encoded = BertModel(config()).eval()(ids, output_attentions=True, output_hidden_states=True)
    assert encoded.last_hidden_state.shape == (2, 9, 32) and encoded.pooled.shape == (2, 32)
    assert (
        len(encoded.hidden_states) == 3
        and [w.shape for w in encoded.attentions] == [(2, 4, 9, 9)] * 2
    )
    assert BertForMaskedLM(config())(ids).logits.shape == (2, 9, 50)
    pre = BertForPreTraining(config())(ids)
    assert pre.logits.shape == (2, 9, 50) and pre.extra["nsp_logits"].shape == (2, 2)
    assert BertForSequenceClassification(config())(ids).logits.shape == (2, 3)
    assert BertForTokenClassification(config())(ids).logits.shape == (2, 9, 3)


def test_mean_pooling_classifies_the_mean_of_the_real_tokens_states():
    torch.manual_seed(0)
    model = BertForSequenceClassification(config(classifier_pooling="mean")).eval()
    assert model.bert.pooler is None  # no unused parameters
    ids = torch.randint(1, 50, (2, 7))
    ids[1, 4:] = 0  # padding
    states = model.bert(ids).last_hidden_state.double()
    means = torch.stack([states[0].mean(0), states[1, :4].mean(0)])  # by hand, per row
    expected = means @ model.classifier.weight.double().T + model.classifier.bias.double()
    torch.testing.assert_close(model(ids).logits.double(), expected, atol=1e-6, rtol=0)
    # padding does not change a sentence's logits
    torch.testing.assert_close(model(ids[1:, :4]).logits, model(ids[1:]).logits, atol=1e-5, rtol=0)


def test_unknown_classifier_pooling_is_named():
    with pytest.raises(ValueError, match=r"classifier_pooling must be one of .*got 'max'"):
        config(classifier_pooling="max")


def test_padding_is_masked_by_default_and_does_not_change_real_tokens():
    model = BertModel(config()).eval()
    ids = torch.randint(1, 50, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    alone = model(ids).last_hidden_state
    torch.testing.assert_close(model(padded).last_hidden_state[:, :6], alone, atol=1e-5, rtol=0)


def test_masked_lm_decoder_is_tied_to_the_word_embeddings():
    model = BertForMaskedLM(config())
    assert model.mlm.decoder.weight is model.bert.embeddings.word.weight
    assert model.bert.pooler is None


def test_regression_with_one_label_uses_mse():
    model = BertForSequenceClassification(config(num_labels=1)).eval()
    ids = torch.randint(1, 50, (3, 5))
    out = model(ids, labels=torch.tensor([0.5, -1.0, 2.0]))
    expected = ((out.logits.squeeze(-1) - torch.tensor([0.5, -1.0, 2.0])) ** 2).mean()
    torch.testing.assert_close(out.loss, expected)


def test_pretraining_loss_adds_mlm_and_nsp():
    model = BertForPreTraining(config()).eval()
    ids = torch.randint(1, 50, (2, 7))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    nsp = torch.tensor([0, 1])
    out = model(ids, labels=labels, next_sentence_label=nsp)
    mlm_only = model(ids, labels=labels).loss
    nsp_loss = torch.nn.functional.cross_entropy(out.extra["nsp_logits"], nsp)
    torch.testing.assert_close(out.loss, mlm_only + nsp_loss)


def test_classifier_learns_a_token_presence_rule():
    """Label 1 iff token 7 occurs: the [CLS] summary must attend to it."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(config(num_labels=2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)

    def batch(n):
        ids = torch.randint(10, 50, (n, 10))
        ids[:, 0] = 1  # [CLS]
        labels = torch.randint(0, 2, (n,))
        where = torch.randint(1, 10, (n,))
        ids[labels.bool(), where[labels.bool()]] = 7
        return ids, labels

    for _ in range(150):
        ids, labels = batch(64)
        loss = model(ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    ids, labels = batch(500)
    accuracy = (model(ids).logits.argmax(-1) == labels).float().mean().item()
    assert accuracy >= 0.97, accuracy


def test_bad_inputs_are_named():
    model = BertModel(config())
    with pytest.raises(ValueError, match=r"input_ids must have shape \(B, T\); got \(3,\)"):
        model(torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token_type_ids must have the shape of input_ids"):
        model(torch.ones(1, 3, dtype=torch.long), token_type_ids=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="sequence of 33 tokens exceeds max_len=32"):
        model(torch.ones(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match=r"d_model \(30\) must be divisible by num_heads \(4\)"):
        config(d_model=30)


# ----- masked-LM collator -----


def test_collator_statistics_15_percent_then_80_10_10():
    vocab, mask_id, cls, sep = 1000, 4, 1, 2
    collator = MaskedLMCollator(
        vocab, mask_id, pad_id=0, special_ids=[cls, sep], generator=torch.Generator().manual_seed(0)
    )
    ids = torch.randint(10, vocab, (400, 128))
    ids[:, 0], ids[:, -1] = cls, sep
    ids[:50, 100:] = 0  # padding
    batch = collator(ids)
    picked = batch.labels != -100
    maskable = (ids != 0) & (ids != cls) & (ids != sep)
    assert not picked[~maskable].any()
    assert picked.sum() / maskable.sum() == pytest.approx(0.15, abs=0.005)
    torch.testing.assert_close(batch.labels[picked], ids[picked])
    masked = (batch.input_ids == mask_id) & picked
    unchanged = (batch.input_ids == ids) & picked
    replaced = picked & ~masked & ~unchanged
    n = picked.sum().item()
    assert masked.sum().item() / n == pytest.approx(0.8, abs=0.01)
    # A random replacement can draw the original token (1 in ~1000): 10% either way.
    assert unchanged.sum().item() / n == pytest.approx(0.1, abs=0.01)
    assert replaced.sum().item() / n == pytest.approx(0.1, abs=0.01)
    assert not torch.isin(batch.input_ids[replaced], torch.tensor([0, 1, 2, 4])).any()
    assert (batch.input_ids[~picked] == ids[~picked]).all()
    assert torch.equal(batch.attention_mask, ids != 0)


def test_collator_is_seeded():
    ids = torch.randint(10, 100, (4, 20))
    first = MaskedLMCollator(100, 3, generator=torch.Generator().manual_seed(5))(ids)
    second = MaskedLMCollator(100, 3, generator=torch.Generator().manual_seed(5))(ids)
    assert torch.equal(first.input_ids, second.input_ids)
    assert torch.equal(first.labels, second.labels)


def test_collator_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"probability must be in \(0, 1\); got 1.5"):
        MaskedLMCollator(10, 3, probability=1.5)
    with pytest.raises(ValueError, match=r"mask_id must be in \[0, 10\); got 12"):
        MaskedLMCollator(10, 12)
    with pytest.raises(ValueError, match="input_ids must be integer ids of shape"):
        MaskedLMCollator(10, 3)(torch.zeros(2, 3))


@pytest.mark.parametrize("positional", ["sinusoidal", "rotary", "alibi", "t5", "relative", "none"])
def test_other_positional_schemes_by_config(positional):
    model = BertModel(config(positional=positional)).eval()
    assert (model.embeddings.position is None) and model.layers[0].self_attn is not None
    ids = torch.randint(1, 50, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    alone = model(ids).last_hidden_state
    torch.testing.assert_close(model(padded).last_hidden_state[:, :6], alone, atol=1e-5, rtol=0)
    if positional != "none":  # the scheme is in use: removing it changes the output
        plain = copy.deepcopy(model)
        plain.embeddings.absolute = None
        for layer in plain.layers:
            layer.self_attn.rotary = layer.self_attn.score_bias = None
            if positional == "relative":
                torch.nn.init.zeros_(layer.self_attn.relative_key.weight)
                torch.nn.init.zeros_(layer.self_attn.relative_value.weight)
        assert not torch.allclose(plain(ids).last_hidden_state, alone, atol=1e-6)


def test_saving_another_scheme_as_bert_is_refused(tmp_path):
    from attnkit.interop import save_pretrained

    with pytest.raises(ValueError, match="BERT format needs positional='learned'"):
        save_pretrained(BertModel(config(positional="rotary")), tmp_path)


def test_sliding_window_attention_by_config():
    model = BertModel(config(positional="rotary", attention="sliding_window",
                             attention_options={"window": 2})).eval()  # fmt: skip
    ids = torch.randint(1, 50, (2, 9))
    out = model(ids, output_attentions=True)
    weights = out.attentions[0]
    assert weights[:, :, 0, 3:].abs().max() == 0  # beyond two positions: not attended
    assert model(ids).last_hidden_state.shape == (2, 9, 32)
    with pytest.raises(ValueError, match="attention must be one of"):
        BertModel(config(attention="sparse?"))


def test_regression_labels_as_a_column_give_the_plain_mean_squared_error():
    model = BertForSequenceClassification(config(num_labels=1)).eval()
    ids, target = torch.randint(1, 50, (3, 6)), torch.randn(3)
    expected = torch.nn.functional.mse_loss(model(ids).logits.squeeze(-1), target)
    torch.testing.assert_close(model(ids, labels=target[:, None]).loss, expected)
    torch.testing.assert_close(model(ids, labels=target).loss, expected)
    with pytest.raises(ValueError, match=r"regression labels must be \(3,\) or \(3, 1\)"):
        model(ids, labels=torch.randn(3, 2))


def test_an_untied_decoder_starts_at_init_std():
    torch.manual_seed(0)
    model = BertForMaskedLM(config(tie_embeddings=False, d_model=64, num_heads=4))
    assert model.mlm.decoder.weight is not model.bert.embeddings.word.weight
    assert abs(model.mlm.decoder.weight.std().item() - 0.02) < 0.002
