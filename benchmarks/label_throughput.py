"""Labelling throughput: the Ray pipeline vs a plain in-process loop, and 2 Ray workers vs 1.

    python -m benchmarks.label_throughput --images 64 --height 256 --width 512 --repeats 3 --json

Every run labels the same images with the same untrained teacher into a fresh store (decode,
predict, threshold, write). The loop uses all cores in one process; Ray runs `label()` with 1 and
2 actors (torch threads split between them). Starting Ray is never timed. "cold" rates count the
whole run, actor start-up and model loading included; "warm" rates count only the images reported
after every worker has reported its first results (Ray reports a block of images at once), timed
from that moment. The three runs
are repeated in turn and each ratio uses the best run of each kind, so a burst of load from
other processes on a shared machine hurts as little as possible.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import ray
import torch
from rich.console import Console
from rich.table import Table

from autolabel.images import read_image, write_png
from autolabel.layout import IMAGE_DIR, IMAGE_SUFFIX, list_samples
from autolabel.store import LabelStore, Provenance
from autolabel.threshold import threshold_probs
from autolabel.transforms import normalize_batch
from benchmarks.machine import machine
from models.checkpoint import Checkpoint, file_sha256, save_checkpoint
from models.predict import PredictOptions, predict
from models.teacher import build_model, load_model
from pipelines.label import LabelConfig, label

SPLIT = "train_extra"
THRESHOLD = 0.5


@dataclass(frozen=True)
class Run:
    name: str
    workers: int
    images: int
    seconds: float
    cold_images_per_s: float
    warm_images_per_s: float


def write_dataset(root: Path, count: int, height: int, width: int, seed: int) -> None:
    """`count` smooth noisy RGB images in the Cityscapes layout."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, height)[:, None, None]  # (H, 1, 1)
    for i in range(count):
        top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        image = top * (1 - rows) + bottom * rows + rng.normal(0, 12, (height, width, 3))  # (H, W, 3)
        path = root / IMAGE_DIR / SPLIT / "bench" / f"bench_{i // 30:06d}_{i % 30:06d}{IMAGE_SUFFIX}"
        write_png(path, np.clip(image, 0, 255).astype(np.uint8))


def rates(name: str, workers: int, start: float, reported: list[float]) -> Run:
    """Cold and warm rates from the start time and the time each image was reported.

    The warm interval starts at the `workers`-th distinct report time (each worker's first results
    in, warm-up over) and counts the images reported after it.
    """
    seconds = reported[-1] - start
    times = sorted(set(reported))
    if len(times) <= workers:
        raise ValueError(f"{name}: too few reports ({len(times)}) for a warm rate; label more images")
    warm_start = times[workers - 1]
    after = sum(t > warm_start for t in reported)
    return Run(name, workers, len(reported), seconds, len(reported) / seconds, after / (reported[-1] - warm_start))


def best(runs: list[Run], name: str) -> Run:
    return max((r for r in runs if r.name == name), key=lambda r: r.warm_images_per_s)


def loop_run(root: Path, checkpoint: Path, out: Path) -> Run:
    """The plain loop: one process, all cores, same work per image as a labelling actor."""
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    model, _ = load_model(checkpoint)
    store = LabelStore.create(out, Provenance(file_sha256(checkpoint), (1.0,), THRESHOLD, pointrend=True))
    reported = []
    for sample in list_samples(root, SPLIT):
        image = torch.from_numpy(read_image(sample.image))[None]  # (1, H, W, 3)
        probs = predict(model, normalize_batch(image))  # (1, K, H, W)
        labels, confidence = threshold_probs(probs, THRESHOLD, with_confidence=True)
        store.write(sample.stem, labels[0].numpy(), source=str(sample.image),
                    mean_confidence=float(confidence.float().mean()) / 255.0)
        reported.append(time.perf_counter())
    store.write_manifest()
    return rates("loop", 1, start, reported)


def ray_run(root: Path, checkpoint: Path, out: Path, workers: int) -> Run:
    reported: list[float] = []

    def progress(done: int, failed: int, total: int) -> None:
        if done + failed > len(reported):
            reported.append(time.perf_counter())

    start = time.perf_counter()
    config = LabelConfig(root=root, checkpoint=checkpoint, out=str(out), split=SPLIT, threshold=THRESHOLD,
                         predict=PredictOptions(), workers=workers)
    summary = label(config, progress=progress)
    if summary.failed:
        raise RuntimeError(f"images failed: {summary.failed}")
    return rates(f"ray x{workers}", workers, start, reported)



def _table(runs: list[Run], title: str) -> Table:
    table = Table(title=title)
    for column in ("run", "workers", "images", "seconds", "cold img/s", "warm img/s"):
        table.add_column(column, justify="right")
    for r in runs:
        table.add_row(r.name, str(r.workers), str(r.images), f"{r.seconds:.2f}", f"{r.cold_images_per_s:.2f}",
                      f"{r.warm_images_per_s:.2f}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="images to label per run (default 64)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--preset", default="tiny", help="teacher preset (untrained weights)")
    parser.add_argument("--repeats", type=int, default=3, help="times each run is repeated (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON line with all figures last")
    args = parser.parse_args()

    console = Console(width=120)
    info = machine("cpu", ray=ray.__version__)
    console.print(f"machine: {info['platform']}, {info['processor']}, {info['cpu_count']} CPUs; "
                  f"torch {info['torch']}, ray {info['ray']}")
    with tempfile.TemporaryDirectory(prefix="autolabel-throughput-") as tmp:
        workdir = Path(tmp)
        write_dataset(workdir / "data", args.images, args.height, args.width, args.seed)
        torch.manual_seed(args.seed)
        model = build_model(args.preset)
        checkpoint = workdir / "teacher.pt"
        save_checkpoint(checkpoint, Checkpoint(config=model.config.to_dict(), state_dict=model.state_dict()))
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
        runs = []
        try:
            for repeat in range(args.repeats):
                runs.append(loop_run(workdir / "data", checkpoint, workdir / f"loop{repeat}.zarr"))
                for workers in (1, 2):
                    out = workdir / f"ray{workers}_{repeat}.zarr"
                    runs.append(ray_run(workdir / "data", checkpoint, out, workers))
        finally:
            ray.shutdown()
    loop, ray1, ray2 = (best(runs, name) for name in ("loop", "ray x1", "ray x2"))
    figures = {
        "ray_vs_loop": ray1.warm_images_per_s / loop.warm_images_per_s,
        "ray_vs_loop_cold": ray1.cold_images_per_s / loop.cold_images_per_s,
        "scaling_2_vs_1": ray2.warm_images_per_s / ray1.warm_images_per_s,
        "scaling_2_vs_1_cold": ray2.cold_images_per_s / ray1.cold_images_per_s,
    }
    console.print(_table(runs, f"{args.images} images of {args.width}x{args.height}, teacher {args.preset}"))
    console.print("  ".join(f"{k} {v:.2f}" for k, v in figures.items()))
    if args.json:
        print(json.dumps({
            "machine": info, "images": args.images, "height": args.height, "width": args.width,
            "preset": args.preset, "runs": [asdict(r) for r in runs], **figures,
        }))


if __name__ == "__main__":
    main()
