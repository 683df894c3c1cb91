"""Segmentation augmentations: small pure functions over (image, label) pairs.

Every augmentation takes a `Pair` and an explicit `np.random.Generator` and returns a new
`Pair`; geometric ones move the pair's optional crop centre along with the pixels, so a
class-uniform crop stays centred on its class after scaling and flipping. Images are RGB
(H, W, 3) uint8, labels (H, W) uint8 train ids (255 = ignore).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable

import cv2
import numpy as np
import torch

from autolabel.errors import ConfigError
from autolabel.labels import IGNORE

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R 601 luma, the grey level used by contrast and saturation jitter."""
IMAGE_FILL = 0


@dataclass(frozen=True)
class Pair:
    """An image, its label map and an optional (y, x) pixel a crop should be centred on."""

    image: np.ndarray = field(repr=False)  # (H, W, 3) uint8 RGB
    label: np.ndarray = field(repr=False)  # (H, W) uint8 train ids
    centre: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {self.image.shape} {self.image.dtype}")
        if self.label.ndim != 2 or self.label.dtype != np.uint8:
            raise ValueError(f"label must be (H, W) uint8, got {self.label.shape} {self.label.dtype}")
        if self.label.shape != self.image.shape[:2]:
            raise ValueError(f"label is {self.label.shape} but image is {self.image.shape[:2]}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.label.shape


Augment = Callable[[Pair, np.random.Generator], Pair]


@dataclass(frozen=True)
class Compose:
    """Apply augmentations in order, all drawing from the same generator."""

    augments: tuple[Augment, ...]

    def __call__(self, pair: Pair, rng: np.random.Generator) -> Pair:
        for augment in self.augments:
            pair = augment(pair, rng)
        return pair


def compose(*augments: Augment) -> Compose:
    return Compose(tuple(augments))


def rescale(pair: Pair, factor: float) -> Pair:
    """Resize by `factor`: image bilinear, label nearest (labels never get new values)."""
    h, w = pair.shape
    new_h, new_w = max(1, round(h * factor)), max(1, round(w * factor))
    image = cv2.resize(pair.image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(pair.label, (new_w, new_h), interpolation=cv2.INTER_NEAREST_EXACT)
    centre = None
    if pair.centre is not None:
        y, x = pair.centre
        centre = (min(int((y + 0.5) * new_h / h), new_h - 1), min(int((x + 0.5) * new_w / w), new_w - 1))
    return Pair(image, label, centre)


def random_scale(pair: Pair, rng: np.random.Generator, scale: tuple[float, float] = (0.5, 2.0)) -> Pair:
    """Rescale by a factor drawn uniformly from `scale`."""
    return rescale(pair, float(rng.uniform(*scale)))


def _window(array: np.ndarray, y0: int, x0: int, size: tuple[int, int], fill: int) -> np.ndarray:
    """The (h, w) window at (y0, x0) of `array`; parts outside it are `fill`."""
    h, w = size
    out = np.full((h, w, *array.shape[2:]), fill, dtype=array.dtype)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + h, array.shape[0]), min(x0 + w, array.shape[1])
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = array[sy0:sy1, sx0:sx1]
    return out


def _origin_range(length: int, crop: int) -> tuple[int, int]:
    """Window starts that keep the window inside the image, or the image inside the window."""
    return min(0, length - crop), max(0, length - crop)


def crop(pair: Pair, rng: np.random.Generator, size: tuple[int, int]) -> Pair:
    """Crop to `size` (h, w), padding the image with 0 and the label with 255 where it is smaller.

    With a centre, the window is centred on it, shifted only as far as needed to stay inside
    the image, so the centre pixel is always in the crop; without, the window is random.
    """
    (h, w), (crop_h, crop_w) = pair.shape, size
    (lo_y, hi_y), (lo_x, hi_x) = _origin_range(h, crop_h), _origin_range(w, crop_w)
    if pair.centre is None:
        y0, x0 = int(rng.integers(lo_y, hi_y + 1)), int(rng.integers(lo_x, hi_x + 1))
        centre = None
    else:
        cy, cx = pair.centre
        y0 = int(np.clip(cy - crop_h // 2, lo_y, hi_y))
        x0 = int(np.clip(cx - crop_w // 2, lo_x, hi_x))
        centre = (cy - y0, cx - x0)
    image = _window(pair.image, y0, x0, size, IMAGE_FILL)
    label = _window(pair.label, y0, x0, size, IGNORE)
    return Pair(image, label, centre)


def hflip(pair: Pair) -> Pair:
    """Mirror image, label and centre left to right."""
    centre = None if pair.centre is None else (pair.centre[0], pair.shape[1] - 1 - pair.centre[1])
    return Pair(pair.image[:, ::-1].copy(), pair.label[:, ::-1].copy(), centre)


def random_hflip(pair: Pair, rng: np.random.Generator, p: float = 0.5) -> Pair:
    return hflip(pair) if rng.random() < p else pair


def _grey(image: np.ndarray) -> np.ndarray:
    return image @ LUMA_WEIGHTS  # (H, W)


def _brightness(image: np.ndarray, factor: float) -> np.ndarray:
    return image * factor


def _contrast(image: np.ndarray, factor: float) -> np.ndarray:
    mean = float(_grey(image).mean())
    return mean + factor * (image - mean)


def _saturation(image: np.ndarray, factor: float) -> np.ndarray:
    grey = _grey(image)[..., None]  # (H, W, 1)
    return grey + factor * (image - grey)


def _hue(image: np.ndarray, shift: float) -> np.ndarray:
    """Rotate hue by `shift` turns (-0.5..0.5)."""
    hsv = cv2.cvtColor(image / 255.0, cv2.COLOR_RGB2HSV)  # hue in degrees [0, 360)
    hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * shift, 360.0)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0


def color_jitter(pair: Pair, rng: np.random.Generator, strength: float = 0.25) -> Pair:
    """Brightness, contrast and saturation by factors in [1 - s, 1 + s], hue by [-s, s] turns,
    applied in random order (as torchvision's ColorJitter(s, s, s, s)); the label is untouched."""
    if not 0.0 <= strength <= 0.5:
        raise ValueError(f"jitter strength must be in [0, 0.5], got {strength}")
    ops = (
        partial(_brightness, factor=float(rng.uniform(1 - strength, 1 + strength))),
        partial(_contrast, factor=float(rng.uniform(1 - strength, 1 + strength))),
        partial(_saturation, factor=float(rng.uniform(1 - strength, 1 + strength))),
        partial(_hue, shift=float(rng.uniform(-strength, strength))),
    )
    image = pair.image.astype(np.float32)  # (H, W, 3)
    for i in rng.permutation(len(ops)):
        image = ops[i](image)
        np.clip(image, 0.0, 255.0, out=image)
    return replace(pair, image=np.rint(image).astype(np.uint8))


def to_tensor(pair: Pair) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet-normalised float32 (3, H, W) image and int64 (H, W) label."""
    image = (pair.image.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD  # (H, W, 3)
    image = np.ascontiguousarray(image.transpose(2, 0, 1))  # (3, H, W)
    return torch.from_numpy(image), torch.from_numpy(pair.label.astype(np.int64))


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation: random scale, crop (h, w), horizontal flip, colour jitter."""

    crop: tuple[int, int]
    scale: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if len(self.crop) != 2 or min(self.crop) < 1:
            raise ConfigError(f"crop must be (h, w) with positive sides, got {self.crop}")
        if not 0.0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")
        if not 0.0 <= self.jitter <= 0.5:
            raise ConfigError(f"jitter must be in [0, 0.5], got {self.jitter}")

    @classmethod
    def preset(cls, name: str) -> AugmentConfig:
        """`tiny` (64x128 crops, tests), `w18s` (512x1024), `w48` (1024x2048, the reference recipe)."""
        crops = {"tiny": (64, 128), "w18s": (512, 1024), "w48": (1024, 2048)}
        if name not in crops:
            raise ConfigError(f"unknown augmentation preset {name!r}; expected one of {sorted(crops)}")
        return cls(crop=crops[name])


@dataclass(frozen=True)
class SegmentationTransform:
    """Augment a pair, then normalise it to tensors."""

    augment: Compose = field(default_factory=compose)

    def __call__(self, pair: Pair, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return to_tensor(self.augment(pair, rng))


def train_augment(config: AugmentConfig) -> Compose:
    augments: list[Augment] = []
    if config.scale != (1.0, 1.0):
        augments.append(partial(random_scale, scale=config.scale))
    augments.append(partial(crop, size=config.crop))
    if config.flip:
        augments.append(random_hflip)
    if config.jitter > 0:
        augments.append(partial(color_jitter, strength=config.jitter))
    return compose(*augments)


def train_transform(config: AugmentConfig) -> SegmentationTransform:
    return SegmentationTransform(train_augment(config))


def eval_transform() -> SegmentationTransform:
    """No augmentation: normalise only."""
    return SegmentationTransform()


def normalize_batch(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB images (N, H, W, 3) -> ImageNet-normalised float32 (N, 3, H, W), on their device.

    Lets inference ship uint8 to the accelerator and normalise there.
    """
    mean = torch.as_tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() - mean) / std  # (N, 3, H, W)
