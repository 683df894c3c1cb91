"""What to draw: `SynthConfig` and the constants of the dataset it describes (splits, cities, frame,
minimum image size)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from autolabel.errors import ConfigError

Array = np.ndarray

SPLITS = ("train", "val", "train_extra")
FINE_SPLITS = ("train", "val")
CITIES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "train": ("aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "hamburg",
              "hanover", "jena", "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen",
              "ulm", "weimar", "zurich"),
    "val": ("frankfurt", "lindau", "munster"),
    "train_extra": ("augsburg", "bad-honnef", "bamberg", "bayreuth", "dortmund", "dresden", "duisburg",
                    "erlangen", "freiburg", "heidelberg", "heilbronn", "karlsruhe", "konigswinter",
                    "konstanz", "mainz", "mannheim", "muhlheim-ruhr", "nuremberg", "oberhausen",
                    "saarbrucken", "schweinfurt", "troisdorf", "wuppertal", "wurzburg"),
})
FRAME = 19
"""Cityscapes annotates frame 19 of every 30-frame snippet."""
MIN_HEIGHT, MIN_WIDTH = 64, 128


@dataclass(frozen=True)
class SynthConfig:
    """How many images of which size to draw, and from which seed."""

    train: int = 32
    val: int = 16
    train_extra: int = 64
    height: int = 128
    width: int = 256
    seed: int = 0
    cities: int = 3
    """Cities per split (capped by the real city names of the split)."""
    coarse_inset: float = 0.03
    """Coarse polygons stay this fraction of the image height inside the true outlines."""
    coarse_min_unlabelled: float = 0.3
    """Coarse labels leave at least this fraction of pixels unlabelled."""

    def __post_init__(self) -> None:
        if self.height < MIN_HEIGHT or self.width < MIN_WIDTH:
            raise ConfigError(f"image size {self.height}x{self.width} (height x width) is below the minimum "
                              f"{MIN_HEIGHT}x{MIN_WIDTH}")
        for split in SPLITS:
            if self.count(split) < 0:
                raise ConfigError(f"{split} must be >= 0, got {self.count(split)}")
        if self.cities < 1:
            raise ConfigError(f"cities must be >= 1, got {self.cities}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.coarse_min_unlabelled < 1.0:
            raise ConfigError(f"coarse_min_unlabelled must be in [0, 1), got {self.coarse_min_unlabelled}")

    def count(self, split: str) -> int:
        """Number of images of `split`."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return getattr(self, split)
