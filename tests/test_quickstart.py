"""The whole job in one call, at a size that runs in seconds: results, reuse of finished stages, refusals."""

import json
import shutil
from pathlib import Path

import pytest

from models.checkpoint import load_checkpoint
from pipelines.quickstart import RESULTS, QuickstartConfig, quickstart
from pipelines.train import FINAL_MODEL

CONFIG = QuickstartConfig(train=2, val=1, train_extra=2, height=64, width=128, teacher_iters=2, student_iters=2,
                          batch_size=2, crop=(64, 128), scales=(1.0,), label_workers=1)
STAGES = ["synth", "train_teacher", "evaluate_teacher", "label", "storage", "quality", "fuse", "train_student",
          "evaluate_student"]


class Recorder:
    def __init__(self) -> None:
        self.stages: list[tuple[str, bool]] = []

    def stage(self, name: str, reused: bool) -> None:
        self.stages.append((name, reused))

    def progress(self, done: int, total: int | None) -> None:
        pass


@pytest.fixture(scope="module")
def workdir(ray_address, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("quickstart") / "work"
    quickstart(workdir, CONFIG)
    return workdir


def test_results_hold_every_section_as_measured_fractions(workdir):
    results = json.loads((workdir / RESULTS).read_text())
    for section, key in (("teacher", "miou"), ("student", "miou"), ("auto_labels", "labelled_fraction"),
                         ("auto_labels", "accuracy"), ("auto_labels", "gt_coarse_accuracy")):
        assert 0.0 <= results[section][key] <= 1.0, (section, key)
    assert results["auto_labels"]["images"] == CONFIG.train_extra
    assert results["storage"]["images"] == CONFIG.train_extra  # an untrained teacher labels no pixel: 0 bytes
    assert results["fused"] == {"fine": CONFIG.train, "auto_coarse": CONFIG.train_extra}


def test_rerun_reuses_every_finished_stage_and_gives_the_same_results(workdir):
    before = (workdir / RESULTS).read_text()
    recorder = Recorder()
    quickstart(workdir, CONFIG, recorder)
    assert recorder.stages == [(name, True) for name in STAGES]
    assert json.loads((workdir / RESULTS).read_text()) == json.loads(before)


def test_a_stage_whose_files_were_deleted_runs_again(workdir):
    (workdir / "student" / "model.pt").unlink()
    recorder = Recorder()
    quickstart(workdir, CONFIG, recorder)
    assert ("train_student", False) in recorder.stages and ("train_teacher", True) in recorder.stages
    assert (workdir / "student" / "model.pt").is_file()


def test_a_deleted_label_store_reruns_every_stage_that_consumed_it(workdir):
    shutil.rmtree(workdir / "labels.zarr")
    recorder = Recorder()
    quickstart(workdir, CONFIG, recorder)
    rerun = [name for name, reused in recorder.stages if not reused]
    assert rerun == ["label", "storage", "quality", "fuse", "train_student", "evaluate_student"]


def test_other_settings_in_the_same_workdir_are_refused(workdir):
    with pytest.raises(ValueError, match="teacher_iters: 2 -> 3"):
        quickstart(workdir, QuickstartConfig(**{**CONFIG.to_dict(), "teacher_iters": 3}))


def test_results_compare_student_with_teacher_and_hold_learning_curves(workdir):
    results = json.loads((workdir / RESULTS).read_text())
    assert results["student_vs_teacher_miou"] == pytest.approx(results["student"]["miou"] - results["teacher"]["miou"])
    assert [it for it, _ in results["learning_curves"]["teacher"]] == [1, 2]
    assert results["student"]["from_teacher"] is True


def test_the_student_draws_three_quarters_of_its_samples_from_the_fine_labels(workdir):
    trained = load_checkpoint(workdir / "student" / FINAL_MODEL).metadata["training"]
    assert trained["fine_fraction"] == QuickstartConfig().student_fine_fraction == 0.75
    assert load_checkpoint(workdir / "teacher" / FINAL_MODEL).metadata["training"]["fine_fraction"] is None
