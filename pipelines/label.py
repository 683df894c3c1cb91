"""Auto-label a split with a teacher on Ray Data, into a label store.

    image paths ──► decode (OpenCV; an unreadable file becomes a row with an error)
                ──► actor pool: the teacher loaded once per actor; images of one size are predicted
                    together (multi-scale attention, PointRend) and thresholded on the device; each
                    image is written whole into the store by the actor that labelled it
                ──► small result rows to the driver: progress, failure records, then the manifest

The store's provenance (checkpoint sha256, scales, threshold, PointRend, keep_confidence) is fixed
when it is created; a rerun with the same settings labels only the images that are not complete,
so a run killed at any moment is finished by running it again. Complete images whose stored chunks
no longer match their checksums (LabelStore.intact_ids) count as not complete.

Jobs with the same settings may label one store at once and share its images: an actor claims each image
(LabelStore.claim) before labelling it and skips (SKIPPED) those another job holds or labelled since this job
started; the claim is released once the image's record (done or failed) is written.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autolabel.codecs import codec_choice
from autolabel.errors import ConfigError, DatasetError
from autolabel.images import decode_image, read_file_bytes
from autolabel.layout import Sample, list_samples
from autolabel.store import LabelStore, Provenance, Status, open_store
from autolabel.threshold import check_threshold, threshold_probs
from autolabel.transforms import normalize_batch
from models.checkpoint import load_checkpoint
from models.parts import untrained_in_use
from models.predict import PredictOptions, predict
from models.teacher import TeacherConfig, load_model
from pipelines.ray_session import ray_session

log = logging.getLogger(__name__)

LabelProgress = Callable[[int, int, int], None]
"""progress(done, failed, total) over the images a run labels."""

SKIPPED = "skipped"
"""The outcome of a row whose image another job holds or labelled (not a Status: nothing is recorded for it)."""

NO_IMAGE = np.zeros((0, 0, 3), dtype=np.uint8)
"""The image of a row whose file could not be decoded."""

MAX_LABEL_ATTEMPTS = 3
"""Tries at an image whose labelling kills its worker (Ray replaces the actor and retries its batch) before the
image is recorded as failed: the job goes on instead of retrying it without end."""

BLOCK_IMAGES = 8
"""Most images per Ray Data block (the unit of scheduling, retry and progress) of a large split."""
BLOCKS_PER_WORKER = 4
"""Fewest blocks per actor, so small splits still keep every actor busy."""


@dataclass(frozen=True)
class InferenceSettings:
    """What every labelling actor needs besides the checkpoint and the store."""

    options: PredictOptions = PredictOptions()
    threshold: float = 0.5
    keep_confidence: bool = False
    device: str = "cpu"
    torch_threads: int = 1
    since: datetime | None = None
    """When the job started: images recorded since then were labelled by another job, and are skipped."""
    job: str = ""
    """The job's id in its claims: a retry takes over its own dead worker's claims at once, on any node."""


LABEL_SCALES = (0.5, 1.0, 2.0)
"""Default labelling scales: the paper's inference scales, fused by the hierarchical attention."""


@dataclass(frozen=True, kw_only=True)
class LabelConfig:
    """One labelling run: which split, which teacher, where to, and how; validated here, once.

    Pixels whose max probability exceeds `threshold` keep their class, the rest are 255 (ignore). `predict` says
    how the teacher predicts (scales, PointRend, flip, batch size, sliding-window budget). `keep_confidence`
    also stores whether each labelled pixel clears 0.5 and 0.9, for `rethreshold`. `codec`
    (autolabel.codecs) compresses the maps of a new store; None means the default, or the codec of the store
    being resumed. A store made with other settings is refused unless `overwrite`, which replaces it. Runs on Ray
    at `address` (or RAY_ADDRESS), else on a local Ray; `out` may be an fsspec URL and, like the images and
    checkpoint, must be reachable by every worker.
    """

    root: Path
    checkpoint: Path
    out: str
    split: str = "train_extra"
    predict: PredictOptions = field(default_factory=lambda: PredictOptions(scales=LABEL_SCALES))
    threshold: float = 0.5
    keep_confidence: bool = False
    workers: int = 1
    gpus_per_worker: float = 0.0
    address: str | None = None
    overwrite: bool = False
    codec: str | None = None
    storage_options: dict[str, Any] | None = None
    """fsspec options of `out` (e.g. {"endpoint_url": ..., "key": ..., "secret": ...} for S3), given to every worker."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", check_threshold(self.threshold))
        if self.workers < 1 or not (math.isfinite(self.gpus_per_worker) and self.gpus_per_worker >= 0):
            raise ConfigError(f"workers must be >= 1 and gpus_per_worker >= 0, got {self.workers}, "
                              f"{self.gpus_per_worker}")
        if self.codec is not None:
            codec_choice(self.codec)


@dataclass(frozen=True)
class LabelSummary:
    """What a run did; `labelled_fraction` and `bytes_per_image` describe every image in the store."""

    store: str
    total: int
    """Images of the split (or of the source store, for rethreshold)."""
    done: int
    """Images labelled by this run."""
    skipped: int
    """Images already complete in the store before this run."""
    shared: int = 0
    """Images another job writing the same store labelled (or failed) while this run ran."""
    failed: dict[str, str] = field(default_factory=dict)
    """image id -> error, for images this run could not label."""
    seconds: float = 0.0
    """Wall time of the labelling itself (not of starting Ray)."""
    images_per_s: float = 0.0
    labelled_fraction: float = 0.0
    """Mean fraction of pixels above the threshold, over the stored images."""
    bytes_per_image: float = 0.0
    """Bytes of the whole store on disk (maps, metadata, manifest) per stored image."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- Ray Data stages ---------------------------------------------------------------------------


def decode_row(row: dict[str, Any]) -> dict[str, Any]:
    """Read and decode the image at row["source"]; an unreadable file gets NO_IMAGE and its error."""
    try:
        data = read_file_bytes(row["source"])
        return {**row, "image": decode_image(data, row["source"]), "error": ""}
    except (OSError, DatasetError) as exc:
        return {**row, "image": NO_IMAGE, "error": str(exc)}


def group_by_shape(images: Sequence[np.ndarray], errors: Sequence[str]) -> dict[tuple[int, ...], list[int]]:
    """Indices of the decoded images, grouped by (H, W, 3) shape, in batch order."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, (image, error) in enumerate(zip(images, errors)):
        if not error:
            groups[tuple(image.shape)].append(i)
    return dict(groups)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Labeler:
    """Ray Data callable class: loads the teacher once, then labels batches and stores each image.

    Takes batches with columns image_id, source, image (H, W, 3) uint8, error; returns image_id,
    source, status (Status values), error, labelled_fraction and seconds per image.
    """

    def __init__(self, checkpoint: str, store: LabelStore, settings: InferenceSettings) -> None:
        torch.set_num_threads(settings.torch_threads)
        self.settings = settings
        self.store = store
        self.device = torch.device(settings.device)
        self.model = load_model(checkpoint)[0].to(self.device).eval()

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Labels and confidence steps (N, H, W) uint8 and the mean max probability (N,) of same-size RGB
        images (N, H, W, 3) uint8."""
        s = self.settings
        batch = normalize_batch(torch.from_numpy(images).to(self.device))  # (N, 3, H, W)
        probs = predict(self.model, batch, s.options.scales, s.options.pointrend, s.options.batch_size,
                        s.options.max_pixels, s.options.flip)  # (N, K, H, W)
        labels, confidence = threshold_probs(probs, s.threshold, with_confidence=True)  # (N, H, W) x2
        mean_confidence = probs.amax(dim=1).mean(dim=(1, 2))  # (N,)
        return labels.cpu().numpy(), confidence.cpu().numpy(), mean_confidence.cpu().numpy()

    def store_image(self, image_id: str, source: str, labels: np.ndarray, confidence: np.ndarray,
                    mean_confidence: float, started_at: datetime) -> float:
        """Write one image's labels whole, with its class counts and centroids; returns its labelled fraction."""
        record = self.store.write(
            image_id, labels, source=source, mean_confidence=mean_confidence,
            confidence=confidence if self.settings.keep_confidence else None, started_at=started_at,
        )
        return float(record.labelled_fraction)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = list(batch["image_id"])
        claims = {i: claim for i, image_id in enumerate(ids)
                  if (claim := self.store.claim(image_id, self.settings.since, self.settings.job)) is not None}
        try:
            return self.label_claimed(batch, {i: claim.attempt for i, claim in claims.items()})
        finally:
            for i, claim in claims.items():
                self.store.release(ids[i], claim)

    def label_claimed(self, batch: dict[str, np.ndarray], attempts: dict[int, int]) -> dict[str, np.ndarray]:
        """Label and store the rows claimed (`attempts`: row -> its attempt), record the failed ones, and mark the
        others SKIPPED. A row on a later attempt (a worker died while labelling it) is labelled alone, after the
        others, so it takes no other image down with it; past MAX_LABEL_ATTEMPTS it is recorded as failed."""
        ids, sources = list(batch["image_id"]), list(batch["source"])
        status = [Status.FAILED.value if i in attempts else SKIPPED for i in range(len(ids))]
        errors = [str(e) if i in attempts else "" for i, e in enumerate(batch["error"])]
        for i, attempt in attempts.items():
            if attempt > MAX_LABEL_ATTEMPTS and not errors[i]:
                errors[i] = (f"its labelling worker died {attempt - 1} times while labelling it (killed for memory, "
                             "or a crash in native code); a rerun tries it again")
        fractions, seconds = np.full(len(ids), np.nan), np.zeros(len(ids))
        groups = [[i for i in indices if attempts.get(i) == 1]
                  for indices in group_by_shape(batch["image"], errors).values()]
        retried = [[i] for i in sorted(attempts) if attempts[i] > 1 and not errors[i]]
        for indices in [group for group in groups if group] + retried:
            started, tic = _utc_now(), time.perf_counter()
            try:
                labels, confidence, means = self.infer(np.stack([batch["image"][i] for i in indices]))
            except Exception as exc:  # a bad group fails its images, never the job
                log.exception("inference failed for %s", [ids[i] for i in indices])
                for i in indices:
                    errors[i] = f"inference failed: {_describe(exc)}"
                continue
            share = (time.perf_counter() - tic) / len(indices)
            for j, i in enumerate(indices):
                tic = time.perf_counter()
                try:
                    fractions[i] = self.store_image(ids[i], sources[i], labels[j], confidence[j], float(means[j]),
                                                    started)
                except Exception as exc:  # e.g. storage errors: recorded, retried by a rerun
                    log.exception("storing %s failed", ids[i])
                    errors[i] = f"storing failed: {_describe(exc)}"
                    continue
                status[i], seconds[i] = Status.DONE.value, share + time.perf_counter() - tic
        for i in sorted(attempts):
            if status[i] == Status.FAILED.value:
                self.store.write_failure(ids[i], sources[i], errors[i])
        return {
            "image_id": np.array(ids, dtype=object),
            "source": np.array(sources, dtype=object),
            "status": np.array(status, dtype=object),
            "error": np.array(errors, dtype=object),
            "labelled_fraction": fractions,
            "seconds": seconds,
        }


# -- driver -----------------------------------------------------------------------------------


def run_labeling(
    store: LabelStore,
    samples: Sequence[Sample],
    checkpoint: str | Path,
    settings: InferenceSettings,
    workers: int = 1,
    gpus_per_worker: float = 0,
    progress: LabelProgress | None = None,
    labeler: type[Labeler] = Labeler,
) -> tuple[dict[str, str], int]:
    """Label `samples` into `store` on the running Ray with `workers` actors of `labeler`.

    The actors record every image that could not be labelled; returns them (image id -> error) and how many
    images another job labelled meanwhile (SKIPPED). Does not write the manifest.
    """
    import ray

    total, done, shared, failed = len(samples), 0, 0, {}
    if progress:
        progress(0, 0, total)
    if not samples:
        return failed, shared
    items = [{"image_id": s.stem, "source": str(s.image)} for s in samples]
    blocks = min(len(items), max(math.ceil(len(items) / BLOCK_IMAGES), BLOCKS_PER_WORKER * workers))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    ds.context.enable_progress_bars = False
    ds = ds.map(decode_row).map_batches(
        labeler,
        fn_constructor_kwargs={"checkpoint": str(checkpoint), "store": store, "settings": settings},
        compute=ray.data.ActorPoolStrategy(size=workers),
        batch_size=settings.options.batch_size,
        num_gpus=gpus_per_worker,
    )  # Ray Data replaces a dead actor and retries its block on the replacement
    for row in ds.iter_rows():
        if row["status"] == Status.DONE:
            done += 1
        elif row["status"] == SKIPPED:
            shared += 1
        else:
            failed[row["image_id"]] = row["error"]
        if progress:
            progress(done + shared, len(failed), total)
    return failed, shared


def summarize(store: LabelStore, total: int, done: int, skipped: int, failed: dict[str, str],
              seconds: float, shared: int = 0) -> LabelSummary:
    """Write the manifest (one writer: the driver) and summarise the run and the store."""
    manifest = store.write_manifest()
    fractions = [f for f, s in zip(manifest["labelled_fraction"].to_pylist(), manifest["status"].to_pylist())
                 if s == Status.DONE]
    stored = len(fractions)
    return LabelSummary(
        store=store.url, total=total, done=done, skipped=skipped, shared=shared, failed=dict(sorted(failed.items())),
        seconds=seconds, images_per_s=done / seconds if seconds > 0 else 0.0,
        labelled_fraction=float(np.mean(fractions)) if stored else 0.0,
        bytes_per_image=store.nbytes_on_disk() / stored if stored else 0.0,
    )


def check_cluster_gpus(gpus_per_worker: float) -> None:
    """A ConfigError when actors ask for GPUs the running Ray cluster does not have (they would wait forever)."""
    import ray

    have = ray.cluster_resources().get("GPU", 0)
    if gpus_per_worker > have:
        raise ConfigError(f"--gpus-per-worker {gpus_per_worker:g} asks for more GPUs than the Ray cluster has "
                          f"({have:g}); use 0 to label on CPUs or join GPU nodes")


def label(config: LabelConfig, *, progress: LabelProgress | None = None, labeler: type[Labeler] = Labeler) -> LabelSummary:
    """Label every image of `config.split` with the teacher into the label store `config.out`.

    Resumes a store made with the same checkpoint and settings (only incomplete, failed or corrupt images are
    labelled again; corrupt: a stored chunk that no longer matches its recorded checksum). Unreadable images are
    recorded as failed and named in the summary; the job goes on. `labeler` may be a subclass of Labeler that
    changes how a batch is labelled.
    """
    root, checkpoint = Path(config.root).resolve(), Path(config.checkpoint).resolve()  # workers run elsewhere
    options = config.predict
    samples = list_samples(root, config.split)
    ckpt = load_checkpoint(checkpoint)  # a bad checkpoint fails here, naming the file, not in every actor
    untrained = untrained_in_use(ckpt.metadata, TeacherConfig.from_dict(ckpt.config), options.scales, options.pointrend)
    if untrained:
        log.warning("%s: labelling with untrained %s (a converted teacher's missing parts): fit them first with "
                    "`autolabel train ROOT --init %s --train-only %s`, or label with --scales 1.0 --no-pointrend",
                    checkpoint.name, " and ".join(untrained), checkpoint, ",".join(untrained))
    provenance = Provenance(ckpt.sha256, options.scales, config.threshold, options.pointrend,
                            config.keep_confidence, options.flip)
    since = _utc_now()
    store = open_store(config.out, provenance, config.overwrite, config.codec, config.storage_options)
    stored = store.intact_ids()
    todo = [s for s in samples if s.stem not in stored]
    log.info("%s: %d of %d images of %s to label", store.url, len(todo), len(samples), config.split)
    with ray_session(config.address) as cpus:
        check_cluster_gpus(config.gpus_per_worker)
        settings = InferenceSettings(
            options=options, threshold=config.threshold, keep_confidence=config.keep_confidence,
            device="cuda" if config.gpus_per_worker > 0 else "cpu",
            torch_threads=max(1, cpus // config.workers), since=since, job=uuid.uuid4().hex,
        )
        tic = time.perf_counter()
        failed, shared = run_labeling(store, todo, checkpoint, settings, config.workers, config.gpus_per_worker,
                                      progress, labeler)
        seconds = time.perf_counter() - tic
    done = len(todo) - len(failed) - shared
    return summarize(store, len(samples), done, len(samples) - len(todo), failed, seconds, shared)
