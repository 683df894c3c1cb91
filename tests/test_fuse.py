"""The fused sample table and the student's dataset over it: rows per source, what is left out, mixing and sampling."""

import os
from pathlib import Path

import numpy as np
import pytest

from autolabel.errors import DatasetError
from autolabel.fused import FINE, LabelLoader, fused_dataset, rare_classes, read_samples
from autolabel.images import read_label, write_png
from autolabel.labels import to_train_ids
from autolabel.layout import list_samples
from autolabel.store import LabelStore
from autolabel.synth import SynthConfig, generate
from autolabel.transforms import AugmentConfig
from pipelines.fuse import fuse
from pipelines.ingest import import_labels

AUGMENT = AugmentConfig(crop=(32, 64), scale=(1.0, 1.0), flip=False, jitter=0.0)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("fuse")
    generate(base / "root", base / "truth", SynthConfig(train=3, val=1, train_extra=4, height=64, width=128))
    return base / "root"


@pytest.fixture
def store(root, tmp_path, monkeypatch) -> LabelStore:
    """train_extra's gtCoarse as a label store, standing in for auto-labels; the first image failed."""
    store = LabelStore.open(import_labels(root, "train_extra", "gtCoarse", str(tmp_path / "auto.zarr")).store, "a")
    first = list_samples(root, "train_extra")[0]
    store.write_failure(first.stem, str(first.image), "unreadable")
    return store


def sources(samples: Path) -> list[str]:
    return read_samples(samples).column("source").to_pylist()


def test_rows_per_source_are_fine_auto_and_hand_made_coarse(root, store, tmp_path):
    summary = fuse(root, tmp_path / "f.parquet", labels=store.url, coarse_gt=True)
    assert summary.rows == {"fine": 3, "auto_coarse": 3, "gt_coarse": 4}
    assert sorted(sources(tmp_path / "f.parquet")) == ["auto_coarse"] * 3 + ["fine"] * 3 + ["gt_coarse"] * 4


def test_failed_auto_labels_are_left_out_and_listed(root, store, tmp_path):
    summary = fuse(root, tmp_path / "f.parquet", labels=store.url)
    failed = list_samples(root, "train_extra")[0].stem
    assert summary.failed_auto == [failed]
    assert failed not in read_samples(tmp_path / "f.parquet").column("label_key").to_pylist()


def test_images_of_the_coarse_split_missing_from_the_store_are_listed(root, store, tmp_path):
    *labelled, missing = list_samples(root, "train_extra", "gtCoarse")
    partial = LabelStore.create(tmp_path / "partial.zarr", store.provenance)  # a labelling run not finished
    for sample in labelled:
        partial.write(sample.stem, store.read(sample.stem) if sample.stem in store.completed_ids()
                      else to_train_ids(read_label(sample.label)), source=str(sample.image))
    summary = fuse(root, tmp_path / "f.parquet", labels=partial.url)
    assert summary.missing_auto == [missing.stem]
    assert summary.rows["auto_coarse"] == 3


def test_auto_rows_carry_the_class_counts_and_centroids_recorded_with_each_image(root, store, tmp_path, monkeypatch):
    monkeypatch.setattr(LabelStore, "read", lambda *a: pytest.fail("fuse read a label map"))
    fuse(root, tmp_path / "f.parquet", labels=store.url)
    rows = [r for r in read_samples(tmp_path / "f.parquet").to_pylist() if r["source"] == "auto_coarse"]
    for row in rows:
        record = store.record(row["label_key"])
        assert row["class_pixels"] == list(record.class_pixels)
        assert {c["cls"]: (c["y"], c["x"]) for c in row["centroids"]} == record.centroid_map


def test_paths_are_absolute_when_given_relative(root, store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fuse(Path(os.path.relpath(root)), Path("f.parquet"), labels="auto.zarr")
    table = read_samples(tmp_path / "f.parquet").to_pylist()
    for row in table:
        assert Path(row["image"]).is_absolute() and Path(row["image"]).is_file()
        assert Path(row["label_png"] or row["label_store"]).is_absolute()


def test_auto_rows_read_their_labels_straight_from_the_store(root, store, tmp_path):
    fuse(root, tmp_path / "f.parquet", labels=store.url)
    dataset = fused_dataset(tmp_path / "f.parquet", AUGMENT, class_uniform=0.0)
    auto = [item for item in dataset.items if item.source == "auto_coarse"]
    loader = LabelLoader()
    for item in auto:
        np.testing.assert_array_equal(loader(item), store.read(item.label_key))


def test_fusing_nothing_with_the_fine_labels_is_refused(root, tmp_path):
    with pytest.raises(ValueError, match="nothing to fuse"):
        fuse(root, tmp_path / "f.parquet")


def test_fine_fraction_fixes_the_share_of_fine_samples_per_epoch(root, store, tmp_path):
    fuse(root, tmp_path / "f.parquet", labels=store.url, coarse_gt=True)
    dataset = fused_dataset(tmp_path / "f.parquet", AUGMENT, class_uniform=0.5, fine_fraction=0.8)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        fine = sum(dataset.items[i].source == FINE for i, _ in dataset.plan)
        assert fine == round(0.8 * len(dataset.items))


def test_coarse_rare_only_centres_coarse_crops_on_rare_classes_only(root, store, tmp_path):
    fuse(root, tmp_path / "f.parquet", labels=store.url, coarse_gt=True)
    dataset = fused_dataset(tmp_path / "f.parquet", AUGMENT, class_uniform=1.0, coarse_rare_only=True)
    centred = 0
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index, centre in dataset.plan:
            if dataset.items[index].source != FINE and centre is not None:
                cls = next(c for c, yx in dataset.centroids[index].items() if tuple(yx) == tuple(centre))
                assert cls in dataset.rare
                centred += 1
    assert centred > 0


def test_rare_classes_are_those_under_half_the_uniform_share():
    counts = np.zeros((2, 19), np.int64)
    counts[0, :18] = 1000
    counts[1, 18] = 10
    assert rare_classes(counts) == [18]


def test_each_fine_label_file_is_decoded_once(root, store, tmp_path, monkeypatch):
    import pipelines.fuse as fuse_module

    reads = []
    real = fuse_module.read_label
    monkeypatch.setattr(fuse_module, "read_label", lambda path, *a, **k: reads.append(path) or real(path, *a, **k))
    fuse(root, tmp_path / "f.parquet", labels=store.url)
    assert sorted(reads) == sorted({*reads}) and len(reads) == len(list_samples(root, "train"))


def test_a_coarse_label_of_another_size_than_its_image_is_refused(root, tmp_path):
    sample = list_samples(root, "train_extra", "gtCoarse")[0]
    write_png(sample.label, np.zeros((8, 8), np.uint8))
    with pytest.raises(DatasetError, match="8x8 but its image is"):
        fuse(root, tmp_path / "f.parquet", coarse_gt=True)
