"""Does auto-labelling pay? Students on fine labels alone, + gtCoarse, + auto-coarse at 0.5 and 0.9, + the truth.

    python -m benchmarks.autolabel_gain --workdir /tmp/autolabel-gain --json          # CPU defaults
    python -m benchmarks.autolabel_gain --device cuda --preset w18s --teacher-preset w18s \\
        --height 512 --width 1024 --crop 512 1024 --train 256 --train-extra 1792 \\
        --teacher-iters 8000 --student-iters 4000 --seeds 0 1 2 --threads 0 --json

The hierarchical multi-scale attention paper's auto-labelling claim, on synthetic data with fixed
seeds: one teacher is trained on the fine `train` split and labels `train_extra` (224 images to 128 fine ones
by default) on Ray (multi-scale, PointRend), keeping its confidence, so the 0.5 and 0.9 label sets come
from the same teacher run (the 0.9 store is re-thresholded, not re-labelled). Students with the SAME
budget (iterations, batch, crop, learning rate, and by default the teacher's weights to start from)
then train on
  (a) fine only, (b) fine + gtCoarse, (c) fine + auto-coarse @0.5, (d) fine + auto-coarse @0.9,
  (e) fine + the true fine labels of train_extra (the oracle: what more labels can give at this budget),
and are scored on val (mIoU, Boundary IoU), averaged over --seeds, with their learning curves. The
coarse label sets are scored against the hidden true fine labels of train_extra, which training never
reads: labelled fraction (coverage) and accuracy of the labelled pixels. Every stage is kept in
--workdir and reused on rerun (more --seeds add students); changing any other setting needs another
work directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from autolabel.layout import IMAGE_DIR
from autolabel.synth import SynthConfig, generate
from benchmarks.machine import machine
from benchmarks.teacher_ablation import LogReporter, workdir_for
from models.predict import PredictOptions
from pipelines.evaluate import EvaluateConfig, Evaluation, evaluate
from pipelines.fuse import fuse
from pipelines.ingest import import_labels
from pipelines.label import LabelConfig, label
from pipelines.quality import coarse_quality, store_quality
from pipelines.rethreshold import rethreshold
from pipelines.stages import StageGraph
from pipelines.train import TrainConfig, learning_curve, train

log = logging.getLogger(__name__)

THRESHOLDS = (0.5, 0.9)


@dataclass(frozen=True)
class Arm:
    """One student's training labels."""

    key: str
    name: str
    coarse_gt: bool = False
    threshold: float | None = None
    """Auto-label threshold; None = no auto-labels."""
    oracle: bool = False
    """The true fine labels of train_extra instead of auto-labels."""


ARMS = (
    Arm("fine", "(a) fine only"),
    Arm("gt_coarse", "(b) fine + gtCoarse", coarse_gt=True),
    Arm("auto_050", "(c) fine + auto-coarse @0.5", threshold=0.5),
    Arm("auto_090", "(d) fine + auto-coarse @0.9", threshold=0.9),
    Arm("oracle", "(e) fine + true fine labels of train_extra", oracle=True),
)


@dataclass(frozen=True)
class StudentScore:
    arm: str
    seeds: tuple[int, ...]
    miou: float
    miou_std: float
    boundary_iou: float
    boundary_iou_std: float
    pixel_accuracy: float
    per_seed_miou: tuple[float, ...]
    learning_curve: tuple[tuple[int, float], ...]
    """(iteration, val mIoU at scale 1.0) of the first seed."""


@dataclass(frozen=True)
class LabelSetScore:
    labels: str
    images: int
    labelled_fraction: float
    accuracy: float


def _store(workdir: Path, threshold: float) -> str:
    return str(workdir / f"auto_{round(threshold * 100):03d}.zarr")


def _train_config(args: argparse.Namespace, root: Path, run_dir: Path, *, preset: str, iters: int, seed: int,
                  lr: float, samples: str | None = None, init: str | None = None,
                  fine_fraction: float | None = None) -> TrainConfig:
    fused = samples is not None
    return TrainConfig(
        root=str(root), run_dir=str(run_dir), preset=preset, iters=iters, batch_size=args.batch_size,
        crop=tuple(args.crop), lr=lr, jitter=args.jitter, device=args.device, seed=seed,
        threads=args.threads or None, checkpoint_every=max(50, iters // 5), eval_every=max(1, iters // 5),
        samples=samples, init=init, fine_fraction=fine_fraction if fused else None,
        coarse_rare_only=args.coarse_rare_only and fused,
    )


def _trained(config: TrainConfig) -> dict:
    return {"checkpoint": str(train(config)), "learning_curve": learning_curve(Path(config.run_dir))}


def oracle_store(root: Path, truth: Path, out: str) -> dict:
    """The true fine labels of train_extra, imported into a store: the images of `root` with the labels of
    `truth`, seen through a root of links to both."""
    view = Path(out).with_suffix(".root")
    view.mkdir(parents=True, exist_ok=True)
    for name, target in ((IMAGE_DIR, root / IMAGE_DIR), ("gtFine", truth / "gtFine")):
        if not (view / name).exists():
            (view / name).symlink_to(target.resolve(), target_is_directory=True)
    return asdict(import_labels(view, "train_extra", "gtFine", out))


def _scores(result: Evaluation) -> dict:
    return {"miou": result.miou, "boundary_iou": result.boundary_iou, "pixel_accuracy": result.pixel_accuracy}


def _evaluation(root: Path, checkpoint: str, scales: tuple[float, ...], device: str) -> EvaluateConfig:
    return EvaluateConfig(root=root, checkpoint=Path(checkpoint), split="val", device=device,
                          predict=PredictOptions(scales=scales))


def run_experiment(args: argparse.Namespace, workdir: Path) -> dict:
    """Every stage (each reused when already in `workdir`); the figures of the report."""
    stages = StageGraph(workdir, LogReporter())
    root, truth = workdir / "data", workdir / "data_truth"
    scales = tuple(args.scales)
    synth = SynthConfig(train=args.train, val=args.val, train_extra=args.train_extra, height=args.height,
                        width=args.width, seed=args.seed)
    stages.run("synth", lambda: generate(root, truth, synth, overwrite=True).to_dict(), outputs=[root, truth],
               params=asdict(synth))

    teacher_config = _train_config(args, root, workdir / "teacher", preset=args.teacher_preset,
                                   iters=args.teacher_iters, seed=args.seed, lr=args.lr)
    teacher_run = stages.run("train_teacher", lambda: _trained(teacher_config), after=["synth"],
                             params=asdict(teacher_config))
    teacher = teacher_run["checkpoint"]
    teacher_eval = stages.run("evaluate_teacher", lambda: _scores(
        evaluate(_evaluation(root, teacher, scales, args.device))), after=["train_teacher"])

    low, high = THRESHOLDS
    labelling = LabelConfig(
        root=root, checkpoint=Path(teacher), out=_store(workdir, low), split="train_extra",
        predict=PredictOptions(scales=scales), threshold=low, keep_confidence=True, workers=args.label_workers,
        gpus_per_worker=1.0 / args.label_workers if args.device == "cuda" else 0)
    stages.run("label", lambda: label(labelling).to_dict(), after=["train_teacher"], outputs=[_store(workdir, low)])
    stages.run("rethreshold", lambda: rethreshold(_store(workdir, low), _store(workdir, high), threshold=high).to_dict(),
               after=["label"], outputs=[_store(workdir, high)])
    quality = stages.run("quality", lambda: {
        "gtCoarse": coarse_quality(root, truth, "train_extra").to_dict(),
        **{f"auto-coarse @{t}": store_quality(_store(workdir, t), truth, "train_extra").to_dict() for t in THRESHOLDS},
    }, after=["synth", "label", "rethreshold"])

    oracle = str(workdir / "oracle.zarr")
    stages.run("oracle", lambda: oracle_store(root, truth, oracle), after=["synth"], outputs=[oracle])

    init = teacher if args.student_init == "teacher" else None
    students: list[StudentScore] = []
    for arm in ARMS:
        samples = None
        if arm.key != "fine":
            samples = str(workdir / f"fused_{arm.key}.parquet")
            labels = oracle if arm.oracle else _store(workdir, arm.threshold) if arm.threshold is not None else None
            upstream = ["synth", "oracle" if arm.oracle else "rethreshold" if arm.threshold is not None else "synth"]
            stages.run(f"fuse_{arm.key}", lambda: asdict(fuse(root, Path(samples), labels=labels,
                                                              coarse_gt=arm.coarse_gt)),
                       after=upstream, outputs=[samples])
        runs, curves = [], []
        for seed in args.seeds:
            config = _train_config(args, root, workdir / "students" / f"{arm.key}_seed{seed}", preset=args.preset,
                                   iters=args.student_iters, seed=seed, lr=args.student_lr, samples=samples,
                                   init=init, fine_fraction=None if arm.oracle else args.fine_fraction)
            fused_stage = [f"fuse_{arm.key}"] if samples else ["synth"]
            run = stages.run(f"student_{arm.key}_seed{seed}", lambda: _trained(config),
                             after=["train_teacher", *fused_stage], params=asdict(config))
            curves.append(run["learning_curve"])
            runs.append(stages.run(f"evaluate_{arm.key}_seed{seed}", lambda: _scores(
                evaluate(_evaluation(root, run["checkpoint"], scales, args.device))),
                after=[f"student_{arm.key}_seed{seed}"]))
        students.append(_student_score(arm, tuple(args.seeds), runs, curves[0]))
    label_sets = [LabelSetScore(name, q["images"], q["labelled_fraction"], q["accuracy"]) for name, q in quality.items()]
    return {"teacher": teacher_eval, "teacher_curve": teacher_run["learning_curve"], "label_sets": label_sets,
            "students": students}


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _student_score(arm: Arm, seeds: tuple[int, ...], runs: list[dict], curve: list) -> StudentScore:
    mious, bious = [r["miou"] for r in runs], [r["boundary_iou"] for r in runs]
    return StudentScore(arm.name, seeds, statistics.mean(mious), _std(mious), statistics.mean(bious), _std(bious),
                        statistics.mean(r["pixel_accuracy"] for r in runs), tuple(mious),
                        tuple((int(i), float(m)) for i, m in curve))


def _curve(points) -> str:
    return ", ".join(f"{i}: {m:.1%}" for i, m in points)


def _pm(mean: float, std: float, seeds: int) -> str:
    return f"{mean:.1%} ± {std:.1%}" if seeds > 1 else f"{mean:.1%}"


def markdown_tables(results: dict) -> str:
    """The report as markdown tables, ready for the README."""
    students: list[StudentScore] = results["students"]
    base = students[0].miou
    n = len(students[0].seeds)
    lines = ["| student trained on | val mIoU | Boundary IoU | pixel acc | mIoU vs (a) |", "|---|---:|---:|---:|---:|"]
    for s in students:
        lines.append(f"| {s.arm} | {_pm(s.miou, s.miou_std, n)} | {_pm(s.boundary_iou, s.boundary_iou_std, n)} "
                     f"| {s.pixel_accuracy:.1%} | {100 * (s.miou - base):+.1f} |")
    lines += ["", "| coarse labels of train_extra | images | labelled (of true-labelled pixels) | accuracy |",
              "|---|---:|---:|---:|"]
    for q in results["label_sets"]:
        lines.append(f"| {q.labels} | {q.images} | {q.labelled_fraction:.1%} | {q.accuracy:.1%} |")
    lines += ["", "| learning curve (val mIoU at scale 1.0, by iteration) | |", "|---|---|",
              f"| teacher | {_curve(results['teacher_curve'])} |"]
    lines += [f"| {s.arm} (seed {s.seeds[0]}) | {_curve(s.learning_curve)} |" for s in students]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="keep every stage here and reuse it on rerun (default: a temp dir)")
    parser.add_argument("--preset", default="tiny", help="student model preset (default tiny)")
    parser.add_argument("--teacher-preset", default="tiny", help="teacher model preset (default tiny)")
    parser.add_argument("--teacher-iters", type=int, default=800, help="teacher training iterations (default 800)")
    parser.add_argument("--student-iters", type=int, default=300,
                        help="training iterations of every student (default 300)")
    parser.add_argument("--student-init", choices=("teacher", "scratch"), default="teacher",
                        help="students start from the teacher's weights (default) or from scratch")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, nargs=2, default=(128, 256), metavar=("H", "W"))
    parser.add_argument("--lr", type=float, default=0.003, help="teacher's AdamW peak learning rate")
    parser.add_argument("--student-lr", type=float, default=0.0015, help="students' AdamW peak learning rate")
    parser.add_argument("--jitter", type=float, default=0.05, help="colour jitter strength (default 0.05)")
    parser.add_argument("--fine-fraction", type=float,
                        help="share of fine samples per epoch of the coarse-label students (b)-(d) (default: "
                             "natural proportions); the oracle (e) always draws its truly labelled images at natural "
                             "proportions, as the bound on what more labels can give")
    parser.add_argument("--coarse-rare-only", action="store_true",
                        help="centre class-uniform crops of coarse labels on rare classes only")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0, 2.0],
                        help="inference scales of labelling and evaluation (default 0.5 1.0 2.0)")
    parser.add_argument("--label-workers", type=int, default=2, help="Ray labelling actors (default 2)")
    parser.add_argument("--train", type=int, default=128, help="synthetic fine training images (default 128)")
    parser.add_argument("--train-extra", type=int, default=224, help="synthetic coarse images (default 224)")
    parser.add_argument("--val", type=int, default=16, help="synthetic val images (default 16)")
    parser.add_argument("--height", type=int, default=128, help="synthetic image height (default 128)")
    parser.add_argument("--width", type=int, default=256, help="synthetic image width (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="data and teacher seed (default 0)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="student seeds to average (default 0 1 2)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, steady on a shared CPU; 0 = the training default)")
    parser.add_argument("--json", action="store_true", help="print one JSON line with all figures last")
    args = parser.parse_args()
    positive = (args.teacher_iters, args.student_iters, args.batch_size, args.label_workers, args.train,
                args.train_extra, args.val, *args.crop)
    if min(positive) < 1 or args.threads < 0 or min(args.scales) <= 0:
        parser.error("iterations, batch size, crop, label workers and image counts must be positive, "
                     "scales > 0, --threads >= 0")
    if args.fine_fraction is not None and not 0.0 <= args.fine_fraction <= 1.0:
        parser.error(f"--fine-fraction must be in [0, 1], got {args.fine_fraction}")
    return args


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = {k: v for k, v in vars(args).items() if k not in ("workdir", "json", "threads", "seeds")}
    start = time.perf_counter()
    with workdir_for(args.workdir, settings) as workdir:
        results = run_experiment(args, workdir)
    seconds = time.perf_counter() - start
    info = machine(torch.device(args.device))
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    print(f"teacher ({args.teacher_preset}, {args.teacher_iters} iterations) val mIoU {results['teacher']['miou']:.1%}, "
          f"Boundary IoU {results['teacher']['boundary_iou']:.1%} at scales {args.scales} + PointRend; students: "
          f"{args.preset} from {args.student_init}, {args.student_iters} iterations x {args.batch_size} crops of "
          f"{args.crop[0]}x{args.crop[1]}, "
          f"seeds {args.seeds}; data: {args.train} train / {args.train_extra} train_extra / {args.val} val at "
          f"{args.height}x{args.width}; {seconds / 60:.1f} min\n")
    print(markdown_tables(results))
    if args.json:
        print(json.dumps({
            "machine": info, "settings": {k: v for k, v in vars(args).items() if k != "json"}, "seconds": seconds,
            "teacher": results["teacher"], "teacher_curve": results["teacher_curve"],
            "label_sets": [asdict(q) for q in results["label_sets"]],
            "students": [asdict(s) for s in results["students"]],
        }))


if __name__ == "__main__":
    main()
