"""Two jobs on one new store at once: one settings document wins, a loser with other settings is refused in one line,
and two label jobs with the same settings label each image once between them."""

from __future__ import annotations

import multiprocessing
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from autolabel.errors import StoreError
from autolabel.store import LabelStore, Provenance, open_store
from pipelines.label import Labeler, label
from tests.conftest import EXTRA_STEMS
from tests.runs import label_config

TRIES = 8


def provenance(threshold: float) -> Provenance:
    return Provenance("0" * 64, (1.0,), threshold, pointrend=False)


def open_at_once(barrier, out: str, threshold: float) -> str:
    """What the label command does first (open_store), started together with the other process: the threshold of
    the store it got, or its error."""
    barrier.wait()
    try:
        return str(open_store(out, provenance(threshold)).provenance.threshold)
    except StoreError as exc:
        return f"error: {exc}"


def overwrite_at_once(barrier, out: str, threshold: float, image_id: str) -> str:
    """`--overwrite` with `threshold` (open_store(overwrite=True)) started together with the other process, then one
    image written: the threshold of the store it got."""
    barrier.wait()
    store = open_store(out, provenance(threshold), overwrite=True)
    store.write(image_id, np.zeros((8, 16), np.uint8), source=image_id)
    return str(store.provenance.threshold)


@pytest.fixture(scope="module")
def race():
    """race(out, thresholds): what open_at_once returned in each of two processes started together."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(2, mp_context=context) as pool:
        def run(out: str, thresholds: tuple[float, float], overwrite: bool = False) -> list[str]:
            barrier = manager.Barrier(2)
            if overwrite:
                jobs = [pool.submit(overwrite_at_once, barrier, out, t, f"city_000000_00000{i}")
                        for i, t in enumerate(thresholds)]
            else:
                jobs = [pool.submit(open_at_once, barrier, out, t) for t in thresholds]
            return [job.result(timeout=60) for job in jobs]

        yield run


def test_of_two_jobs_creating_a_store_with_other_settings_one_wins_and_the_other_is_refused(race, tmp_path):
    for attempt in range(TRIES):
        out = str(tmp_path / f"try{attempt}.zarr")
        results = race(out, (0.3, 0.6))
        winners = [r for r in results if not r.startswith("error")]
        assert len(winners) == 1, results
        stored = LabelStore.open(out).provenance.threshold
        assert winners == [str(stored)]
        loser = 0.6 if stored == 0.3 else 0.3
        (refusal,) = [r for r in results if r.startswith("error")]
        assert refusal == (f"error: {out}: made with other settings; threshold: store has {stored!r}, "
                           f"run has {loser!r}")


def test_two_jobs_creating_a_store_with_the_same_settings_both_open_it(race, tmp_path):
    for attempt in range(TRIES):
        out = str(tmp_path / f"try{attempt}.zarr")
        assert race(out, (0.3, 0.3)) == ["0.3", "0.3"]
        assert LabelStore.open(out).provenance == provenance(0.3)


def test_two_jobs_overwriting_a_store_at_once_replace_it_once_and_keep_each_others_images(race, tmp_path):
    for attempt in range(TRIES):
        out = str(tmp_path / f"try{attempt}.zarr")
        old = open_store(out, provenance(0.3))
        old.write("city_000000_000009", np.zeros((8, 16), np.uint8), source="old")
        assert race(out, (0.6, 0.6), overwrite=True) == ["0.6", "0.6"]
        store = LabelStore.open(out)
        assert store.provenance == provenance(0.6)
        assert store.completed_ids() == {"city_000000_000000", "city_000000_000001"}


def test_two_label_jobs_with_the_same_settings_label_each_image_once(ray_address, dataset_root, teacher_checkpoint,
                                                                      tmp_path):
    writes, out = tmp_path / "writes", str(tmp_path / "labels.zarr")
    writes.mkdir()

    class CountingLabeler(Labeler):
        def store_image(self, image_id, *args):
            (writes / f"{image_id}.{uuid.uuid4().hex}").touch()
            return super().store_image(image_id, *args)

    config = label_config(dataset_root, teacher_checkpoint, out, threshold=0.0)
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(label, config, labeler=CountingLabeler) for _ in range(2)]
        summaries = [job.result(timeout=180) for job in jobs]

    written = sorted(p.name.split(".")[0] for p in writes.iterdir())
    assert written == sorted(EXTRA_STEMS)
    assert sum(s.done for s in summaries) == len(EXTRA_STEMS)
    assert all(s.done + s.skipped + s.shared == len(EXTRA_STEMS) and not s.failed for s in summaries)
    store = LabelStore.open(out)
    assert sorted(store.manifest()["image_id"].to_pylist()) == sorted(EXTRA_STEMS)
    assert store.completed_ids() == set(EXTRA_STEMS)
    assert not list(Path(out, "claims").glob("*")) and not Path(out, "manifest.lock").exists()
