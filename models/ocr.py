"""OCR head (Object-Contextual Representations): pixels attend to soft class centres."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

import torch
from torch import nn

from autolabel.errors import ConfigError
from models.hrnet import conv_bn

GATHER_SOFTMAX_AXES = {"pixels": 2, "classes": 1}
"""`OCRConfig.gather_softmax` names -> axis of the flattened (N, K, hw) region logits."""

AUX_LOSS_WEIGHT = 0.4
"""Weight of the cross-entropy on `OCROutput.aux_logits` (the main logits weigh 1.0)."""


@dataclasses.dataclass(frozen=True)
class OCRConfig:
    """Widths of the OCR head; `OCRConfig.preset(name)` gives the named ones."""

    mid_channels: int = 512
    """Channels of the pixel representation and of `OCROutput.mid`."""
    key_channels: int = 256
    """Channels of the query / key / value space of the object attention."""
    dropout: float = 0.05
    """Dropout2d probability before the classifier."""
    gather_softmax: str = "pixels"
    """Axis of the soft object regions' softmax in `spatial_gather`: `pixels` (each class map sums to 1 over the
    image; the published OCR weights expect it) or `classes` (each pixel's weights sum to 1 over the classes)."""

    def __post_init__(self) -> None:
        if self.mid_channels < 1 or self.key_channels < 1:
            raise ConfigError(f"OCRConfig channels must be >= 1, got {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"OCRConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.gather_softmax not in GATHER_SOFTMAX_AXES:
            raise ConfigError(
                f"OCRConfig.gather_softmax must be one of {', '.join(GATHER_SOFTMAX_AXES)}, got {self.gather_softmax!r}"
            )

    @classmethod
    def preset(cls, name: str) -> OCRConfig:
        """The named configuration: one of `OCR_PRESETS`."""
        try:
            return OCR_PRESETS[name]
        except KeyError:
            valid = ", ".join(sorted(OCR_PRESETS))
            raise ConfigError(f"unknown OCR preset {name!r}; valid presets: {valid}") from None


OCR_PRESETS: Mapping[str, OCRConfig] = MappingProxyType(
    {
        "tiny": OCRConfig(mid_channels=32, key_channels=16),
        "w18s": OCRConfig(),
        "w48": OCRConfig(),
    }
)
"""Same names as `HRNET_PRESETS`."""


class OCROutput(NamedTuple):
    logits: torch.Tensor
    """(N, K, h, w) class logits."""
    aux_logits: torch.Tensor
    """(N, K, h, w) soft object regions, supervised with weight `AUX_LOSS_WEIGHT`."""
    mid: torch.Tensor
    """(N, mid_channels, h, w) object-contextual features the classifier reads."""


def spatial_gather(feats: torch.Tensor, region_logits: torch.Tensor, softmax_over: str = "pixels") -> torch.Tensor:
    """Class centres: features weighted by the region logits' softmax over pixels (or over classes).

    feats (N, C, h, w), region_logits (N, K, h, w) -> centres (N, K, C).
    """
    weights = region_logits.flatten(2).softmax(dim=GATHER_SOFTMAX_AXES[softmax_over])  # (N, K, hw)
    return weights @ feats.flatten(2).transpose(1, 2)  # (N, K, hw) @ (N, hw, C) -> (N, K, C)


def object_relation(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Pixel-to-region attention: softmax over regions of scaled dot products.

    query (N, P, D), key (N, K, D) -> relation (N, P, K), each row sums to 1.
    """
    scores = query @ key.transpose(1, 2) / math.sqrt(query.shape[-1])  # (N, P, K)
    return scores.softmax(dim=-1)


def _centres_as_map(centres: torch.Tensor) -> torch.Tensor:
    """(N, K, C) -> (N, C, K, 1), so that 1x1 conv + BatchNorm2d layers apply per centre."""
    return centres.transpose(1, 2).unsqueeze(-1)


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """(N, D, a, b) -> (N, a*b, D)."""
    return x.flatten(2).transpose(1, 2)


class OCRHead(nn.Module):
    """Backbone features (N, C, h, w) -> `OCROutput` at the same resolution."""

    def __init__(self, in_channels: int, num_classes: int, config: OCRConfig) -> None:
        super().__init__()
        self.config = config
        mid, key = config.mid_channels, config.key_channels
        self.aux_head = nn.Sequential(
            conv_bn(in_channels, in_channels, 1), nn.Conv2d(in_channels, num_classes, 1)
        )
        self.conv3x3 = conv_bn(in_channels, mid, 3)
        self.query = nn.Sequential(conv_bn(mid, key, 1), conv_bn(key, key, 1))
        self.key = nn.Sequential(conv_bn(mid, key, 1), conv_bn(key, key, 1))
        self.value = conv_bn(mid, key, 1)
        self.up = conv_bn(key, mid, 1)
        self.fuse = nn.Sequential(conv_bn(2 * mid, mid, 1), nn.Dropout2d(config.dropout))
        self.classifier = nn.Conv2d(mid, num_classes, 1)

    def object_context(self, pixels: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """pixels (N, mid, h, w), centres (N, K, mid) -> context (N, mid, h, w)."""
        n, _, h, w = pixels.shape
        query = _as_rows(self.query(pixels))  # (N, hw, key)
        centre_map = _centres_as_map(centres)  # (N, mid, K, 1)
        key = _as_rows(self.key(centre_map))  # (N, K, key)
        value = _as_rows(self.value(centre_map))  # (N, K, key)
        context = object_relation(query, key) @ value  # (N, hw, key)
        context = context.transpose(1, 2).reshape(n, -1, h, w)  # (N, key, h, w)
        return self.up(context)  # (N, mid, h, w)

    def forward(self, feats: torch.Tensor) -> OCROutput:
        aux_logits = self.aux_head(feats)  # (N, K, h, w)
        pixels = self.conv3x3(feats)  # (N, mid, h, w)
        centres = spatial_gather(pixels, aux_logits, self.config.gather_softmax)  # (N, K, mid)
        context = self.object_context(pixels, centres)  # (N, mid, h, w)
        mid = self.fuse(torch.cat([context, pixels], dim=1))  # (N, mid, h, w)
        return OCROutput(self.classifier(mid), aux_logits, mid)
