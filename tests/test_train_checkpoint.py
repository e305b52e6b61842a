"""Checkpoints: tied weights round-trip, atomic writes, verified loads, keep-last, lookup."""

import json

import pytest
import torch
from safetensors import safe_open

from attnkit.train import (
    CheckpointError,
    CheckpointManager,
    list_checkpoints,
    load_checkpoint,
    load_model_weights,
    read_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from attnkit.train import checkpoint as checkpoint_module
from distributed_worker import tiny_transformer


def _params(model):
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def _assert_same(model, params):
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, params[name]), name


def test_round_trip_keeps_tied_weights_tied_and_stores_them_once(tmp_path):
    source = tiny_transformer(seed=1)
    state = {"step": 3, "values": [1.0, 2.0], "tensor": torch.arange(4)}
    path = save_checkpoint(tmp_path / "ckpt", source.state_dict(), state, {"step": 3})
    with safe_open(path / "model.safetensors", framework="pt") as handle:
        stored = set(handle.keys())
    assert ("output_projection.weight" in stored) != ("tgt_embedding.weight" in stored)
    target = tiny_transformer(seed=2)
    checkpoint = load_checkpoint(path, target)
    _assert_same(target, _params(source))
    assert target.output_projection.weight is target.tgt_embedding.weight
    assert checkpoint.step == 3 and checkpoint.trainer_state["values"] == [1.0, 2.0]
    assert torch.equal(checkpoint.trainer_state["tensor"], torch.arange(4))


def test_failure_mid_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep_last=3)
    model = tiny_transformer()
    first = manager.save(1, model.state_dict(), {"n": 1})
    best = manager.save(1, model.state_dict(), {"n": 1}, best=True)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        manager.save(2, model.state_dict(), {"n": 2})
    with pytest.raises(OSError, match="disk full"):
        manager.save(2, model.state_dict(), {"n": 2}, best=True)
    monkeypatch.undo()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1]
    assert not [p for p in manager.root.iterdir() if p.name.startswith(".")]  # temp dirs gone
    assert read_checkpoint(first).trainer_state == {"n": 1}
    assert read_checkpoint(best).trainer_state == {"n": 1}
    assert resolve_checkpoint(tmp_path) == first


def test_killed_writer_leaves_only_an_ignored_temp_dir(tmp_path):
    manager = CheckpointManager(tmp_path)
    first = manager.save(1, tiny_transformer().state_dict(), {})
    leftover = manager.root / ".tmp-step_00000002-123-abcd"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"partial")
    assert resolve_checkpoint(tmp_path) == first


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("flip_model", "model.safetensors"),
        ("truncate_state", "trainer_state.pt"),
        ("delete_state", "trainer_state.pt"),
        ("delete_meta", "meta.json"),
        ("garble_meta", "meta.json"),
    ],
)
def test_damaged_checkpoint_gives_clear_error_and_leaves_model_untouched(tmp_path, damage, named):
    path = save_checkpoint(tmp_path / "ckpt", tiny_transformer(seed=1).state_dict(), {"n": 1})
    if damage == "flip_model":
        data = bytearray((path / "model.safetensors").read_bytes())
        data[-10] ^= 0xFF
        (path / "model.safetensors").write_bytes(bytes(data))
    elif damage == "truncate_state":
        data = (path / "trainer_state.pt").read_bytes()
        (path / "trainer_state.pt").write_bytes(data[: len(data) // 2])
    elif damage == "delete_state":
        (path / "trainer_state.pt").unlink()
    elif damage == "delete_meta":
        (path / "meta.json").unlink()
    else:
        (path / "meta.json").write_text("{not json")
    model = tiny_transformer(seed=2)
    before = _params(model)
    with pytest.raises(CheckpointError, match=named):
        load_checkpoint(path, model)
    _assert_same(model, before)


def test_unreadable_file_with_matching_checksum_is_still_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt", tiny_transformer().state_dict(), {"n": 1})
    (path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    meta = json.loads((path / "meta.json").read_text())
    meta["files"]["model.safetensors"] = checkpoint_module._file_record(path / "model.safetensors")
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable"):
        load_checkpoint(path, tiny_transformer())


def test_weights_of_another_model_are_rejected_before_loading(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt", tiny_transformer(d_model=32).state_dict())
    model = tiny_transformer()
    before = _params(model)
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(path, model, trainer_state=False)
    _assert_same(model, before)
    del before["encoder.layers.0.feed_forward.linear1.bias"]
    with pytest.raises(CheckpointError, match="missing"):
        checkpoint_module.apply_model_state(model, before)


def test_keep_last_prunes_old_steps_but_keeps_best(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    state = tiny_transformer().state_dict()
    manager.save(2, state, {}, best=True)
    for step in range(1, 6):
        manager.save(step, state, {})
    assert [step for step, _ in list_checkpoints(tmp_path)] == [4, 5]
    assert manager.best() == tmp_path / "checkpoints" / "best"
    assert json.loads((manager.best() / "meta.json").read_text())["step"] == 2
    assert manager.latest() == manager.step_dir(5)


def test_resolve_and_load_model_weights(tmp_path):
    source = tiny_transformer(seed=3)
    manager = CheckpointManager(tmp_path, keep_last=3)
    manager.save(7, source.state_dict(), {})
    manager.save(9, source.state_dict(), {})
    assert resolve_checkpoint(tmp_path) == manager.step_dir(9)
    assert resolve_checkpoint(tmp_path / "checkpoints") == manager.step_dir(9)
    assert resolve_checkpoint(manager.step_dir(7)) == manager.step_dir(7)
    with pytest.raises(CheckpointError, match="no best checkpoint"):
        resolve_checkpoint(tmp_path, "best")
    with pytest.raises(CheckpointError, match="no checkpoint under"):
        resolve_checkpoint(tmp_path / "elsewhere")
    model = tiny_transformer(seed=4)
    assert load_model_weights(model, tmp_path) == manager.step_dir(9)
    _assert_same(model, _params(source))
    other = tiny_transformer(seed=5)
    load_model_weights(other, manager.step_dir(7) / "model.safetensors")
    _assert_same(other, _params(source))
    assert other.output_projection.weight is other.tgt_embedding.weight


def test_discard_after_removes_later_steps_so_new_saves_survive_pruning(tmp_path):
    """A run resumed from step 2 drops the abandoned steps 8 and 10 (best/ stays); its own
    step 3 is then the latest and survives keep-last pruning."""
    manager = CheckpointManager(tmp_path, keep_last=3)
    state = tiny_transformer().state_dict()
    for step in (2, 8, 10):
        manager.save(step, state, {})
    manager.save(2, state, {}, best=True)
    assert manager.discard_after(2) == [manager.step_dir(8), manager.step_dir(10)]
    manager.save(3, state, {})
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 3]
    assert manager.latest() == manager.step_dir(3) and manager.best() is not None
    assert manager.discard_after(3) == []
