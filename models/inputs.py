"""What a network's first layer expects, and the exact per-channel map from this project's inputs to it.

Every stage feeds networks RGB images normalised with the ImageNet mean and std of 0..255 values
(`autolabel.transforms.normalize_batch`). A network trained elsewhere may expect another colour order, value
range or mean/std; its `InputConfig` (stored in its checkpoint) says which, and `adapt_input` re-expresses the
project's inputs in those terms, so every command that runs the network feeds it what it was trained on.
"""

from __future__ import annotations

import dataclasses

import torch

from autolabel.errors import ConfigError
from autolabel.transforms import IMAGENET_MEAN, IMAGENET_STD

CHANNEL_ORDERS = ("RGB", "BGR")
PROJECT_RANGE = 255.0
"""Pixel values of 0..255 are what the project's mean and std apply to."""


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """Input normalisation a network was trained with: (pixel * value_range / 255 - mean) / std, per channel of
    `channels` order. The default is the project's own (RGB, 0..255, ImageNet mean/std)."""

    channels: str = "RGB"
    value_range: float = PROJECT_RANGE
    """255: pixels are taken as 0..255 before mean/std; 1: as 0..1 (pixel / 255)."""
    mean: tuple[float, float, float] = tuple(float(v) for v in IMAGENET_MEAN)
    std: tuple[float, float, float] = tuple(float(v) for v in IMAGENET_STD)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.channels not in CHANNEL_ORDERS:
            raise ConfigError(f"InputConfig.channels must be one of {', '.join(CHANNEL_ORDERS)}, got {self.channels!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0 or not self.value_range > 0:
            raise ConfigError(f"InputConfig needs 3 means, 3 positive stds and a positive value_range, got {self}")

    @classmethod
    def scaled_to_unit(cls, channels: str = "RGB") -> InputConfig:
        """Pixels / 255, then the ImageNet mean and std of 0..1 values (how torchvision-style code normalises)."""
        return cls(channels, 1.0, tuple(float(v) / PROJECT_RANGE for v in IMAGENET_MEAN),
                   tuple(float(v) / PROJECT_RANGE for v in IMAGENET_STD))

    @property
    def is_project_default(self) -> bool:
        return input_affine(self) is None


def input_affine(config: InputConfig) -> tuple[list[int], list[float], list[float]] | None:
    """(channel order, gain, offset) with source channel c = project channel order[c] * gain[c] + offset[c];
    None when the map is the identity (within float32 rounding of the stored constants)."""
    order = [0, 1, 2] if config.channels == "RGB" else [2, 1, 0]
    to_range = config.value_range / PROJECT_RANGE
    gain, offset = [], []
    for c, p in enumerate(order):
        # pixel = x * STD[p] + MEAN[p]  ->  (pixel * to_range - mean[c]) / std[c]
        gain.append(float(IMAGENET_STD[p]) * to_range / config.std[c])
        offset.append((float(IMAGENET_MEAN[p]) * to_range - config.mean[c]) / config.std[c])
    identity = order == [0, 1, 2] and all(abs(g - 1) < 1e-6 for g in gain) and all(abs(o) < 1e-6 for o in offset)
    return None if identity else (order, gain, offset)


def adapt_input(images: torch.Tensor, config: InputConfig) -> torch.Tensor:
    """Project-normalised images (N, 3, H, W) -> the network's own normalisation (N, 3, H, W); the same tensor
    when they agree."""
    affine = input_affine(config)
    if affine is None:
        return images
    order, gain, offset = affine
    g = images.new_tensor(gain).view(1, 3, 1, 1)
    b = images.new_tensor(offset).view(1, 3, 1, 1)
    return images[:, order] * g + b  # (N, 3, H, W)
