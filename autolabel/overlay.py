"""Label maps drawn over their images, for looking at what the teacher produced."""

from __future__ import annotations

import numpy as np

from autolabel.labels import IGNORE, colorize


def render_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend RGB `image` (H, W, 3) uint8 with the colour-coded `labels` (H, W); ignore pixels stay plain."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels {labels.shape} do not match image {image.shape[:2]}")
    colours = colorize(labels).astype(np.float32)  # (H, W, 3)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours  # (H, W, 3)
    labelled = (labels != IGNORE)[..., None]  # (H, W, 1)
    return np.where(labelled, np.rint(blended), image).astype(np.uint8)
