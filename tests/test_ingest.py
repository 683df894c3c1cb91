"""Importing PNG label sets into the store: train ids stored, bad label files recorded, reruns skip."""

from pathlib import Path

import numpy as np
import pytest

from autolabel.images import read_label, write_png
from autolabel.labels import to_train_ids
from autolabel.layout import list_samples
from autolabel.store import LabelStore
from autolabel.synth import SynthConfig, generate
from pipelines.ingest import import_labels


@pytest.fixture
def root(tmp_path) -> Path:
    generate(tmp_path / "root", tmp_path / "truth", SynthConfig(train=2, val=1, train_extra=2, height=64, width=128))
    return tmp_path / "root"


def test_imported_maps_are_the_train_ids_of_the_pngs(root, tmp_path):
    summary = import_labels(root, "train_extra", "gtCoarse", str(tmp_path / "s.zarr"))
    store = LabelStore.open(summary.store)
    samples = list_samples(root, "train_extra", "gtCoarse")
    assert (summary.written, summary.failed) == (len(samples), {})
    for sample in samples:
        np.testing.assert_array_equal(store.read(sample.stem), to_train_ids(read_label(sample.label)))


def test_label_of_another_size_than_its_image_is_recorded_failed(root, tmp_path):
    sample = list_samples(root, "train_extra", "gtCoarse")[0]
    write_png(sample.label, np.zeros((32, 64), np.uint8))
    summary = import_labels(root, "train_extra", "gtCoarse", str(tmp_path / "s.zarr"))
    assert list(summary.failed) == [sample.stem]
    assert "64x32 but its image is 128x64" in summary.failed[sample.stem]
    assert LabelStore.open(summary.store).failed_ids() == {sample.stem}


def test_rerun_skips_images_already_stored(root, tmp_path):
    out = str(tmp_path / "s.zarr")
    import_labels(root, "train_extra", "gtCoarse", out)
    again = import_labels(root, "train_extra", "gtCoarse", out)
    assert (again.written, again.skipped) == (0, 2)


def test_overwrite_resumes_a_store_imported_from_the_same_source(root, tmp_path):
    out = str(tmp_path / "s.zarr")
    first = import_labels(root, "train", "gtCoarse", out)
    again = import_labels(root, "train", "gtCoarse", out, overwrite=True)
    assert (again.written, again.skipped) == (0, first.written)


def test_overwrite_replaces_a_store_imported_from_another_source(root, tmp_path):
    out = str(tmp_path / "s.zarr")
    import_labels(root, "train", "gtCoarse", out)
    replaced = import_labels(root, "train", "gtFine", out, overwrite=True)
    assert replaced.written == len(list_samples(root, "train", "gtFine"))
    assert LabelStore.open(out).provenance.checkpoint_sha256 == "import:gtFine"
