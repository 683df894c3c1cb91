"""Threshold calibration: how many true-labelled pixels a threshold keeps, and how many of those are right.

A teacher's class probabilities are thresholded into labels (`autolabel.threshold`): a pixel keeps its
most probable class where that probability is strictly above the threshold t. On a split whose true
labels are known, every threshold has a

    coverage(t) = kept pixels / true-labelled pixels     accuracy(t) = correct kept pixels / kept pixels

`Calibration` accumulates, per image, how many true-labelled pixels fall into each interval of a
fixed grid of thresholds (and how many of them are predicted right), so the two curves at every grid
threshold are exact, however many images are added, in O(pixels) per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from autolabel.errors import ConfigError
from autolabel.labels import IGNORE

GRID_STEP = 0.01
THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.5 + GRID_STEP * i, 2) for i in range(50))
"""Thresholds measured exactly: 0.50, 0.51, ..., 0.99."""
REPORTED_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
"""The rows of a calibration table: 0.50, 0.55, ..., 0.95."""


@dataclass(frozen=True)
class ThresholdPoint:
    """Coverage and accuracy of the pixels one threshold keeps (NaN accuracy when none is kept)."""

    threshold: float
    coverage: float
    accuracy: float
    kept: int
    correct: int

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "coverage": self.coverage, "accuracy": self.accuracy,
                "kept": self.kept, "correct": self.correct}


def check_target_accuracy(value: float) -> float:
    """`value` when it is an accuracy a threshold can be chosen for, (0, 1]; else a ConfigError."""
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise ConfigError(f"target accuracy must be in (0, 1], got {value}")
    return value


class Calibration:
    """Kept and correct true-labelled pixels at every threshold of `THRESHOLD_GRID`, over images."""

    def __init__(self) -> None:
        # float32, as labelling compares float32 probabilities with the threshold cast to float32
        self.grid = np.asarray(THRESHOLD_GRID, dtype=np.float32)
        # bin i holds pixels with exactly i grid thresholds strictly below their max probability
        self.kept_bins = np.zeros(len(self.grid) + 1, dtype=np.int64)
        self.correct_bins = np.zeros(len(self.grid) + 1, dtype=np.int64)
        self.evaluable = 0
        self.images = 0

    def update(self, max_prob: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> None:
        """Add one image: max class probability (H, W) float, its argmax (H, W) and the true train ids (H, W)."""
        if not max_prob.shape == pred.shape == truth.shape:
            raise ValueError(f"max_prob {max_prob.shape}, prediction {pred.shape} and truth {truth.shape} "
                             "must have one shape")
        valid = truth != IGNORE  # (H, W)
        prob = max_prob[valid].astype(np.float32)  # (V,)
        right = pred[valid] == truth[valid]  # (V,)
        bins = np.searchsorted(self.grid, prob, side="left")  # (V,) grid thresholds t with t < p
        self.kept_bins += np.bincount(bins, minlength=len(self.grid) + 1)
        self.correct_bins += np.bincount(bins[right], minlength=len(self.grid) + 1)
        self.evaluable += int(valid.sum())
        self.images += 1

    def point(self, threshold: float) -> ThresholdPoint:
        """Coverage and accuracy at a threshold of the grid."""
        matches = np.flatnonzero(np.isclose(self.grid, threshold, rtol=0.0, atol=1e-6))
        if not len(matches):
            raise ValueError(f"threshold {threshold} is not on the calibration grid "
                             f"({THRESHOLD_GRID[0]}..{THRESHOLD_GRID[-1]} in steps of {GRID_STEP})")
        i = int(matches[0])
        kept = int(self.kept_bins[i + 1:].sum())  # p > grid[i]: more than i grid thresholds below p
        correct = int(self.correct_bins[i + 1:].sum())
        return ThresholdPoint(
            threshold=THRESHOLD_GRID[i],
            coverage=kept / self.evaluable if self.evaluable else float("nan"),
            accuracy=correct / kept if kept else float("nan"),
            kept=kept,
            correct=correct,
        )

    def curve(self, thresholds: tuple[float, ...] = REPORTED_THRESHOLDS) -> list[ThresholdPoint]:
        return [self.point(t) for t in thresholds]

    def threshold_for(self, target_accuracy: float) -> ThresholdPoint | None:
        """The lowest grid threshold whose kept pixels reach `target_accuracy` (the most coverage at that
        accuracy), or None when no threshold of the grid reaches it."""
        for t in THRESHOLD_GRID:
            point = self.point(t)
            if point.kept and point.accuracy >= target_accuracy:
                return point
        return None
