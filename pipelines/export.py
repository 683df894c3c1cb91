"""Export a label store as PNG label maps in the Cityscapes layout, for tools that read PNG datasets.

    {out_dir}/{city}/{stem}_trainIds.png   train ids 0..18, 255 = ignore
    {out_dir}/{city}/{stem}_labelIds.png   Cityscapes label ids, ignore as 0 (unlabeled)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from autolabel.errors import ConfigError
from autolabel.images import write_png
from autolabel.labels import to_label_ids
from autolabel.layout import city_of
from autolabel.store import LabelStore

log = logging.getLogger(__name__)

ExportFormat = Literal["trainIds", "labelIds"]
FORMATS: tuple[str, ...] = ("trainIds", "labelIds")


def export_path(out_dir: Path, stem: str, format: ExportFormat) -> Path:
    """Where the `format` PNG of image `stem` goes."""
    return Path(out_dir) / city_of(stem) / f"{stem}_{format}.png"


def encode_labels(train_ids: np.ndarray, format: ExportFormat) -> np.ndarray:
    """The (H, W) uint8 map to write: train ids as stored, or label ids with ignore as 0."""
    return train_ids if format == "trainIds" else to_label_ids(train_ids)


def export(
    store_url: str | Path,
    out_dir: str | Path,
    format: ExportFormat = "trainIds",
    progress: Callable[[int, int], None] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> int:
    """Write every complete label map of the store as a PNG under `out_dir`; returns how many."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; expected one of {FORMATS}")
    store = LabelStore.open(store_url, storage_options=storage_options)
    image_ids = sorted(store.completed_ids())
    for i, image_id in enumerate(image_ids):
        write_png(export_path(Path(out_dir), image_id, format), encode_labels(store.read(image_id), format))
        if progress:
            progress(i + 1, len(image_ids))
    log.info("%s: exported %d %s PNGs to %s", store.url, len(image_ids), format, out_dir)
    return len(image_ids)
