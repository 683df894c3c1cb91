"""The label store: one zarr v3 array per image, per-image records, a Parquet manifest.

    {url}/zarr.json               root group; attributes["autolabel"]: format, provenance, codec settings
    {url}/labels/{image_id}       (H, W) uint8 train ids (0..18, 255 = ignore); one shard holds the whole
                                  image, split into zstd-compressed inner chunks for random access;
                                  attributes: complete, record
    {url}/confidence/{image_id}   (H, W) uint8 max probability (stores created with keep_confidence)
    {url}/failed/{image_id}       empty group; attributes: record of an image that could not be labelled
    {url}/manifest.parquet        one row per image, rebuilt from the records by write_manifest()

Concurrency: the groups are written once, by `LabelStore.create`. Afterwards a writer touches only
the nodes of the image it writes (its arrays, their zarr.json, its failure record), so any number
of processes may write different images at once. An image counts as stored once its labels array
says `complete: true`, which is set after its data is written.

Local paths and `file://` URLs use zarr's LocalStore (atomic writes); any other fsspec URL
(`memory://`, `s3://`, ...) uses zarr's FsspecStore.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from zarr.abc.store import Store
from zarr.buffer import default_buffer_prototype
from zarr.codecs import ZstdCodec
from zarr.core.sync import sync
from zarr.errors import NodeNotFoundError
from zarr.storage import FsspecStore, LocalStore

from autolabel.labels import IGNORE, NUM_CLASSES
from autolabel.layout import validate_stem

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ROOT_ATTR = "autolabel"
LABELS, CONFIDENCE, FAILED = "labels", "confidence", "failed"
MANIFEST = "manifest.parquet"
METADATA_KEY = "zarr.json"

DEFAULT_ZSTD_LEVEL = 9
"""zstd level of new stores, from benchmarks/storage.py (2048x1024 maps, one core): level 9 stores
~16.5 kB/image at ~30 images/s, as fast to write as level 1 and 10% smaller; level 15 is 17% smaller
again but 3x slower to write, 19 and 22 gain 4-6% more at 20-45x slower writes."""
DEFAULT_CHUNK = 256
"""Side of the inner (randomly accessible) chunks; the shard is always the whole image."""

Mode = Literal["r", "a"]


class StoreError(RuntimeError):
    """The label store is missing, malformed, or used against its rules; the message names the URL."""


class ImageNotStoredError(StoreError, LookupError):
    """The image has no complete labels in the store."""


class ProvenanceMismatchError(StoreError):
    """The store was made with another teacher checkpoint or labelling settings."""


@dataclass(frozen=True)
class Provenance:
    """How every label map of a store was made; fixed when the store is created."""

    checkpoint_sha256: str
    scales: tuple[float, ...]
    threshold: float
    pointrend: bool
    keep_confidence: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be positive numbers, got {self.scales}")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold!r}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "scales": list(self.scales)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True)
class ImageRecord:
    """Provenance and statistics of one image; one manifest row."""

    image_id: str
    source: str
    status: Literal["done", "failed"]
    checkpoint_sha256: str
    scales: tuple[float, ...]
    threshold: float
    pointrend: bool
    started_at: str
    finished_at: str
    height: int | None = None
    width: int | None = None
    labelled_fraction: float | None = None
    mean_confidence: float | None = None
    class_pixels: tuple[int, ...] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scales"] = list(self.scales)
        data["class_pixels"] = None if self.class_pixels is None else list(self.class_pixels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageRecord:
        values = {f.name: data.get(f.name) for f in fields(cls)}
        values["scales"] = tuple(values["scales"])
        if values["class_pixels"] is not None:
            values["class_pixels"] = tuple(values["class_pixels"])
        return cls(**values)


MANIFEST_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("source", pa.string()),
        ("status", pa.string()),
        ("checkpoint_sha256", pa.string()),
        ("scales", pa.list_(pa.float64())),
        ("threshold", pa.float64()),
        ("pointrend", pa.bool_()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("labelled_fraction", pa.float64()),
        ("mean_confidence", pa.float64()),
        ("class_pixels", pa.list_(pa.int64(), NUM_CLASSES)),
        ("error", pa.string()),
    ]
)
"""Manifest columns: the ImageRecord fields, in order; timestamps as UTC."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _timestamp(value: datetime | str | None) -> str:
    if value is None:
        return _now()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat()


def class_pixels(labels: np.ndarray, name: str = "labels") -> tuple[int, ...]:
    """Pixel count of each train id in a (H, W) uint8 label map; rejects values 19..254."""
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"{name} must be a (H, W) uint8 array, got {labels.dtype} {labels.shape}")
    counts = np.bincount(labels.ravel(), minlength=IGNORE + 1)  # (256,)
    invalid = np.flatnonzero(counts[NUM_CLASSES:IGNORE]) + NUM_CLASSES
    if invalid.size:
        raise ValueError(
            f"{name} hold values {invalid[:8].tolist()}; allowed are 0..{NUM_CLASSES - 1} and {IGNORE}"
        )
    return tuple(int(c) for c in counts[:NUM_CLASSES])


def normalize_url(url: str | Path) -> str:
    """A store URL that means the same from any working directory: local paths made absolute."""
    url = str(url)
    return url if "://" in url else str(Path(url).resolve())


def _zarr_store(url: str, read_only: bool, storage_options: dict[str, Any] | None) -> Store:
    if "://" not in url:
        return LocalStore(url, read_only=read_only)
    if url.startswith("file://"):
        return LocalStore(url.removeprefix("file://"), read_only=read_only)
    return FsspecStore.from_url(url, storage_options=storage_options, read_only=read_only)


async def _sum_sizes(store: Store, prefix: str, metadata: bool) -> int:
    keys = [k async for k in store.list_prefix(prefix) if metadata or not k.endswith(METADATA_KEY)]
    return sum(await asyncio.gather(*(store.getsize(k) for k in keys)))


class LabelStore:
    """A zarr v3 store of uint8 label maps, one array per image. Make one with `create` or `open`."""

    def __init__(self, url: str, zstore: Store, settings: dict[str, Any], mode: Mode,
                 storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.mode = mode
        self.provenance = Provenance.from_dict(settings["provenance"])
        self.zstd_level = int(settings["zstd_level"])
        self.chunk = int(settings["chunk"])
        self._zstore = zstore
        self._storage_options = storage_options

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        url: str | Path,
        provenance: Provenance,
        level: int = DEFAULT_ZSTD_LEVEL,
        chunk: int = DEFAULT_CHUNK,
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> LabelStore:
        """Create an empty store; with `overwrite`, an existing label store there is deleted first."""
        url = normalize_url(url)
        if not 1 <= level <= 22:
            raise ValueError(f"zstd level must be in 1..22, got {level}")
        if chunk < 1:
            raise ValueError(f"chunk must be positive, got {chunk}")
        zstore = _zarr_store(url, read_only=False, storage_options=storage_options)
        if not sync(zstore.is_empty("")):
            if not overwrite:
                raise StoreError(f"{url}: already exists (pass overwrite=True to replace a label store)")
            _read_settings(url, zstore)  # refuse to delete anything that is not a label store
            sync(_clear(zstore))
        settings = {
            "format": FORMAT_VERSION,
            "provenance": provenance.to_dict(),
            "zstd_level": level,
            "chunk": chunk,
        }
        root = zarr.create_group(zstore, zarr_format=3, attributes={ROOT_ATTR: settings})
        groups = (LABELS, FAILED, CONFIDENCE) if provenance.keep_confidence else (LABELS, FAILED)
        for name in groups:
            root.create_group(name)
        log.info("created label store %s (zstd %d, chunk %d)", url, level, chunk)
        return cls(url, zstore, settings, "a", storage_options)

    @classmethod
    def open(
        cls, url: str | Path, mode: Mode = "r", storage_options: dict[str, Any] | None = None
    ) -> LabelStore:
        """Open an existing store for reading ("r") or for writing images ("a")."""
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        url = normalize_url(url)
        zstore = _zarr_store(url, read_only=mode == "r", storage_options=storage_options)
        return cls(url, zstore, _read_settings(url, zstore), mode, storage_options)

    @classmethod
    def open_or_create(
        cls,
        url: str | Path,
        provenance: Provenance,
        level: int = DEFAULT_ZSTD_LEVEL,
        chunk: int = DEFAULT_CHUNK,
        storage_options: dict[str, Any] | None = None,
    ) -> LabelStore:
        """Resume a store made with the same provenance, or create it. Call from one process."""
        zstore = _zarr_store(str(url), read_only=False, storage_options=storage_options)
        if sync(zstore.is_empty("")):
            return cls.create(url, provenance, level, chunk, storage_options=storage_options)
        store = cls.open(url, "a", storage_options)
        store.check_provenance(provenance)
        return store

    def __reduce__(self) -> tuple[Any, ...]:
        return (LabelStore.open, (self.url, self.mode, self._storage_options))

    def check_provenance(self, expected: Provenance) -> None:
        """Raise ProvenanceMismatchError naming every field where the store differs from `expected`."""
        stored, wanted = self.provenance.to_dict(), expected.to_dict()
        diffs = [
            f"{k}: store has {stored[k]!r}, run has {wanted[k]!r}" for k in stored if stored[k] != wanted[k]
        ]
        if diffs:
            raise ProvenanceMismatchError(f"{self.url}: made with other settings; " + "; ".join(diffs))

    # -- writing --------------------------------------------------------------------------

    def write(
        self,
        image_id: str,
        labels: np.ndarray,
        *,
        source: str,
        mean_confidence: float | None = None,
        confidence: np.ndarray | None = None,
        started_at: datetime | str | None = None,
    ) -> ImageRecord:
        """Store the (H, W) uint8 labels of one image, then mark it complete; rewriting replaces it.

        `confidence` (H, W) uint8 is required by stores created with keep_confidence and refused
        by others. Without `mean_confidence`, it is taken from `confidence` when given.
        """
        self._check_writable()
        validate_stem(image_id)
        started = _timestamp(started_at)
        counts = class_pixels(labels, f"labels of {image_id}")
        self._check_confidence(image_id, labels.shape, confidence)
        if mean_confidence is None and confidence is not None:
            mean_confidence = float(confidence.mean()) / 255.0
        array = self._create_image_array(f"{LABELS}/{image_id}", labels.shape, IGNORE, {"complete": False})
        array[...] = labels
        if confidence is not None:
            self._create_image_array(f"{CONFIDENCE}/{image_id}", labels.shape, 0, {})[...] = confidence
        height, width = labels.shape
        record = ImageRecord(
            **self._provenance_fields(image_id, source, "done", started),
            height=height,
            width=width,
            labelled_fraction=sum(counts) / (height * width),
            mean_confidence=mean_confidence,
            class_pixels=counts,
        )
        array.update_attributes({"complete": True, "record": record.to_dict()})
        self._delete(f"{FAILED}/{image_id}")
        return record

    def write_failure(
        self, image_id: str, source: str, error: str, started_at: datetime | str | None = None
    ) -> ImageRecord:
        """Record that an image could not be labelled; any labels it had are removed."""
        self._check_writable()
        validate_stem(image_id)
        record = ImageRecord(
            **self._provenance_fields(image_id, source, "failed", _timestamp(started_at)), error=error
        )
        zarr.create_group(
            self._zstore, path=f"{FAILED}/{image_id}", zarr_format=3, overwrite=True,
            attributes={"record": record.to_dict()},
        )
        self._delete(f"{LABELS}/{image_id}")
        self._delete(f"{CONFIDENCE}/{image_id}")
        log.warning("%s: %s failed: %s", self.url, image_id, error)
        return record

    def write_manifest(self) -> pa.Table:
        """Rebuild manifest.parquet from the per-image records (one process), replacing it atomically."""
        self._check_writable()
        table = manifest_table(self.records())
        sink = io.BytesIO()
        pq.write_table(table, sink)
        buffer = default_buffer_prototype().buffer.from_bytes(sink.getvalue())
        sync(self._zstore.set(MANIFEST, buffer))
        log.info("%s: manifest of %d images written", self.url, table.num_rows)
        return table

    # -- reading --------------------------------------------------------------------------

    def read(self, image_id: str) -> np.ndarray:
        """The (H, W) uint8 labels of a complete image."""
        return self._complete_array(image_id)[...]

    def read_window(self, image_id: str, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Labels [y0:y1, x0:x1] (y1-y0, x1-x0) of a complete image; reads only the chunks it covers."""
        array = self._complete_array(image_id)
        height, width = array.shape
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            raise ValueError(
                f"{self.url}: window y[{y0}:{y1}] x[{x0}:{x1}] is outside {image_id} ({height}x{width})"
            )
        return array[y0:y1, x0:x1]

    def read_confidence(self, image_id: str) -> np.ndarray:
        """The (H, W) uint8 quantised max probability of a complete image (keep_confidence stores)."""
        self._complete_array(image_id)
        if not self.provenance.keep_confidence:
            raise StoreError(f"{self.url}: created without keep_confidence; no confidence maps")
        return zarr.open_array(self._zstore, path=f"{CONFIDENCE}/{image_id}", mode="r")[...]

    def record(self, image_id: str) -> ImageRecord:
        """The record of a complete image."""
        return ImageRecord.from_dict(self._complete_array(image_id).attrs["record"])

    def completed_ids(self) -> set[str]:
        """Ids of images whose labels are completely written."""
        return set(self._done_records())

    def failed_ids(self) -> set[str]:
        """Ids of images recorded as failed (and not completed since)."""
        return set(self._failed_records()) - self.completed_ids()

    def records(self) -> list[ImageRecord]:
        """One record per image, done or failed, sorted by image id."""
        merged = {**self._failed_records(), **self._done_records()}
        return [merged[k] for k in sorted(merged)]

    def manifest(self) -> pa.Table:
        """The manifest written last by write_manifest()."""
        buffer = sync(self._zstore.get(MANIFEST, prototype=default_buffer_prototype()))
        if buffer is None:
            raise StoreError(f"{self.manifest_url}: no manifest yet (write_manifest() makes it)")
        return pq.read_table(pa.BufferReader(buffer.to_bytes()))

    @property
    def manifest_url(self) -> str:
        return f"{self.url.rstrip('/')}/{MANIFEST}"

    def nbytes_on_disk(self, prefix: str = "", metadata: bool = True) -> int:
        """Bytes stored under `prefix` (e.g. "labels/"); `metadata=False` leaves out zarr.json documents."""
        return sync(_sum_sizes(self._zstore, prefix, metadata))

    # -- internals ------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.mode != "a":
            raise StoreError(f"{self.url}: opened read-only (open with mode='a' to write)")

    def _check_confidence(self, image_id: str, shape: tuple[int, ...], confidence: np.ndarray | None) -> None:
        if self.provenance.keep_confidence and confidence is None:
            raise ValueError(f"{self.url}: store keeps confidence maps; none given for {image_id}")
        if not self.provenance.keep_confidence and confidence is not None:
            raise ValueError(f"{self.url}: store was created without keep_confidence; got one for {image_id}")
        if confidence is not None and (confidence.dtype != np.uint8 or confidence.shape != shape):
            raise ValueError(
                f"confidence of {image_id} must be uint8 {shape}, got {confidence.dtype} {confidence.shape}"
            )

    def _provenance_fields(self, image_id: str, source: str, status: str, started: str) -> dict[str, Any]:
        p = self.provenance
        return dict(
            image_id=image_id, source=str(source), status=status,
            checkpoint_sha256=p.checkpoint_sha256, scales=p.scales, threshold=p.threshold,
            pointrend=p.pointrend, started_at=started, finished_at=_now(),
        )

    def _create_image_array(
        self, path: str, shape: tuple[int, ...], fill_value: int, attributes: dict[str, Any]
    ) -> zarr.Array:
        """A (H, W) uint8 array whose single shard covers the image, replacing any old one."""
        inner = tuple(min(self.chunk, n) for n in shape)
        shard = tuple(math.ceil(n / c) * c for n, c in zip(shape, inner))
        return zarr.create_array(
            self._zstore,
            name=path,
            shape=shape,
            dtype="uint8",
            chunks=inner,
            shards=shard,
            compressors=ZstdCodec(level=self.zstd_level, checksum=False),
            fill_value=fill_value,
            attributes=attributes,
            zarr_format=3,
            overwrite=True,
        )

    def _delete(self, path: str) -> None:
        sync(self._zstore.delete_dir(path))

    def _complete_array(self, image_id: str) -> zarr.Array:
        validate_stem(image_id)
        try:
            array = zarr.open_array(self._zstore, path=f"{LABELS}/{image_id}", mode="r")
        except (NodeNotFoundError, FileNotFoundError) as exc:
            raise ImageNotStoredError(f"{self.url}: image {image_id!r} is not stored") from exc
        if array.attrs.get("complete") is not True:
            raise ImageNotStoredError(
                f"{self.url}: image {image_id!r} is incomplete (its write did not finish)"
            )
        return array

    def _members(self, name: str) -> list[tuple[str, zarr.Array | zarr.Group]]:
        """The arrays and groups in group `name`; none where the group is missing (a creation cut short
        after the root document: writing an image creates its group)."""
        try:
            return list(zarr.open_group(self._zstore, path=name, mode="r").members())
        except (NodeNotFoundError, FileNotFoundError):
            return []

    def _done_records(self) -> dict[str, ImageRecord]:
        return {
            name: ImageRecord.from_dict(node.attrs["record"])
            for name, node in self._members(LABELS)
            if isinstance(node, zarr.Array) and node.attrs.get("complete") is True
        }

    def _failed_records(self) -> dict[str, ImageRecord]:
        return {
            name: ImageRecord.from_dict(node.attrs["record"])
            for name, node in self._members(FAILED)
            if isinstance(node, zarr.Group)
        }


async def _clear(zstore: Store) -> None:
    """Delete everything in the store, the root document last: a wipe cut short leaves a label store that
    `create(overwrite=True)` recognises and wipes again."""
    names = [name async for name in zstore.list_dir("")]
    for name in names:
        if name != METADATA_KEY:
            await zstore.delete_dir(name)
            await zstore.delete(name)
    await zstore.delete(METADATA_KEY)


def _read_settings(url: str, zstore: Store) -> dict[str, Any]:
    try:
        root = zarr.open_group(zstore, mode="r")
    except (NodeNotFoundError, FileNotFoundError) as exc:
        raise StoreError(f"{url}: no label store here") from exc
    settings = root.attrs.get(ROOT_ATTR)
    if not isinstance(settings, dict) or settings.get("format") != FORMAT_VERSION:
        raise StoreError(f"{url}: a zarr group, but not an autolabel label store (format {FORMAT_VERSION})")
    return settings


def manifest_table(records: list[ImageRecord]) -> pa.Table:
    """The manifest of `records` as a pyarrow Table with MANIFEST_SCHEMA."""
    rows = []
    for record in records:
        row = record.to_dict()
        row["started_at"] = datetime.fromisoformat(record.started_at)
        row["finished_at"] = datetime.fromisoformat(record.finished_at)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
