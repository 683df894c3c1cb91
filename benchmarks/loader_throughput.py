"""Does the data loader keep the trainer fed? Loader images/s vs training-step images/s.

    python -m benchmarks.loader_throughput --json                        # CPU: tiny preset, 128x256 crops
    python -m benchmarks.loader_throughput --device cuda --preset w18s --height 512 --width 1024 \\
        --crop 512 1024 --loader-workers 0 4 8 --json

The loader reads a fused sample table as student training does: fine labels from gtFine PNGs, the coarse
part straight from a zarr label store, with class-uniform crops, scale, flip and colour jitter, and
one DataLoader per epoch. The store here holds the gtCoarse labels of train_extra, imported with
`pipelines.ingest.import_labels` (no teacher needed): it is read exactly as auto-labels are.
The step is forward + backward + SGD step of the preset at the same batch and crop, on a batch
drawn from that loader. `loader_vs_step` = loader images/s / step images/s: above 1 the loader
outpaces the trainer. With 0 loader workers the loader runs in the training process, so a
training iteration costs both; with workers it overlaps the step, on cores the step then lacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from autolabel.dataset import SegmentationDataset
from autolabel.synth import SynthConfig, generate
from benchmarks.machine import machine
from models.teacher import Teacher
from pipelines.fuse import fuse
from pipelines.ingest import import_labels
from pipelines.train import EpochSampler, TrainConfig, build_dataset, build_optimizer

log = logging.getLogger(__name__)

AUTO_PART = "gtCoarse of train_extra imported into a zarr label store (read as auto-labels are)"


@dataclass(frozen=True)
class LoaderRate:
    loader_workers: int
    images: int
    seconds: float
    images_per_s: float
    loader_vs_step: float


def epoch_batches(dataset: SegmentationDataset, batch_size: int, workers: int, seed: int,
                  pin_memory: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches, one DataLoader per epoch with that epoch's plan and order, as training makes them."""
    epoch = 0
    while True:
        dataset.set_epoch(epoch)
        yield from DataLoader(dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset), seed, epoch),
                              num_workers=workers, drop_last=True, pin_memory=pin_memory)
        epoch += 1


def loader_rate(dataset: SegmentationDataset, args: argparse.Namespace, workers: int) -> tuple[int, float]:
    """(images, seconds) of `args.batches` batches, worker start-up and epoch restarts included."""
    batches = epoch_batches(dataset, args.batch_size, workers, args.seed, args.device == "cuda")
    images, start = 0, time.perf_counter()
    for _ in range(args.batches):
        images += next(batches)[0].shape[0]
    return images, time.perf_counter() - start


def step_rate(config: TrainConfig, images: torch.Tensor, labels: torch.Tensor, steps: int) -> float:
    """Training images/s of forward + backward + optimizer step on one batch (after a warm-up step)."""
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    model = Teacher(config.model_config()).to(device).train()
    optimizer = build_optimizer(model, config)
    images, labels = images.to(device), labels.to(device)
    on_cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else torch.autocast("cpu", enabled=False)

    def step() -> None:
        with autocast:
            loss = sum(model(images, labels).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    if on_cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if on_cuda:
        torch.cuda.synchronize(device)
    return steps * images.shape[0] / (time.perf_counter() - start)


def fused_samples(args: argparse.Namespace, workdir: Path) -> tuple[Path, dict[str, int]]:
    """Synthetic data, the coarse store and the fused sample table in `workdir`; rows per source."""
    root = workdir / "data"
    synth = SynthConfig(train=args.train, val=0, train_extra=args.train_extra, height=args.height,
                        width=args.width, seed=args.seed)
    generate(root, workdir / "data_truth", synth, overwrite=True)
    store = str(workdir / "coarse.zarr")
    import_labels(root, "train_extra", "gtCoarse", store, overwrite=True)
    samples = workdir / "fused.parquet"
    return samples, fuse(root, samples, labels=store).rows


def _table(step_ips: float, rates: list[LoaderRate], title: str) -> Table:
    table = Table(title=title, caption=f"step: {step_ips:.1f} images/s (forward + backward + SGD step)")
    for column in ("loader workers", "images", "seconds", "loader img/s", "loader vs step"):
        table.add_column(column, justify="right")
    for r in rates:
        table.add_row(str(r.loader_workers), str(r.images), f"{r.seconds:.2f}", f"{r.images_per_s:.1f}",
                      f"{r.loader_vs_step:.2f}")
    return table


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="where the data, store and sample table go (default: a temp dir)")
    parser.add_argument("--preset", default="tiny", help="model preset of the step: tiny, w18s, w48 (default tiny)")
    parser.add_argument("--mscale", action=argparse.BooleanOptionalAction, default=True,
                        help="step with hierarchical multi-scale attention (default on)")
    parser.add_argument("--pointrend", action=argparse.BooleanOptionalAction, default=True,
                        help="step with the PointRend loss (default on)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, nargs=2, default=(128, 256), metavar=("H", "W"))
    parser.add_argument("--loader-workers", type=int, nargs="+", default=[0, 1, 2],
                        help="DataLoader process counts to measure (default 0 1 2)")
    parser.add_argument("--batches", type=int, default=24, help="batches per loader measurement (default 24)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (default 5)")
    parser.add_argument("--train", type=int, default=32, help="synthetic fine images (default 32)")
    parser.add_argument("--train-extra", type=int, default=64, help="synthetic coarse images (default 64)")
    parser.add_argument("--height", type=int, default=128, help="synthetic image height (default 128)")
    parser.add_argument("--width", type=int, default=256, help="synthetic image width (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the step (default 1, steady on a shared CPU; 0 = torch's default)")
    parser.add_argument("--json", action="store_true", help="print one JSON line with all figures last")
    args = parser.parse_args()
    if min(args.batch_size, args.batches, args.steps, args.train, args.train_extra, *args.crop) < 1:
        parser.error("--batch-size, --batches, --steps, --train, --train-extra and --crop must be positive")
    if min(args.loader_workers) < 0 or args.threads < 0:
        parser.error("--loader-workers and --threads must be >= 0")
    return args


def run(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, int], float, list[LoaderRate]]:
    samples, rows = fused_samples(args, workdir)
    config = TrainConfig(root=str(workdir / "data"), run_dir=str(workdir / "run"), preset=args.preset,
                         batch_size=args.batch_size, crop=tuple(args.crop), device=args.device, samples=str(samples),
                         seed=args.seed, use_mscale=args.mscale, use_pointrend=args.pointrend)
    dataset = build_dataset(config)
    images, labels = next(epoch_batches(dataset, args.batch_size, 0, args.seed, False))
    step_ips = step_rate(config, images, labels, args.steps)
    rates = []
    for workers in args.loader_workers:
        count, seconds = loader_rate(dataset, args, workers)
        rates.append(LoaderRate(workers, count, seconds, count / seconds, count / seconds / step_ips))
        log.info("%d loader workers: %.1f images/s", workers, count / seconds)
    return rows, step_ips, rates


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.workdir:
        rows, step_ips, rates = run(args, Path(args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="autolabel-loader-") as tmp:
            rows, step_ips, rates = run(args, Path(tmp))
    info = machine(torch.device(args.device))
    heads = " + ".join(["HRNet-OCR"] + ["HMSA"] * args.mscale + ["PointRend"] * args.pointrend)
    console = Console(width=120)
    console.print(" ".join(f"{k}={v}" for k, v in info.items()))
    console.print(f"fused sample table: {rows}; coarse part: {AUTO_PART}")
    title = (f"preset {args.preset} ({heads}), batch {args.batch_size} x {args.crop[0]}x{args.crop[1]} crops "
             f"of {args.height}x{args.width} images")
    console.print(_table(step_ips, rates, title))
    if args.json:
        print(json.dumps({"machine": info, "settings": {k: v for k, v in vars(args).items() if k != "json"},
                          "sample_rows": rows, "coarse_part": AUTO_PART, "step_images_per_s": step_ips,
                          "loaders": [asdict(r) for r in rates]}))


if __name__ == "__main__":
    main()
