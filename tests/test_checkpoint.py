import hashlib
import pickle
from pathlib import Path

import pytest
import torch

from autolabel.errors import CheckpointError
from models.checkpoint import Checkpoint, file_sha256, load_checkpoint, save_checkpoint
from models.teacher import Teacher, TeacherConfig, build_model, load_model


class _Payload:
    """An arbitrary Python object: unpickling it would run code, so a safe load refuses it."""


def _trained_model() -> Teacher:
    """A tiny model whose BatchNorm statistics moved away from their defaults (buffers must round-trip too)."""
    torch.manual_seed(0)
    model = build_model(TeacherConfig.preset("tiny", use_mscale=False))
    with torch.no_grad():
        model.train().run_scale(torch.randn(2, 3, 32, 64) * 3 + 1)
    return model.eval()


def _checkpoint(model: Teacher) -> Checkpoint:
    return Checkpoint(model.config.to_dict(), model.state_dict(), {"iteration": 7, "dataset": "cityscapes"})


def test_saved_checkpoint_alone_rebuilds_a_model_with_the_same_outputs(tmp_path):
    model, path = _trained_model(), tmp_path / "teacher.pt"
    save_checkpoint(path, _checkpoint(model))
    rebuilt, ckpt = load_model(path)
    images = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        expected, actual = model.run_scale(images), rebuilt.run_scale(images)
    assert rebuilt.config == model.config and not rebuilt.training
    assert all(torch.equal(a, e) for a, e in zip(actual, expected))
    assert ckpt.metadata == {"iteration": 7, "dataset": "cityscapes"}


def test_checkpoint_sha256_is_the_files_sha256(tmp_path):
    path = tmp_path / "teacher.pt"
    digest = save_checkpoint(path, _checkpoint(_trained_model()))
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)


def test_checkpoint_holding_arbitrary_objects_is_refused_by_the_safe_load(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "config": {}, "state_dict": {}, "metadata": {"x": _Payload()}}, path)
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "content",
    [b"not a checkpoint at all", b""],
    ids=["garbage", "empty"],
)
def test_corrupt_file_error_names_the_path(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_truncated_checkpoint_error_names_the_path(tmp_path):
    path = tmp_path / "teacher.pt"
    save_checkpoint(path, _checkpoint(_trained_model()))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "payload",
    [{"weights": torch.zeros(2)}, {"format": 1, "config": {}}, [1, 2, 3]],
    ids=["foreign-dict", "missing-keys", "list"],
)
def test_torch_file_that_is_not_a_checkpoint_error_names_the_path(tmp_path, payload):
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=f"{path}.*checkpoint"):
        load_checkpoint(path)


def test_missing_checkpoint_error_names_the_path(tmp_path):
    path = tmp_path / "absent.pt"
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_save_leaves_only_the_checkpoint_in_its_folder(tmp_path):
    path = tmp_path / "ckpts" / "teacher.pt"
    save_checkpoint(path, _checkpoint(_trained_model()))
    save_checkpoint(path, _checkpoint(_trained_model()))  # overwriting is atomic too
    assert [p.name for p in path.parent.iterdir()] == ["teacher.pt"]


def test_failed_save_keeps_the_previous_checkpoint_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "teacher.pt"
    digest = save_checkpoint(path, _checkpoint(_trained_model()))
    unpicklable = Checkpoint({}, {}, {"callback": lambda: None})
    with pytest.raises((pickle.PicklingError, AttributeError), match="pickle"):
        save_checkpoint(path, unpicklable)
    assert [p.name for p in tmp_path.iterdir()] == ["teacher.pt"]
    assert file_sha256(path) == digest


def test_state_dict_is_saved_on_the_cpu_and_training_state_round_trips(tmp_path):
    path = tmp_path / "resume.pt"
    extra = {"iteration": 100, "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]}}
    save_checkpoint(path, Checkpoint({"a": 1}, {"w": torch.ones(2, requires_grad=True)}, {}, extra))
    ckpt = load_checkpoint(Path(path))
    assert ckpt.extra == extra
    assert ckpt.state_dict["w"].device.type == "cpu" and not ckpt.state_dict["w"].requires_grad


def test_loaded_checkpoint_carries_the_sha256_of_its_file(tmp_path):
    path = tmp_path / "model.pt"
    digest = save_checkpoint(path, _checkpoint(_trained_model()))
    assert load_checkpoint(path).sha256 == digest == file_sha256(path)
