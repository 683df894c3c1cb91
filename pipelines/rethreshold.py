"""Threshold a keep-confidence store's labels again, at a higher threshold, without running the teacher.

    source store (labels + kept confidence) ──► per image: keep a pixel only where its confidence step
    clears the new threshold ──► a new store with the same provenance but the new threshold

The new store keeps the confidence maps, so it can be re-thresholded again; a rerun resumes it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from autolabel.errors import StoreError
from autolabel.store import ImageNotStoredError, LabelStore, Status, open_store
from autolabel.threshold import check_threshold
from autolabel.threshold import rethreshold as rethreshold_labels
from pipelines.label import LabelProgress, LabelSummary, summarize


class RethresholdError(StoreError):
    """A store cannot be re-thresholded as asked; the message names the store and the reason."""


def rethreshold(store_url: str | Path, out: str | Path, *, threshold: float, overwrite: bool = False,
                codec: str | None = None, progress: LabelProgress | None = None,
                storage_options: dict[str, Any] | None = None) -> LabelSummary:
    """A new store at `out` from a keep-confidence store, thresholded again at a higher `threshold`.

    No teacher runs: a pixel stays labelled only where its stored confidence exceeds `threshold` (exact at
    0.5 and 0.9, see autolabel.store.kept_confidence). The new store uses `codec`, default the source's.
    A lower threshold than the store's is refused (the dropped pixels' classes are gone). The new
    store keeps the confidence maps, so it can be re-thresholded again; reruns resume it (writing again the
    images whose chunks in it fail their checksums). `storage_options` are the fsspec options of both URLs.
    """
    threshold = check_threshold(threshold)
    source = LabelStore.open(store_url, storage_options=storage_options)
    old = source.provenance
    if not old.keep_confidence:
        raise RethresholdError(f"{source.url}: made without keep_confidence; it cannot be re-thresholded "
                         "(label again with keep_confidence)")
    if threshold < old.threshold:
        raise RethresholdError(f"{source.url}: threshold {threshold} is below the store's {old.threshold}; "
                         "pixels under the store's threshold have no class left to restore")
    target = open_store(out, replace(old, threshold=threshold), overwrite, codec or source.codec.name,
                        storage_options)
    records = source.records()
    stored = target.intact_ids()
    todo = [r for r in records if r.image_id not in stored]
    tic, done, failed = time.perf_counter(), 0, {}
    for record in todo:
        if record.status == Status.DONE:
            try:
                labels, confidence = rethreshold_labels(
                    source.read(record.image_id), source.read_confidence(record.image_id), threshold)
            except ImageNotStoredError as exc:  # removed from the source while we ran
                failed[record.image_id] = str(exc)
                target.write_failure(record.image_id, record.source, str(exc))
            else:
                target.write(record.image_id, labels, source=record.source, confidence=confidence,
                             mean_confidence=record.mean_confidence)
                done += 1
        else:
            failed[record.image_id] = record.error or "failed in the source store"
            target.write_failure(record.image_id, record.source, failed[record.image_id])
        if progress:
            progress(done, len(failed), len(todo))
    seconds = time.perf_counter() - tic
    return summarize(target, len(records), done, len(records) - len(todo), failed, seconds)
