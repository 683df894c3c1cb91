"""The label store: zarr v3 arrays of label maps, one chunk per image, indexed by a Parquet manifest.

    {url}/zarr.json                         root group; attributes["autolabel"]: format, provenance, codec
    {url}/labels/{city}/{H}x{W}/zarr.json   uint8 array (SEQUENCES, FRAMES, H, W) of train ids (0..18,
                                            255 = ignore), fill 255; its codec chain (autolabel.codecs)
    {url}/labels/{city}/{H}x{W}/c.{seq}.{frame}.0.0
                                            image {city}_{seq}_{frame}: the single chunk [seq, frame],
                                            its map compressed whole (autolabel.codecs)
    {url}/confidence/{city}/{H}x{W}/...     the same for the kept confidence steps (keep_confidence
                                            stores; see kept_confidence), fill 0
    {url}/records/{image_id}.json           the record of an image written since the last manifest
    {url}/manifest.parquet                  one row per image (MANIFEST_SCHEMA: provenance, counts,
                                            centroids, status, chunk checksums): the index every reader
                                            starts from

    bytes per image = (maps + zarr.json documents + manifest) / images; the metadata is a fixed ~4 kB
    (documents, the manifest's Parquet footer) plus about 75 B per image in the manifest (see MANIFEST_PARQUET)

A reader finds an image through the index: the manifest, overlaid by the records written since it (a
run cut short leaves them; `write_manifest` folds them in and deletes them). The fold replaces the
manifest atomically before it deletes the records it holds, so a crash at any point leaves every
image in the manifest or in a record; only the records are ever deleted, and only once folded.
Other zarr readers open `labels/{city}/{H}x{W}` and read [seq, frame].

Checksums: a record holds the CRC-32 of each of its image's chunks as stored (labels_crc32,
confidence_crc32; a map that is all fill value has no chunk, and the checksum of no bytes, 0). Every
read checks the chunk against it first, so a chunk altered, truncated or deleted on disk is a
CorruptImageError naming the image, never a wrong map; `find_corrupt` checks many images from their
chunk bytes alone (no decoding), which is how `autolabel verify` and a resumed run find them.
Records written before checksums have none: their chunks are only checked to decode (autolabel.verify).

Concurrency: a writer touches only its image's chunks and record file, and creates the array of a new
(city, size) with the same metadata any other writer would, so any number of processes may write
different images at once. An image counts as stored once its record says done; the record is written
after its chunks, so an image whose write was cut short is not stored and is written again.
Creating a store writes its settings document exclusively (autolabel.claims): of jobs creating one store at
once, one wins; the others open it, and are refused when their settings differ. Jobs labelling one store
at once share its images: each claims an image (`claim`) before labelling it, and skips those another holds or
labelled since it started. Folding the manifest holds `manifest.lock`, so folds of two jobs never interleave.

    {url}/claims/{image_id}                 held by the process labelling the image (autolabel.claims)
    {url}/manifest.lock                     held while a manifest is folded
    {url}/overwrite.lock                    held while --overwrite replaces the store (open_store)

Local paths and `file://` URLs use zarr's LocalStore (atomic writes); any other fsspec URL
(`memory://`, `s3://`, ...) uses zarr's FsspecStore with `storage_options` (an S3 endpoint, credentials; without
them, fsspec's defaults: the AWS environment variables) and without fsspec's listings cache, which kept a listing
taken before other processes wrote the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import io
import json
import logging
import math
import os
import zlib
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zarr
from zarr.abc.store import Store
from zarr.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.errors import ContainsArrayError, NodeNotFoundError
from zarr.storage import FsspecStore, LocalStore, MemoryStore

from autolabel.claims import CLAIM_TIMEOUT_S, Claim, acquire, claim_key, held, read_key, release
from autolabel.codecs import DEFAULT_CODEC, ChunkShapeError, CodecChoice, codec_choice
from autolabel.dataset import class_centroids
from autolabel.errors import StoreError
from autolabel.labels import IGNORE, NUM_CLASSES
from autolabel.layout import stem_parts, validate_stem
from autolabel.threshold import CONFIDENCE_LEVELS

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
ROOT_ATTR = "autolabel"
LABELS, CONFIDENCE, RECORDS, CLAIMS = "labels", "confidence", "records", "claims"
MANIFEST = "manifest.parquet"
MANIFEST_LOCK = "manifest.lock"
OVERWRITE_LOCK = "overwrite.lock"
METADATA_KEY = "zarr.json"
SEQUENCES = FRAMES = 1_000_000
"""The (seq, frame) grid of a city: Cityscapes numbers both with 6 digits."""

Mode = Literal["r", "a"]


class ImageNotStoredError(StoreError, LookupError):
    """The image has no complete labels in the store."""


class StoreExistsError(StoreError):
    """A store already exists where one was to be created (perhaps by a job creating it at the same moment)."""


class ProvenanceMismatchError(StoreError):
    """The store was made with another teacher checkpoint, labelling settings or codec."""


class Fault(str, enum.Enum):
    """How a stored chunk fails its check."""

    MISSING = "chunk missing"
    CHECKSUM = "checksum mismatch"
    UNDECODABLE = "does not decode"
    SHAPE = "wrong shape"
    COUNTS = "class counts differ from the record"
    """Only for records without checksums, whose maps are decoded and counted instead."""


@dataclass(frozen=True)
class Corruption:
    """What is wrong with one stored image: which of its maps (LABELS / CONFIDENCE), how, and the details."""

    image_id: str
    group: str
    fault: Fault
    detail: str = ""

    @property
    def reason(self) -> str:
        return f"{self.group} {self.fault.value}" + (f" ({self.detail})" if self.detail else "")


class CorruptImageError(StoreError):
    """A stored map's chunk is missing, altered or does not decode; the message names the image (and how many
    `others` are corrupt too) and the fix."""

    def __init__(self, url: str, corruption: Corruption, others: int = 0) -> None:
        self.url, self.corruption, self.others = url, corruption, others
        also = f" and {others} other images are" if others else " is"
        super().__init__(f"{url}: image {corruption.image_id}{also} corrupt ({corruption.reason}); run `autolabel "
                         f"verify {url} --repair`, then rerun the label (or import) command that wrote the store to "
                         "write them again")

    def __reduce__(self) -> tuple[Any, ...]:
        return (CorruptImageError, (self.url, self.corruption, self.others))


NO_CHUNK_CHECKSUM = zlib.crc32(b"")
"""The checksum of a map that has no chunk: zarr stores none for a map that is all fill value."""


def chunk_checksum(data: bytes | None) -> int:
    """The CRC-32 of a chunk's stored bytes; None (no chunk) has NO_CHUNK_CHECKSUM."""
    return zlib.crc32(data or b"")


class Status(str, enum.Enum):
    """What became of an image: its labels are stored whole, or labelling it failed (the record says why)."""

    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Provenance:
    """How every label map of a store was made; fixed when the store is created."""

    checkpoint_sha256: str
    scales: tuple[float, ...]
    threshold: float
    pointrend: bool
    keep_confidence: bool = False
    flip: bool = False
    """Predictions averaged with those of the mirrored images."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "scales": list(self.scales)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


KEPT_CONFIDENCE_THRESHOLDS = (0.5, 0.9)
"""The thresholds that a store's kept confidence answers exactly, of those above the store's own (the two the
reference papers label at); the others act as the next of these up. Each exact threshold stores one more set of
contours: above a store at 0.5, keeping 0.9 costs 0.40-0.63x the labels' bytes, 0.7 and 0.9 1.1-1.6x, 0.6 to 0.9
more still (teacher outputs made at the teacher's training scale, benchmarks/storage.py)."""


def kept_confidence(labels: np.ndarray, confidence: np.ndarray, threshold: float) -> np.ndarray:
    """The (H, W) uint8 confidence steps (autolabel.threshold) as a store keeps them: the step of each
    KEPT_CONFIDENCE_THRESHOLD above `threshold` that a pixel clears, else the lowest step a pixel labelled
    at `threshold` has, unlabelled pixels included (their contours are the labels' own; reading restores 0)."""
    lowest = math.floor(round(threshold * CONFIDENCE_LEVELS, 9))
    kept = np.full_like(confidence, lowest)
    for t in KEPT_CONFIDENCE_THRESHOLDS:
        step = round(t * CONFIDENCE_LEVELS)
        if step > lowest:
            kept[(confidence >= step) & (labels != IGNORE)] = step
    return kept


Centroid = tuple[int, int, int]
"""(class, y, x): a pixel of the class near its centre of mass."""


@dataclass(frozen=True)
class ImageRecord:
    """Provenance and statistics of one image; one manifest row."""

    image_id: str
    source: str
    status: Status
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
    centroids: tuple[Centroid, ...] | None = None
    error: str | None = None
    labels_crc32: int | None = None
    """CRC-32 of the labels chunk as stored (chunk_checksum); None in records written before checksums."""
    confidence_crc32: int | None = None
    """The same for the confidence chunk (keep_confidence stores)."""

    def checksum(self, group: str) -> int | None:
        """The recorded checksum of the chunk of `group` (LABELS / CONFIDENCE)."""
        return self.labels_crc32 if group == LABELS else self.confidence_crc32

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scales"] = list(self.scales)
        data["class_pixels"] = None if self.class_pixels is None else list(self.class_pixels)
        data["centroids"] = None if self.centroids is None else [
            {"cls": c, "y": y, "x": x} for c, y, x in self.centroids
        ]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageRecord:
        values = {f.name: data.get(f.name) for f in fields(cls)}
        values["scales"] = tuple(values["scales"])
        for name in ("started_at", "finished_at"):
            values[name] = _timestamp(values[name])
        if values["class_pixels"] is not None:
            values["class_pixels"] = tuple(values["class_pixels"])
        if values["centroids"] is not None:
            values["centroids"] = tuple((c["cls"], c["y"], c["x"]) for c in values["centroids"])
        return cls(**values)

    @property
    def centroid_map(self) -> dict[int, tuple[int, int]]:
        """{class: (y, x)} of the classes the map holds."""
        return {c: (y, x) for c, y, x in self.centroids or ()}


CENTROIDS_TYPE = pa.list_(pa.struct([("cls", pa.int16()), ("y", pa.int32()), ("x", pa.int32())]))
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
        ("centroids", CENTROIDS_TYPE),
        ("error", pa.string()),
        ("labels_crc32", pa.uint32()),
        ("confidence_crc32", pa.uint32()),
    ]
)
"""Manifest columns: the ImageRecord fields, in order; timestamps as UTC. Manifests written before the checksums
lack their columns; reading gives them nulls (see conform_manifest)."""
MANIFEST_PARQUET = {"compression": "zstd", "compression_level": 19, "use_dictionary": False,
                    "write_statistics": False, "store_schema": False}
"""How the manifest is written: about 75 bytes per image on gtFine maps (class pixel counts 28, centroids 30, the
checksum, timestamps and ids the rest; fewer where counts and centroids repeat) and a fixed ~2.8 kB, mostly the
footer's column chunks. Dictionaries doubled the bytes per image; the stored Arrow schema cost 1.6 kB (reading
restores it by casting to MANIFEST_SCHEMA)."""


def conform_manifest(table: pa.Table) -> pa.Table:
    """A manifest read from disk with MANIFEST_SCHEMA: the columns an older autolabel did not write as nulls."""
    for column in MANIFEST_SCHEMA:
        if column.name not in table.column_names:
            table = table.append_column(column.name, pa.nulls(table.num_rows, column.type))
    return table.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)


def chunk_fault(record: ImageRecord, group: str, data: bytes | None) -> Corruption | None:
    """What is wrong with the stored chunk `data` (None: absent) of `record`'s map `group`, judged by its recorded
    checksum; without one (an older record) only a missing labels chunk of a map with labelled pixels is."""
    recorded = record.checksum(group)
    if recorded is None:
        if data is None and group == LABELS and record.labelled_fraction:
            return Corruption(record.image_id, group, Fault.MISSING, "the record counts labelled pixels")
        return None
    if data is None and recorded != NO_CHUNK_CHECKSUM:
        return Corruption(record.image_id, group, Fault.MISSING)
    actual = chunk_checksum(data)
    if actual != recorded:
        return Corruption(record.image_id, group, Fault.CHECKSUM, f"crc32 {actual:08x}, recorded {recorded:08x}")
    return None


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


EXACT_HISTOGRAM_PIXELS = 2**24
"""OpenCV counts in float32: exact below this many pixels."""


def _value_counts(labels: np.ndarray) -> np.ndarray:
    """(256,) int64 pixels of each value of a uint8 map: OpenCV's histogram (a few times faster than
    numpy's bincount, which widens every pixel to int64) where its float32 counts are exact."""
    if labels.size < EXACT_HISTOGRAM_PIXELS:
        return cv2.calcHist([labels], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    return np.bincount(labels.ravel(), minlength=256)


def class_pixels(labels: np.ndarray, name: str = "labels") -> tuple[int, ...]:
    """Pixel count of each train id in a (H, W) uint8 label map; rejects values 19..254."""
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"{name} must be a (H, W) uint8 array, got {labels.dtype} {labels.shape}")
    counts = _value_counts(labels)  # (256,)
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


def array_path(group: str, city: str, height: int, width: int) -> str:
    """The array of `group` (labels / confidence) holding the maps of `city` of one size."""
    return f"{group}/{city}/{height}x{width}"


def chunk_key(seq: int, frame: int) -> str:
    """The key of image [seq, frame]'s chunk in its array: one flat file per image."""
    return f"c.{seq}.{frame}.0.0"


def _chunk_path(group: str, image_id: str, height: int, width: int) -> str:
    """The store key of image `image_id`'s chunk in its array of `group`."""
    city, seq, frame = stem_parts(image_id)
    return f"{array_path(group, city, height, width)}/{chunk_key(seq, frame)}"


def _record_chunk_path(group: str, record: ImageRecord) -> str:
    return _chunk_path(group, record.image_id, record.height, record.width)


FETCH_CONCURRENCY = 64
"""Most chunk reads in flight at once when many images are checked."""


async def _gather(coroutines: Sequence[Coroutine[Any, Any, Any]]) -> list[Any]:
    """The results of `coroutines`, at most FETCH_CONCURRENCY running at once."""
    limit = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def limited(coroutine: Coroutine[Any, Any, Any]) -> Any:
        async with limit:
            return await coroutine

    return await asyncio.gather(*(limited(c) for c in coroutines))


def _decode_chunk(array: zarr.Array, coords: tuple[int, ...], data: bytes | None) -> np.ndarray:
    """The (H, W) map of the chunk at `coords` of `array` from its stored bytes (None: no chunk, the fill value),
    decoded by the array's own codec pipeline: the bytes a checksum was checked on are the bytes decoded, with
    no second fetch."""
    meta, prototype = array.metadata, default_buffer_prototype()
    spec = meta.get_chunk_spec(coords, array._async_array.config, prototype)
    if data is None:
        return np.full(spec.shape[-2:], array.fill_value, dtype=np.uint8)
    decoded = sync(array._async_array.codec_pipeline.decode([(prototype.buffer.from_bytes(data), spec)]))
    return next(iter(decoded)).as_numpy_array().reshape(spec.shape[-2:])  # (1, 1, H, W) -> (H, W)


def _zarr_store(url: str, read_only: bool, storage_options: dict[str, Any] | None) -> Store:
    if "://" not in url:
        return LocalStore(url, read_only=read_only)
    if url.startswith("file://"):
        return LocalStore(url.removeprefix("file://"), read_only=read_only)
    options = {"use_listings_cache": False, **(storage_options or {})}  # other processes write the store too
    return FsspecStore.from_url(url, storage_options=options, read_only=read_only)


def _file_sizes(zstore: Store, prefix: str) -> dict[str, int]:
    """Size of every object under `prefix`, from one listing (no request per object)."""
    if isinstance(zstore, LocalStore):
        base = Path(zstore.root) / prefix
        sizes = {}
        for folder, _, files in os.walk(base):
            for name in files:
                path = Path(folder) / name
                sizes[path.relative_to(zstore.root).as_posix()] = path.stat().st_size
        return sizes
    root = zstore.path.rstrip("/")
    found = sync(zstore.fs._find(f"{root}/{prefix}".rstrip("/"), detail=True))
    return {path.removeprefix(root).lstrip("/"): int(info["size"]) for path, info in found.items()}


def _empty_index() -> pa.Table:
    return MANIFEST_SCHEMA.empty_table()


class _Index:
    """An index table looked up by image id; a record is built when first asked for."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._rows = {image_id: i for i, image_id in enumerate(table["image_id"].to_pylist())}
        self._records: dict[str, ImageRecord] = {}

    def get(self, image_id: str) -> ImageRecord | None:
        if image_id not in self._records and image_id in self._rows:
            row = self.table.slice(self._rows[image_id], 1).to_pylist()[0]
            self._records[image_id] = ImageRecord.from_dict(row)
        return self._records.get(image_id)

    def put(self, record: ImageRecord) -> None:
        self._records[record.image_id] = record

    def ids(self, status: Status) -> set[str]:
        return set(self.table.filter(pc.equal(self.table["status"], status.value))["image_id"].to_pylist())

    def records(self) -> list[ImageRecord]:
        return [ImageRecord.from_dict(row) for row in self.table.to_pylist()]


class LabelStore:
    """A zarr v3 store of uint8 label maps, one chunk per image. Make one with `create` or `open`."""

    def __init__(self, url: str, zstore: Store, settings: dict[str, Any], mode: Mode,
                 storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.mode = mode
        self.provenance = Provenance.from_dict(settings["provenance"])
        self.codec: CodecChoice = codec_choice(settings["codec"])
        self.codec_level = int(settings["codec_level"]) if self.codec.has_levels else None  # None: context
        self._zstore = zstore
        self._storage_options = storage_options
        self._arrays: dict[str, zarr.Array] = {}
        self._index: _Index | None = None
        self._manifest_seen: tuple[int, dict[str, datetime]] | None = None

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        url: str | Path,
        provenance: Provenance,
        codec: str = DEFAULT_CODEC,
        level: int | None = None,
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> LabelStore:
        """Create an empty store whose maps use `codec` at `level` (its default if None); with `overwrite`,
        an existing label store there is deleted first."""
        url = normalize_url(url)
        choice = codec_choice(codec)
        level = choice.default_level if level is None else level
        choice.codecs(level)  # a bad level fails before anything is written
        zstore = _zarr_store(url, read_only=False, storage_options=storage_options)
        exists = StoreExistsError(f"{url}: already exists (pass overwrite=True to replace a label store)")
        if sync(_holds_anything(zstore)):
            if not overwrite:
                raise exists
            _read_settings(url, zstore)  # refuse to delete anything that is not a label store
            sync(_clear(zstore))
        settings = {
            "format": FORMAT_VERSION,
            "provenance": provenance.to_dict(),
            "codec": choice.name,
            "codec_level": level,
        }
        document = _root_document(settings)
        if claim_key(zstore, METADATA_KEY, document) != document:  # another job created it first
            raise exists
        log.info("created label store %s (%s level %d)", url, choice.name, level)
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
        codec: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> LabelStore:
        """Resume a store made with the same provenance (and `codec`, when given), or create it (with `codec`,
        else the default). Of jobs creating one store at once, one creates it and the others resume it, or are
        refused (ProvenanceMismatchError) when their settings differ."""
        zstore = _zarr_store(normalize_url(url), read_only=False, storage_options=storage_options)
        if sync(zstore.is_empty("")):
            with contextlib.suppress(StoreExistsError):  # else another job created it a moment ago: resume it
                return cls.create(url, provenance, codec or DEFAULT_CODEC, storage_options=storage_options)
        store = cls.open(url, "a", storage_options)
        store.check_provenance(provenance, codec)
        return store

    def __reduce__(self) -> tuple[Any, ...]:
        return (LabelStore.open, (self.url, self.mode, self._storage_options))

    def check_provenance(self, expected: Provenance, codec: str | None = None) -> None:
        """Raise ProvenanceMismatchError naming every field where the store differs from `expected` (and from
        `codec`, when given)."""
        stored, wanted = self.provenance.to_dict(), expected.to_dict()
        diffs = [
            f"{k}: store has {stored[k]!r}, run has {wanted[k]!r}" for k in stored if stored[k] != wanted[k]
        ]
        if codec is not None and codec != self.codec.name:
            diffs.append(f"codec: store has {self.codec.name!r}, run has {codec!r}")
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
        """Store the (H, W) uint8 labels of one image with its record; rewriting replaces it.

        `confidence` (H, W) uint8 is required by stores created with keep_confidence and refused by
        others (see autolabel.threshold for what it holds). The record carries the class pixel counts
        and class centroids, so readers of the index need not read the map, and the checksum of each chunk as
        stored (read back once written).
        """
        self._check_writable()
        city, seq, frame = stem_parts(image_id)
        started = _timestamp(started_at)
        counts = class_pixels(labels, f"labels of {image_id}")
        self._check_confidence(image_id, labels.shape, confidence)
        height, width = labels.shape
        labels_array = self._array(LABELS, city, height, width, create=True)
        checksums = {"labels_crc32": self._write_chunk(labels_array, (seq, frame), image_id, LABELS, labels)}
        if confidence is not None:
            kept = kept_confidence(labels, confidence, self.provenance.threshold)
            confidence_array = self._array(CONFIDENCE, city, height, width, create=True)
            checksums["confidence_crc32"] = self._write_chunk(confidence_array, (seq, frame), image_id, CONFIDENCE,
                                                              kept)
        record = ImageRecord(
            **self._provenance_fields(image_id, source, Status.DONE, started),
            height=height,
            width=width,
            labelled_fraction=sum(counts) / (height * width),
            mean_confidence=mean_confidence,
            class_pixels=counts,
            centroids=tuple((c, y, x) for c, (y, x) in sorted(class_centroids(labels).items())),
            **checksums,
        )
        self._write_record(record)
        return record

    def write_failure(
        self, image_id: str, source: str, error: str, started_at: datetime | str | None = None
    ) -> ImageRecord:
        """Record that an image could not be labelled; any labels it had are removed."""
        self._check_writable()
        stem_parts(image_id)
        record = ImageRecord(
            **self._provenance_fields(image_id, source, Status.FAILED, _timestamp(started_at)), error=error
        )
        self._write_record(record)
        sync(self._delete_chunks(image_id))
        log.warning("%s: %s failed: %s", self.url, image_id, error)
        return record

    def claim(self, image_id: str, since: datetime | None = None, job: str = "") -> Claim | None:
        """Hold `image_id` for this process to label it, or None when another live process holds it or (when
        `since`, the start of this job, is given) its record was written since then by another job. Release the
        claim once the image's record is written; a claim whose process died, or one of the same `job` (a retry
        of its own dead worker, on any node), is taken over (autolabel.claims)."""
        validate_stem(image_id)
        claim, _ = acquire(self._zstore, f"{CLAIMS}/{image_id}", CLAIM_TIMEOUT_S, job)
        if claim is not None and since is not None and self._recorded_since(image_id, since):
            self.release(image_id, claim)
            return None
        return claim

    def release(self, image_id: str, claim: Claim) -> None:
        """Give back a claim from `claim`."""
        release(self._zstore, f"{CLAIMS}/{image_id}", claim)

    def write_manifest(self) -> pa.Table:
        """Fold the records written since the last manifest into manifest.parquet (replaced atomically), then
        delete them, holding manifest.lock: jobs that finish together fold one after the other, and a record
        rewritten during the fold is kept for the next."""
        self._check_writable()
        with held(self._zstore, MANIFEST_LOCK, self.url):
            records = sync(self._pending_records())
            table = self._index_of(records)
            sink = io.BytesIO()
            pq.write_table(table, sink, **MANIFEST_PARQUET)
            sync(self._zstore.set(MANIFEST, default_buffer_prototype().buffer.from_bytes(sink.getvalue())))
            sync(_delete_unchanged(self._zstore, records))
        log.info("%s: manifest of %d images written", self.url, table.num_rows)
        return table

    # -- reading --------------------------------------------------------------------------

    def read(self, image_id: str) -> np.ndarray:
        """The (H, W) uint8 labels of a complete image; a CorruptImageError when its chunk fails its check."""
        return self._checked_map(LABELS, self.record(image_id))

    def read_window(self, image_id: str, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Labels [y0:y1, x0:x1] (y1-y0, x1-x0) of a complete image, checked as `read` checks them."""
        record = self.record(image_id)
        if not (0 <= y0 < y1 <= record.height and 0 <= x0 < x1 <= record.width):
            raise StoreError(f"{self.url}: window y[{y0}:{y1}] x[{x0}:{x1}] is outside {image_id} "
                             f"({record.height}x{record.width})")
        return self._checked_map(LABELS, record, (slice(y0, y1), slice(x0, x1)))

    def read_confidence(self, image_id: str) -> np.ndarray:
        """The (H, W) uint8 confidence steps of a complete image as kept (see kept_confidence), 0 where
        unlabelled (keep_confidence stores); checked as `read` checks the labels."""
        if not self.provenance.keep_confidence:
            raise StoreError(f"{self.url}: created without keep_confidence; no confidence maps")
        kept = self._checked_map(CONFIDENCE, self.record(image_id))
        return np.where(self.read(image_id) == IGNORE, np.uint8(0), kept)

    def find_corrupt(self, records: Iterable[ImageRecord]) -> list[Corruption]:
        """The first fault (chunk_fault) of each complete image of `records` whose chunks fail their checksums
        or whose array is gone: one small read per map, none decoded."""
        checks = [(r, g) for r in records if r.status == Status.DONE for g in self.groups]
        missing = self._missing_arrays({self._array_path(g, r) for r, g in checks})
        chunks = sync(_gather([self._chunk_bytes(_record_chunk_path(g, r)) for r, g in checks]))
        found: dict[str, Corruption] = {}
        for (record, group), data in zip(checks, chunks):
            fault = (self._array_gone(group, record) if self._array_path(group, record) in missing
                     else chunk_fault(record, group, data))
            if fault is not None:
                found.setdefault(record.image_id, fault)
        return list(found.values())

    def intact_ids(self) -> set[str]:
        """Ids of the complete images whose chunks pass find_corrupt: what a resumed run keeps. It writes the
        others again; each is named in a warning."""
        index = self._lookup(refresh=True)
        done = index.ids(Status.DONE)
        corrupt = self.find_corrupt(index.get(image_id) for image_id in sorted(done))
        for c in corrupt:
            log.warning("%s: %s is corrupt (%s); it is written again", self.url, c.image_id, c.reason)
        return done - {c.image_id for c in corrupt}

    @property
    def groups(self) -> tuple[str, ...]:
        """The maps each image has: LABELS, and CONFIDENCE in keep_confidence stores."""
        return (LABELS, CONFIDENCE) if self.provenance.keep_confidence else (LABELS,)

    def record(self, image_id: str) -> ImageRecord:
        """The record of a complete image."""
        validate_stem(image_id)
        record = self._lookup(refresh=False).get(image_id)
        if record is None or record.status != Status.DONE:
            record = self._lookup(refresh=True).get(image_id)
        if record is None:
            raise ImageNotStoredError(f"{self.url}: image {image_id!r} is not stored")
        if record.status != Status.DONE:
            raise ImageNotStoredError(f"{self.url}: image {image_id!r} failed: {record.error}")
        return record

    def completed_ids(self) -> set[str]:
        """Ids of images whose labels are completely written."""
        return self._lookup(refresh=True).ids(Status.DONE)

    def failed_ids(self) -> set[str]:
        """Ids of images recorded as failed (and not completed since)."""
        return self._lookup(refresh=True).ids(Status.FAILED)

    def records(self) -> list[ImageRecord]:
        """One record per image, done or failed, sorted by image id."""
        return self._lookup(refresh=True).records()

    def index(self) -> pa.Table:
        """The manifest with the records written since it folded in: one row per image, sorted by image id."""
        return self._index_of(sync(self._pending_records()))

    def _index_of(self, records: dict[str, bytes]) -> pa.Table:
        """The manifest, read after `records` (a fold writes the manifest before it deletes the records it
        holds, so nothing folded in between is missed), overlaid by them."""
        manifest = self._read_manifest()
        pending = [ImageRecord.from_dict(json.loads(data)) for data in records.values()]
        if not pending:
            return manifest
        newer = manifest_table(pending)
        kept = manifest.filter(pc.invert(pc.is_in(manifest["image_id"], newer["image_id"])))
        return pa.concat_tables([kept, newer]).sort_by("image_id")

    def manifest(self) -> pa.Table:
        """The manifest written last by write_manifest()."""
        return self._read_manifest(missing_ok=False)

    @property
    def manifest_url(self) -> str:
        return f"{self.url.rstrip('/')}/{MANIFEST}"

    def nbytes_on_disk(self, prefix: str = "", metadata: bool = True) -> int:
        """Bytes stored under `prefix` (e.g. "labels/"); `metadata=False` leaves out zarr.json documents."""
        sizes = _file_sizes(self._zstore, prefix)
        return sum(n for k, n in sizes.items() if metadata or not k.endswith(METADATA_KEY))

    def disk_usage(self) -> dict[str, int]:
        """Bytes on disk of the label maps, the confidence maps and the rest (metadata documents, records,
        manifest), from one listing of the store."""
        usage = {LABELS: 0, CONFIDENCE: 0, "metadata": 0}
        for key, size in _file_sizes(self._zstore, "").items():
            group = key.split("/", 1)[0]
            is_map = group in (LABELS, CONFIDENCE) and not key.endswith(METADATA_KEY)
            usage[group if is_map else "metadata"] += size
        return usage

    # -- internals ------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.mode != "a":
            raise StoreError(f"{self.url}: opened read-only (open with mode='a' to write)")

    def _check_confidence(self, image_id: str, shape: tuple[int, ...], confidence: np.ndarray | None) -> None:
        if self.provenance.keep_confidence and confidence is None:
            raise StoreError(f"{self.url}: store keeps confidence maps; none given for {image_id}")
        if not self.provenance.keep_confidence and confidence is not None:
            raise StoreError(f"{self.url}: store was created without keep_confidence; got one for {image_id}")
        if confidence is not None and (confidence.dtype != np.uint8 or confidence.shape != shape):
            raise ValueError(
                f"confidence of {image_id} must be uint8 {shape}, got {confidence.dtype} {confidence.shape}"
            )

    def _provenance_fields(self, image_id: str, source: str, status: Status, started: str) -> dict[str, Any]:
        p = self.provenance
        return dict(
            image_id=image_id, source=str(source), status=status.value,
            checkpoint_sha256=p.checkpoint_sha256, scales=p.scales, threshold=p.threshold,
            pointrend=p.pointrend, started_at=started, finished_at=_now(),
        )

    def _array(self, group: str, city: str, height: int, width: int, create: bool = False) -> zarr.Array:
        """The (SEQUENCES, FRAMES, H, W) array of one city and size; `create` makes it when missing, with the
        metadata every writer gives it."""
        path = array_path(group, city, height, width)
        array = self._arrays.get(path)
        if array is not None:
            return array
        try:
            array = zarr.open_array(self._zstore, path=path, mode="r" if self.mode == "r" else "r+")
        except (NodeNotFoundError, FileNotFoundError):
            if not create:
                raise
            codecs = self.codec.codecs(self.codec_level)
            try:
                array = zarr.create_array(
                    self._zstore, name=path, shape=(SEQUENCES, FRAMES, height, width),
                    chunks=(1, 1, height, width), chunk_key_encoding={"name": "default", "separator": "."},
                    dtype="uint8", serializer=codecs[0],
                    compressors=codecs[1:] or None, fill_value=IGNORE if group == LABELS else 0,
                    zarr_format=3,
                )
            except ContainsArrayError:  # another writer made it first
                array = zarr.open_array(self._zstore, path=path, mode="r+")
        self._arrays[path] = array
        return array

    def _location(self, record: ImageRecord) -> tuple[str, int, int]:
        return stem_parts(record.image_id)[0], record.height, record.width

    def _array_path(self, group: str, record: ImageRecord) -> str:
        return array_path(group, *self._location(record))

    def _array_gone(self, group: str, record: ImageRecord) -> Corruption:
        path = self._array_path(group, record)
        return Corruption(record.image_id, group, Fault.MISSING, f"its array {path} is missing")

    def _missing_arrays(self, paths: set[str]) -> set[str]:
        """Those of the array `paths` that have no metadata document."""
        ordered = sorted(paths)
        present = sync(_gather([self._zstore.exists(f"{path}/{METADATA_KEY}") for path in ordered]))
        return {path for path, there in zip(ordered, present) if not there}

    async def _chunk_bytes(self, key: str) -> bytes | None:
        """The stored bytes of the chunk at `key`; None when there is none."""
        buffer = await self._zstore.get(key, prototype=default_buffer_prototype())
        return None if buffer is None else buffer.to_bytes()

    def _write_chunk(self, array: zarr.Array, index: tuple[int, int], image_id: str, group: str,
                     plane: np.ndarray) -> int:
        """Store `plane` (H, W) as the chunk [seq, frame] of `array`, encoded by the array's codec pipeline, and
        return the checksum of the bytes stored: a map that is all fill value has no chunk, as zarr writes it."""
        key = _chunk_path(group, image_id, *plane.shape)
        prototype = default_buffer_prototype()
        if (plane == array.fill_value).all():
            sync(self._zstore.delete(key))
            return chunk_checksum(None)
        spec = array.metadata.get_chunk_spec((*index, 0, 0), array._async_array.config, prototype)
        chunk = prototype.nd_buffer.from_numpy_array(plane.reshape(spec.shape))
        encoded = next(iter(sync(array._async_array.codec_pipeline.encode([(chunk, spec)]))))
        sync(self._zstore.set(key, encoded))
        return chunk_checksum(encoded.to_bytes())

    def _checked_map(self, group: str, record: ImageRecord,
                     window: tuple[slice, slice] = (slice(None), slice(None))) -> np.ndarray:
        """The map `group` of a complete image ([window]), its chunk checked against the record before it is
        decoded: a CorruptImageError names the image when the chunk is missing, altered or does not decode."""
        _, seq, frame = stem_parts(record.image_id)
        try:
            array = self._array(group, *self._location(record))
        except (NodeNotFoundError, FileNotFoundError):
            raise CorruptImageError(self.url, self._array_gone(group, record)) from None
        data = sync(self._chunk_bytes(_record_chunk_path(group, record)))
        fault = chunk_fault(record, group, data)
        if fault is not None:
            raise CorruptImageError(self.url, fault)
        try:
            return _decode_chunk(array, (seq, frame, 0, 0), data)[window]
        except ChunkShapeError as exc:
            raise CorruptImageError(self.url, Corruption(record.image_id, group, Fault.SHAPE, str(exc))) from None
        except (RuntimeError, ValueError) as exc:  # what the coders raise on bytes they cannot decode
            corruption = Corruption(record.image_id, group, Fault.UNDECODABLE, f"{type(exc).__name__}: {exc}")
            raise CorruptImageError(self.url, corruption) from None

    def _lookup(self, refresh: bool) -> _Index:
        if self._index is None or refresh:
            self._index = _Index(self.index())
        return self._index

    def _write_record(self, record: ImageRecord) -> None:
        data = json.dumps(record.to_dict()).encode()
        key = f"{RECORDS}/{record.image_id}.json"
        sync(self._zstore.set(key, default_buffer_prototype().buffer.from_bytes(data)))
        if self._index is not None:
            self._index.put(record)

    async def _pending_records(self) -> dict[str, bytes]:
        """{key: the record's bytes} of the records written since the last manifest."""
        keys = [k async for k in self._zstore.list_prefix(f"{RECORDS}/") if k.endswith(".json")]
        data = await _gather([read_key(self._zstore, k) for k in keys])
        return {k: d for k, d in zip(keys, data) if d is not None}

    def _recorded_since(self, image_id: str, since: datetime) -> bool:
        """Whether the record of `image_id` (pending, else in the manifest) was finished at or after `since`."""
        data = sync(read_key(self._zstore, f"{RECORDS}/{image_id}.json"))
        finished = (datetime.fromisoformat(json.loads(data)["finished_at"]) if data is not None
                    else self._manifest_finished().get(image_id))
        return finished is not None and finished >= since

    def _manifest_finished(self) -> dict[str, datetime]:
        """{image id: finished_at} of the manifest, read again only when its size changed (a fold replaced it)."""
        try:
            size = sync(self._zstore.getsize(MANIFEST))
        except FileNotFoundError:
            size = -1
        if self._manifest_seen is None or self._manifest_seen[0] != size:
            manifest = self._read_manifest()
            finished = dict(zip(manifest["image_id"].to_pylist(), manifest["finished_at"].to_pylist()))
            self._manifest_seen = (size, finished)
        return self._manifest_seen[1]

    def _read_manifest(self, missing_ok: bool = True) -> pa.Table:
        buffer = sync(self._zstore.get(MANIFEST, prototype=default_buffer_prototype()))
        if buffer is None:
            if missing_ok:
                return _empty_index()
            raise StoreError(f"{self.manifest_url}: no manifest yet (write_manifest() makes it)")
        return conform_manifest(pq.read_table(pa.BufferReader(buffer.to_bytes())))

    async def _delete_chunks(self, image_id: str) -> None:
        """Delete the chunks of `image_id` in the arrays of every size of its city."""
        city, seq, frame = stem_parts(image_id)
        for group in (LABELS, CONFIDENCE):
            names = [name async for name in self._zstore.list_dir(f"{group}/{city}")]
            for size in (n for n in names if n != METADATA_KEY):
                await self._zstore.delete(f"{group}/{city}/{size}/{chunk_key(seq, frame)}")


async def _delete_all(zstore: Store, keys: list[str]) -> None:
    await asyncio.gather(*(zstore.delete(k) for k in keys))


async def _delete_unchanged(zstore: Store, contents: dict[str, bytes]) -> None:
    """Delete each key of `contents` that still holds its bytes there."""
    now = await _gather([read_key(zstore, k) for k in contents])
    await _delete_all(zstore, [k for k, data in zip(contents, now) if data == contents[k]])


def _root_document(settings: dict[str, Any]) -> bytes:
    """The root zarr.json of a label store with `settings`, as zarr writes it."""
    memory = MemoryStore()
    zarr.create_group(memory, zarr_format=3, attributes={ROOT_ATTR: settings})
    return sync(read_key(memory, METADATA_KEY))


async def _clear(zstore: Store) -> None:
    """Delete everything in the store but its overwrite lock, the root document last: a wipe cut short leaves a
    label store that `create(overwrite=True)` recognises and wipes again."""
    await _delete_all(zstore, [key async for key in zstore.list() if key not in (METADATA_KEY, OVERWRITE_LOCK)])
    await zstore.delete(METADATA_KEY)


async def _holds_anything(zstore: Store) -> bool:
    """Whether the store has a key besides the overwrite lock (stops at the first)."""
    async for key in zstore.list():
        if key != OVERWRITE_LOCK:
            return True
    return False


def _read_settings(url: str, zstore: Store) -> dict[str, Any]:
    try:
        root = zarr.open_group(zstore, mode="r")
    except (NodeNotFoundError, FileNotFoundError) as exc:
        raise StoreError(f"{url}: no label store here") from exc
    settings = root.attrs.get(ROOT_ATTR)
    if not isinstance(settings, dict):
        raise StoreError(f"{url}: a zarr group, but not an autolabel label store")
    if settings.get("format") != FORMAT_VERSION:
        raise StoreError(f"{url}: label store of format {settings.get('format')}, this autolabel reads format "
                         f"{FORMAT_VERSION}; label or import into a new store")
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


def open_store(out: str | Path, provenance: Provenance, overwrite: bool = False, codec: str | None = None,
               storage_options: dict[str, Any] | None = None) -> LabelStore:
    """The store at `out` for `provenance`: resumed when made with the same settings (and `codec`, when given),
    else created with `codec` (default: DEFAULT_CODEC); a store made with other settings is refused, or with
    `overwrite` replaced by an empty one. This is what --overwrite means for every command that writes a store:
    work already done with the same settings is never thrown away. `storage_options` go to fsspec (e.g. an S3
    endpoint and credentials)."""
    try:
        return LabelStore.open_or_create(out, provenance, codec, storage_options)
    except ProvenanceMismatchError:
        if not overwrite:
            raise
    url = normalize_url(out)
    with held(_zarr_store(url, read_only=False, storage_options=storage_options), OVERWRITE_LOCK, url):
        # of jobs replacing one store at once, the first replaces it; the others find it made with their
        # settings (resumed, never wiped again) or with others (replaced in turn)
        with contextlib.suppress(ProvenanceMismatchError):
            return LabelStore.open_or_create(out, provenance, codec, storage_options)
        return LabelStore.create(out, provenance, codec or DEFAULT_CODEC, overwrite=True,
                                 storage_options=storage_options)
