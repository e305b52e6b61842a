"""ViT: patches, position interpolation, transformers parity in both layouts, learning."""

import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from attnkit.interop import from_pretrained, save_pretrained
from attnkit.models import ViT, ViTConfig
from attnkit.nn import PatchEmbedding, interpolate_grid_positions

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("single_thread")
logging.getLogger("transformers").setLevel(logging.ERROR)


def tiny(**overrides) -> ViT:
    values = {
        "image_size": 28,
        "patch_size": 7,
        "num_channels": 1,
        "d_model": 32,
        "num_heads": 4,
        "num_layers": 2,
        "d_ff": 64,
        "num_labels": 10,
    }
    return ViT(ViTConfig(**{**values, **overrides})).eval()


def test_patch_embedding_is_a_shared_linear_map_of_each_flattened_patch():
    embed = PatchEmbedding(4, 2, 8)
    images = torch.randn(1, 2, 8, 12)
    tokens = embed(images)
    assert tokens.shape == (1, 6, 8)
    patch = images[0, :, 4:8, 8:12].reshape(-1)  # row 1, column 2 -> token 1 * 3 + 2
    expected = embed.projection.weight.reshape(8, -1) @ patch + embed.projection.bias
    torch.testing.assert_close(tokens[0, 5], expected)


def test_interpolation_keeps_the_same_grid_and_resizes_smoothly():
    table = torch.randn(16, 5)
    assert interpolate_grid_positions(table, (4, 4), (4, 4)) is table
    constant = torch.ones(16, 5) * 3.0
    torch.testing.assert_close(
        interpolate_grid_positions(constant, (4, 4), (6, 6)), torch.full((36, 5), 3.0)
    )
    with pytest.raises(ValueError, match=r"table must have shape \(16, D\)"):
        interpolate_grid_positions(torch.randn(15, 5), (4, 4), (6, 6))


def test_other_image_sizes_use_interpolated_positions():
    model = tiny()
    assert model(torch.randn(2, 1, 28, 28)).logits.shape == (2, 10)
    out = model(torch.randn(2, 1, 42, 35), output_attentions=True)
    assert out.logits.shape == (2, 10) and out.attentions[0].shape == (2, 4, 31, 31)
    with pytest.raises(ValueError, match="multiple of the patch size 7"):
        model(torch.randn(1, 1, 30, 28))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 1, H, W\)"):
        model(torch.randn(1, 3, 28, 28))


def hf_vit(path, **overrides):
    config = transformers.ViTConfig(
        image_size=28,
        patch_size=7,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=10,
        **overrides,
    )
    torch.manual_seed(4)
    model = transformers.ViTForImageClassification(config).eval()
    model.save_pretrained(path)
    return model


def test_logits_hidden_states_and_interpolation_match_transformers(tmp_path):
    hf = hf_vit(tmp_path)
    model = from_pretrained(tmp_path)
    images = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        theirs = hf(images, output_hidden_states=True)
        ours = model(images, output_hidden_states=True)
        torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-4, rtol=0)
        for mine, expected in zip(ours.hidden_states, theirs.hidden_states, strict=True):
            torch.testing.assert_close(mine, expected, atol=1e-4, rtol=0)
        larger = torch.randn(2, 1, 42, 42)
        expected = hf(larger, interpolate_pos_encoding=True).logits
        torch.testing.assert_close(model(larger).logits, expected, atol=1e-4, rtol=0)


def test_float64_parity(tmp_path):
    hf = hf_vit(tmp_path).double()
    model = from_pretrained(tmp_path, dtype=torch.float64)
    images = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(images).logits, hf(images).logits, atol=1e-8, rtol=0)


def test_the_hub_layout_loads_too(tmp_path):
    """Checkpoints on the hub name layers ``vit.encoder.layer.N.attention.attention.query``."""
    hf = hf_vit(tmp_path / "recent")
    model = from_pretrained(tmp_path / "recent")
    save_pretrained(model, tmp_path / "hub")  # written in the hub layout
    names = load_file(str(tmp_path / "hub" / "model.safetensors"))
    assert "vit.encoder.layer.0.attention.attention.query.weight" in names
    reloaded = from_pretrained(tmp_path / "hub")
    back = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hub").eval()
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images).logits, hf(images).logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(back(images).logits, hf(images).logits, atol=1e-5, rtol=0)


def test_a_bare_backbone_gets_a_fresh_classifier(tmp_path):
    hf_vit(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    save_file(
        {k: v for k, v in weights.items() if not k.startswith("classifier")},
        str(tmp_path / "model.safetensors"),
        metadata={"format": "pt"},
    )
    model = from_pretrained(tmp_path, num_labels=3)
    assert model.classifier.out_features == 3


def test_learns_to_tell_where_the_bright_patch_is():
    """Class = which of the 4 quadrants holds the bright square."""
    torch.manual_seed(0)
    model = tiny(num_labels=4, num_layers=1)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)

    def batch(n):
        images = torch.randn(n, 1, 28, 28) * 0.1
        labels = torch.randint(0, 4, (n,))
        for i, label in enumerate(labels.tolist()):
            row, col = divmod(label, 2)
            images[i, 0, row * 14 + 3 : row * 14 + 10, col * 14 + 3 : col * 14 + 10] += 1.0
        return images, labels

    for _ in range(120):
        images, labels = batch(32)
        loss = model(images, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    images, labels = batch(200)
    accuracy = (model(images).logits.argmax(-1) == labels).float().mean().item()
    assert accuracy >= 0.97, accuracy


def test_hybrid_stem_convolves_at_full_resolution_before_the_patches():
    embed = PatchEmbedding(4, 2, 8, stem_channels=(3, 5)).eval()
    assert embed.projection.in_channels == 5
    images = torch.randn(2, 2, 8, 12)
    features = embed.stem(images)
    assert features.shape == (2, 5, 8, 12) and bool((features >= 0).all())  # ReLU maps
    torch.testing.assert_close(embed(images), embed.projection(features).flatten(2).transpose(1, 2))
    assert embed.grid(8, 12) == PatchEmbedding(4, 2, 8).grid(8, 12) == (2, 3)


def test_hybrid_and_mean_pooling_options():
    plain, hybrid = tiny(), tiny(stem_channels=[8])
    assert not any(name.startswith("patches.stem") for name in plain.state_dict())
    assert hybrid.config.stem_channels == (8,)
    out = hybrid(torch.randn(2, 1, 28, 28), output_attentions=True)
    assert out.logits.shape == (2, 10) and out.attentions[0].shape == (2, 4, 17, 17)

    model = tiny(classifier_pooling="mean")
    out = model(torch.randn(3, 1, 28, 28))
    states = out.extra["last_hidden_state"]  # layer-normed, class token first
    torch.testing.assert_close(out.logits, model.classifier(states[:, 1:].mean(dim=1)))
    assert not torch.allclose(out.logits, model.classifier(states[:, 0]))

    with pytest.raises(
        ValueError, match=r"stem_channels must be positive integers .* got \[8, 0\]"
    ):
        tiny(stem_channels=[8, 0])
    with pytest.raises(ValueError, match=r"classifier_pooling must be one of \('cls', 'mean'\)"):
        tiny(classifier_pooling="max")


def test_options_hugging_face_lacks_are_refused_on_save(tmp_path):
    for options in ({"stem_channels": [4]}, {"classifier_pooling": "mean"}, {"qkv_bias": False}):
        with pytest.raises(ValueError, match="Hugging Face's ViT has no convolutional stem"):
            save_pretrained(tiny(**options), tmp_path / "out")


@pytest.mark.parametrize("activation", ["relu", "silu", "gelu_pytorch_tanh"])
def test_hidden_act_variants_load_and_save(activation, tmp_path):
    hf = hf_vit(tmp_path / "hf", hidden_act=activation)
    model = from_pretrained(tmp_path / "hf")
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model(images).logits, hf(images).logits, atol=1e-5, rtol=0)
    save_pretrained(model, tmp_path / "attnkit")
    assert from_pretrained(tmp_path / "attnkit").config.activation == model.config.activation
