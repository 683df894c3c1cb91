"""Convert existing PNG label maps of a Cityscapes split (gtFine / gtCoarse) into a label store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolabel.errors import DatasetError
from autolabel.images import image_shape, read_label
from autolabel.labels import to_train_ids
from autolabel.layout import LabelSource, list_samples
from autolabel.store import Provenance, open_store


@dataclass(frozen=True)
class IngestSummary:
    store: str
    written: int
    skipped: int
    failed: dict[str, str] = field(default_factory=dict)
    """image id -> error, for label files that could not be read."""


def import_provenance(source: str) -> Provenance:
    """Provenance of hand-made labels: no teacher, no threshold, one scale."""
    return Provenance(checkpoint_sha256=f"import:{source}", scales=(1.0,), threshold=0.0, pointrend=False)


def import_labels(
    root: Path,
    split: str,
    source: LabelSource,
    out: str,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    codec: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> IngestSummary:
    """Store every `source` label map of `split` (as train ids) with their class counts and centroids; reruns
    skip images already stored, except those whose stored chunks fail their checksums. `codec` (autolabel.codecs)
    compresses a new store's maps (None: the default, or the codec of the store being resumed); `storage_options`
    are the fsspec options of an `out` URL (an S3 endpoint, credentials)."""
    samples = [s for s in list_samples(Path(root), split, source, require_labels=False) if s.label is not None]
    if not samples:
        raise DatasetError(f"{root}: split {split!r} has no {source} label files")
    provenance = import_provenance(source)
    store = open_store(out, provenance, overwrite, codec, storage_options)
    done = store.intact_ids()
    written, failed = 0, {}
    for i, sample in enumerate(samples):
        if sample.stem not in done:
            try:
                labels = to_train_ids(read_label(sample.label, shape=image_shape(sample.image)))
            except DatasetError as exc:
                store.write_failure(sample.stem, str(sample.image), str(exc))
                failed[sample.stem] = str(exc)
            else:
                store.write(sample.stem, labels, source=str(sample.image))
                written += 1
        if progress:
            progress(i + 1, len(samples))
    store.write_manifest()
    return IngestSummary(store.url, written, len(samples) - written - len(failed), failed)
