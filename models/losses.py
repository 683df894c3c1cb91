"""Segmentation losses: cross-entropy with ignore 255 on logits resized to the label size."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, K, h, w) -> (N, K, H, W), bilinear."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def batch_class_weights(labels: torch.Tensor, num_classes: int, power: float) -> torch.Tensor:
    """(K,) weights freq**-power of each class's share of the batch's labelled pixels, mean 1 over the pixels.

    power 0 weighs every pixel alike; 0.5 lifts a class 100x rarer by 10x. Absent classes get weight 0.
    """
    valid = labels[labels != IGNORE_INDEX]  # (V,)
    counts = torch.bincount(valid, minlength=num_classes)[:num_classes].float()  # (K,)
    weights = torch.where(counts > 0, counts.clamp(min=1) ** -power, torch.zeros_like(counts))
    return weights * valid.numel() / (weights * counts).sum().clamp(min=1e-12)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, hard_fraction: float = 1.0,
                      class_power: float = 0.0) -> torch.Tensor:
    """CE of (N, K, h, w) logits against (N, H, W) int64 labels, 255 ignored.

    `hard_fraction` < 1 averages only that share of the labelled pixels with the highest loss (bootstrapped
    cross-entropy: easy road and sky pixels stop drowning thin, rare classes). `class_power` > 0 weighs each
    class by its batch frequency ** -class_power. Returns 0 (with gradient) when every pixel is ignored, never NaN.
    """
    logits = resize_logits(logits, labels.shape[-2:])  # (N, K, H, W)
    valid = labels != IGNORE_INDEX
    if not bool(valid.any()):
        return logits.sum() * 0.0
    weight = batch_class_weights(labels, logits.shape[1], class_power) if class_power > 0 else None
    if hard_fraction >= 1.0:
        return F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=IGNORE_INDEX)
    per_pixel = F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=IGNORE_INDEX,
                                reduction="none")[valid]  # (V,)
    keep = max(1, math.ceil(hard_fraction * per_pixel.numel()))
    return per_pixel.topk(keep, sorted=False).values.mean()
