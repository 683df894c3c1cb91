"""Inference: multi-scale attention fusion + PointRend subdivision -> class probabilities.

`predict` is the one entry point the evaluation and labeling stages call. Inputs larger than a pixel
budget are run as overlapping windows (stitched at stride 4), so scale 2.0 on big images fits in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from autolabel.errors import ConfigError
from models.mscale import fuse_scales, fuse_scales_on_images, scaled
from models.pointrend import refine_uncertain, subdivision_inference
from models.teacher import ScaleOutput, Teacher

FEATURE_STRIDE = 4
"""Stride of every per-scale output of the network."""

DEFAULT_MAX_PIXELS = 1024 * 2048
"""Largest input (pixels) run in one piece; larger scaled inputs use sliding windows."""

WINDOW_OVERLAP = 1 / 3
"""Fraction of a window shared with its neighbour."""

MIN_WINDOW = FEATURE_STRIDE * 16
"""Smallest window side; `PredictOptions` requires a budget of at least MIN_WINDOW**2 pixels."""


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    scales: tuple[float, ...] = (1.0,)
    pointrend: bool = True
    batch_size: int = 1
    max_pixels: int = DEFAULT_MAX_PIXELS
    flip: bool = False
    """Average the probabilities of the image and of its mirror image (test-time augmentation)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(sorted({float(s) for s in self.scales}, reverse=True)))
        if not self.scales or not all(math.isfinite(s) and s > 0 for s in self.scales):
            raise ConfigError(f"scales must be positive numbers, got {self.scales}")
        if self.batch_size < 1 or self.max_pixels < MIN_WINDOW**2:
            raise ConfigError(f"batch_size must be >= 1 and max_pixels >= {MIN_WINDOW**2}, got {self}")


def window_starts(length: int, window: int, stride_multiple: int = FEATURE_STRIDE) -> list[int]:
    """Window offsets (multiples of `stride_multiple`) covering [0, length) with about WINDOW_OVERLAP overlap."""
    if window >= length:
        return [0]
    step = max(stride_multiple, int(window * (1 - WINDOW_OVERLAP)) // stride_multiple * stride_multiple)
    starts = list(range(0, length - window, step))
    last = (length - window) // stride_multiple * stride_multiple
    return starts + [last] if not starts or starts[-1] != last else starts


def _window_side(length: int, room: float) -> int:
    """A side of at most `room` pixels (a feature-stride multiple, at least MIN_WINDOW), capped at `length`."""
    return min(length, max(MIN_WINDOW, int(room) // FEATURE_STRIDE * FEATURE_STRIDE))


def window_size(h: int, w: int, max_pixels: int) -> tuple[int, int]:
    """Largest window of about the image's aspect within the budget, sides multiples of the feature stride.

    A side clamped to MIN_WINDOW or to the image shrinks the other, so the area stays within `max_pixels`
    (for budgets of at least MIN_WINDOW**2).
    """
    if h * w <= max_pixels:
        return h, w
    wh = _window_side(h, h * math.sqrt(max_pixels / (h * w)))
    ww = _window_side(w, max_pixels / wh)
    return _window_side(h, max_pixels / ww), ww


def run_windows(model: Teacher, images: torch.Tensor, max_pixels: int, attention: bool = True) -> ScaleOutput:
    """`model.run_scale` on (N, 3, H, W), in overlapping windows when H*W exceeds `max_pixels`.

    Outputs are averaged (in float32) where windows overlap, at stride 4: (N, C, ceil(H/4), ceil(W/4)).
    """
    h, w = images.shape[-2:]
    wh, ww = window_size(h, w, max_pixels)
    if (wh, ww) == (h, w):
        return model.run_scale(images, attention=attention)
    fh, fw = -(-h // FEATURE_STRIDE), -(-w // FEATURE_STRIDE)
    sums: list[torch.Tensor | None] | None = None
    count = images.new_zeros(1, 1, fh, fw)
    ys, xs = window_starts(h, wh), window_starts(w, ww)
    for y0 in ys:
        for x0 in xs:
            y1 = h if y0 == ys[-1] else y0 + wh  # the last window reaches the border
            x1 = w if x0 == xs[-1] else x0 + ww
            out = model.run_scale(images[..., y0:y1, x0:x1], attention=attention)
            fy, fx = y0 // FEATURE_STRIDE, x0 // FEATURE_STRIDE
            th, tw = out.logits.shape[-2:]
            if sums is None:
                sums = [None if t is None else t.new_zeros(*t.shape[:2], fh, fw, dtype=torch.float32) for t in out]
            for acc, t in zip(sums, out):
                if acc is not None:
                    acc[..., fy : fy + th, fx : fx + tw] += t.to(acc.dtype)
            count[..., fy : fy + th, fx : fx + tw] += 1
    return ScaleOutput(*(None if acc is None else acc / count for acc in sums))


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def predict_logits(model: Teacher, images: torch.Tensor, options: PredictOptions) -> torch.Tensor:
    """Fused (and PointRend-refined) logits (N, K, H, W) at input resolution for one batch."""
    h, w = images.shape[-2:]
    highest = options.scales[0]  # its attention is never used
    inputs = {s: scaled(images, s) for s in options.scales}
    outputs = {s: run_windows(model, x, options.max_pixels, attention=s != highest) for s, x in inputs.items()}
    use_pointrend = options.pointrend and model.config.use_pointrend
    if model.config.fusion == "image":
        return _predict_on_images(model, inputs, outputs, (h, w), use_pointrend)
    fused = fuse_scales(
        {s: o.logits for s, o in outputs.items()},
        {s: o.attention for s, o in outputs.items() if o.attention is not None},
    )
    if not use_pointrend:
        return F.interpolate(fused.float(), size=(h, w), mode="bilinear", align_corners=model.config.align_corners)
    # The fused logits live on the stride-4 grid of the highest scale (stride 2 of the input at scale 2.0):
    # refine them there, from that scale's fine features, so nothing the highest scale resolved is lost.
    fine = outputs[highest].fine  # (N, C, ~h*s/4, ~w*s/4)
    steps, points = model.config.pointrend.subdivision(tuple(fused.shape[-2:]), (h, w))
    return subdivision_inference(fused.float(), fine.float(), model.point_head, (h, w), steps, points)


def _predict_on_images(
    model: Teacher,
    inputs: dict[float, torch.Tensor],
    outputs: dict[float, ScaleOutput],
    output_hw: tuple[int, int],
    use_pointrend: bool,
) -> torch.Tensor:
    """`image` fusion: logits and attentions resized to each scale's input, fused on the images' grids, then the
    most uncertain pixels of the fused map (N, K, H, W) predicted again by the point head."""
    fused = fuse_scales_on_images(
        {s: o.logits.float() for s, o in outputs.items()},
        {s: o.attention.float() for s, o in outputs.items() if o.attention is not None},
        {s: tuple(x.shape[-2:]) for s, x in inputs.items()},
        model.config.align_corners,
    )
    fused = F.interpolate(fused, size=output_hw, mode="bilinear", align_corners=model.config.align_corners)
    if not use_pointrend:
        return fused
    fine = outputs[max(outputs)].fine  # (N, C, ~h*s/4, ~w*s/4)
    _, points = model.config.pointrend.subdivision(tuple(fine.shape[-2:]), output_hw)
    return refine_uncertain(fused, fused, fine.float(), model.point_head, points)


def predict(
    model: Teacher,
    images: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    pointrend: bool = True,
    batch_size: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    flip: bool = False,
) -> torch.Tensor:
    """Class probabilities (N, K, H, W) float32 for normalised images (N, 3, H, W), on the model's device.

    Multi-scale attention fuses `scales` (any list, e.g. 0.5, 1.0, 2.0); PointRend refines the fused
    prediction to full resolution unless `pointrend=False`; `flip` averages the probabilities with those of
    the mirrored image. Runs in batches of `batch_size`, under `torch.inference_mode`, with bf16 autocast
    and channels_last on CUDA.
    """
    options = PredictOptions(tuple(scales), pointrend, batch_size, max_pixels, flip)
    device = next(model.parameters()).device
    model.eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    results = []
    with torch.inference_mode(), _autocast(device):
        for start in range(0, images.shape[0], options.batch_size):
            batch = images[start : start + options.batch_size].to(device, non_blocking=True)
            if device.type == "cuda":
                batch = batch.contiguous(memory_format=torch.channels_last)
            probs = torch.softmax(predict_logits(model, batch, options).float(), dim=1)  # (n, K, H, W)
            if options.flip:
                mirrored = predict_logits(model, batch.flip(-1), options).float().flip(-1)  # (n, K, H, W)
                probs = (probs + torch.softmax(mirrored, dim=1)) / 2
            results.append(probs)
    return torch.cat(results)
