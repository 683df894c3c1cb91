"""Hierarchical multi-scale attention: a per-scale attention head and the fusion of per-scale logits.

A network evaluated at several input scales predicts, at each scale s, logits p_s and an attention
a_s in [0, 1]. Lower scales are blended into higher ones where their attention is high:

    pred = up(a_s * p_s) + (1 - up(a_s)) * pred

with `up` a bilinear resize to the running prediction's size. Training uses the pair
`MSCALE_TRAIN_SCALES`; inference may use any list of scales.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from autolabel.errors import ConfigError

MSCALE_TRAIN_SCALES: tuple[float, float] = (0.5, 1.0)
"""Scales of the (low, high) pair fused during training."""


class AttentionHead(nn.Module):
    """Per-pixel attention of one scale: features (N, in_channels, h, w) -> (N, 1, h, w) in [0, 1]."""

    def __init__(self, in_channels: int = 512, mid_channels: int = 256) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, mid_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, 1, kernel_size=1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.layers(feats)  # (N, 1, h, w)


def scaled(images: torch.Tensor, scale: float) -> torch.Tensor:
    """Resize an image batch (N, C, H, W) by `scale` (bilinear); 1.0 returns the batch itself.

    Output sides are floor(side * scale), at least 1, as `F.interpolate(scale_factor=scale)` gives.
    """
    if not scale > 0:
        raise ConfigError(f"scale must be > 0, got {scale}")
    if scale == 1.0:
        return images
    h, w = images.shape[-2:]
    size = (max(1, math.floor(h * scale)), max(1, math.floor(w * scale)))
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (N, C, h, w) to (N, C, *size); no-op when already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _check_attention(pred: torch.Tensor, attn: torch.Tensor, scale: float | str) -> None:
    if pred.dim() != 4 or attn.dim() != 4:
        raise ValueError(f"scale {scale}: expected 4-d tensors, got {tuple(pred.shape)} and {tuple(attn.shape)}")
    n, _, h, w = pred.shape
    if tuple(attn.shape) != (n, 1, h, w):
        raise ValueError(
            f"scale {scale}: attention must have shape {(n, 1, h, w)} to match its prediction, "
            f"got {tuple(attn.shape)}"
        )


def _blend(pred: torch.Tensor, low: torch.Tensor, attn_low: torch.Tensor) -> torch.Tensor:
    """Blend a lower-scale prediction into `pred` (N, K, H, W), in `pred`'s space.

    low (N, K, h, w), attn_low (N, 1, h, w) -> (N, K, H, W).
    """
    size = (pred.shape[-2], pred.shape[-1])
    return _resize(attn_low * low, size) + (1 - _resize(attn_low, size)) * pred


def fuse_pair(lo: torch.Tensor, hi: torch.Tensor, attn_lo: torch.Tensor) -> torch.Tensor:
    """Training fusion of the low/high pair of logits (main or aux).

    lo (N, K, h, w), hi (N, K, H, W), attn_lo (N, 1, h, w) -> (N, K, H, W).
    """
    _check_attention(lo, attn_lo, "lo")
    if lo.shape[:2] != hi.shape[:2]:
        raise ValueError(f"lo {tuple(lo.shape)} and hi {tuple(hi.shape)} differ in batch or class count")
    return _blend(hi, lo, attn_lo)


def fuse_scales(preds: Mapping[float, torch.Tensor], attns: Mapping[float, torch.Tensor]) -> torch.Tensor:
    """Inference fusion over any set of scales, from the highest down.

    preds: scale -> logits (N, K, h_s, w_s); attns: scale -> attention (N, 1, h_s, w_s), needed for
    every scale but the highest (whose attention is never used). Returns (N, K, h_max, w_max), at the
    highest scale's map size; a single scale returns its prediction unchanged.
    """
    if not preds:
        raise ValueError("fuse_scales needs at least one scale")
    scales = sorted(preds, reverse=True)
    missing = [s for s in scales[1:] if s not in attns]
    if missing:
        raise ValueError(f"no attention map for scales {missing}; every scale below {scales[0]} needs one")
    pred = preds[scales[0]]  # (N, K, h_max, w_max)
    for s in scales[1:]:
        _check_attention(preds[s], attns[s], s)
        pred = _blend(pred, preds[s], attns[s])
    return pred


FUSIONS = ("feature", "image")
"""Where multi-scale inference fuses: `feature` on the highest scale's stride-4 grid (`fuse_scales`, which PointRend
then refines), `image` on the images' grids as NVIDIA's `nscale_forward` does (`fuse_scales_on_images`)."""


def fuse_scales_on_images(
    preds: Mapping[float, torch.Tensor],
    attns: Mapping[float, torch.Tensor],
    image_sizes: Mapping[float, tuple[int, int]],
    align_corners: bool = False,
) -> torch.Tensor:
    """Inference fusion on the images' grids, from the highest scale down (NVIDIA's n-scale inference).

    Each scale's logits (N, K, h_s, w_s) and attention (N, 1, h_s, w_s) are first resized to that scale's input
    size `image_sizes[s]`. Scales >= 1 blend in their own grid (the running prediction resized to it); scales < 1
    are resized up to the running prediction's grid after weighting by their attention. Returns (N, K, H, W) on the
    grid of the lowest scale >= 1 (scale 1.0's input size when 1.0 is among them).
    """
    if not preds:
        raise ValueError("fuse_scales_on_images needs at least one scale")
    pred = None
    for s in sorted(preds, reverse=True):
        size = tuple(image_sizes[s])
        logits = F.interpolate(preds[s], size=size, mode="bilinear", align_corners=align_corners)  # (N, K, Hs, Ws)
        if pred is None:
            pred = logits
            continue
        if s not in attns:
            raise ValueError(f"no attention map for scale {s}; every scale but the highest needs one")
        attn = F.interpolate(attns[s], size=size, mode="bilinear", align_corners=align_corners)  # (N, 1, Hs, Ws)
        if s >= 1.0:
            pred = F.interpolate(pred, size=size, mode="bilinear", align_corners=align_corners)
            pred = attn * logits + (1 - attn) * pred
        else:
            target = tuple(pred.shape[-2:])
            weighted = F.interpolate(attn * logits, size=target, mode="bilinear", align_corners=align_corners)
            attn = F.interpolate(attn, size=target, mode="bilinear", align_corners=align_corners)
            pred = weighted + (1 - attn) * pred
    return pred
