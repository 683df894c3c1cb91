"""What a scene is made of: labelled `Part`s with their `Paint` and `Detail`s, `Shadow`s, `Lighting`, the
per-image `Palette`, the street's `Side`s and depth-ordered `Group`s, and the colour and depth draws they share."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from autolabel.synth.config import Array

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Paint:
    """How a part is coloured: base colour times (1 + noise) with amplitudes per noise scale."""

    color: RGB
    fine: float = 0.04
    mid: float = 0.04
    low: float = 0.02
    vgrad: float = 0.0
    ground: bool = False
    """Ground materials receive cast shadows."""


@dataclass(frozen=True)
class Detail:
    """Image-only marks (windows, wheels, lamps) painted inside the visible pixels of their part."""

    polygons: Array  # (N, P, 2) pixel xy
    color: RGB
    thickness: int = 0
    """0 fills the polygons; > 0 draws them as open polylines of this width."""


@dataclass(frozen=True)
class Part:
    """One annotated polygon of the scene and how it looks."""

    label: str
    polygon: Array  # (P, 2) pixel xy
    paint: Paint
    details: tuple[Detail, ...] = ()


@dataclass(frozen=True)
class Shadow:
    polygons: Array  # (N, P, 2) pixel xy
    light: float
    thickness: int = 0


@dataclass(frozen=True)
class Lighting:
    gain: float
    gradient: tuple[float, float]
    white: RGB
    blur: float
    noise: float


@dataclass(frozen=True)
class Scene:
    parts: tuple[Part, ...]  # painter's order
    shadows: tuple[Shadow, ...]
    lighting: Lighting


@dataclass(frozen=True)
class Palette:
    """Per-image materials shared by several classes."""

    sky: Paint
    pavement: Paint  # road and sidewalk alike
    grass: Paint  # terrain
    foliage: Paint  # vegetation: the colour of the grass
    kerb: RGB
    sun: int  # the side the sun shines from: -1, +1, or 0 when overcast
    shadow: float
    shadow_length: float


@dataclass(frozen=True)
class Side:
    """One side of the street, from the kerb outwards."""

    sign: int  # -1 left, +1 right
    kerb: float
    verge: float
    sidewalk: float
    park: bool
    boundary: str  # none | wall | fence

    def lateral(self, offset: float) -> float:
        """Lateral position `offset` units outwards from the kerb."""
        return self.kerb + self.sign * offset

    @property
    def outer(self) -> float:
        return self.lateral(self.verge + self.sidewalk)


@dataclass(frozen=True)
class Group:
    """Parts drawn together, ordered far to near by depth."""

    depth: float
    parts: tuple[Part, ...]
    shadows: tuple[Shadow, ...] = ()


def hsv(h: float, s: float, v: float) -> RGB:
    return colorsys.hsv_to_rgb(float(h) % 1.0, min(max(float(s), 0.0), 1.0), min(max(float(v), 0.0), 1.0))


def scaled(color: RGB, factor: float) -> RGB:
    return tuple(min(max(float(c * factor), 0.0), 1.0) for c in color)


def log_depth(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(lo * (hi / lo) ** rng.random())
