"""PointRend for semantic segmentation: uncertainty-driven point sampling, a point head, subdivision inference.

Points are (x, y) in [0, 1] over the image: (0, 0) is the top-left corner of the top-left pixel, (1, 1)
the bottom-right corner of the bottom-right pixel, so pixel (i, j) of an H x W map has its centre at
((i + 0.5) / W, (j + 0.5) / H) whatever the map's resolution (align_corners=False everywhere).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from autolabel.errors import ConfigError
from autolabel.labels import IGNORE

REFERENCE_OUTPUT_PIXELS = 1024 * 2048
REFERENCE_POINTS = 8192
"""The Cityscapes config refines 8192 points per step (a stride-16 map) for a 1024x2048 output. The
uncertain cells lie along boundaries, whose length grows with the image's side, not its area, so other
output sizes refine REFERENCE_POINTS * sqrt(pixels / REFERENCE_OUTPUT_PIXELS) points."""

PointPredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(fine (N, C, P), coarse (N, K, P)) -> point logits (N, K, P); `PointHead` is one."""


@dataclasses.dataclass(frozen=True)
class PointRendConfig:
    """Point sampling and point head sizes; `PointRendConfig.preset(name)` gives the named ones."""

    train_points: int = 2048
    """Points per image supervised in training."""
    oversample_ratio: float = 3.0
    """Candidates drawn per training point before keeping the uncertain ones."""
    importance_ratio: float = 0.75
    """Fraction of training points taken as the most uncertain candidates; the rest are uniform."""
    subdivision_steps: int | None = None
    """2x upsampling steps at inference; None derives them from the sizes (`subdivision_defaults`)."""
    subdivision_points: int | None = None
    """Points refined per step; None derives them from the output size (`subdivision_defaults`)."""
    fc_channels: int = 256
    """Width of the point head's shared MLP."""
    num_fc: int = 3
    """Layers of the point head's shared MLP."""

    def __post_init__(self) -> None:
        if self.train_points < 1 or self.fc_channels < 1 or self.num_fc < 0:
            raise ConfigError(f"PointRendConfig sizes must be positive, got {self}")
        if self.oversample_ratio < 1.0:
            raise ConfigError(f"PointRendConfig.oversample_ratio must be >= 1, got {self.oversample_ratio}")
        if not 0.0 <= self.importance_ratio <= 1.0:
            raise ConfigError(f"PointRendConfig.importance_ratio must be in [0, 1], got {self.importance_ratio}")
        if self.subdivision_steps is not None and self.subdivision_steps < 0:
            raise ConfigError(f"PointRendConfig.subdivision_steps must be >= 0, got {self.subdivision_steps}")
        if self.subdivision_points is not None and self.subdivision_points < 1:
            raise ConfigError(f"PointRendConfig.subdivision_points must be >= 1, got {self.subdivision_points}")

    @classmethod
    def preset(cls, name: str) -> PointRendConfig:
        """The named configuration: one of `POINTREND_PRESETS`."""
        try:
            return POINTREND_PRESETS[name]
        except KeyError:
            valid = ", ".join(sorted(POINTREND_PRESETS))
            raise ConfigError(f"unknown PointRend preset {name!r}; valid presets: {valid}") from None

    def subdivision(self, coarse_hw: tuple[int, int], output_hw: tuple[int, int]) -> tuple[int, int]:
        """(steps, points) for this config: the configured values, else the derived ones."""
        steps, points = subdivision_defaults(coarse_hw, output_hw)
        return (
            steps if self.subdivision_steps is None else self.subdivision_steps,
            points if self.subdivision_points is None else self.subdivision_points,
        )


POINTREND_PRESETS: Mapping[str, PointRendConfig] = MappingProxyType(
    {
        "tiny": PointRendConfig(train_points=256, fc_channels=32),
        "default": PointRendConfig(),
    }
)


def subdivision_defaults(coarse_hw: tuple[int, int], output_hw: tuple[int, int]) -> tuple[int, int]:
    """Derived (steps, points) for refining a coarse map up to the output size.

    steps: 2x steps until the coarse map covers the output (stride 4 -> 2 steps, 0 if already there);
    points: 8192 for 1024x2048 (the Cityscapes config), scaled with the output's side for other sizes
    (1024 for 128x256), as boundaries are; never more than the output has pixels.
    """
    (h, w), (out_h, out_w) = coarse_hw, output_hw
    if min(h, w, out_h, out_w) < 1:
        raise ValueError(f"sizes must be positive, got coarse {coarse_hw} and output {output_hw}")
    steps = 0
    while h << steps < out_h or w << steps < out_w:
        steps += 1
    points = math.ceil(REFERENCE_POINTS * math.sqrt(out_h * out_w / REFERENCE_OUTPUT_PIXELS))
    points = min(points, out_h * out_w)
    return steps, points


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Second-best minus best logit: (N, K, ...) -> (N, 1, ...); 0 where the top two tie, < 0 elsewhere."""
    if logits.shape[1] < 2:
        raise ValueError(f"uncertainty needs at least 2 classes, got logits of shape {tuple(logits.shape)}")
    top2 = torch.topk(logits, k=2, dim=1).values  # (N, 2, ...)
    return (top2[:, 1] - top2[:, 0]).unsqueeze(1)


def point_sample(features: torch.Tensor, coords: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample a map at points: features (N, C, H, W), coords (N, P, 2) xy in [0, 1] -> (N, C, P).

    Samples in the wider of the two dtypes, so coordinates keep their precision on half-precision
    maps, and returns the features' dtype. Points within half a pixel of the border take the border
    value, as `F.interpolate` does.
    """
    dtype = torch.promote_types(features.dtype, coords.dtype)
    grid = 2.0 * coords.to(dtype).unsqueeze(2) - 1.0  # (N, P, 1, 2) in [-1, 1]
    sampled = F.grid_sample(
        features.to(dtype), grid, mode=mode, padding_mode="border", align_corners=False
    )  # (N, C, P, 1)
    return sampled.squeeze(3).to(features.dtype)


@torch.no_grad()
def get_uncertain_point_coords_with_randomness(
    coarse_logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Training points: the most uncertain of oversampled random candidates, plus uniform ones.

    coarse_logits (N, K, h, w) -> coords (N, num_points, 2). Draws oversample_ratio * num_points
    uniform candidates, keeps the importance_ratio * num_points whose interpolated logits are least
    certain, and fills up with fresh uniform points. No gradient flows through the selection.
    """
    if num_points < 1 or oversample_ratio < 1.0 or not 0.0 <= importance_ratio <= 1.0:
        raise ValueError(
            f"need num_points >= 1, oversample_ratio >= 1, importance_ratio in [0, 1]; got "
            f"{num_points}, {oversample_ratio}, {importance_ratio}"
        )
    n, device = coarse_logits.shape[0], coarse_logits.device
    num_candidates = int(num_points * oversample_ratio)
    num_uncertain = int(num_points * importance_ratio)
    candidates = torch.rand(n, num_candidates, 2, device=device, generator=generator)  # (N, kP, 2)
    uncertainty = calculate_uncertainty(point_sample(coarse_logits, candidates))[:, 0]  # (N, kP)
    picked = torch.topk(uncertainty, k=num_uncertain, dim=1).indices  # (N, bP)
    uncertain = torch.gather(candidates, 1, picked.unsqueeze(2).expand(-1, -1, 2))  # (N, bP, 2)
    uniform = torch.rand(n, num_points - num_uncertain, 2, device=device, generator=generator)
    return torch.cat([uncertain, uniform], dim=1)  # (N, P, 2)


@torch.no_grad()
def get_uncertain_point_coords_on_grid(
    uncertainty_map: torch.Tensor, num_points: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The most uncertain cells of a map and their centres.

    uncertainty_map (N, 1, H, W) -> point_indices (N, P) into the flattened H*W map and coords (N, P, 2)
    at the cell centres ((i + 0.5) / W, (j + 0.5) / H), with P = min(num_points, H * W).
    """
    n, _, h, w = uncertainty_map.shape
    num_points = min(num_points, h * w)
    indices = torch.topk(uncertainty_map.reshape(n, h * w), k=num_points, dim=1).indices  # (N, P)
    x = ((indices % w).float() + 0.5) / w  # (N, P)
    y = (torch.div(indices, w, rounding_mode="floor").float() + 0.5) / h  # (N, P)
    return indices, torch.stack([x, y], dim=2)


class PointHead(nn.Module):
    """Shared MLP over points: fine features (N, C, P) + coarse logits (N, K, P) -> logits (N, K, P).

    The coarse logits are concatenated again before every layer and the classifier (detectron2's
    `coarse_pred_each_layer`), so each layer sees the prediction it corrects.
    """

    def __init__(self, fine_channels: int, num_classes: int, fc_channels: int = 256, num_fc: int = 3) -> None:
        super().__init__()
        fcs = []
        in_channels = fine_channels + num_classes
        for _ in range(num_fc):
            fcs.append(nn.Conv1d(in_channels, fc_channels, kernel_size=1))
            in_channels = fc_channels + num_classes
        self.fcs = nn.ModuleList(fcs)
        self.classifier = nn.Conv1d(in_channels, num_classes, kernel_size=1)
        for fc in self.fcs:
            nn.init.kaiming_normal_(fc.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        x = torch.cat([fine, coarse], dim=1)  # (N, C + K, P)
        for fc in self.fcs:
            x = torch.cat([F.relu(fc(x)), coarse], dim=1)  # (N, fc + K, P)
        return self.classifier(x)  # (N, K, P)


def predict_points(
    point_head: PointPredictor, fine_features: torch.Tensor, coarse_logits: torch.Tensor, coords: torch.Tensor
) -> torch.Tensor:
    """Point logits (N, K, P) at coords (N, P, 2) from fine features (N, C, hf, wf) and coarse logits (N, K, h, w)."""
    return point_head(point_sample(fine_features, coords), point_sample(coarse_logits, coords))


def point_train_targets(
    coarse_logits: torch.Tensor,
    labels: torch.Tensor,
    config: PointRendConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training points and their labels.

    coarse_logits (N, K, h, w), labels (N, H, W) train ids with `IGNORE` -> coords (N, P, 2) chosen by
    uncertainty (no gradient) and point labels (N, P) int64, the nearest label pixel of each point.
    """
    if labels.dim() != 3 or labels.shape[0] != coarse_logits.shape[0]:
        raise ValueError(
            f"labels must be (N, H, W) with N = {coarse_logits.shape[0]}, got {tuple(labels.shape)}"
        )
    coords = get_uncertain_point_coords_with_randomness(
        coarse_logits, config.train_points, config.oversample_ratio, config.importance_ratio, generator
    )
    point_labels = point_sample(labels.unsqueeze(1).float(), coords, mode="nearest")  # (N, 1, P)
    return coords, point_labels.squeeze(1).long()


def point_loss(point_logits: torch.Tensor, point_labels: torch.Tensor, ignore_index: int = IGNORE,
               class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over the labelled points: point_logits (N, K, P), point_labels (N, P) -> scalar.

    Points labelled `ignore_index` do not count; with none labelled the loss is 0 (not NaN). `class_weights` (K,)
    weigh each point by its label's class (a weighted mean), as the segmentation terms weigh pixels, so the point
    head learns the same class prior as the coarse logits whose predictions it replaces.
    """
    total = F.cross_entropy(point_logits.float(), point_labels, weight=class_weights, ignore_index=ignore_index,
                            reduction="sum")
    labelled = point_labels != ignore_index  # (N, P)
    if class_weights is None:
        return total / labelled.sum().clamp(min=1)
    return total / class_weights[point_labels[labelled]].sum().clamp(min=1e-12)


def subdivision_sizes(
    coarse_hw: tuple[int, int], output_hw: tuple[int, int], steps: int
) -> list[tuple[int, int]]:
    """Map size after each subdivision step: 2x per step (capped at the output), the last exactly output_hw."""
    if steps < 1:
        return []
    (h, w), (out_h, out_w) = coarse_hw, output_hw
    sizes = []
    for _ in range(steps - 1):
        h, w = min(2 * h, out_h), min(2 * w, out_w)
        sizes.append((h, w))
    return sizes + [(out_h, out_w)]


def subdivision_inference(
    coarse_logits: torch.Tensor,
    fine_features: torch.Tensor,
    point_head: PointPredictor,
    output_hw: tuple[int, int],
    steps: int,
    points: int,
) -> torch.Tensor:
    """Refine coarse logits (N, K, h, w) to (N, K, *output_hw) by adaptive subdivision.

    Each step upsamples the logits 2x (bilinear; the last step to exactly output_hw), then replaces the
    `points` most uncertain cells (all cells if there are no more) by the point head's prediction from
    the fine features (N, C, hf, wf) and the original coarse logits at the cell centres. With 0 steps
    the coarse logits are only resized.
    """
    if steps < 0 or points < 1:
        raise ValueError(f"need steps >= 0 and points >= 1, got steps={steps}, points={points}")
    coarse_hw = (coarse_logits.shape[-2], coarse_logits.shape[-1])
    if steps == 0:
        return F.interpolate(coarse_logits, size=output_hw, mode="bilinear", align_corners=False)
    logits = coarse_logits
    for size in subdivision_sizes(coarse_hw, output_hw, steps):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)  # (N, K, H, W)
        logits = refine_uncertain(logits, coarse_logits, fine_features, point_head, points)
    return logits


def refine_uncertain(
    logits: torch.Tensor,
    coarse_logits: torch.Tensor,
    fine_features: torch.Tensor,
    point_head: PointPredictor,
    points: int,
) -> torch.Tensor:
    """Replace the `points` most uncertain cells of logits (N, K, H, W) by the point head's prediction from the
    fine features (N, C, hf, wf) and the coarse logits (N, K, h, w) at the cell centres: one subdivision step
    without the upsampling. Returns (N, K, H, W)."""
    n, k, h, w = logits.shape
    indices, coords = get_uncertain_point_coords_on_grid(calculate_uncertainty(logits), points)  # (N, P)
    refined = predict_points(point_head, fine_features, coarse_logits, coords)  # (N, K, P)
    return (
        logits.reshape(n, k, h * w)
        .scatter(2, indices.unsqueeze(1).expand(-1, k, -1), refined.to(logits.dtype))
        .view(n, k, h, w)
    )
