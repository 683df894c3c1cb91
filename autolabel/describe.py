"""Summarise a Cityscapes-format root: splits, label kinds, image sizes, class pixel histograms."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from autolabel.images import image_shape, read_label
from autolabel.labels import CLASS_NAMES, IGNORE, NUM_CLASSES, to_train_ids
from autolabel.layout import label_sources, list_samples, list_splits

SplitProgress = Callable[[str, int, int], None]


def class_histogram(label_paths: list[Path]) -> np.ndarray:
    """(20,) pixel counts of train ids 0..18, then ignored pixels, over label-id PNGs."""
    counts = np.zeros(NUM_CLASSES + 1, dtype=np.int64)
    for path in label_paths:
        train = to_train_ids(read_label(path))
        binc = np.bincount(train.ravel(), minlength=256)
        counts[:NUM_CLASSES] += binc[:NUM_CLASSES]
        counts[NUM_CLASSES] += binc[IGNORE]
    return counts


def describe_split(root: Path, split: str, progress: SplitProgress | None = None) -> dict:
    samples = list_samples(root, split)
    shapes = Counter(image_shape(s.image) for s in samples)
    sizes = {f"{w}x{h}": n for (h, w), n in shapes.items()}
    result: dict = {
        "images": len(samples),
        "cities": len({s.city for s in samples}),
        "image_sizes": dict(sorted(sizes.items())),
        "label_kinds": {},
    }
    for source in label_sources(root, split):
        labelled = [s.label for s in list_samples(root, split, source, require_labels=False) if s.label]
        if progress:
            progress(f"{split}/{source}", 0, len(labelled))
        counts = class_histogram(labelled)
        if progress:
            progress(f"{split}/{source}", len(labelled), len(labelled))
        total = int(counts.sum())
        result["label_kinds"][source] = {
            "images": len(labelled),
            "labelled_fraction": float(counts[:NUM_CLASSES].sum() / total) if total else 0.0,
            "class_pixels": {name: int(n) for name, n in zip(CLASS_NAMES, counts[:NUM_CLASSES])},
            "ignored_pixels": int(counts[NUM_CLASSES]),
        }
    return result


def describe(root: Path, progress: SplitProgress | None = None) -> dict:
    """Everything `autolabel describe` reports, as a JSON-ready dict."""
    root = Path(root)
    return {
        "root": str(root),
        "splits": {split: describe_split(root, split, progress) for split in list_splits(root)},
    }
