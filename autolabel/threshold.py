"""Hard thresholding of class probabilities into uint8 label maps, and the confidence kept to threshold again.

A pixel keeps its most probable class only where that probability is strictly greater than the
threshold; every other pixel becomes 255 (ignore). The optional confidence map stores, for each
labelled pixel, the step q of its max probability p on a grid of CONFIDENCE_LEVELS steps: the
number of multiples k / 10 (k = 1..9) that p exceeds, compared exactly as thresholding compares.
Unlabelled pixels store 0. So re-thresholding at any multiple of 0.1 keeps exactly the pixels the
probabilities would keep; a threshold between two multiples acts as the next multiple up. The few
levels form smooth bands that an image codec compresses well (benchmarks/storage.py measures it).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from autolabel.errors import ConfigError
from autolabel.labels import IGNORE

CONFIDENCE_LEVELS = 10
"""Steps of the stored confidence: thresholds k / 10 (0.1, 0.2, ..., 0.9) stay exact. Steps of 0.05 cost
1.5x as many bytes (measured on teacher outputs)."""


def check_threshold(t: float) -> float:
    """`t` as a float when it is a usable threshold, in [0, 1); else a ConfigError. The configs of labelling and
    re-thresholding call it; the functions below trust their callers."""
    if not (math.isfinite(t) and 0.0 <= t < 1.0):
        raise ConfigError(f"threshold must be in [0, 1), got {t!r}")
    return float(t)


def threshold_probs(
    probs: torch.Tensor, t: float = 0.5, with_confidence: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Labels (N, H, W) uint8 from probabilities (N, C, H, W): argmax where max > t, else 255.

    Runs on the device of `probs`; the results stay there (uint8, ready to copy to the host).
    With `with_confidence`, also returns the confidence step of every labelled pixel (N, H, W) uint8,
    0 where unlabelled (see the module docstring).
    """
    if probs.ndim != 4:
        raise ValueError(f"probabilities must be (N, C, H, W), got shape {tuple(probs.shape)}")
    if not 0 < probs.shape[1] <= IGNORE:
        raise ValueError(f"class count must be in 1..{IGNORE}, got {probs.shape[1]}")
    max_prob, classes = probs.max(dim=1)  # (N, H, W), (N, H, W)
    kept = max_prob > t
    labels = torch.where(kept, classes, torch.full_like(classes, IGNORE)).to(torch.uint8)
    if not with_confidence:
        return labels
    grid = torch.arange(1, CONFIDENCE_LEVELS, dtype=torch.float64) / CONFIDENCE_LEVELS  # (9,) 0.1 .. 0.9
    steps = torch.bucketize(max_prob, grid.to(max_prob.device, max_prob.dtype))  # grid points below p
    return labels, torch.where(kept, steps, torch.zeros_like(steps)).to(torch.uint8)  # (N, H, W) x2


def rethreshold(labels: np.ndarray, confidence: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels and confidence (H, W) uint8 of stored labels re-thresholded at a (higher) threshold `t`.

    A pixel stays labelled only if it was labelled and its probability exceeds `t` rounded up to the
    confidence grid; it never gains a label back. Dropped pixels' confidence becomes 0.
    """
    if labels.shape != confidence.shape:
        raise ValueError(f"labels {labels.shape} and confidence {confidence.shape} differ in shape")
    if confidence.dtype != np.uint8:
        raise ValueError(f"confidence must be uint8 steps, got {confidence.dtype}")
    lowest_kept = math.ceil(round(t * CONFIDENCE_LEVELS, 9))  # p > k/10 <=> step >= k
    keep = (labels != IGNORE) & (confidence >= lowest_kept)
    return np.where(keep, labels, np.uint8(IGNORE)), np.where(keep, confidence, np.uint8(0))
