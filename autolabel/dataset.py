"""Training data: items of a split as augmented tensors, with class-uniform crops.

Class-uniform sampling (as in hierarchical multi-scale attention): the centroid of every
class present in a label map is recorded once (cached as Parquet in the training run's directory);
each epoch, a fraction of the samples are crops centred on the centroid of a class drawn
uniformly over classes, the rest are random crops.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from autolabel.errors import ConfigError, DatasetError
from autolabel.files import atomic_path
from autolabel.images import read_image, read_label
from autolabel.labels import NUM_CLASSES, to_train_ids
from autolabel.layout import LabelSource, list_samples
from autolabel.transforms import AugmentConfig, Pair, SegmentationTransform, eval_transform, train_transform

logger = logging.getLogger(__name__)

Centre = tuple[int, int]
"""A (y, x) pixel."""
PlanEntry = tuple[int, Centre | None]
"""(item index, crop centre or None for a random crop)."""

CENTROID_CACHE_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("classes", pa.list_(pa.uint8())),
        ("ys", pa.list_(pa.int32())),
        ("xs", pa.list_(pa.int32())),
    ]
)
_PLAN_STREAM, _SAMPLE_STREAM = 0, 1


class HasImage(Protocol):
    @property
    def image(self) -> Path: ...


LabelLoader = Callable[[Any], np.ndarray]
"""Loads the (H, W) uint8 train-id label map of an item."""


def class_centroids(label: np.ndarray, num_classes: int = NUM_CLASSES) -> dict[int, Centre]:
    """(y, x) centre of mass of every class present in a train-id map (H, W).

    Where the centre of mass falls outside its class (non-convex shapes), the class pixel
    nearest to it is used instead, so a crop centred there always contains the class.
    Each present class costs one comparison and a row and a column sum of the map (OpenCV), so a
    1024x2048 map takes milliseconds: the label store computes this for every map it writes.
    """
    present = np.flatnonzero(cv2.calcHist([label], [0], None, [256], [0, 256]).ravel()[:num_classes])
    rows, cols = np.arange(label.shape[0], dtype=np.int64), np.arange(label.shape[1], dtype=np.int64)
    centroids: dict[int, Centre] = {}
    for c in present:
        mask = cv2.inRange(label, int(c), int(c))  # (H, W) 255 where the class is (compare fails on 1x1)
        per_row = cv2.reduce(mask, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel() // 255  # (H,)
        per_col = cv2.reduce(mask, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel() // 255  # (W,)
        count = int(per_row.sum())
        my, mx = int(per_row @ rows) / count, int(per_col @ cols) / count
        y, x = int(round(my)), int(round(mx))
        if label[y, x] != c:
            y, x = _nearest_pixel(label, int(c), my, mx)
        centroids[int(c)] = (y, x)
    return centroids


def _nearest_pixel(label: np.ndarray, cls: int, my: float, mx: float) -> Centre:
    """The pixel of `cls` nearest to (my, mx), the first in row-major order among equals; searched in
    square windows doubling around the point, each holding every pixel within its half-side."""
    h, w = label.shape
    cy, cx = int(my), int(mx)
    radius = 16
    while True:
        y0, x0 = max(0, cy - radius), max(0, cx - radius)
        window = label[y0:cy + radius + 1, x0:cx + radius + 1]
        found = cv2.findNonZero(cv2.compare(window, cls, cv2.CMP_EQ))  # (x, y) points in row-major order
        whole = y0 == 0 and x0 == 0 and cy + radius + 1 >= h and cx + radius + 1 >= w
        if found is not None:
            points = found.reshape(-1, 2).astype(np.int64)  # (N, 2)
            xs, ys = points[:, 0] + x0, points[:, 1] + y0
            distances = (ys - my) ** 2 + (xs - mx) ** 2
            k = int(np.argmin(distances))
            if distances[k] <= radius * radius or whole:
                return int(ys[k]), int(xs[k])
        radius *= 2


def _stamp(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read label file ({exc.strerror or exc})") from exc
    return str(path), st.st_size, st.st_mtime_ns


def _read_cache(file: Path) -> dict[tuple[str, int, int], dict[int, Centre]]:
    if not file.is_file():
        return {}
    try:
        rows = pq.read_table(file, schema=CENTROID_CACHE_SCHEMA).to_pylist()
    except (OSError, pa.ArrowException) as exc:
        logger.warning("ignoring unreadable centroid cache %s: %s", file, exc)
        return {}
    return {
        (r["path"], r["size"], r["mtime_ns"]): {c: (y, x) for c, y, x in zip(r["classes"], r["ys"], r["xs"])}
        for r in rows
    }


def _write_cache(file: Path, entries: Mapping[tuple[str, int, int], Mapping[int, Centre]]) -> None:
    rows = [
        {
            "path": path,
            "size": size,
            "mtime_ns": mtime,
            "classes": list(cents),
            "ys": [y for y, _ in cents.values()],
            "xs": [x for _, x in cents.values()],
        }
        for (path, size, mtime), cents in entries.items()
    ]
    try:
        with atomic_path(file) as tmp:
            pq.write_table(pa.Table.from_pylist(rows, schema=CENTROID_CACHE_SCHEMA), tmp)
    except OSError as exc:
        logger.warning("cannot write centroid cache %s: %s", file, exc)


def _file_centroids(path: str, num_classes: int) -> dict[int, Centre]:
    return class_centroids(to_train_ids(read_label(Path(path))), num_classes)


def label_file_centroids(
    label_files: Sequence[Path],
    cache_file: Path | None = None,
    num_classes: int = NUM_CLASSES,
    workers: int | None = None,
) -> list[dict[int, Centre]]:
    """Train-id class centroids of Cityscapes label-id PNGs, in order.

    With `cache_file` (a Parquet file, kept with the run that uses it), entries are reused per (absolute path,
    size, mtime) and a changed file is recomputed.
    """
    stamps = [_stamp(Path(p).resolve()) for p in label_files]
    cached = _read_cache(cache_file) if cache_file is not None else {}
    known = {s: cents for s, cents in cached.items() if s in set(stamps)}
    misses = sorted({s for s in stamps if s not in known})
    if misses:
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            known.update(zip(misses, pool.map(lambda s: _file_centroids(s[0], num_classes), misses)))
        if cache_file is not None:
            _write_cache(cache_file, {s: known[s] for s in stamps})
    logger.info("label centroids: %d cached, %d computed (cache %s)", len(stamps) - len(misses), len(misses),
                cache_file)
    return [known[s] for s in stamps]


def class_uniform_plan(
    centroids_per_image: Sequence[Mapping[int, Centre]],
    length: int,
    fraction: float = 0.5,
    *,
    rng: np.random.Generator,
    class_weights: Sequence[float] | None = None,
) -> list[PlanEntry]:
    """An epoch of `length` samples in random order.

    round(`fraction` * length) of them are crops centred on a class centroid: the class is
    drawn over the classes present in any image (uniformly, or proportional to
    `class_weights[class]`), then an image holding it uniformly. The rest are random crops
    of images taken in a random order without repeats until every image has been used.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"class-uniform fraction must be in [0, 1], got {fraction}")
    if not centroids_per_image:
        raise ValueError("class-uniform plan needs at least one image")
    holders: dict[int, list[int]] = {}
    for i, cents in enumerate(centroids_per_image):
        for c in cents:
            holders.setdefault(int(c), []).append(i)
    classes = sorted(holders)
    weights = np.ones(len(classes)) if class_weights is None else _weights_of(classes, class_weights)
    n_centred = round(length * fraction)
    if n_centred and weights.sum() == 0:
        logger.warning("no image holds a class with positive weight; all %d crops are random", length)
        n_centred = 0
    plan: list[PlanEntry] = []
    if n_centred:
        for c in rng.choice(classes, size=n_centred, p=weights / weights.sum()):
            i = holders[int(c)][int(rng.integers(len(holders[int(c)])))]
            y, x = centroids_per_image[i][int(c)]
            plan.append((i, (int(y), int(x))))
    n_random = length - n_centred
    n_images = len(centroids_per_image)
    passes = [rng.permutation(n_images) for _ in range(math.ceil(n_random / n_images))]
    plan.extend((int(i), None) for i in np.concatenate(passes or [np.empty(0, int)])[:n_random])
    return [plan[k] for k in rng.permutation(length)]


def _weights_of(classes: Sequence[int], class_weights: Sequence[float]) -> np.ndarray:
    weights = np.asarray(class_weights, dtype=np.float64)
    if weights.ndim != 1 or (weights < 0).any() or not np.isfinite(weights).all():
        raise ValueError(f"class_weights must be finite non-negative weights per class, got {class_weights}")
    if classes and classes[-1] >= len(weights):
        raise ValueError(f"class_weights has {len(weights)} entries but class {classes[-1]} is present")
    return weights[list(classes)]


def load_train_ids(item: Any) -> np.ndarray:
    """Train-id map (H, W) uint8 of an item whose `.label` is a Cityscapes label-id PNG."""
    if getattr(item, "label", None) is None:
        raise DatasetError(f"{item.image}: has no label file")
    return to_train_ids(read_label(item.label))


class SegmentationDataset(Dataset):
    """Items as `(image float32 (3, H, W), label int64 (H, W))` tensors.

    Each item has an `.image` path; `label_loader(item)` gives its train-id map (default:
    its `.label` Cityscapes label-id PNG). With `class_uniform` > 0 and per-item
    `centroids`, each epoch follows a `class_uniform_plan`; call `set_epoch` before each
    epoch (DataLoader workers pick it up unless they are persistent). Samples are
    deterministic for (seed, epoch, index).
    """

    def __init__(
        self,
        items: Sequence[HasImage],
        transform: SegmentationTransform,
        *,
        label_loader: LabelLoader = load_train_ids,
        centroids: Sequence[Mapping[int, Centre]] | None = None,
        class_uniform: float = 0.0,
        class_weights: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        if class_uniform > 0 and centroids is None:
            raise ValueError("class-uniform sampling needs the class centroids of every item")
        if centroids is not None and len(centroids) != len(items):
            raise ValueError(f"got centroids for {len(centroids)} items but there are {len(items)} items")
        self.items = list(items)
        self.transform = transform
        self.label_loader = label_loader
        self.centroids = centroids
        self.class_uniform = class_uniform
        self.class_weights = class_weights
        self.seed = seed
        self.epoch = 0
        self.plan: list[PlanEntry] | None = None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the class-uniform plan of `epoch` (the same for the same seed and epoch)."""
        self.epoch = epoch
        if self.class_uniform > 0 and self.centroids is not None:
            self.plan = class_uniform_plan(
                self.centroids,
                len(self.items),
                self.class_uniform,
                rng=np.random.default_rng([self.seed, epoch, _PLAN_STREAM]),
                class_weights=self.class_weights,
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item_index, centre = self.plan[index] if self.plan is not None else (index, None)
        item = self.items[item_index]
        image = read_image(item.image)  # (H, W, 3)
        label = self.label_loader(item)  # (H, W)
        if label.shape != image.shape[:2]:
            source = getattr(item, "label", None) or item
            raise DatasetError(
                f"{source}: label is {label.shape[1]}x{label.shape[0]} "
                f"but its image {item.image} is {image.shape[1]}x{image.shape[0]}"
            )
        rng = np.random.default_rng([self.seed, self.epoch, _SAMPLE_STREAM, index])
        return self.transform(Pair(image, label, centre), rng)


def cityscapes_dataset(
    root: Path,
    split: str,
    source: LabelSource = "gtFine",
    augment: AugmentConfig | None = None,
    class_uniform: float = 0.0,
    cache_file: Path | None = None,
    seed: int = 0,
    class_weights: Sequence[float] | None = None,
) -> SegmentationDataset:
    """A split of a Cityscapes-format root with `source` labels.

    `augment=None` gives unaugmented, normalised full images; `class_uniform` (e.g. 0.5)
    centres that fraction of the crops on class centroids, cached in `cache_file` when given.
    """
    samples = list_samples(Path(root), split, source)
    centroids = None
    if class_uniform > 0:
        if augment is None:
            raise ValueError("class-uniform sampling centres crops, so it needs augment=AugmentConfig(...)")
        centroids = label_file_centroids([s.label for s in samples], cache_file)
    transform = eval_transform() if augment is None else train_transform(augment)
    return SegmentationDataset(
        samples,
        transform,
        centroids=centroids,
        class_uniform=class_uniform,
        class_weights=class_weights,
        seed=seed,
    )
