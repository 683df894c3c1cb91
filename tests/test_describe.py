"""Dataset summaries: counts, sizes, label kinds, and the files that stop a summary."""

from pathlib import Path

import pytest

from autolabel.describe import describe
from autolabel.images import ImageReadError
from autolabel.layout import IMAGE_DIR
from autolabel.synth import SynthConfig, generate


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("describe")
    generate(base / "root", base / "truth", SynthConfig(train=2, val=1, train_extra=1, height=64, width=128))
    return base / "root"


def test_splits_report_images_sizes_and_label_kinds(root):
    splits = describe(root)["splits"]
    assert {name: s["images"] for name, s in splits.items()} == {"train": 2, "val": 1, "train_extra": 1}
    assert splits["train"]["image_sizes"] == {"128x64": 2}
    assert sorted(splits["train"]["label_kinds"]) == ["gtCoarse", "gtFine"]
    assert sorted(splits["train_extra"]["label_kinds"]) == ["gtCoarse"]


def test_coarse_labels_leave_more_pixels_unlabelled_than_fine(root):
    kinds = describe(root)["splits"]["train"]["label_kinds"]
    assert kinds["gtCoarse"]["labelled_fraction"] < kinds["gtFine"]["labelled_fraction"]


def test_truncated_image_is_named_in_error(root, tmp_path):
    image = next((root / IMAGE_DIR / "val").rglob("*.png"))
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    try:
        with pytest.raises(ImageReadError, match=image.name):
            describe(root)
    finally:
        image.write_bytes(data)
