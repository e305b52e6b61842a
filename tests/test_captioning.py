"""Show, Attend and Tell on Fashion-MNIST mosaics: data, grammar, model, decoding, recipe."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from attnkit.cli import main
from attnkit.data.images import load_fashion_mnist
from attnkit.data.mosaics import (
    CLASS_WORDS,
    OBJECT_WORD_QUADRANTS,
    MosaicBatcher,
    build_mosaics,
    caption_for,
    caption_vocabulary,
    compose_mosaics,
    load_mosaic_splits,
    parse_caption,
    quadrant_attention,
)
from attnkit.generation.captioning import caption_images
from attnkit.models import CaptioningConfig, ModelOutput, ShowAttendTell
from attnkit.models.captioning import doubly_stochastic_penalty
from attnkit.recipes import ConfigError, load_recipe
from attnkit.recipes.captioning import score_objects

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def splits():
    return load_mosaic_splits(seed=0, valid_images=400, limit_test=200)


def _tiny(vocabulary, **overrides) -> ShowAttendTell:
    """A small captioner: 7 x 7 grid, 16-wide features."""
    fields = dict(
        vocab_size=vocabulary.vocab_size,
        channels=(8, 16, 16, 16),
        num_pools=3,
        embed_dim=16,
        hidden_dim=32,
        attention_dim=16,
        dropout=0.0,
    )
    return ShowAttendTell(CaptioningConfig(**{**fields, **overrides}))


# ----------------------------------------------------------------------------- data


def test_mosaic_splits_are_deterministic_and_use_disjoint_sources(splits):
    again = load_mosaic_splits(seed=0, valid_images=400, limit_test=200)
    assert torch.equal(splits.valid.images, again.valid.images)
    assert torch.equal(splits.test.sources, again.test.sources)
    assert torch.equal(splits.train_indices, again.train_indices)
    other = load_mosaic_splits(seed=1, valid_images=400, limit_test=200)
    assert not torch.equal(splits.test.sources, other.test.sources)
    # Validation sources are held-out train-split images; training never sees them.
    train = set(splits.train_indices.tolist())
    assert not train & set(splits.valid.sources.flatten().tolist())
    assert len(train) + 400 == 60000
    assert (splits.valid.split, splits.test.split) == ("train", "test")
    # Every test image is used at most once.
    test_sources = splits.test.sources.flatten()
    assert len(set(test_sources.tolist())) == test_sources.numel()


def test_mosaic_pixels_come_from_their_recorded_sources(splits):
    train_images, train_labels = load_fashion_mnist("train")
    test_images, test_labels = load_fashion_mnist("test")
    corners = [(0, 0), (0, 28), (28, 0), (28, 28)]
    for mosaics, images, labels in (
        (splits.valid, train_images, train_labels),
        (splits.test, test_images, test_labels),
    ):
        for n in (0, 7, len(mosaics) - 1):
            for quadrant, (top, left) in enumerate(corners):
                tile = mosaics.images[n, :, top : top + 28, left : left + 28]
                source = int(mosaics.sources[n, quadrant])
                assert torch.equal(tile, images[source])
                assert int(mosaics.labels[n, quadrant]) == int(labels[source])
    assert splits.test.images.shape == (200, 1, 56, 56)


def test_training_batches_are_fresh_each_epoch_and_resumable(splits):
    vocabulary = caption_vocabulary()
    images, labels = splits.train_images[:64], splits.train_labels[:64]
    first = MosaicBatcher(images, labels, 4, vocabulary, seed=3)
    epoch0 = [b.object_labels for b in first]
    epoch1 = [b.object_labels for b in first]
    assert len(epoch0) == 4 and not all(map(torch.equal, epoch0, epoch1))
    again = MosaicBatcher(images, labels, 4, vocabulary, seed=3)
    assert all(map(torch.equal, epoch0, [b.object_labels for b in again]))
    iterator = iter(again)
    next(iterator)
    state = again.state_dict()
    expected = next(iterator)
    resumed = MosaicBatcher(images, labels, 4, vocabulary, seed=3)
    resumed.load_state_dict(state)
    batch = next(iter(resumed))
    assert torch.equal(batch.pixel_values, expected.pixel_values)
    assert batch.input_ids.shape == (4, 12) and batch.labels.shape == (4, 12)
    assert torch.equal(batch.input_ids[:, 1:], batch.labels[:, :-1])
    assert (batch.input_ids[:, 0] == vocabulary.bos_id).all()
    assert (batch.labels[:, -1] == vocabulary.eos_id).all()
    assert batch.num_tokens == 48


def test_caption_grammar_round_trips_and_names_each_quadrant():
    rng = np.random.default_rng(0)
    vocabulary = caption_vocabulary()
    for labels in rng.integers(0, 10, (200, 4)).tolist():
        caption = caption_for(labels)
        assert parse_caption(caption) == tuple(labels)
        assert vocabulary.decode(vocabulary.encode(caption, add_bos=True, add_eos=True)) == caption
        words = caption.split()
        for index, quadrant in OBJECT_WORD_QUADRANTS.items():
            assert words[index] == CLASS_WORDS[labels[quadrant]]
    assert caption_for([7, 8, 6, 3]) == "a sneaker beside a bag above a shirt beside a dress"
    assert vocabulary.decode([1, 4, 14, 2, 4, 4]) == "a sneaker"  # stops at <eos>


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a sneaker beside a bag", "a caption has 11 words"),
        ("a sneaker under a bag above a shirt beside a dress", "word 2 must be 'beside'"),
        ("a cat beside a bag above a shirt beside a dress", "word 1 must name an object"),
    ],
)
def test_bad_captions_are_refused(text, match):
    with pytest.raises(ValueError, match=match):
        parse_caption(text)


def test_bad_data_input_gives_clear_errors():
    vocabulary = caption_vocabulary()
    with pytest.raises(ValueError, match=r"not in the vocabulary"):
        vocabulary.encode("a zebra")
    with pytest.raises(ValueError, match=r"4 class ids in \[0, 10\)"):
        caption_for([1, 2, 3])
    with pytest.raises(ValueError, match=r"\(N, C, 28, 28\)"):
        build_mosaics(torch.zeros(8, 1, 32, 32), torch.zeros(8), seed=0, split="train")
    with pytest.raises(ValueError, match="grid must be even"):
        quadrant_attention(torch.ones(49), 7)


def test_compose_and_quadrant_attention_by_hand():
    tiles = torch.arange(4.0).reshape(1, 4, 1, 1, 1).expand(1, 4, 1, 2, 2)
    mosaic = compose_mosaics(tiles)[0, 0]
    assert mosaic.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    weights = torch.zeros(16, dtype=torch.float64)
    weights[[0, 1, 4]] = 0.1  # top left
    weights[[2, 7]] = 0.2  # top right
    weights[[8]] = 0.05  # bottom left
    weights[[10, 15]] = 0.125  # bottom right
    masses = quadrant_attention(weights, 4)
    assert torch.allclose(masses, torch.tensor([0.3, 0.4, 0.05, 0.25], dtype=torch.float64))


# ----------------------------------------------------------------------------- model


def test_attention_weights_sum_to_one_over_the_grid():
    vocabulary = caption_vocabulary()
    model = _tiny(vocabulary).double()
    images = torch.randn(3, 1, 56, 56, dtype=torch.float64)
    ids = torch.randint(4, vocabulary.vocab_size, (3, 5))
    out = model(images, ids)
    assert isinstance(out, ModelOutput) and out.logits.shape == (3, 5, vocabulary.vocab_size)
    alphas = out.extra["alphas"]
    assert alphas.shape == (3, 5, 49) and (alphas >= 0).all()
    torch.testing.assert_close(alphas.sum(-1), torch.ones(3, 5, dtype=torch.float64))
    assert out.attentions[0].shape == (3, 1, 5, 49)
    gates = out.extra["gates"]
    assert gates.shape == (3, 5) and ((gates > 0) & (gates < 1)).all()
    ungated = _tiny(vocabulary, gate=False)(images.float(), ids).extra["gates"]
    assert (ungated == 1).all()


def test_doubly_stochastic_term_matches_a_hand_computation():
    vocabulary = caption_vocabulary()
    model = _tiny(vocabulary, attention_penalty=0.7).double()
    images = torch.randn(2, 1, 56, 56, dtype=torch.float64)
    ids = torch.randint(4, vocabulary.vocab_size, (2, 6))
    labels = torch.randint(4, vocabulary.vocab_size, (2, 6))
    labels[0, 4:] = vocabulary.pad_id  # padded steps do not count
    out = model(images, ids, labels=labels)
    alphas = out.extra["alphas"].detach()
    penalties = []
    for b in range(2):
        total = 0.0
        for i in range(49):
            covered = sum(float(alphas[b, t, i]) for t in range(6) if labels[b, t] != 0)
            total += (1.0 - covered) ** 2
        penalties.append(total)
    log_probs = torch.log_softmax(out.logits.detach(), -1)
    nll = [
        -float(log_probs[b, t, labels[b, t]]) for b in range(2) for t in range(6) if labels[b, t]
    ]
    expected_penalty = sum(penalties) / 2
    assert out.extra["attention_penalty"].item() == pytest.approx(expected_penalty, rel=1e-12)
    expected = sum(nll) / len(nll) + 0.7 * expected_penalty
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    direct = doubly_stochastic_penalty(alphas, labels != 0)
    assert direct.tolist() == pytest.approx(penalties, rel=1e-12)


def test_stepwise_decoding_matches_the_teacher_forced_forward():
    vocabulary = caption_vocabulary()
    model = _tiny(vocabulary).eval()
    images = torch.randn(2, 1, 56, 56)
    with torch.no_grad():
        generated = caption_images(model, images, bos_id=1, eos_id=2, max_new_tokens=6)
        inputs = torch.cat([torch.ones(2, 1, dtype=torch.long), generated[:, :-1]], 1)
        forced = model(images, inputs).logits
    assert torch.equal(forced.argmax(-1), generated)
    with torch.no_grad():
        beam_one = caption_images(model, images, bos_id=1, eos_id=2, max_new_tokens=6, beam_size=1)
        beams = caption_images(model, images, bos_id=1, eos_id=2, max_new_tokens=6, beam_size=3)
    assert torch.equal(beam_one, generated)
    assert beams.shape[0] == 2 and beams.shape[1] <= 6


def test_model_learns_captions_of_a_tiny_slice():
    """Trousers and bags only: 150 steps on 400 training images caption held-out mosaics."""
    images, labels = load_fashion_mnist("train")
    test_images, test_labels = load_fashion_mnist("test")
    two = torch.tensor([1, 8])
    keep, test_keep = torch.isin(labels, two), torch.isin(test_labels, two)
    vocabulary = caption_vocabulary()
    test = build_mosaics(test_images[test_keep], test_labels[test_keep], seed=0, split="test")
    batch = next(test.head(64).batches(64, vocabulary))
    model = _tiny(vocabulary)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    source = MosaicBatcher(images[keep][:400], labels[keep][:400], 32, vocabulary, seed=0)
    losses = []
    while len(losses) < 150:
        for train_batch in source:
            loss = model(train_batch.pixel_values, train_batch.input_ids, labels=train_batch.labels)
            optimizer.zero_grad()
            loss.loss.backward()
            optimizer.step()
            losses.append(loss.extra["cross_entropy"].item())
            if len(losses) == 150:
                break
    generated = caption_images(model, batch.pixel_values, bos_id=1, eos_id=2, max_new_tokens=14)
    hypotheses = vocabulary.decode_batch(generated)
    objects = [parse_caption(h) if len(h.split()) == 11 else (-1,) * 4 for h in hypotheses]
    object_accuracy = (torch.tensor(objects) == batch.object_labels).float().mean().item()
    # Chance is 50% per object word; 150 steps measured 98% here (single thread).
    assert losses[0] > 2.0 and np.mean(losses[-10:]) < 0.15, (losses[0], losses[-10:])
    assert object_accuracy > 0.85, object_accuracy


def test_bad_model_input_gives_clear_errors():
    vocabulary = caption_vocabulary()
    model = _tiny(vocabulary)
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(B, 1, 56, 56\).*28, 28"):
        model(torch.zeros(2, 1, 28, 28), ids)
    with pytest.raises(ValueError, match=r"pixel_values must have shape"):
        model(torch.zeros(2, 3, 56, 56), ids)
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 17\)"):
        model(torch.zeros(2, 1, 56, 56), ids * 40)
    with pytest.raises(ValueError, match=r"input_ids must have shape \(2, T\)"):
        model(torch.zeros(2, 1, 56, 56), ids[:1])
    with pytest.raises(ValueError, match="labels must have input_ids' shape"):
        model(torch.zeros(2, 1, 56, 56), ids, labels=ids[:, :3])
    with pytest.raises(ValueError, match="no real"):
        model(torch.zeros(2, 1, 56, 56), ids, labels=torch.zeros_like(ids))
    with pytest.raises(ValueError, match=r"multiple of 2 \*\* num_pools = 8"):
        CaptioningConfig(vocab_size=17, image_size=60, num_pools=3)
    with pytest.raises(ValueError, match="num_pools must be in"):
        CaptioningConfig(vocab_size=17, channels=(8, 8), num_pools=3)
    with pytest.raises(ValueError, match=r"alphas must have shape \(B, T, L\)"):
        doubly_stochastic_penalty(torch.ones(3, 4))


# ----------------------------------------------------------------------------- recipe


def test_localisation_counts_only_correct_object_words_by_hand():
    """A 2 x 2 grid: each cell is one quadrant, so the argmax cell is the argmax quadrant."""
    vocabulary = caption_vocabulary()
    labels = torch.tensor([[7, 8, 6, 3], [1, 1, 5, 9]])
    right = vocabulary.encode(caption_for([7, 8, 6, 3]), add_eos=True)  # 12 ids
    wrong = vocabulary.encode(caption_for([1, 2, 5, 9]), add_eos=True)[:8]  # word 4 wrong, cut
    generated = torch.tensor([right, wrong + [0] * 4])
    alphas = torch.full((2, 12, 4), 0.25)
    # Row 0: words 1, 4, 7 look at their quadrants 0, 1, 2; word 10 looks at quadrant 0.
    for word, cell in ((1, 0), (4, 1), (7, 2), (10, 0)):
        alphas[0, word] = torch.tensor([0.1, 0.1, 0.1, 0.1]).index_fill(0, torch.tensor(cell), 0.7)
    # Row 1: word 1 right and looking at quadrant 0; word 7 right (sandal) looking at 3.
    alphas[1, 1] = torch.tensor([0.4, 0.2, 0.2, 0.2])
    alphas[1, 7] = torch.tensor([0.1, 0.1, 0.2, 0.6])
    matches, localised = score_objects(generated, alphas, labels, vocabulary, grid=2)
    assert matches.tolist() == [[True] * 4, [True, False, True, False]]
    assert localised.tolist() == [[True, True, True, False], [True, False, False, False]]
    with pytest.raises(ValueError, match="need generated"):
        score_objects(generated, alphas[:, :5], labels, vocabulary, grid=2)


def test_captioning_recipe_runs_end_to_end_on_a_slice(tmp_path):
    run = tmp_path / "captions"
    args = [
        "train",
        str(CONFIGS / "fashion_mnist_captioning.yaml"),
        f"output_dir={run}",
        "data.limit_train_images=256",
        "data.limit_valid=16",
        "data.limit_test=24",
        "data.batch_size=16",
        "model.channels=[8, 8, 8]",
        "model.hidden_dim=16",
        "model.attention_dim=8",
        "model.embed_dim=8",
        "train.max_steps=4",
        "train.warmup_steps=1",
        "train.eval_every=2",
        "train.checkpoint_every=2",
        "decode.beam_size=2",
        "overlays=2",
    ]
    assert main(args) == 0
    results = json.loads((run / "results.json").read_text())
    test = results["test"]
    assert test["mosaics"] == 24 and 0 <= test["bleu"] <= 100
    assert 0 <= test["exact_match"] <= 1 and 0 <= test["teacher_forced_localisation"] <= 1
    assert 0 <= test["localisation_counted"] <= 4 * 24
    assert len((run / "test.hyp.txt").read_text().splitlines()) == 24
    for path in results["overlays"]:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(results["overlays"]) == 2
    assert math.isfinite(results["summary"]["final_loss"])


def test_captioning_recipe_refuses_bad_settings():
    config = CONFIGS / "fashion_mnist_captioning.yaml"
    with pytest.raises(ConfigError, match="even side"):
        load_recipe(config, ["model.num_pools=3"])
    with pytest.raises(ConfigError, match="set from the caption vocabulary"):
        load_recipe(config, ["model.vocab_size=40"])
    with pytest.raises(ConfigError, match="image_size"):
        load_recipe(config, ["model.image_size=50"])
