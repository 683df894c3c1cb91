"""The fused training set: fine PNG labels, auto-labels in a zarr store, optional hand-made coarse labels.

One Parquet row per sample: image path, where its labels live (a label-id PNG or an
array of a label store), source (`fine` / `auto_coarse` / `gt_coarse`), size, per-class pixel
counts and class centroids for class-uniform sampling. Training reads auto labels straight from
the store, with no conversion step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autolabel.dataset import Centre, SegmentationDataset, class_uniform_plan
from autolabel.errors import ConfigError, DatasetError
from autolabel.files import atomic_path
from autolabel.images import read_label
from autolabel.labels import NUM_CLASSES, to_train_ids
from autolabel.store import LabelStore
from autolabel.transforms import AugmentConfig, train_transform

SOURCES = ("fine", "auto_coarse", "gt_coarse")
FINE = "fine"

SAMPLES_SCHEMA = pa.schema(
    [
        ("image", pa.string()),
        ("source", pa.string()),
        ("label_png", pa.string()),
        ("label_store", pa.string()),
        ("label_key", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("class_pixels", pa.list_(pa.int64(), NUM_CLASSES)),
        ("centroids", pa.list_(pa.struct([("cls", pa.int16()), ("y", pa.int32()), ("x", pa.int32())]))),
    ]
)

RARE_SHARE = 0.5 / NUM_CLASSES
"""A class is rare when its share of the fine labelled pixels is under half the uniform share."""


@dataclass(frozen=True)
class FusedItem:
    """One training sample of a fused sample table."""

    image: Path
    source: str
    label_png: str | None
    label_store: str | None
    label_key: str | None


def write_samples(rows: Sequence[Mapping], path: Path) -> pa.Table:
    """Write fused rows (dicts with the schema's fields; centroids as {class: (y, x)}) as Parquet."""
    columns = {name: [] for name in SAMPLES_SCHEMA.names}
    for row in rows:
        for name in SAMPLES_SCHEMA.names:
            value = row.get(name)
            if name == "centroids":
                value = [{"cls": int(c), "y": int(y), "x": int(x)} for c, (y, x) in sorted(value.items())]
            columns[name].append(value)
    table = pa.table(columns, schema=SAMPLES_SCHEMA)
    with atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp)
    return table


def read_samples(path: Path) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: fused sample table does not exist (autolabel fuse writes it)")
    return pq.read_table(path)


class LabelLoader:
    """Train-id labels of a fused item from its PNG or straight from its label store (stores opened once)."""

    def __init__(self, storage_options: dict[str, Any] | None = None) -> None:
        self.storage_options = storage_options
        self._stores: dict[str, LabelStore] = {}

    def __call__(self, item: FusedItem) -> np.ndarray:
        if item.label_png:
            return to_train_ids(read_label(Path(item.label_png)))
        store = self._stores.get(item.label_store)
        if store is None:
            store = self._stores[item.label_store] = LabelStore.open(item.label_store,
                                                                         storage_options=self.storage_options)
        return store.read(item.label_key)

    def __getstate__(self) -> dict:
        return {"storage_options": self.storage_options, "_stores": {}}  # DataLoader workers reopen stores


def rare_classes(class_pixels: np.ndarray) -> list[int]:
    """Classes whose share of the (fine) labelled pixels is under RARE_SHARE; (N, C) counts."""
    totals = class_pixels.sum(0).astype(np.float64)
    share = totals / max(1.0, totals.sum())
    return [c for c in range(class_pixels.shape[1]) if share[c] < RARE_SHARE]


class FusedDataset(SegmentationDataset):
    """A SegmentationDataset over a fused sample table with a per-epoch fine/coarse mixing plan.

    `fine_fraction` (None = natural proportions) fixes the share of each epoch's samples taken from
    fine items; `class_uniform` of each part is centred on class centroids; with `coarse_rare_only`
    the coarse (auto or hand-made) items offer centroids of rare classes only, as the reference does.
    """

    def __init__(self, items: Sequence[FusedItem], centroids: Sequence[Mapping[int, Centre]], augment: AugmentConfig,
                 *, class_uniform: float, fine_fraction: float | None, coarse_rare_only: bool, rare: Sequence[int],
                 seed: int, storage_options: dict[str, Any] | None = None) -> None:
        if fine_fraction is not None and not 0.0 <= fine_fraction <= 1.0:
            raise ConfigError(f"fine fraction must be in [0, 1], got {fine_fraction}")
        self.fine_fraction = fine_fraction
        self.coarse_rare_only = coarse_rare_only
        self.rare = set(rare)
        super().__init__(items, train_transform(augment), label_loader=LabelLoader(storage_options), centroids=centroids,
                         class_uniform=class_uniform, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        rng = np.random.default_rng([self.seed, epoch, 7])
        fine = [i for i, item in enumerate(self.items) if item.source == FINE]
        coarse = [i for i, item in enumerate(self.items) if item.source != FINE]
        n = len(self.items)
        if self.fine_fraction is None or not fine or not coarse:
            n_fine = len(fine) if fine and coarse else (n if fine else 0)
        else:
            n_fine = round(n * self.fine_fraction)
        plan = self._part_plan(fine, n_fine, rng, rare_only=False)
        plan += self._part_plan(coarse, n - n_fine, rng, rare_only=self.coarse_rare_only)
        self.plan = [plan[k] for k in rng.permutation(len(plan))]

    def _part_plan(self, indices: list[int], length: int, rng: np.random.Generator, rare_only: bool) -> list:
        if length == 0 or not indices:
            return []
        cents = [self.centroids[i] for i in indices]
        if rare_only:
            cents = [{c: yx for c, yx in cent.items() if c in self.rare} for cent in cents]
        fraction = self.class_uniform if any(cents) else 0.0
        part = class_uniform_plan(cents, length, fraction, rng=rng)
        return [(indices[i], centre) for i, centre in part]


def fused_dataset(
    samples: Path,
    augment: AugmentConfig,
    class_uniform: float = 0.5,
    fine_fraction: float | None = None,
    coarse_rare_only: bool = False,
    seed: int = 0,
    storage_options: dict[str, Any] | None = None,
) -> FusedDataset:
    """Training dataset over a fused sample table (fine PNG + auto labels read from zarr + optional gtCoarse);
    `storage_options` are the fsspec options of its label stores."""
    table = read_samples(samples).to_pylist()
    if not table:
        raise DatasetError(f"{samples}: fused sample table has no rows")
    items = [FusedItem(Path(r["image"]), r["source"], r["label_png"], r["label_store"], r["label_key"]) for r in table]
    centroids = [{c["cls"]: (c["y"], c["x"]) for c in r["centroids"]} for r in table]
    fine_pixels = np.array([r["class_pixels"] for r in table if r["source"] == FINE] or [[0] * NUM_CLASSES])
    return FusedDataset(items, centroids, augment, class_uniform=class_uniform, fine_fraction=fine_fraction,
                        coarse_rare_only=coarse_rare_only, rare=rare_classes(fine_pixels), seed=seed,
                        storage_options=storage_options)
