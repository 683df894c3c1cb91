"""Teacher ablation: single scale vs hierarchical multi-scale attention (HMSA) vs HMSA + PointRend.

    python -m benchmarks.teacher_ablation --json                      # CPU: tiny preset, 128x256 images
    python -m benchmarks.teacher_ablation --device cuda --preset w18s --height 512 --width 1024 \\
        --crop 512 1024 --train 256 --val 64 --iters 4000 --threads 0 --json

Every variant trains with the same budget (iterations, batch, crop, learning rate, seed) on the same
synthetic train split, then is scored on val (mIoU and Boundary IoU, Cityscapes-exact): single scale
always, and at scales 0.5, 1.0, 2.0 where the model has attention. The PointRend model is also scored
without subdivision, which separates what the point head adds at inference from what its loss adds
in training. With --workdir the data, runs and scores are kept and a rerun reuses them.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from autolabel.synth import SynthConfig, generate
from benchmarks.machine import machine
from models.predict import PredictOptions
from pipelines.evaluate import EvaluateConfig, evaluate
from pipelines.stages import StageGraph
from pipelines.train import TrainConfig, train

log = logging.getLogger(__name__)

MULTI_SCALES = (0.5, 1.0, 2.0)
SETTINGS = "settings.json"


@dataclass(frozen=True)
class Variant:
    name: str
    use_mscale: bool
    use_pointrend: bool

    @property
    def key(self) -> str:
        return f"mscale{int(self.use_mscale)}_pointrend{int(self.use_pointrend)}"

    def inference(self) -> list[tuple[tuple[float, ...], bool]]:
        """(scales, PointRend) settings this variant is scored at."""
        settings = [((1.0,), self.use_pointrend)]
        if self.use_mscale:
            settings.append((MULTI_SCALES, self.use_pointrend))
        if self.use_pointrend:
            settings += [(scales, False) for scales, _ in settings]
        return settings


VARIANTS = (
    Variant("single scale", use_mscale=False, use_pointrend=False),
    Variant("HMSA", use_mscale=True, use_pointrend=False),
    Variant("HMSA + PointRend", use_mscale=True, use_pointrend=True),
)


@dataclass(frozen=True)
class Score:
    """One variant scored at one inference setting."""

    variant: str
    scales: tuple[float, ...]
    pointrend: bool
    miou: float
    boundary_iou: float
    pixel_accuracy: float
    train_seconds: float
    train_images_per_s: float
    eval_seconds: float


class LogReporter:
    """Stage reporter for `StageGraph`: one log line per stage."""

    def stage(self, name: str, reused: bool) -> None:
        log.info("%s %s", "reusing" if reused else "running", name)

    def progress(self, done: int, total: int | None) -> None:
        pass


@contextmanager
def workdir_for(path: str | None, settings: dict) -> Iterator[Path]:
    """`path` (created, or checked to hold a run with the same settings) or a temporary directory."""
    if path is None:
        with tempfile.TemporaryDirectory(prefix="autolabel-bench-") as tmp:
            yield Path(tmp)
        return
    workdir = Path(path)
    stored = workdir / SETTINGS
    settings = json.loads(json.dumps(settings))  # tuples become lists, as they are stored
    if stored.exists():
        old = json.loads(stored.read_text())
        if old != settings:
            diffs = ", ".join(f"{k}: {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v)
            raise ValueError(f"{workdir} holds a run with other settings ({diffs}); use another --workdir")
    else:
        workdir.mkdir(parents=True, exist_ok=True)
        stored.write_text(json.dumps(settings, indent=2) + "\n")
    yield workdir


def train_config(args: argparse.Namespace, root: Path, run_dir: Path, variant: Variant) -> TrainConfig:
    """The shared training budget, with the variant's heads."""
    return TrainConfig(
        root=str(root), run_dir=str(run_dir), preset=args.preset, iters=args.iters, batch_size=args.batch_size,
        crop=tuple(args.crop), lr=args.lr, device=args.device, seed=args.seed, threads=args.threads or None,
        checkpoint_every=max(50, args.iters // 5), use_mscale=variant.use_mscale,
        use_pointrend=variant.use_pointrend,
    )


def timed_train(config: TrainConfig) -> dict:
    """Train; the checkpoint, wall seconds and the median of the logged training images/s."""
    speeds: list[float] = []
    start = time.perf_counter()
    checkpoint = train(config, reporter=lambda step: speeds.append(step.images_per_s))
    return {"checkpoint": str(checkpoint), "seconds": time.perf_counter() - start,
            "images_per_s": statistics.median(speeds)}


def timed_evaluate(root: Path, checkpoint: str, scales: tuple[float, ...], pointrend: bool, device: str) -> dict:
    """Val metrics of a checkpoint at one inference setting, with its wall seconds."""
    start = time.perf_counter()
    config = EvaluateConfig(root=root, checkpoint=Path(checkpoint), split="val", device=device,
                            predict=PredictOptions(scales=scales, pointrend=pointrend))
    result = evaluate(config)
    return {"miou": result.miou, "boundary_iou": result.boundary_iou, "pixel_accuracy": result.pixel_accuracy,
            "seconds": time.perf_counter() - start}


def run_ablation(args: argparse.Namespace, workdir: Path) -> list[Score]:
    stages = StageGraph(workdir, LogReporter())
    root, truth = workdir / "data", workdir / "data_truth"
    synth = SynthConfig(train=args.train, val=args.val, train_extra=0, height=args.height, width=args.width,
                        seed=args.seed)
    stages.run("synth", lambda: generate(root, truth, synth, overwrite=True).to_dict(), outputs=[root],
               params=asdict(synth))
    scores = []
    for variant in VARIANTS:
        config = train_config(args, root, workdir / "runs" / variant.key, variant)
        run = stages.run(f"train_{variant.key}", lambda: timed_train(config), after=["synth"],
                         params=asdict(config))
        for scales, pointrend in variant.inference():
            name = f"eval_{variant.key}_{'-'.join(map(str, scales))}_pointrend{int(pointrend)}"
            result = stages.run(name, lambda: timed_evaluate(root, run["checkpoint"], scales, pointrend, args.device),
                                after=[f"train_{variant.key}"])
            scores.append(Score(variant.name, scales, pointrend, result["miou"], result["boundary_iou"],
                                result["pixel_accuracy"], run["seconds"], run["images_per_s"], result["seconds"]))
    return scores


def _table(scores: list[Score], title: str) -> Table:
    table = Table(title=title)
    for column in ("variant", "eval scales", "PointRend", "mIoU", "Boundary IoU", "pixel acc", "train img/s",
                   "eval s"):
        table.add_column(column, justify="right")
    for s in scores:
        table.add_row(s.variant, ", ".join(map(str, s.scales)), "on" if s.pointrend else "off", f"{s.miou:.1%}",
                      f"{s.boundary_iou:.1%}", f"{s.pixel_accuracy:.1%}", f"{s.train_images_per_s:.1f}",
                      f"{s.eval_seconds:.1f}")
    return table


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="keep data, runs and scores here and reuse them (default: a temp dir)")
    parser.add_argument("--preset", default="tiny", help="model preset: tiny, w18s, w48 (default tiny)")
    parser.add_argument("--iters", type=int, default=300, help="training iterations of every variant (default 300)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, nargs=2, default=(128, 256), metavar=("H", "W"))
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--train", type=int, default=32, help="synthetic fine training images (default 32)")
    parser.add_argument("--val", type=int, default=16, help="synthetic val images (default 16)")
    parser.add_argument("--height", type=int, default=128, help="synthetic image height (default 128)")
    parser.add_argument("--width", type=int, default=256, help="synthetic image width (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="data, initialisation and sampling seed")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, steady on a shared CPU; 0 = the training default)")
    parser.add_argument("--json", action="store_true", help="print one JSON line with all figures last")
    args = parser.parse_args()
    if min(args.iters, args.batch_size, args.train, args.val, *args.crop) < 1 or args.threads < 0:
        parser.error("--iters, --batch-size, --train, --val and --crop must be positive, --threads >= 0")
    return args


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {k: v for k, v in vars(args).items() if k not in ("workdir", "json", "threads")}
    with workdir_for(args.workdir, settings) as workdir:
        scores = run_ablation(args, workdir)
    info = machine(torch.device(args.device))
    console = Console(width=140)
    console.print(" ".join(f"{k}={v}" for k, v in info.items()))
    title = (f"preset {args.preset}, {args.iters} iterations x {args.batch_size} crops of {args.crop[0]}x{args.crop[1]}, "
             f"lr {args.lr}, seed {args.seed}; {args.train} train / {args.val} val synthetic images of "
             f"{args.height}x{args.width}")
    console.print(_table(scores, title))
    if args.json:
        print(json.dumps({"machine": info, "settings": settings, "scores": [asdict(s) for s in scores]}))


if __name__ == "__main__":
    main()
