"""Exporting a label store as Cityscapes-style PNG label maps."""

from __future__ import annotations

import numpy as np
import pytest

from autolabel.images import read_label
from autolabel.labels import IGNORE, LABEL_ID_BY_NAME, TRAIN_ID_BY_NAME
from autolabel.store import LabelStore, Provenance
from pipelines.export import export

STEMS = ("aachen_000000_000019", "bad-honnef_000001_000019")


@pytest.fixture
def store_url(tmp_path) -> str:
    """Two 4x8 label maps: road on top, car below, an ignored corner; one failed image."""
    store = LabelStore.create(tmp_path / "labels.zarr", Provenance("0" * 64, (1.0,), 0.5, pointrend=True))
    labels = np.full((4, 8), TRAIN_ID_BY_NAME["road"], np.uint8)
    labels[2:] = TRAIN_ID_BY_NAME["car"]
    labels[0, 0] = IGNORE
    for stem in STEMS:
        store.write(stem, labels, source=f"{stem}.png")
    store.write_failure("aachen_000002_000019", "aachen_000002_000019.png", "file is empty")
    return store.url


def test_export_names_pngs_by_city_and_stem(store_url, tmp_path):
    count = export(store_url, tmp_path / "out", "trainIds")
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert count == 2
    assert written == [
        "aachen/aachen_000000_000019_trainIds.png",
        "bad-honnef/bad-honnef_000001_000019_trainIds.png",
    ]


def test_train_ids_export_is_the_stored_labels(store_url, tmp_path):
    export(store_url, tmp_path / "out", "trainIds")
    exported = read_label(tmp_path / "out" / "aachen" / "aachen_000000_000019_trainIds.png")
    np.testing.assert_array_equal(exported, LabelStore.open(store_url).read("aachen_000000_000019"))


def test_label_ids_export_maps_classes_and_ignore_to_unlabeled(store_url, tmp_path):
    export(store_url, tmp_path / "out", "labelIds")
    exported = read_label(tmp_path / "out" / "aachen" / "aachen_000000_000019_labelIds.png")
    assert exported[0, 0] == LABEL_ID_BY_NAME["unlabeled"] == 0
    assert exported[1, 1] == LABEL_ID_BY_NAME["road"] and exported[3, 7] == LABEL_ID_BY_NAME["car"]


def test_unknown_format_is_refused(store_url, tmp_path):
    with pytest.raises(ValueError, match="colour"):
        export(store_url, tmp_path / "out", "colour")
