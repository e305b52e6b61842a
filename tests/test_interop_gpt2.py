"""GPT-2 Hugging Face checkpoints: parity with transformers, generation, round trip, errors."""

import json
import logging
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from attnkit.generation import generate
from attnkit.interop import (
    CheckpointMismatchError,
    from_pretrained,
    load_pretrained_tokenizer,
    save_pretrained,
)
from attnkit.models import GPT, GPTConfig

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("single_thread")
logging.getLogger("transformers").setLevel(logging.ERROR)


def hf_gpt2(**overrides):
    config = transformers.GPT2Config(
        vocab_size=97,
        n_positions=80,
        n_embd=32,
        n_layer=3,
        n_head=4,
        bos_token_id=0,
        eos_token_id=1,
        **overrides,
    )
    torch.manual_seed(1)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = hf_gpt2()
    path = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(path)
    return model, path


def test_loads_as_a_gpt_in_eval_mode(saved):
    _, path = saved
    model = from_pretrained(path)
    assert isinstance(model, GPT) and not model.training
    assert model.config.activation == "gelu_tanh" and model.config.num_layers == 3


def test_logits_and_hidden_states_match_float32(saved):
    hf, path = saved
    model = from_pretrained(path)
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        expected = hf(ids, output_hidden_states=True)
        got = model(ids, output_hidden_states=True)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-4, rtol=0)
    for ours, theirs in zip(got.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_logits_match_float64(saved):
    hf, path = saved
    model = from_pretrained(path, dtype=torch.float64)
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        expected = hf.double()(ids).logits
    hf.float()
    torch.testing.assert_close(model(ids).logits, expected, atol=1e-8, rtol=0)


def test_logits_match_with_padding(saved):
    hf, path = saved
    model = from_pretrained(path)
    ids = torch.randint(2, 97, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, :4] = 0  # left padding
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, position_ids=positions).logits
        got = model(ids, mask).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-4, rtol=0)


def test_greedy_generation_of_50_tokens_equals_transformers(saved):
    hf, path = saved
    model = from_pretrained(path)
    prompt = torch.randint(2, 97, (1, 8))
    with torch.no_grad():
        expected = hf.generate(
            prompt, max_new_tokens=50, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    ours = generate(model, prompt, "greedy", max_new_tokens=50)
    assert ours.shape == (1, 50)
    assert torch.equal(ours, expected[:, 8:])


def test_round_trip_through_save_pretrained_gives_transformers_the_same_logits(saved, tmp_path):
    _, path = saved
    model = from_pretrained(path)
    save_pretrained(model, tmp_path)
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, atol=1e-5, rtol=0)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "gpt2"


def test_untied_checkpoints_and_pytorch_model_bin(tmp_path):
    hf = hf_gpt2(tie_word_embeddings=False, n_inner=48, activation_function="relu")
    with torch.no_grad():
        hf.lm_head.weight.normal_()
    hf.save_pretrained(tmp_path)
    # The legacy format (transformers 5 writes safetensors only): same tensors, torch.save.
    weights = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    torch.save(weights, tmp_path / "pytorch_model.bin")
    model = from_pretrained(tmp_path)
    ids = torch.randint(0, 97, (1, 7))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, atol=1e-4, rtol=0)


def test_each_dropout_rate_is_read_and_written(tmp_path):
    hf_gpt2(embd_pdrop=0.0, resid_pdrop=0.3, attn_pdrop=0.2).save_pretrained(tmp_path / "hf")
    model = from_pretrained(tmp_path / "hf")
    assert model.embedding_dropout.p == 0.0
    assert (model.config.dropout, model.config.attention_dropout) == (0.3, 0.2)
    save_pretrained(model, tmp_path / "attnkit")
    config = json.loads((tmp_path / "attnkit" / "config.json").read_text())
    assert (config["embd_pdrop"], config["resid_pdrop"], config["attn_pdrop"]) == (0.0, 0.3, 0.2)


def test_a_model_trained_in_attnkit_saves_for_transformers(tmp_path):
    model = GPT(GPTConfig(vocab_size=50, max_len=32, d_model=16, num_heads=2, num_layers=2))
    save_pretrained(model.eval(), tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 50, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, atol=1e-5, rtol=0)


def test_modern_layouts_do_not_pretend_to_be_gpt2(tmp_path):
    model = GPT(
        GPTConfig(
            vocab_size=50, max_len=32, d_model=16, num_heads=2, num_layers=1, positional="rotary"
        )
    )
    with pytest.raises(ValueError, match="GPT-2 format needs positional='learned'"):
        save_pretrained(model, tmp_path)


def _rewrite_weights(path, change):
    weights = load_file(str(path / "model.safetensors"))
    change(weights)
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_missing_unexpected_and_mis_shaped_keys_are_all_named(saved, tmp_path):
    hf, _ = saved
    hf.save_pretrained(tmp_path)

    def damage(weights):
        del weights["transformer.h.1.ln_2.bias"]
        weights["transformer.h.0.extra.weight"] = torch.zeros(2)
        weights["transformer.wpe.weight"] = torch.zeros(81, 32)

    _rewrite_weights(tmp_path, damage)
    with pytest.raises(CheckpointMismatchError) as error:
        from_pretrained(tmp_path)
    message = str(error.value)
    assert "missing keys in the checkpoint: ['transformer.h.1.ln_2.bias']" in message
    assert "unexpected keys in the checkpoint: ['transformer.h.0.extra.weight']" in message
    assert (
        "position_embedding.embedding.weight (checkpoint key transformer.wpe.weight): "
        "the model expects (80, 32)"
    ) in message
    assert "gives (81, 32)" in message


def test_a_mismatch_loads_nothing(saved, tmp_path):
    """The error comes before any weight is copied: no half-loaded model."""
    hf, _ = saved
    hf.save_pretrained(tmp_path)
    _rewrite_weights(tmp_path, lambda w: w.pop("transformer.ln_f.bias"))
    from attnkit.interop import _checkpoint

    model = GPT(GPTConfig(vocab_size=97, max_len=80, d_model=32, num_heads=4, num_layers=3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    from attnkit.interop import gpt2

    source = _checkpoint.WeightSource(_checkpoint.read_weights(tmp_path))
    converted = gpt2.weights_from_hf(source, model)
    with pytest.raises(CheckpointMismatchError, match=re.escape("transformer.ln_f.bias")):
        _checkpoint.load_converted(model, converted, source, str(tmp_path))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_bad_directories_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=re.escape("config.json: missing")):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "vocab_size": 10}')
    with pytest.raises(FileNotFoundError, match="no weights found"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "mamba"}')
    with pytest.raises(ValueError, match=r"model_type must be one of \[.*'gpt2'.*got 'mamba'"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "vocab_size": 10}')
    (tmp_path / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(ValueError, match=re.escape("model.safetensors: cannot be read")):
        from_pretrained(tmp_path)


def test_tokenizer_comes_from_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    assert load_pretrained_tokenizer(tmp_path).encode("hello world").ids == [0, 1]
    with pytest.raises(FileNotFoundError, match=re.escape("tokenizer.json: missing")):
        load_pretrained_tokenizer(tmp_path / "other")
