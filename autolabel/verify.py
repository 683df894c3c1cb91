"""Verify every stored map of a label store against its record, and mark the corrupt ones to be written again.

    each complete image ──► its chunks' bytes (labels, and confidence in keep_confidence stores)
        record has checksums:  CRC-32 equal to the recorded one?                     ok / corrupt
        record has none (written before checksums):  the map decodes, to the record's size
        and class pixel counts?                                                      decoded / corrupt
    repair ──► each corrupt image recorded as failed, its chunks deleted; the manifest folded

A corrupt image is one whose chunk is missing, altered (checksum mismatch), does not decode, decodes to the
wrong shape, or (without checksums) holds other class counts than its record. Repairing makes it a failed image,
which is what `label` (and `import`, `rethreshold`) on the same store write again; `label` also writes again,
on resume, any image whose chunk fails its checksum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autolabel.store import (
    LABELS,
    CorruptImageError,
    Corruption,
    Fault,
    ImageRecord,
    LabelStore,
    Status,
    class_pixels,
)

VERIFY_BATCH = 256
"""Images checked between two progress reports."""

REPAIRED = "corrupt ({reason}); marked by `autolabel verify --repair` to be written again"
"""The error recorded for each image that verify repaired."""


@dataclass(frozen=True)
class VerifyReport:
    """What `verify` found in a store."""

    store: str
    ok: tuple[str, ...]
    """Images whose chunks match their recorded checksums."""
    decoded: tuple[str, ...]
    """Images recorded without checksums (by an older autolabel) whose maps decode to their recorded size and
    class counts: the most that can be checked of them."""
    corrupt: tuple[Corruption, ...]
    """One per corrupt image, with its reason."""
    repaired: bool = False
    """The corrupt images are now recorded as failed, to be written again."""

    def to_dict(self) -> dict[str, Any]:
        """Counts of the ok and decoded images, and every corrupt one with its reason."""
        return {
            "store": self.store, "images": len(self.ok) + len(self.decoded) + len(self.corrupt),
            "ok": len(self.ok), "decoded": len(self.decoded), "repaired": self.repaired,
            "corrupt": [{"image_id": c.image_id, "map": c.group, "fault": c.fault.name.lower(), "detail": c.detail,
                         "reason": c.reason} for c in self.corrupt],
        }


def decode_fault(store: LabelStore, record: ImageRecord) -> Corruption | None:
    """What is wrong with an image recorded without checksums: its maps must decode to the record's size, and its
    labels must hold the record's class pixel counts (and no value outside the schema)."""
    try:
        labels = store.read(record.image_id)
        if store.provenance.keep_confidence:
            store.read_confidence(record.image_id)
    except CorruptImageError as exc:
        return exc.corruption
    try:
        counts = class_pixels(labels)
    except ValueError as exc:
        return Corruption(record.image_id, LABELS, Fault.COUNTS, str(exc))
    if record.class_pixels is not None and counts != record.class_pixels:
        differ = [c for c, (a, b) in enumerate(zip(counts, record.class_pixels)) if a != b]
        return Corruption(record.image_id, LABELS, Fault.COUNTS, f"classes {differ[:8]}")
    return None


def _check(store: LabelStore, records: list[ImageRecord]) -> tuple[list[str], list[str], list[Corruption]]:
    """(ok, decoded, corrupt) among `records`: checksums from the chunk bytes, then a decode of those without."""
    corrupt = {c.image_id: c for c in store.find_corrupt(records)}
    ok, decoded = [], []
    for record in records:
        if record.image_id in corrupt:
            continue
        if all(record.checksum(group) is not None for group in store.groups):
            ok.append(record.image_id)
            continue
        fault = decode_fault(store, record)
        if fault is None:
            decoded.append(record.image_id)
        else:
            corrupt[record.image_id] = fault
    return ok, decoded, [corrupt[r.image_id] for r in records if r.image_id in corrupt]


def repair(store: LabelStore, corrupt: tuple[Corruption, ...]) -> None:
    """Record each corrupt image as failed (deleting its chunks) and fold the manifest: the next run of the
    command that made the store writes them again. Run while nothing else writes to the store."""
    for corruption in corrupt:
        record = store.record(corruption.image_id)
        store.write_failure(record.image_id, record.source, REPAIRED.format(reason=corruption.reason))
    store.write_manifest()


def verify(store_url: str, repair_corrupt: bool = False, progress: Callable[[int, int], None] | None = None,
           storage_options: dict[str, Any] | None = None) -> VerifyReport:
    """Check every complete image of the store at `store_url` (see the module docstring); with `repair_corrupt`,
    the corrupt ones are then recorded as failed so that the next labelling run writes them again.
    `progress(done, total)` follows the images checked."""
    store = LabelStore.open(store_url, "a" if repair_corrupt else "r", storage_options)
    records = [r for r in store.records() if r.status == Status.DONE]
    ok: list[str] = []
    decoded: list[str] = []
    corrupt: list[Corruption] = []
    if progress:
        progress(0, len(records))
    for start in range(0, len(records), VERIFY_BATCH):
        batch_ok, batch_decoded, batch_corrupt = _check(store, records[start:start + VERIFY_BATCH])
        ok += batch_ok
        decoded += batch_decoded
        corrupt += batch_corrupt
        if progress:
            progress(min(start + VERIFY_BATCH, len(records)), len(records))
    if repair_corrupt and corrupt:
        repair(store, tuple(corrupt))
    return VerifyReport(store.url, tuple(ok), tuple(decoded), tuple(corrupt), repaired=repair_corrupt and bool(corrupt))
