"""The ViT Fashion-MNIST and BERT SST-2 recipes end to end on slices; the IDX reader."""

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from attnkit.cli import main
from attnkit.data.images import ImageBatcher, load_fashion_mnist, read_idx, write_idx
from attnkit.recipes import ConfigError, load_recipe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
logging.getLogger("transformers").setLevel(logging.ERROR)


def test_fashion_mnist_loads_with_its_published_shapes():
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10000,) and set(labels.tolist()) == set(range(10))
    assert torch.bincount(labels).tolist() == [1000] * 10


def test_write_idx_round_trips_and_takes_only_bytes(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / "x-idx3-ubyte", images)), images)
    with pytest.raises(ValueError, match="unsigned bytes; got dtype float32"):
        write_idx(tmp_path / "y", images.astype(np.float32))


def test_idx_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as handle:
        handle.write(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match=r"bad.gz: header says shape \(5,\) \(5 values\)"):
        read_idx(bad)
    with gzip.open(bad, "wb") as handle:
        handle.write(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST not found"):
        load_fashion_mnist("train", tmp_path / "nowhere")


def test_image_batcher_resumes_with_the_same_augmented_batches():
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(40)
    first = ImageBatcher(images, labels, 8, seed=1, augment=True)
    batches = iter(first)
    next(batches)
    state = first.state_dict()
    expected = next(batches)
    second = ImageBatcher(images, labels, 8, seed=1, augment=True)
    second.load_state_dict(state)
    again = next(iter(second))
    assert torch.equal(again.pixel_values, expected.pixel_values)
    assert torch.equal(again.labels, expected.labels)


@pytest.mark.slow
def test_vit_recipe_learns_on_a_slice(tmp_path):
    run = tmp_path / "vit"
    args = [
        "train",
        str(CONFIGS / "fashion_mnist_vit.yaml"),
        f"output_dir={run}",
        "data.limit_train=2000",
        "data.limit_test=500",
        "data.valid_size=200",
        "data.batch_size=64",
        "model.num_layers=1",
        "model.d_model=32",
        "model.d_ff=64",
        "model.patch_size=7",
        "model.dropout=0",
        "data.augment=false",
        "label_smoothing=0",
        "train.schedule=constant",
        "train.max_epochs=null",
        "train.max_steps=120",
        "train.warmup_steps=10",
        "train.eval_every=60",
        "train.checkpoint_every=60",
    ]
    assert main(args) == 0
    results = json.loads((run / "results.json").read_text())
    # Ten classes: chance is 10%; 120 steps of a 1-layer ViT measured 58% here.
    assert results["test_accuracy"] > 0.4, results["test_accuracy"]
    assert results["test_images"] == 500
    with pytest.raises(ConfigError, match="model"):
        load_recipe(CONFIGS / "fashion_mnist_vit.yaml", ["model.patch_size=5"])


@pytest.fixture
def tiny_bert_directory(tmp_path):
    """A random BERT checkpoint with a WordPiece tokenizer trained on SST-2 sentences."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    from attnkit.data import data_root, read_classification_tsv

    texts = read_classification_tsv(data_root() / "sst2" / "train.tsv").texts[:3000]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=800, special_tokens=specials)
    )
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    directory = tmp_path / "tiny-bert"
    config = transformers.BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


@pytest.mark.slow
def test_sst2_recipe_fine_tunes_a_checkpoint_directory(tmp_path, tiny_bert_directory):
    run = tmp_path / "sst2"
    args = [
        "train",
        str(CONFIGS / "sst2_minilm.yaml"),
        f"output_dir={run}",
        f"model.pretrained={tiny_bert_directory}",
        "data.limit_train=3000",
        "data.limit_valid=300",
        "train.max_epochs=null",
        "train.max_steps=200",
        "train.lr=2e-3",
        "train.schedule=constant",
        "train.warmup_steps=10",
        "train.eval_every=100",
        "train.checkpoint_every=100",
    ]
    assert main(args) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["valid_sentences"] == 300
    # A random 1-layer encoder learns sentiment words from 3,000 sentences: 64% measured
    # here; chance is 50% (one standard deviation over 300 sentences: 2.9 points).
    assert results["valid_accuracy"] > 0.585, results["valid_accuracy"]


def test_rdrop_loss_is_two_cross_entropies_plus_the_weighted_symmetric_kl():
    from attnkit.data.batching import ClassificationBatch
    from attnkit.models import BertConfig, BertForSequenceClassification
    from attnkit.recipes.text_classification import classification_loss, consistency_loss

    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, d_model=16, num_heads=2, num_layers=1, d_ff=32, max_len=16)
    ids = torch.randint(1, 40, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[2, 5:] = False
    batch = ClassificationBatch(ids, mask, torch.tensor([0, 1, 1]))
    still = BertForSequenceClassification(
        BertConfig(**{**config.to_dict(), "dropout": 0.0, "attention_dropout": 0.0})
    ).train()
    plain, rdrop = classification_loss(still, batch), consistency_loss(5.0)(still, batch)
    torch.testing.assert_close(rdrop.loss_sum, 2 * plain.loss_sum)  # no dropout: KL 0
    assert rdrop.num_tokens == 3
    model = BertForSequenceClassification(config).train()
    torch.manual_seed(1)
    out = consistency_loss(0.0)(model, batch)
    torch.manual_seed(1)
    weighted = consistency_loss(5.0)(model, batch)
    assert weighted.logs["kl"] > 0
    expected = out.loss_sum + 5.0 * weighted.logs["kl"] * 3 / 2
    torch.testing.assert_close(weighted.loss_sum, expected)
    with pytest.raises(ConfigError, match=r"model.rdrop must be >= 0; got -1"):
        load_recipe(CONFIGS / "sst2_minilm.yaml", ["model.rdrop=-1"])


def test_a_missing_package_checkpoint_is_named(tmp_path, capsys):
    args = [
        "train",
        str(CONFIGS / "sst2_minilm.yaml"),
        f"output_dir={tmp_path}",
        "model.pretrained=python-package:no_such_package_xyz/model",
    ]
    assert main(args) == 2
    assert "the package 'no_such_package_xyz' is not installed" in capsys.readouterr().err


def test_tsv_labels_are_read_as_integers():
    from attnkit.data import data_root, read_classification_tsv

    table = read_classification_tsv(data_root() / "sst2" / "dev.tsv")
    assert len(table.texts) == 872 and set(np.unique(table.labels)) == {0, 1}


def test_augmentation_shifts_and_flips_within_the_padding():
    images = torch.zeros(64, 1, 8, 8, dtype=torch.uint8)
    images[:, 0, 3, 2] = 255  # one bright pixel at row 3, column 2
    batch = next(iter(ImageBatcher(images, torch.zeros(64), 64, seed=0, augment=True, pad=2)))
    assert batch.pixel_values.shape == (64, 1, 8, 8)
    where = batch.pixel_values[:, 0].flatten(1).argmax(1)
    rows, cols = where // 8, where % 8
    assert batch.pixel_values.flatten(1).max(1).values.eq(1.0).all()  # never cropped away
    assert rows.min() >= 1 and rows.max() <= 5  # shifted by at most 2 rows
    flipped = cols > 4  # column 2 mirrors to 5; shifts move it by at most 2
    assert 10 < int(flipped.sum()) < 54  # about half flipped
