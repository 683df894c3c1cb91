"""The whole job on the embedded synthetic default, one stage after another, each reused when rerun.

synth -> train teacher (fine) -> evaluate teacher -> label train_extra with Ray -> storage report
-> label quality vs the hidden truth -> fuse -> train student (fine + auto, continuing from the teacher's
weights) -> evaluate student, under the same evaluation as the teacher.
Every stage leaves its files in the work directory and its result in `stages/{name}.json`;
`results.json` gathers them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from autolabel.errors import ConfigError, DatasetError
from autolabel.files import write_json_atomic
from autolabel.storage_report import storage_report
from autolabel.store import LabelStore
from autolabel.synth import SynthConfig, generate
from models.predict import PredictOptions
from pipelines.evaluate import EvaluateConfig, Evaluation, evaluate
from pipelines.fuse import fuse
from pipelines.label import LabelConfig, label
from pipelines.quality import coarse_quality, store_quality
from pipelines.stages import Reporter, SilentReporter, StageGraph
from pipelines.train import FINAL_MODEL, TrainConfig, learning_curve, train

RESULTS = "results.json"
CONFIG = "quickstart.json"


@dataclasses.dataclass(frozen=True)
class QuickstartConfig:
    """Defaults sized to finish on a 2-core CPU in under 15 minutes while still showing real learning."""

    train: int = 128
    """Fine-labelled images. 32 cap the teacher: it learns them rather than the scenes (after 2000 iterations 70.8%
    mIoU on them, 32.7% on val); after 1000 iterations, 64 give 30.0% on val at scale 1.0 and 128 give 34.3%."""
    val: int = 16
    train_extra: int = 224
    """Unlabelled images the teacher labels for the student."""
    height: int = 128
    width: int = 256
    preset: str = "tiny"
    teacher_iters: int = 800
    """Most of the budget: the student can only be as good as the labels it learns from."""
    student_iters: int = 400
    batch_size: int = 8
    crop: tuple[int, int] = (128, 256)
    lr: float = 0.003
    """AdamW peak learning rate of the teacher."""
    student_lr: float = 0.0015
    """The student continues from the teacher's weights, so it starts at half the teacher's rate."""
    student_fine_fraction: float | None = 0.75
    """Share of the student's samples drawn from the fine labels: natural proportions let the teacher's own labels
    (and their errors) outweigh the hand-made ones (one run: 34.3% against 35.7% val mIoU)."""
    student_from_teacher: bool = True
    """Start the student from the teacher's weights (the student becomes the next, better teacher)."""
    jitter: float = 0.05
    """Colour jitter: a short budget learns far faster without the reference's strong (0.25) hue shifts."""
    scales: tuple[float, ...] = (0.5, 1.0, 2.0)
    threshold: float = 0.5
    label_workers: int = 2
    curve_points: int = 5
    """Val mIoU measurements along each training run (the learning curves in results.json)."""
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop", tuple(self.crop))
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _check_config(workdir: Path, config: QuickstartConfig) -> None:
    path = workdir / CONFIG
    if path.exists():
        stored = json.loads(path.read_text())
        if stored != config.to_dict():
            diffs = ", ".join(f"{k}: {stored.get(k)!r} -> {v!r}" for k, v in config.to_dict().items() if stored.get(k) != v)
            raise ConfigError(f"{workdir} holds a quickstart run with other settings ({diffs}); "
                              "use another work directory or --overwrite")
    else:
        write_json_atomic(path, config.to_dict())


def _train_config(config: QuickstartConfig, root: Path, run_dir: Path, iters: int, samples: str | None = None,
                  init: str | None = None) -> TrainConfig:
    student = samples is not None
    return TrainConfig(root=str(root), run_dir=str(run_dir), preset=config.preset, iters=iters,
                       batch_size=config.batch_size, crop=config.crop, jitter=config.jitter,
                       lr=config.student_lr if student else config.lr, samples=samples, init=init,
                       fine_fraction=config.student_fine_fraction if student else None,
                       checkpoint_every=max(50, iters // 5), eval_every=max(1, iters // config.curve_points),
                       seed=config.seed)


def _eval_summary(result: Evaluation) -> dict:
    return {k: result.to_dict()[k] for k in ("miou", "boundary_iou", "pixel_accuracy", "iou", "images", "scales")}


def quickstart(workdir: Path, config: QuickstartConfig = QuickstartConfig(), reporter: Reporter | None = None) -> dict:
    """Run (or finish) every stage in `workdir`; return and write `results.json`."""
    workdir = Path(workdir)
    reporter = reporter or SilentReporter()
    _check_config(workdir, config)
    stages = StageGraph(workdir, reporter)
    root, truth = workdir / "data", workdir / "data_truth"
    store_url = str(workdir / "labels.zarr")
    fused = workdir / "fused.parquet"
    predict = PredictOptions(scales=config.scales)
    synth_config = SynthConfig(train=config.train, val=config.val, train_extra=config.train_extra,
                               height=config.height, width=config.width, seed=config.seed)

    def _synth() -> dict:
        generate(root, truth, synth_config, progress=reporter.progress, overwrite=True)
        return {"root": str(root), "truth": str(truth), **dataclasses.asdict(synth_config)}

    def _train(run: str, iters: int, samples: str | None = None, init: str | None = None) -> Callable[[], dict]:
        def run_training() -> dict:
            cfg = _train_config(config, root, workdir / run, iters, samples, init)
            model = train(cfg, reporter=lambda step: reporter.progress(step.iteration, step.total))
            return {"checkpoint": str(model), "learning_curve": learning_curve(workdir / run)}
        return run_training

    def _evaluate(checkpoint: str) -> Callable[[], dict]:
        config_ = EvaluateConfig(root=root, checkpoint=Path(checkpoint), split="val", predict=predict)
        return lambda: _eval_summary(evaluate(config_, progress=reporter.progress))

    def _label() -> dict:
        labelling = LabelConfig(root=root, checkpoint=Path(teacher["checkpoint"]), out=store_url, split="train_extra",
                                predict=predict, threshold=config.threshold, workers=config.label_workers)
        summary = label(labelling, progress=lambda done, failed, total: reporter.progress(done + failed, total))
        if summary.failed:  # the stage stays unfinished, so a rerun retries them
            first, error = next(iter(summary.failed.items()))
            raise DatasetError(f"{len(summary.failed)} images could not be labelled (first: {first}: {error}); "
                               "rerun to retry them")
        return {"store": store_url, "images": summary.done + summary.skipped, "failed": len(summary.failed),
                "images_per_s": summary.images_per_s}

    def _quality() -> dict:
        auto = store_quality(store_url, truth, "train_extra")
        coarse = coarse_quality(root, truth, "train_extra")
        return {"auto": auto.to_dict(), "gt_coarse": coarse.to_dict()}

    def _fuse() -> dict:
        summary = fuse(root, fused, labels=store_url, progress=reporter.progress)
        return {"samples": str(fused), "rows": summary.rows, "failed_auto": summary.failed_auto}

    stages.run("synth", _synth, outputs=[root, truth], params=dataclasses.asdict(synth_config))
    teacher = stages.run("train_teacher", _train("teacher", config.teacher_iters), after=["synth"],
                         outputs=[workdir / "teacher" / FINAL_MODEL])
    teacher_eval = stages.run("evaluate_teacher", _evaluate(teacher["checkpoint"]), after=["train_teacher"])
    labelled = stages.run("label", _label, after=["train_teacher"], outputs=[store_url])
    storage = stages.run("storage", lambda: storage_report(LabelStore.open(store_url)), after=["label"])
    quality = stages.run("quality", _quality, after=["synth", "label"])
    fused_rows = stages.run("fuse", _fuse, after=["synth", "label"], outputs=[fused])
    init = teacher["checkpoint"] if config.student_from_teacher else None
    student = stages.run("train_student", _train("student", config.student_iters, str(fused), init),
                         after=["train_teacher", "fuse"], outputs=[workdir / "student" / FINAL_MODEL])
    student_eval = stages.run("evaluate_student", _evaluate(student["checkpoint"]), after=["train_student"])

    results = {
        "config": config.to_dict(),
        "teacher": {**teacher_eval, "checkpoint": teacher["checkpoint"]},
        "auto_labels": {
            "images": labelled["images"],
            "failed": labelled["failed"],
            "images_per_s": labelled["images_per_s"],
            "threshold": config.threshold,
            "labelled_fraction": quality["auto"]["labelled_fraction"],
            "accuracy": quality["auto"]["accuracy"],
            "gt_coarse_labelled_fraction": quality["gt_coarse"]["labelled_fraction"],
            "gt_coarse_accuracy": quality["gt_coarse"]["accuracy"],
        },
        "storage": {k: storage[k] for k in ("images", "bytes_per_image", "bits_per_pixel", "vs_uint8", "vs_png",
                                             "vs_soft_fp16", "vs_soft_fp32", "extrapolation")},
        "fused": fused_rows["rows"],
        "student": {**student_eval, "checkpoint": student["checkpoint"],
                    "from_teacher": config.student_from_teacher},
        "student_vs_teacher_miou": student_eval["miou"] - teacher_eval["miou"],
        "learning_curves": {"teacher": teacher["learning_curve"], "student": student["learning_curve"]},
    }
    write_json_atomic(workdir / RESULTS, results)
    return results
