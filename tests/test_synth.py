import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as cs_labels
from cityscapesscripts.preparation.json2labelImg import json2labelImg

from autolabel.errors import ConfigError, DatasetError
from autolabel.images import read_image, read_label
from autolabel.labels import LABEL_ID_BY_NAME, NUM_CLASSES, TRAIN_ID_BY_NAME, to_train_ids
from autolabel.layout import label_path, list_samples
from autolabel.synth import CITIES, SynthConfig, generate, render_sample

TINY = SynthConfig(train=3, val=2, train_extra=3, height=64, width=128, cities=2)
SPLIT_SOURCES = {"train": ("gtFine", "gtCoarse"), "val": ("gtFine", "gtCoarse"), "train_extra": ("gtCoarse",)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("synth")
    generate(base / "data", base / "truth", TINY)
    return base / "data", base / "truth"


def _samples(config: SynthConfig, split: str, n: int):
    return [render_sample(config, split, i) for i in range(n)]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_split_and_label_source_is_read_by_list_samples(dataset):
    root, _ = dataset
    for split, sources in SPLIT_SOURCES.items():
        for source in sources:
            samples = list_samples(root, split, source)
            assert len(samples) == TINY.count(split)
            assert {s.city for s in samples} == set(CITIES[split][: TINY.cities])


def test_file_names_follow_cityscapes(dataset):
    root, _ = dataset
    stem = "aachen_000000_000019"
    expected = [
        f"leftImg8bit/train/aachen/{stem}_leftImg8bit.png",
        f"gtFine/train/aachen/{stem}_gtFine_labelIds.png",
        f"gtFine/train/aachen/{stem}_gtFine_color.png",
        f"gtFine/train/aachen/{stem}_gtFine_polygons.json",
        f"gtCoarse/train/aachen/{stem}_gtCoarse_labelIds.png",
        f"gtCoarse/train/aachen/{stem}_gtCoarse_polygons.json",
        "leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png",
        "gtCoarse/train_extra/augsburg/augsburg_000000_000019_gtCoarse_labelIds.png",
    ]
    for name in expected:
        assert (root / name).is_file(), name
    image = read_image(root / expected[0])
    assert image.shape == (TINY.height, TINY.width, 3)
    assert read_label(root / expected[1], image.shape[:2]).shape == image.shape[:2]


def test_train_extra_fine_truth_is_only_in_the_truth_root(dataset):
    root, truth = dataset
    for sample in list_samples(root, "train_extra"):
        assert not label_path(root, "train_extra", sample.stem, "gtFine").exists()
        assert label_path(truth, "train_extra", sample.stem, "gtFine").is_file()
    assert not (root / "gtFine" / "train_extra").exists()
    assert not (truth / "leftImg8bit").exists()


def test_label_pngs_hold_only_cityscapes_label_ids(dataset):
    root, truth = dataset
    valid = {lab.id for lab in cs_labels if lab.id >= 0}
    labels = list(root.rglob("*_labelIds.png")) + list(truth.rglob("*_labelIds.png"))
    assert len(labels) == 2 * (TINY.train + TINY.val) + 2 * TINY.train_extra
    for path in labels:
        assert set(np.unique(read_label(path)).tolist()) <= valid, path


def test_polygons_json_rasterises_to_the_label_png(dataset, tmp_path):
    root, _ = dataset
    jsons = sorted(root.rglob("*_polygons.json"))
    assert len(jsons) == 2 * (TINY.train + TINY.val) + TINY.train_extra
    for path in jsons:
        doc = json.loads(path.read_text())
        assert (doc["imgHeight"], doc["imgWidth"]) == (TINY.height, TINY.width)
        assert all(obj["label"] in LABEL_ID_BY_NAME for obj in doc["objects"])
        out = tmp_path / "label.png"
        json2labelImg(str(path), str(out), "ids")
        png = Path(str(path).replace("_polygons.json", "_labelIds.png"))
        np.testing.assert_array_equal(read_label(out), read_label(png), err_msg=str(path))


def test_same_seed_writes_identical_bytes(tmp_path):
    config = SynthConfig(train=1, val=1, train_extra=1, height=64, width=128)
    generate(tmp_path / "a", tmp_path / "a_truth", config)
    generate(tmp_path / "b", tmp_path / "b_truth", config)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a_truth") == _files(tmp_path / "b_truth")


def test_different_seed_draws_different_images():
    a = render_sample(SynthConfig(height=64, width=128, seed=0), "train", 0)
    b = render_sample(SynthConfig(height=64, width=128, seed=1), "train", 0)
    assert not np.array_equal(a.image, b.image)
    assert not np.array_equal(a.fine_ids, b.fine_ids)


def test_an_image_does_not_depend_on_how_many_are_drawn():
    few = render_sample(SynthConfig(train=2, height=64, width=128), "train", 1)
    many = render_sample(SynthConfig(train=50, val=3, height=64, width=128), "train", 1)
    np.testing.assert_array_equal(few.image, many.image)
    np.testing.assert_array_equal(few.coarse_ids, many.coarse_ids)


def test_splits_draw_different_images():
    train, extra = render_sample(TINY, "train", 0), render_sample(TINY, "train_extra", 0)
    assert not np.array_equal(train.image, extra.image)


def test_coarse_leaves_at_least_30_percent_unlabelled():
    for sample in _samples(TINY, "train_extra", 8):
        assert np.mean(sample.coarse_ids == 0) >= 0.3


def test_labelled_coarse_pixels_agree_with_fine():
    for sample in _samples(TINY, "train", 8):
        labelled = sample.coarse_ids != 0
        assert labelled.mean() > 0.2
        assert np.mean(sample.coarse_ids[labelled] == sample.fine_ids[labelled]) >= 0.95


def test_coarse_skips_most_thin_structures():
    thin = [LABEL_ID_BY_NAME[n] for n in ("pole", "traffic light", "traffic sign")]
    samples = _samples(TINY, "train", 12)
    fine = sum(np.isin(s.fine_ids, thin).sum() for s in samples)
    coarse = sum(np.isin(s.coarse_ids, thin).sum() for s in samples)
    assert fine > 0
    assert coarse < 0.2 * fine


def test_thin_poles_mostly_vanish_at_half_resolution():
    pole = LABEL_ID_BY_NAME["pole"]
    full = half = images_with_poles = 0
    for sample in _samples(TINY, "train", 8):
        mask = (sample.fine_ids == pole).astype(np.float32)  # (H, W)
        halved = cv2.resize(mask, (TINY.width // 2, TINY.height // 2), interpolation=cv2.INTER_AREA)
        full += mask.sum()
        half += 4 * (halved > 0.5).sum()  # pixels a half-resolution label map still calls pole
        images_with_poles += mask.any()
    assert images_with_poles >= 6
    assert half < 0.5 * full


def test_road_and_sidewalk_share_texture_statistics():
    kernel = np.ones((3, 3), np.uint8)
    diffs = []
    for sample in _samples(TINY, "train", 16):
        gray = cv2.cvtColor(sample.image, cv2.COLOR_RGB2GRAY).astype(np.float64)
        road, walk = (cv2.erode((sample.fine_ids == LABEL_ID_BY_NAME[n]).astype(np.uint8), kernel).astype(bool)
                      for n in ("road", "sidewalk"))  # interiors: no blur across the region border
        if walk.sum() >= 20:
            diffs.append((gray[road].mean() - gray[walk].mean()) / gray[road].mean())
    diffs = np.array(diffs)
    assert len(diffs) >= 8
    assert abs(diffs.mean()) < 0.05  # no systematic brightness difference
    assert np.median(np.abs(diffs)) < 0.08  # and little in a typical image


def test_class_colours_change_from_image_to_image():
    road = LABEL_ID_BY_NAME["road"]
    means = np.array([s.image[s.fine_ids == road].mean(0) for s in _samples(TINY, "val", 8)])  # (8, 3)
    assert np.ptp(means, axis=0).max() > 40


def test_most_of_the_19_classes_occur():
    present = set()
    for sample in _samples(TINY, "train", 24):
        present |= set(np.unique(to_train_ids(sample.fine_ids)).tolist())
    present.discard(255)
    assert len(present) >= NUM_CLASSES - 2, sorted(set(TRAIN_ID_BY_NAME.values()) - present)


def test_draws_full_cityscapes_resolution():
    sample = render_sample(SynthConfig(height=1024, width=2048), "train", 0)
    assert sample.image.shape == (1024, 2048, 3)
    assert sample.fine_ids.shape == sample.coarse_ids.shape == (1024, 2048)


def test_refuses_a_non_empty_root(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match=re.escape(str(root))):
        generate(root, tmp_path / "truth", TINY)
    assert (root / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_the_generated_data(tmp_path):
    small = SynthConfig(train=1, val=1, train_extra=1, height=64, width=128)
    generate(tmp_path / "data", tmp_path / "truth", SynthConfig(train=2, val=1, train_extra=1, height=64, width=128))
    generate(tmp_path / "data", tmp_path / "truth", small, overwrite=True)
    assert len(list_samples(tmp_path / "data", "train", "gtFine")) == 1


def test_progress_reports_every_image(tmp_path):
    calls = []
    config = SynthConfig(train=1, val=1, train_extra=2, height=64, width=128)
    summary = generate(tmp_path / "data", tmp_path / "truth", config, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert dict(summary.images) == {"train": 1, "val": 1, "train_extra": 2}


def test_refuses_a_file_where_the_root_should_be(tmp_path):
    root = tmp_path / "data"
    root.write_text("mine")
    with pytest.raises(DatasetError, match=re.escape(str(root))):
        generate(root, tmp_path / "truth", TINY)


def test_refuses_the_dataset_root_as_the_truth_root(tmp_path):
    with pytest.raises(ConfigError, match="truth root must differ"):
        generate(tmp_path / "data", tmp_path / "data", TINY)


def test_images_smaller_than_64x128_are_refused():
    with pytest.raises(ConfigError, match="32x64"):
        SynthConfig(height=32, width=64)


@pytest.mark.parametrize("setting", [{"train": -1}, {"cities": 0}, {"seed": -1}, {"coarse_min_unlabelled": 1.0}])
def test_settings_out_of_range_are_config_errors(setting):
    with pytest.raises(ConfigError, match=next(iter(setting))):
        SynthConfig(**setting)
