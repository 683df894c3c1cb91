"""How much PointRend could add, and how much its point head does: bilinear vs PointRend vs a perfect point head.

    python -m benchmarks.pointrend_headroom quickstart/data --checkpoint quickstart/teacher/model.pt --json
    python -m benchmarks.pointrend_headroom quickstart/data --checkpoint quickstart/teacher/model.pt --split train

One trained teacher, one split, the same scales, three ways to reach full resolution:
  bilinear   the fused logits upsampled bilinearly (`--no-pointrend`);
  pointrend  adaptive subdivision with the trained point head;
  oracle     the same subdivision, the same points, but each point's prediction replaced by its ground-truth
             class (points on ignore keep the head's prediction).
`oracle - bilinear` bounds what any point head can add at the points subdivision selects; `pointrend -
bilinear` is what this one adds. Run it on the training split too: a head that helps there but not on val has
learnt its training images rather than boundaries.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import torch

import models.pointrend
from autolabel.labels import NUM_CLASSES
from autolabel.metrics import SegmentationMetrics
from benchmarks.machine import machine
from models.teacher import load_model
from pipelines.evaluate import labelled_images, predict_labels

MODES = ("bilinear", "pointrend", "oracle")
ORACLE_LOGIT = 20.0
"""Logit of the true class (all others get its negative): a probability of 1 to float precision."""


def truth_at(truth: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Ground-truth train ids (N, P) of (N, H, W) labels at cell-centre coords (N, P, 2), xy in [0, 1]."""
    n, h, w = truth.shape
    x = (coords[..., 0] * w).long().clamp(0, w - 1)  # (N, P)
    y = (coords[..., 1] * h).long().clamp(0, h - 1)  # (N, P)
    return truth[torch.arange(n).unsqueeze(1), y, x]


def with_truth(predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Point logits (N, K, P) with every point whose label (N, P) is a class replaced by a one-hot of it."""
    known = labels < NUM_CLASSES  # (N, P)
    onehot = torch.nn.functional.one_hot(labels.clamp(max=NUM_CLASSES - 1), NUM_CLASSES)  # (N, P, K)
    oracle = (2.0 * onehot.permute(0, 2, 1).to(predicted.dtype) - 1.0) * ORACLE_LOGIT  # (N, K, P)
    return torch.where(known.unsqueeze(1), oracle, predicted)


@contextmanager
def perfect_point_head(truth: torch.Tensor) -> Iterator[None]:
    """Within the block, subdivision's point predictions are the ground truth (1, H, W) at their points."""
    real = models.pointrend.predict_points

    def predict(point_head, fine_features, coarse_logits, coords):
        return with_truth(real(point_head, fine_features, coarse_logits, coords), truth_at(truth, coords))

    with mock.patch.object(models.pointrend, "predict_points", predict):
        yield


def measure(checkpoint: Path, root: Path, split: str, scales: tuple[float, ...]) -> dict[str, dict[str, float]]:
    """mIoU and Boundary IoU of each mode over the split."""
    model, _ = load_model(checkpoint)
    model.eval()
    metrics = {mode: SegmentationMetrics() for mode in MODES}
    for _, image, gt in labelled_images(root, split):
        metrics["bilinear"].update(gt, predict_labels(model, image, scales, pointrend=False))
        metrics["pointrend"].update(gt, predict_labels(model, image, scales, pointrend=True))
        with perfect_point_head(torch.from_numpy(gt.astype(np.int64)).unsqueeze(0)):
            metrics["oracle"].update(gt, predict_labels(model, image, scales, pointrend=True))
    results = {mode: m.result() for mode, m in metrics.items()}
    return {mode: {"miou": r["miou"], "boundary_iou": r["boundary_iou"]} for mode, r in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="Cityscapes-layout dataset with gtFine labels for --split")
    parser.add_argument("--checkpoint", type=Path, required=True, help="trained teacher checkpoint")
    parser.add_argument("--split", default="val", help="labelled split to measure on (default val)")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0], help="inference scales (default 1.0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON line with all figures last")
    args = parser.parse_args()
    if args.threads < 1 or min(args.scales) <= 0:
        parser.error("--threads must be >= 1 and scales > 0")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    figures = measure(args.checkpoint, args.root, args.split, tuple(args.scales))
    info = machine(torch.device("cpu"))
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    print(f"{args.checkpoint} on {args.split}, scales {args.scales}, {time.perf_counter() - start:.0f} s")
    print("| upsampling | mIoU | Boundary IoU |\n|---|---:|---:|")
    for mode, f in figures.items():
        print(f"| {mode} | {f['miou']:.1%} | {f['boundary_iou']:.1%} |")
    gain, headroom = (figures[m]["boundary_iou"] - figures["bilinear"]["boundary_iou"] for m in ("pointrend", "oracle"))
    print(f"PointRend adds {100 * gain:+.1f} Boundary IoU; a perfect point head would add {100 * headroom:+.1f}")
    if args.json:
        print(json.dumps({"machine": info, "settings": {k: str(v) if isinstance(v, Path) else v
                                                        for k, v in vars(args).items()}, "figures": figures}))


if __name__ == "__main__":
    main()
