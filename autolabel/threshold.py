"""Hard thresholding of class probabilities into uint8 label maps.

A pixel keeps its most probable class only where that probability is strictly greater
than the threshold; every other pixel becomes 255 (ignore). The optional confidence map is
the max probability quantised down (floor) to 0..255, so `confidence / 255 <= p`: a later,
higher threshold applied to it never keeps a pixel that the exact probabilities would drop.
"""

from __future__ import annotations

import numpy as np
import torch

from autolabel.labels import IGNORE

CONFIDENCE_LEVELS = 255
"""Quantisation steps of the stored max probability: uint8 q stands for p in [q/255, (q+1)/255)."""


def _check_threshold(t: float) -> float:
    if not 0.0 <= t < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {t!r}")
    return float(t)


def threshold_probs(
    probs: torch.Tensor, t: float = 0.5, with_confidence: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Labels (N, H, W) uint8 from probabilities (N, C, H, W): argmax where max > t, else 255.

    Runs on the device of `probs`; the results stay there (uint8, ready to copy to the host).
    With `with_confidence`, also returns the max probability floor-quantised to uint8 (N, H, W).
    """
    t = _check_threshold(t)
    if probs.ndim != 4:
        raise ValueError(f"probabilities must be (N, C, H, W), got shape {tuple(probs.shape)}")
    if not 0 < probs.shape[1] <= IGNORE:
        raise ValueError(f"class count must be in 1..{IGNORE}, got {probs.shape[1]}")
    max_prob, classes = probs.max(dim=1)  # (N, H, W), (N, H, W)
    labels = torch.where(max_prob > t, classes, torch.full_like(classes, IGNORE)).to(torch.uint8)
    if not with_confidence:
        return labels
    confidence = (max_prob.float() * CONFIDENCE_LEVELS).floor().clamp_(0, CONFIDENCE_LEVELS)
    return labels, confidence.to(torch.uint8)  # (N, H, W), (N, H, W)


def rethreshold(labels: np.ndarray, confidence: np.ndarray, t: float) -> np.ndarray:
    """Re-apply a (higher) threshold `t` to stored labels (H, W) using their uint8 confidence (H, W).

    A pixel stays labelled only if it was labelled and `confidence / 255 > t`; it never
    gains a label back.
    """
    t = _check_threshold(t)
    if labels.shape != confidence.shape:
        raise ValueError(f"labels {labels.shape} and confidence {confidence.shape} differ in shape")
    if confidence.dtype != np.uint8:
        raise ValueError(f"confidence must be uint8 (0..255), got {confidence.dtype}")
    keep = confidence.astype(np.float64) / CONFIDENCE_LEVELS > t
    return np.where(keep, labels, np.uint8(IGNORE)).astype(np.uint8)
