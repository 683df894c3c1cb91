"""Segmentation losses: cross-entropy with ignore 255 on logits resized to the label size."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, K, h, w) -> (N, K, H, W), bilinear."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE of (N, K, h, w) logits against (N, H, W) int64 labels, 255 ignored.

    Returns 0 (with gradient) when every pixel is ignored, never NaN.
    """
    logits = resize_logits(logits, labels.shape[-2:])  # (N, K, H, W)
    valid = labels != IGNORE_INDEX
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
