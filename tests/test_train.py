"""Training runs: learning, the run directory, resuming, config checks, fused sample tables, Ray Train workers."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import torch

from autolabel.errors import ConfigError, TrainingError
from autolabel.synth import SynthConfig, generate
from models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from models.teacher import TeacherConfig
from pipelines.evaluate import evaluate
from pipelines.fuse import fuse
from pipelines.ingest import import_labels
from pipelines.train import (
    CHECKPOINTS,
    FINAL_MODEL,
    METRICS_LOG,
    TrainConfig,
    check_finite,
    compute_threads,
    follow_metrics,
    latest_checkpoint,
    learning_curve,
    read_metrics,
    train,
)
from tests.runs import evaluate_config

IMAGE_SIZE = (64, 128)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A synthetic root: 2 train, 2 val, 3 train_extra images of 64x128."""
    base = tmp_path_factory.mktemp("train_data")
    generate(base / "root", base / "truth", SynthConfig(train=2, val=2, train_extra=3, height=64, width=128))
    return base / "root"


def quick_config(root: Path, run_dir: Path, **overrides) -> TrainConfig:
    """The tiny single-scale network on whole unaugmented images, one thread: about 0.1 s an iteration."""
    settings = dict(
        root=str(root), run_dir=str(run_dir), preset="tiny", iters=4, batch_size=2, crop=IMAGE_SIZE,
        scale=(1.0, 1.0), flip=False, jitter=0.0, class_uniform=0.0, use_mscale=False, use_pointrend=False,
        threads=1, log_every=1, checkpoint_every=2,
    )
    return TrainConfig(**{**settings, **overrides})


def logged_iterations(run_dir: Path) -> list[int]:
    return [row["iteration"] for row in map(json.loads, (run_dir / METRICS_LOG).read_text().splitlines()) if "loss" in row]


def logged_losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / METRICS_LOG).read_text().splitlines()]


def test_tiny_network_overfits_two_images(root, tmp_path):
    """200 iterations (about 15 s on a free core). Classes of under 50 pixels (terrain, truck, rider, signs)
    stay out of reach of a stride-4 tiny network at 64x128, which caps train mIoU near 0.55."""
    run_dir = tmp_path / "run"
    model = train(quick_config(root, run_dir, iters=200, lr=0.01, checkpoint_every=1000))
    losses = logged_losses(run_dir)
    start, end = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert end < 0.25 * start
    result = evaluate(evaluate_config(root, model, split="train", pointrend=False))
    assert result.pixel_accuracy > 0.9
    assert result.miou > 0.45


def test_run_dir_holds_model_checkpoints_and_logged_iterations(root, tmp_path):
    run_dir = tmp_path / "run"
    model = train(quick_config(root, run_dir, iters=4, log_every=2, checkpoint_every=2))
    assert model == run_dir / FINAL_MODEL and model.is_file()
    assert sorted(p.name for p in (run_dir / CHECKPOINTS).iterdir()) == ["iter_00000002.pt", "iter_00000004.pt"]
    assert logged_iterations(run_dir) == [2, 4]


def test_more_iterations_resume_from_the_last_checkpoint(root, tmp_path):
    run_dir = tmp_path / "run"
    train(quick_config(root, run_dir, iters=4))
    reported: list[int] = []
    train(quick_config(root, run_dir, iters=6), reporter=lambda report: reported.append(report.iteration))
    assert reported == [5, 6]
    assert logged_iterations(run_dir) == [1, 2, 3, 4, 5, 6]
    assert latest_checkpoint(run_dir).name == "iter_00000006.pt"
    assert load_checkpoint(run_dir / FINAL_MODEL).metadata["iterations"] == 6


def test_interrupted_run_resumes_without_logging_an_iteration_twice(root, tmp_path):
    run_dir = tmp_path / "run"
    config = quick_config(root, run_dir, iters=5, checkpoint_every=2)
    train(config)
    # As if killed after logging iteration 5 but before saving it: the last checkpoint is iteration 4.
    (run_dir / FINAL_MODEL).unlink()
    latest_checkpoint(run_dir).unlink()
    assert latest_checkpoint(run_dir).name == "iter_00000004.pt"
    reported: list[int] = []
    train(config, reporter=lambda report: reported.append(report.iteration))
    assert reported == [5]
    assert logged_iterations(run_dir) == [1, 2, 3, 4, 5]


def test_rerun_of_a_finished_run_trains_nothing_and_keeps_the_model(root, tmp_path):
    run_dir = tmp_path / "run"
    config = quick_config(root, run_dir, iters=2)
    model = train(config)
    before = (model.stat().st_mtime_ns, model.read_bytes(), (run_dir / METRICS_LOG).read_text())
    reported: list[int] = []
    assert train(config, reporter=lambda report: reported.append(report.iteration)) == model
    assert reported == []
    assert (model.stat().st_mtime_ns, model.read_bytes(), (run_dir / METRICS_LOG).read_text()) == before


def test_model_metadata_holds_training_config_and_iterations(root, tmp_path):
    config = quick_config(root, tmp_path / "run", iters=2, use_mscale=True, use_pointrend=True)
    ckpt = load_checkpoint(train(config))
    assert ckpt.metadata["iterations"] == 2
    assert TrainConfig(**ckpt.metadata["training"]) == config
    assert TeacherConfig.from_dict(ckpt.config) == config.model_config()
    assert ckpt.extra == {}


def test_batch_size_not_divisible_by_workers_is_rejected(root, tmp_path):
    with pytest.raises(ValueError, match="batch size 3 must be divisible by the 2 workers"):
        quick_config(root, tmp_path / "run", batch_size=3, workers=2)


def test_cuda_device_without_cuda_is_rejected(root, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device"):
        train(quick_config(root, tmp_path / "run", device="cuda"))
    assert not (tmp_path / "run").exists()


def test_training_on_a_fused_manifest(root, tmp_path, monkeypatch):
    store = import_labels(root, "train_extra", "gtCoarse", str(tmp_path / "auto.zarr")).store
    samples = tmp_path / "fused.parquet"
    fuse(root, samples, labels=store, coarse_gt=True)
    config = quick_config(root, tmp_path / "run", iters=3, samples=str(samples), class_uniform=0.5,
                          fine_fraction=0.5, coarse_rare_only=True)
    ckpt = load_checkpoint(train(config))
    assert ckpt.metadata["training"]["samples"] == str(samples)
    assert logged_iterations(tmp_path / "run") == [1, 2, 3]


def test_two_ray_train_workers_produce_the_model(root, tmp_path, monkeypatch, ray_address):
    """Relative paths on purpose: Ray workers run in other directories. About 30-45 s."""
    monkeypatch.chdir(tmp_path)
    config = quick_config(os.path.relpath(root, tmp_path), Path("run"), iters=2, workers=2)
    reported: list[int] = []
    model = train(config, reporter=lambda report: reported.append(report.iteration))
    assert reported == [1, 2]
    assert (tmp_path / "run" / FINAL_MODEL).is_file()
    assert model.resolve() == (tmp_path / "run" / FINAL_MODEL).resolve()
    assert logged_iterations(tmp_path / "run") == [1, 2]
    assert load_checkpoint(model).metadata["training"]["workers"] == 2


def test_following_the_metrics_log_reports_whole_rows_past_the_resumed_iteration(tmp_path):
    (tmp_path / CHECKPOINTS).mkdir()
    (tmp_path / CHECKPOINTS / "iter_00000002.pt").touch()
    rows = [{"iteration": i, "loss": 1.0 / i, "seg": 0.5, "lr": 0.01, "images_per_s": 4.0} for i in (1, 2, 3, 4)]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    (tmp_path / METRICS_LOG).write_text(text + '{"iteration": 5, "lo')  # a row still being written
    stop, reports = threading.Event(), []
    stop.set()
    follow_metrics(tmp_path, 10, reports.append, stop, poll_s=0.0)
    assert [(r.iteration, r.total, r.loss, r.terms) for r in reports] == [(3, 10, 1 / 3, {"seg": 0.5}),
                                                                          (4, 10, 0.25, {"seg": 0.5})]


def test_eval_every_logs_a_learning_curve_of_val_miou(root, tmp_path):
    run_dir = tmp_path / "run"
    train(quick_config(root, run_dir, iters=4, eval_every=2))
    curve = learning_curve(run_dir)
    assert [iteration for iteration, _ in curve] == [2, 4]
    assert all(0.0 <= miou <= 1.0 for _, miou in curve)


def test_sgd_is_a_choice_and_an_unknown_optimizer_is_refused(root, tmp_path):
    assert train(quick_config(root, tmp_path / "run", iters=2, optimizer="sgd", lr=0.01)).is_file()
    with pytest.raises(ValueError, match="optimizer"):
        quick_config(root, tmp_path / "other", optimizer="lamb")


def test_init_starts_from_the_checkpoints_weights(root, tmp_path):
    first = train(quick_config(root, tmp_path / "first", iters=2))
    second = tmp_path / "second"
    train(quick_config(root, second, iters=1, init=str(first), lr=1e-12, warmup_iters=0))
    before, after = load_checkpoint(first).state_dict, load_checkpoint(second / FINAL_MODEL).state_dict
    weights = [k for k, v in before.items() if v.is_floating_point() and "running" not in k]
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in weights)


def test_train_only_changes_the_named_part_alone_batchnorm_statistics_included(root, tmp_path):
    first = train(quick_config(root, tmp_path / "first", iters=2, use_pointrend=True))
    second = tmp_path / "second"
    train(quick_config(root, second, iters=2, init=str(first), use_pointrend=True, train_only=("point_head",),
                       warmup_iters=0))
    before, after = load_checkpoint(first).state_dict, load_checkpoint(second / FINAL_MODEL).state_dict
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("point_head"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("point_head"))


def test_train_only_needs_an_init_checkpoint(root, tmp_path):
    with pytest.raises(ConfigError, match="--init"):
        quick_config(root, tmp_path / "run", use_pointrend=True, train_only=("point_head",))


def test_train_only_a_head_the_run_switches_off_is_refused(root, tmp_path):
    with pytest.raises(ConfigError, match="point_head"):
        quick_config(root, tmp_path / "run", init="model.pt", use_pointrend=False, train_only=("point_head",))


def test_fitting_a_head_takes_it_off_the_checkpoints_untrained_list(root, tmp_path):
    first = train(quick_config(root, tmp_path / "first", iters=1, use_pointrend=True))
    ckpt = load_checkpoint(first)
    converted = tmp_path / "converted.pt"
    save_checkpoint(converted, Checkpoint(ckpt.config, ckpt.state_dict, {"untrained": ["attention", "point_head"]}))
    second = tmp_path / "second"
    train(quick_config(root, second, iters=1, init=str(converted), use_pointrend=True, train_only=("point_head",)))
    assert load_checkpoint(second / FINAL_MODEL).metadata["untrained"] == ["attention"]


def test_a_torn_last_line_of_the_metrics_log_does_not_block_resuming(root, tmp_path):
    run_dir = tmp_path / "run"
    train(quick_config(root, run_dir, iters=2))
    with open(run_dir / METRICS_LOG, "a") as log:
        log.write('{"iteration": 3, "lo')  # killed while writing a row
    train(quick_config(root, run_dir, iters=4))
    assert [row["iteration"] for row in read_metrics(run_dir)] == [1, 2, 3, 4]


def test_resuming_a_run_with_another_network_is_refused_naming_the_checkpoint(root, tmp_path):
    run_dir = tmp_path / "run"
    train(quick_config(root, run_dir, iters=2))
    with pytest.raises(ConfigError, match=r"iter_0+2.pt: this run was started with another network"):
        train(quick_config(root, run_dir, iters=4, use_pointrend=True))


def test_a_non_finite_weight_is_refused_before_anything_is_saved(tmp_path):
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(TrainingError, match="weight became non-finite at iteration 7"):
        check_finite(model, 7)


def test_class_balance_reaches_the_trained_network_and_its_checkpoint(root, tmp_path):
    model = train(quick_config(root, tmp_path / "run", iters=1, class_balance=0.25))
    assert TeacherConfig.from_dict(load_checkpoint(model).config).class_balance == 0.25


def test_a_student_trains_with_its_own_class_balance_not_its_teachers(root, tmp_path):
    teacher = train(quick_config(root, tmp_path / "teacher", iters=1, class_balance=0.0))
    student = train(quick_config(root, tmp_path / "student", iters=1, init=str(teacher), class_balance=0.5))
    assert TeacherConfig.from_dict(load_checkpoint(student).config).class_balance == 0.5


def test_a_negative_class_balance_is_refused(root, tmp_path):
    with pytest.raises(ConfigError, match="class_balance"):
        quick_config(root, tmp_path / "run", class_balance=-1.0)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_training_threads_follow_the_cores_the_process_may_use_not_the_machines():
    cores = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cores)})
        assert compute_threads(workers=1, loader_workers=0) == 1
    finally:
        os.sched_setaffinity(0, cores)
    assert compute_threads(workers=1, loader_workers=0) == len(cores)
