"""Fuse fine labels, auto-labels from a store and (optionally) hand-made coarse labels into one sample table."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from autolabel.dataset import class_centroids
from autolabel.errors import ConfigError
from autolabel.fused import write_samples
from autolabel.images import image_shape, read_label
from autolabel.labels import to_train_ids
from autolabel.layout import Sample, list_samples
from autolabel.store import CorruptImageError, ImageRecord, LabelStore, Status, class_pixels


@dataclass(frozen=True)
class FuseSummary:
    samples: str
    rows: dict[str, int]
    """Samples per source."""
    failed_auto: list[str] = field(default_factory=list)
    """Auto-labelled images left out because their labelling failed."""
    missing_auto: list[str] = field(default_factory=list)
    """Images of the coarse split that the label store does not hold at all (e.g. a labelling run not finished)."""


def _png_row(sample: Sample, source: str) -> dict:
    """The row of one PNG-labelled sample; its label file is decoded once for the counts and the centroids, and
    must be the size of its image."""
    train = to_train_ids(read_label(sample.label, shape=image_shape(sample.image)))  # (H, W)
    return {
        "image": str(sample.image), "source": source, "label_png": str(sample.label), "label_store": None,
        "label_key": None, "height": train.shape[0], "width": train.shape[1],
        "class_pixels": list(class_pixels(train)), "centroids": class_centroids(train),
    }


def _png_rows(root: Path, split: str, source_dir: str, source: str) -> list[dict]:
    samples = [s for s in list_samples(root, split, source_dir, require_labels=False) if s.label is not None]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(lambda sample: _png_row(sample, source), samples))


def _store_rows(store: LabelStore) -> tuple[list[dict], list[str]]:
    """Rows of the store's stored images, from its index (class counts and centroids are recorded when an image
    is written), and the ids of its failed images. A CorruptImageError names the images whose chunks fail their
    checksums (read, not decoded), which training could not read."""
    index = store.index()  # read once: the rows and the checksums come from the same index
    done = index.filter(pc.equal(index["status"], Status.DONE.value))
    corrupt = store.find_corrupt(ImageRecord.from_dict(row) for row in done.to_pylist())
    if corrupt:
        raise CorruptImageError(store.url, corrupt[0], others=len(corrupt) - 1)
    rows = [{
        "image": row["source"], "source": "auto_coarse", "label_png": None, "label_store": store.url,
        "label_key": row["image_id"], "height": row["height"], "width": row["width"],
        "class_pixels": row["class_pixels"], "centroids": {c["cls"]: (c["y"], c["x"]) for c in row["centroids"]},
    } for row in done.select(["image_id", "source", "height", "width", "class_pixels", "centroids"]).to_pylist()]
    failed = index.filter(pc.not_equal(index["status"], Status.DONE.value))["image_id"].to_pylist()
    return rows, failed


def fuse(
    root: Path,
    out: Path,
    labels: str | None = None,
    coarse_gt: bool = False,
    fine_split: str = "train",
    coarse_split: str = "train_extra",
    progress: Callable[[int, int], None] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> FuseSummary:
    """Write the fused sample table: fine `fine_split` + auto labels of `labels` (+ gtCoarse of `coarse_split`).

    Paths are written absolute, so training reads the samples from any directory or Ray worker. The auto rows
    come from the store's index, without decoding a label map; a store with corrupt maps is refused (see
    _store_rows). Auto-labels that failed are left out and listed; so are images of `coarse_split` missing from
    the store.
    """
    if labels is None and not coarse_gt:
        raise ConfigError("nothing to fuse with the fine labels: give a label store, --coarse-gt, or both")
    root = Path(root).resolve()
    rows = _png_rows(root, fine_split, "gtFine", "fine")
    failed: list[str] = []
    missing: list[str] = []
    if labels is not None:
        auto, failed = _store_rows(LabelStore.open(labels, storage_options=storage_options))
        if progress:
            progress(len(auto), len(auto))
        rows += auto
        held = {row["label_key"] for row in auto} | set(failed)
        missing = sorted(s.stem for s in list_samples(root, coarse_split) if s.stem not in held)
    if coarse_gt:
        rows += _png_rows(root, coarse_split, "gtCoarse", "gt_coarse")
    write_samples(rows, out)
    return FuseSummary(str(out), dict(Counter(r["source"] for r in rows)), failed, missing)

