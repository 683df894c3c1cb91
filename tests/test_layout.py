from pathlib import Path

import numpy as np
import pytest

from autolabel.errors import DatasetError
from autolabel.images import write_png
from autolabel.layout import city_of, label_path, label_sources, list_samples, list_splits, stem_parts, validate_stem


def _image(root: Path, split: str, stem: str) -> Path:
    path = root / "leftImg8bit" / split / stem.split("_")[0] / f"{stem}_leftImg8bit.png"
    write_png(path, np.zeros((4, 8, 3), np.uint8))
    return path


def _label(root: Path, split: str, stem: str, source: str) -> Path:
    path = label_path(root, split, stem, source)
    write_png(path, np.full((4, 8), 7, np.uint8))
    return path


def test_samples_pair_images_with_their_labels_sorted_by_stem(tmp_path):
    for stem in ("bonn_000001_000019", "aachen_000000_000019"):
        _image(tmp_path, "train", stem)
        _label(tmp_path, "train", stem, "gtFine")
    samples = list_samples(tmp_path, "train", "gtFine")
    assert [s.stem for s in samples] == ["aachen_000000_000019", "bonn_000001_000019"]
    assert samples[0].city == "aachen"
    assert samples[0].label.name == "aachen_000000_000019_gtFine_labelIds.png"


def test_missing_root_is_named_in_error(tmp_path):
    with pytest.raises(DatasetError, match="nowhere"):
        list_samples(tmp_path / "nowhere", "train")


def test_missing_split_lists_existing_splits(tmp_path):
    _image(tmp_path, "train", "aachen_000000_000019")
    with pytest.raises(DatasetError, match=r"'val' does not exist.*train"):
        list_samples(tmp_path, "val")


def test_empty_split_is_an_error(tmp_path):
    (tmp_path / "leftImg8bit" / "val" / "lindau").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        list_samples(tmp_path, "val")


def test_image_without_required_label_names_the_image(tmp_path):
    image = _image(tmp_path, "train", "aachen_000000_000019")
    with pytest.raises(DatasetError, match=str(image)):
        list_samples(tmp_path, "train", "gtCoarse")


def test_optional_labels_leave_missing_ones_none(tmp_path):
    _image(tmp_path, "train_extra", "erlangen_000000_000019")
    assert list_samples(tmp_path, "train_extra", "gtCoarse", require_labels=False)[0].label is None


def test_splits_and_label_sources_are_discovered(tmp_path):
    _image(tmp_path, "train", "aachen_000000_000019")
    _label(tmp_path, "train", "aachen_000000_000019", "gtCoarse")
    _image(tmp_path, "val", "lindau_000000_000019")
    assert list_splits(tmp_path) == ["train", "val"]
    assert label_sources(tmp_path, "train") == ["gtCoarse"]


def test_listing_never_writes_into_the_root(tmp_path):
    _image(tmp_path, "train", "aachen_000000_000019")
    before = sorted(tmp_path.rglob("*"))
    list_samples(tmp_path, "train", "gtFine", require_labels=False)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("bad", ["../etc_000000_000000", "aachen_1_2", "a/b_000000_000000", ""])
def test_stems_that_are_not_cityscapes_ids_are_refused(bad):
    with pytest.raises(DatasetError):
        validate_stem(bad)


def test_city_of_keeps_underscores_in_the_city_name():
    assert city_of("bad_homburg_000012_000019") == "bad_homburg"
    assert stem_parts("bad_homburg_000012_000019") == ("bad_homburg", 12, 19)


def test_label_path_of_a_city_with_underscores_is_in_that_citys_folder(tmp_path):
    path = label_path(tmp_path, "train", "bad_homburg_000012_000019", "gtFine")
    assert path.parent.name == "bad_homburg"


def test_the_same_stem_in_two_city_folders_is_refused_naming_both(tmp_path):
    for city in ("aachen", "bremen"):
        path = tmp_path / "leftImg8bit" / "train" / city / "aachen_000000_000001_leftImg8bit.png"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    with pytest.raises(DatasetError, match=r"bremen/aachen_000000_000001_leftImg8bit.png: the same image name as .*aachen/aachen"):
        list_samples(tmp_path, "train")
