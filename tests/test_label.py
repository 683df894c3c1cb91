"""The Ray labelling pipeline, on a real local Ray with the tiny teacher and small images."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from autolabel.errors import ConfigError, StoreError
from autolabel.images import encode_png, read_image
from autolabel.labels import IGNORE
from autolabel.layout import list_samples
from autolabel.store import LabelStore, Provenance, ProvenanceMismatchError, kept_confidence
from autolabel.threshold import CONFIDENCE_LEVELS, threshold_probs
from autolabel.transforms import normalize_batch
from models.predict import predict
from models.teacher import load_model
from pipelines.label import Labeler, group_by_shape, label
from pipelines.ray_session import node_cpus
from pipelines.rethreshold import RethresholdError, rethreshold
from tests.conftest import EXTRA_STEMS, image_path
from tests.runs import label_config

TIMESTAMPS = ("started_at", "finished_at")

KILLABLE_RUN = """
import os, sys, time
from pathlib import Path
from pipelines.label import Labeler, label
from tests.runs import label_config

root, checkpoint, out, address, pids = sys.argv[1:]

class SlowLabeler(Labeler):
    def __call__(self, batch):
        Path(pids, str(os.getpid())).touch()
        time.sleep(0.3)
        return super().__call__(batch)

label(label_config(root, checkpoint, out, threshold=0.0, keep_confidence=True, address=address), labeler=SlowLabeler)
"""


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout} s")
        time.sleep(0.05)


def completed_count(url: str) -> int:
    try:
        return len(LabelStore.open(url).completed_ids())
    except StoreError:
        return 0


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def manifest_rows(url: str) -> list[dict]:
    table = LabelStore.open(url).manifest().drop_columns(list(TIMESTAMPS))
    return table.sort_by("image_id").to_pylist()


def assert_same_labels(url: str, reference: str) -> None:
    store, ref = LabelStore.open(url), LabelStore.open(reference)
    assert store.completed_ids() == ref.completed_ids()
    for image_id in ref.completed_ids():
        np.testing.assert_array_equal(store.read(image_id), ref.read(image_id), err_msg=image_id)


def test_labels_equal_in_process_predict_and_threshold(labelled_store, dataset_root, teacher_checkpoint):
    model, _ = load_model(teacher_checkpoint)
    store = LabelStore.open(labelled_store)
    for sample in list_samples(dataset_root, "train_extra"):
        image = torch.from_numpy(read_image(sample.image))[None]  # (1, H, W, 3)
        probs = predict(model, normalize_batch(image), scales=(1.0,), pointrend=True)
        labels, confidence = threshold_probs(probs, 0.0, with_confidence=True)
        np.testing.assert_array_equal(store.read(sample.stem), labels[0].numpy(), err_msg=sample.stem)
        kept = kept_confidence(labels[0].numpy(), confidence[0].numpy(), 0.0)
        np.testing.assert_array_equal(store.read_confidence(sample.stem), kept)  # threshold 0: every pixel labelled


def test_rerun_with_same_settings_skips_stored_images(labelled_store, dataset_root, teacher_checkpoint):
    summary = label(label_config(dataset_root, teacher_checkpoint, labelled_store, threshold=0.0, keep_confidence=True))
    assert (summary.total, summary.done, summary.skipped, summary.failed) == (len(EXTRA_STEMS), 0, len(EXTRA_STEMS), {})
    assert summary.labelled_fraction == 1.0 and summary.bytes_per_image > 0


def test_overwrite_resumes_a_store_made_with_the_same_settings(labelled_store, dataset_root, teacher_checkpoint):
    summary = label(label_config(dataset_root, teacher_checkpoint, labelled_store, threshold=0.0, keep_confidence=True,
                    overwrite=True))
    assert (summary.done, summary.skipped) == (0, len(EXTRA_STEMS))


def test_relative_paths_mean_the_same_to_workers_in_other_directories(
    labelled_store, ray_address, dataset_root, teacher_checkpoint, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    summary = label(label_config(os.path.relpath(dataset_root), os.path.relpath(teacher_checkpoint), "labels.zarr",
                    threshold=0.0, keep_confidence=True, workers=2))
    assert (summary.done, summary.failed) == (len(EXTRA_STEMS), {})
    assert summary.store == str(tmp_path / "labels.zarr")
    assert_same_labels(summary.store, labelled_store)


def test_torch_threads_are_sized_by_the_smallest_live_node_with_cpus():
    nodes = [
        {"Alive": True, "Resources": {"CPU": 16.0, "GPU": 1.0}},
        {"Alive": True, "Resources": {"CPU": 8.0}},
        {"Alive": True, "Resources": {}},  # a head node that runs no tasks
        {"Alive": False, "Resources": {"CPU": 2.0}},
    ]
    assert node_cpus(nodes) == 8
    assert node_cpus([]) == 1


def test_rerun_after_killed_driver_gives_the_uninterrupted_store(
    labelled_store, ray_address, dataset_root, teacher_checkpoint, tmp_path
):
    out, pids = str(tmp_path / "killed.zarr"), tmp_path / "actor_pids"
    pids.mkdir()
    args = [dataset_root, teacher_checkpoint, out, ray_address, pids]
    run = subprocess.Popen([sys.executable, "-c", KILLABLE_RUN, *map(str, args)], cwd=Path(__file__).parents[1])
    try:
        wait_for(lambda: completed_count(out) >= 2 or run.poll() is not None, what="two stored images")
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert completed_count(out) < len(EXTRA_STEMS), "the run finished before it was killed"
    for pid in (int(p.name) for p in pids.iterdir()):  # its actors die with their driver
        wait_for(lambda: process_gone(pid), what=f"actor {pid} gone")

    summary = label(label_config(dataset_root, teacher_checkpoint, out, threshold=0.0, keep_confidence=True))

    assert summary.skipped >= 2 and summary.done == len(EXTRA_STEMS) - summary.skipped
    assert_same_labels(out, labelled_store)
    assert manifest_rows(out) == manifest_rows(labelled_store)


def test_unreadable_images_are_recorded_failed_and_only_they_are_retried(broken_root, teacher_checkpoint, tmp_path):
    out, calls = str(tmp_path / "labels.zarr"), []
    first = label(label_config(broken_root, teacher_checkpoint, out, threshold=0.0), progress=lambda *c: calls.append(c))
    assert set(first.failed) == {"zurich_000000_000019", "zurich_000001_000019"}
    assert "empty" in first.failed["zurich_000000_000019"]
    assert "truncated" in first.failed["zurich_000001_000019"]
    assert first.done == len(EXTRA_STEMS) and calls[-1] == (len(EXTRA_STEMS), 2, len(EXTRA_STEMS) + 2)
    assert LabelStore.open(out).failed_ids() == set(first.failed)

    image_path(broken_root, "train_extra", "zurich_000000_000019").write_bytes(
        encode_png(np.zeros((64, 128, 3), np.uint8))
    )
    second = label(label_config(broken_root, teacher_checkpoint, out, threshold=0.0))
    assert (second.done, second.skipped, set(second.failed)) == (1, len(EXTRA_STEMS), {"zurich_000001_000019"})


def test_other_settings_are_refused_by_an_existing_store(labelled_store, dataset_root, teacher_checkpoint):
    with pytest.raises(ProvenanceMismatchError, match="threshold"):
        label(label_config(dataset_root, teacher_checkpoint, labelled_store, threshold=0.5, keep_confidence=True))


def test_overwrite_replaces_a_store_made_with_other_settings(
    labelled_store, ray_address, dataset_root, teacher_checkpoint, tmp_path
):
    out = str(tmp_path / "labels.zarr")
    LabelStore.create(out, Provenance("0" * 64, (1.0,), 0.9, pointrend=False))
    summary = label(label_config(dataset_root, teacher_checkpoint, out, threshold=0.0, keep_confidence=True, overwrite=True,
                    workers=2, batch_size=2))  # batches mix the two image sizes
    assert (summary.done, summary.failed) == (len(EXTRA_STEMS), {})
    assert LabelStore.open(out).provenance == LabelStore.open(labelled_store).provenance


def test_two_concurrent_jobs_fill_their_own_stores(labelled_store, ray_address, dataset_root, teacher_checkpoint, tmp_path):
    outs = [str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr")]
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(label, label_config(dataset_root, teacher_checkpoint, out, threshold=0.0)) for out in outs]
        summaries = [job.result(timeout=120) for job in jobs]
    assert [s.done for s in summaries] == [len(EXTRA_STEMS)] * 2
    for out in outs:
        assert_same_labels(out, labelled_store)


def test_a_dead_actor_is_replaced_and_the_job_completes(ray_address, dataset_root, teacher_checkpoint, tmp_path):
    marker = tmp_path / "crashed"

    class CrashOnce(Labeler):
        def __call__(self, batch):
            if not marker.exists():
                marker.touch()
                os._exit(1)
            return super().__call__(batch)

    out = str(tmp_path / "labels.zarr")
    summary = label(label_config(dataset_root, teacher_checkpoint, out, threshold=0.0), labeler=CrashOnce)
    assert marker.exists()
    assert (summary.done, summary.failed) == (len(EXTRA_STEMS), {})
    assert LabelStore.open(out).completed_ids() == set(EXTRA_STEMS)


def test_rethreshold_keeps_only_pixels_above_the_new_threshold(labelled_store, tmp_path):
    source = LabelStore.open(labelled_store)
    confidences = {i: source.read_confidence(i) for i in EXTRA_STEMS}
    kept_steps = np.unique(np.concatenate([c.ravel() for c in confidences.values()]))
    step = int(kept_steps[kept_steps > 0].min())  # the lowest threshold the kept confidence answers exactly
    threshold = step / CONFIDENCE_LEVELS
    summary = rethreshold(labelled_store, str(tmp_path / "high.zarr"), threshold=threshold)
    target = LabelStore.open(tmp_path / "high.zarr")
    assert summary.done == len(EXTRA_STEMS) and target.provenance.threshold == threshold
    for image_id, confidence in confidences.items():
        expected = np.where(confidence >= step, source.read(image_id), IGNORE)
        np.testing.assert_array_equal(target.read(image_id), expected, err_msg=image_id)
    assert 0.0 < summary.labelled_fraction < 1.0


def test_rethreshold_refuses_a_lower_threshold(labelled_store, tmp_path):
    rethreshold(labelled_store, str(tmp_path / "high.zarr"), threshold=0.1)
    with pytest.raises(RethresholdError, match="below the store's 0.1"):
        rethreshold(str(tmp_path / "high.zarr"), str(tmp_path / "low.zarr"), threshold=0.05)


def test_rethreshold_refuses_a_store_without_confidence(tmp_path):
    LabelStore.create(tmp_path / "plain.zarr", Provenance("0" * 64, (1.0,), 0.5, pointrend=True))
    with pytest.raises(RethresholdError, match="keep_confidence"):
        rethreshold(str(tmp_path / "plain.zarr"), str(tmp_path / "high.zarr"), threshold=0.9)


def test_group_by_shape_batches_same_sizes_and_leaves_out_failures():
    images = [np.zeros((4, 8, 3)), np.zeros((6, 8, 3)), np.zeros((0, 0, 3)), np.zeros((4, 8, 3))]
    groups = group_by_shape(images, ["", "", "file is empty", ""])
    assert groups == {(4, 8, 3): [0, 3], (6, 8, 3): [1]}


def test_gpus_the_cluster_lacks_are_refused_instead_of_waited_for(ray_address, dataset_root, teacher_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="more GPUs than the Ray cluster has"):
        label(label_config(dataset_root, teacher_checkpoint, tmp_path / "gpu.zarr", gpus_per_worker=1))
