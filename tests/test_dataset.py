import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import autolabel.dataset as dataset_module
from autolabel.dataset import (
    SegmentationDataset,
    cityscapes_dataset,
    class_centroids,
    class_uniform_plan,
    label_file_centroids,
)
from autolabel.errors import DatasetError
from autolabel.images import write_png
from autolabel.labels import IGNORE, LABEL_ID_BY_NAME, TRAIN_ID_BY_NAME, to_train_ids
from autolabel.layout import label_path, list_samples
from autolabel.transforms import AugmentConfig, eval_transform, train_transform

H, W = 32, 64
CITY = "aachen"
CLASSES = ("road", "car", "person", "sky")


def _label_ids(index: int) -> np.ndarray:
    """Road at the bottom, sky at the top, a car and (in odd images) a person."""
    label = np.zeros((H, W), np.uint8)
    label[:8] = LABEL_ID_BY_NAME["sky"]
    label[20:] = LABEL_ID_BY_NAME["road"]
    label[12:20, 4 + 4 * index : 20 + 4 * index] = LABEL_ID_BY_NAME["car"]
    if index % 2:
        label[10:18, 50:54] = LABEL_ID_BY_NAME["person"]
    return label


def _write_dataset(root: Path, n: int = 4, split: str = "train") -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        stem = f"{CITY}_{i:06d}_000019"
        image = rng.integers(0, 256, (H, W, 3), np.uint8)
        write_png(root / "leftImg8bit" / split / CITY / f"{stem}_leftImg8bit.png", image)
        write_png(label_path(root, split, stem, "gtFine"), _label_ids(i))
    return root


def _class_uniform(root: Path, cache_dir: Path, fraction: float = 0.5, seed: int = 0, **augment):
    augment = AugmentConfig(**{"crop": (16, 16), **augment})
    return cityscapes_dataset(
        root, "train", augment=augment, class_uniform=fraction, cache_file=cache_dir / "centroids.parquet", seed=seed
    )


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return _write_dataset(tmp_path / "cityscapes")


def test_class_centroid_of_a_one_pixel_map_is_that_pixel():
    assert class_centroids(np.full((1, 1), 7, np.uint8)) == {7: (0, 0)}


def test_class_centroids_are_centres_of_mass():
    label = np.full((20, 30), IGNORE, np.uint8)
    label[2:7, 10:21] = 3  # centre (4, 15)
    label[10:19, 0:3] = 18  # centre (14, 1)
    assert class_centroids(label) == {3: (4, 15), 18: (14, 1)}


def test_centroid_of_a_non_convex_class_lies_on_the_class():
    label = np.zeros((21, 21), np.uint8)
    label[2:19, 2:19] = 5
    label[5:16, 5:16] = 0  # a square ring of class 5: its centre of mass (10, 10) is a hole
    y, x = class_centroids(label)[5]
    assert label[y, x] == 5
    ring = np.argwhere(label == 5)
    nearest = ((ring - 10) ** 2).sum(axis=1).min()
    assert (y - 10) ** 2 + (x - 10) ** 2 == nearest


def test_centroids_off_their_class_are_the_nearest_class_pixel_first_in_row_order():
    rng = np.random.default_rng(0)
    for _ in range(50):  # sparse classes: centres of mass in holes, nearest pixels far away or tied
        label = rng.choice(np.array([0, 3, 7, IGNORE], np.uint8), size=(40, 90), p=[0.01, 0.005, 0.02, 0.965])
        for c, (y, x) in class_centroids(label).items():
            ys, xs = np.nonzero(label == c)
            my, mx = ys.mean(), xs.mean()
            if label[int(round(my)), int(round(mx))] != c:
                k = int(np.argmin((ys - my) ** 2 + (xs - mx) ** 2))
                assert (y, x) == (ys[k], xs[k])


def test_class_centroids_ignore_ids_beyond_num_classes():
    label = np.full((4, 4), 19, np.uint8)
    label[0, 0] = 0
    assert class_centroids(label, num_classes=19) == {0: (0, 0)}


def test_label_file_centroids_match_the_train_id_maps(root, tmp_path):
    samples = list_samples(root, "train", "gtFine")
    centroids = label_file_centroids([s.label for s in samples], tmp_path / "cache" / "centroids.parquet")
    assert centroids == [class_centroids(to_train_ids(_label_ids(i))) for i in range(len(samples))]


def test_second_centroid_computation_is_a_cache_hit(root, tmp_path, monkeypatch):
    labels = [s.label for s in list_samples(root, "train", "gtFine")]
    first = label_file_centroids(labels, tmp_path / "cache" / "centroids.parquet")

    def no_read(path, shape=None):
        raise AssertionError(f"read {path} despite the cache")

    monkeypatch.setattr(dataset_module, "read_label", no_read)
    assert label_file_centroids(labels, tmp_path / "cache" / "centroids.parquet") == first
    assert list((tmp_path / "cache").rglob("*.parquet"))


def test_changed_label_file_is_recomputed(root, tmp_path):
    labels = [s.label for s in list_samples(root, "train", "gtFine")]
    label_file_centroids(labels, tmp_path / "cache")
    changed = np.full((H, W), LABEL_ID_BY_NAME["sky"], np.uint8)
    write_png(labels[0], changed)
    os.utime(labels[0], ns=(labels[0].stat().st_atime_ns, labels[0].stat().st_mtime_ns + 10**9))
    assert label_file_centroids(labels, tmp_path / "cache")[0] == {TRAIN_ID_BY_NAME["sky"]: (H // 2, W // 2)}


def test_reading_a_class_uniform_dataset_never_writes_into_its_root(root, tmp_path):
    before = _snapshot(root)
    data = _class_uniform(root, tmp_path / "cache")
    for i in range(len(data)):
        data[i]
    assert _snapshot(root) == before
    assert list((tmp_path / "cache").rglob("*.parquet"))


def test_eval_items_are_full_size_normalised_tensors(root):
    data = cityscapes_dataset(root, "train")
    image, label = data[1]
    assert len(data) == 4
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert label.shape == (H, W) and label.dtype == torch.int64
    assert torch.equal(label, torch.from_numpy(to_train_ids(_label_ids(1)).astype(np.int64)))


def test_train_items_are_crops_with_train_ids(root, tmp_path):
    data = _class_uniform(root, tmp_path / "c", crop=(16, 24))
    image, label = data[0]
    assert image.shape == (3, 16, 24) and image.dtype == torch.float32
    assert label.shape == (16, 24) and label.dtype == torch.int64
    assert set(label.unique().tolist()) <= {*range(19), IGNORE}


def test_label_loader_replaces_the_png_labels(root):
    samples = list_samples(root, "train")
    data = SegmentationDataset(samples, eval_transform(), label_loader=lambda s: np.full((H, W), 7, np.uint8))
    assert (data[0][1] == 7).all()


def test_label_of_another_size_than_its_image_is_an_error_naming_it(root):
    label = label_path(root, "train", f"{CITY}_000002_000019", "gtFine")
    write_png(label, np.zeros((H, W + 2), np.uint8))
    data = cityscapes_dataset(root, "train")
    with pytest.raises(DatasetError, match=re.escape(str(label))):
        data[2]


def _centroids(n_images: int) -> list[dict[int, tuple[int, int]]]:
    """Class 0 in every image, class 1 only in image 0, class 2 only in the last image."""
    cents = [{0: (i, 0)} for i in range(n_images)]
    cents[0][1] = (0, 1)
    cents[-1][2] = (n_images - 1, 2)
    return cents


def _planned_classes(plan, cents) -> Counter:
    centred = [(i, centre) for i, centre in plan if centre is not None]
    return Counter(next(c for c, at in cents[i].items() if at == centre) for i, centre in centred)


def test_plan_centres_the_requested_fraction_of_an_epoch():
    cents = _centroids(10)
    plan = class_uniform_plan(cents, 40, 0.25, rng=np.random.default_rng(0))
    assert len(plan) == 40
    assert sum(centre is not None for _, centre in plan) == 10
    random_items = Counter(i for i, centre in plan if centre is None)
    assert sorted(random_items) == list(range(10)) and set(random_items.values()) == {3}


def test_plan_draws_classes_uniformly_not_by_frequency():
    cents = _centroids(10)
    plan = class_uniform_plan(cents, 3000, 1.0, rng=np.random.default_rng(0))
    counts = _planned_classes(plan, cents)
    assert set(counts) == {0, 1, 2}
    assert all(abs(n - 1000) < 100 for n in counts.values())


def test_plan_class_weights_restrict_centred_crops_to_chosen_classes():
    cents = _centroids(10)
    weights = np.zeros(19)
    weights[[1, 2]] = 1.0
    plan = class_uniform_plan(cents, 200, 1.0, rng=np.random.default_rng(0), class_weights=weights)
    assert set(_planned_classes(plan, cents)) == {1, 2}


def test_set_epoch_draws_a_new_plan_deterministic_for_seed_and_epoch(root, tmp_path):
    a, b = _class_uniform(root, tmp_path / "c", 1.0), _class_uniform(root, tmp_path / "c", 1.0)
    plans = []
    for epoch in range(4):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        assert a.plan == b.plan
        plans.append(a.plan)
    assert any(p != plans[0] for p in plans[1:])
    a.set_epoch(0)
    b.set_epoch(0)
    assert torch.equal(a[1][0], b[1][0])


def test_class_uniform_crops_contain_their_class(root, tmp_path):
    data = _class_uniform(root, tmp_path / "c", 1.0, crop=(8, 8), scale=(1.0, 1.0), flip=False, jitter=0.0)
    labels = [to_train_ids(_label_ids(i)) for i in range(4)]
    for index, (item, centre) in enumerate(data.plan):
        assert labels[item][centre] in data[index][1]


def test_dataset_needs_centroids_for_class_uniform_sampling(root):
    with pytest.raises(ValueError, match="centroids"):
        transform = train_transform(AugmentConfig((8, 8)))
        SegmentationDataset(list_samples(root, "train", "gtFine"), transform, class_uniform=0.5)
