"""Synthetic street scenes written in the Cityscapes layout, so every stage runs without the real dataset.

Each image is a perspective street drawn by a generator seeded from (seed, split, index), so any
image can be reproduced on its own. A scene is a list of labelled polygons in painter's order:
the fine labels are those polygons rasterised by cityscapesscripts, the image is painted from the
same rasterisation, and the coarse labels are inset outlines of the fine regions of the same scene.

Road and sidewalk share one material (same colour, same noise) and differ only by position and a
kerb line; terrain and vegetation share one colour and differ by height. Poles are 1-3 px wide at
any resolution, so they fade when the image is halved. Colours and light change per image.
"""

from __future__ import annotations

import colorsys
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
from cityscapesscripts.helpers.annotation import Annotation, CsPoly
from cityscapesscripts.helpers.labels import labels as _CS_LABELS
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image, ImageDraw

from autolabel.images import encode_png
from autolabel.labels import IGNORE, LABEL_ID_TO_TRAIN_ID, UNLABELED_LABEL_ID
from autolabel.layout import IMAGE_DIR, IMAGE_SUFFIX, label_path

log = logging.getLogger(__name__)

Array = np.ndarray
RGB = tuple[float, float, float]
Progress = Callable[[int, int], None]

SPLITS = ("train", "val", "train_extra")
FINE_SPLITS = ("train", "val")
GENERATED_DIRS = (IMAGE_DIR, "gtFine", "gtCoarse")
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

THIN_LABELS = frozenset({"pole", "traffic light", "traffic sign"})
MIN_HEIGHT, MIN_WIDTH = 64, 128
PNG_LEVEL = 6
"""zlib level of written PNGs: within a few percent of level 9's size at a fraction of its time."""


def _label_id_palette() -> Array:
    palette = np.zeros((256, 3), dtype=np.uint8)
    for lab in _CS_LABELS:
        if 0 <= lab.id < 256:
            palette[lab.id] = lab.color
    palette.setflags(write=False)
    return palette


LABEL_ID_PALETTE = _label_id_palette()
"""(256, 3) Cityscapes colour of every label id, as in `_gtFine_color.png`."""
LABEL_NAME_BY_ID: Mapping[int, str] = MappingProxyType({lab.id: lab.name for lab in _CS_LABELS if lab.id >= 0})


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
            raise ValueError(f"image size {self.height}x{self.width} (height x width) is below the minimum "
                             f"{MIN_HEIGHT}x{MIN_WIDTH}")
        for split in SPLITS:
            if self.count(split) < 0:
                raise ValueError(f"{split} must be >= 0, got {self.count(split)}")
        if self.cities < 1:
            raise ValueError(f"cities must be >= 1, got {self.cities}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.coarse_min_unlabelled < 1.0:
            raise ValueError(f"coarse_min_unlabelled must be in [0, 1), got {self.coarse_min_unlabelled}")

    def count(self, split: str) -> int:
        """Number of images of `split`."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return getattr(self, split)


SYNTH_PRESETS: Mapping[str, SynthConfig] = MappingProxyType({
    "tiny": SynthConfig(train=4, val=2, train_extra=4, height=64, width=128),
    "small": SynthConfig(),
    "medium": SynthConfig(train=512, val=128, train_extra=1024, height=512, width=1024, cities=6),
    "cityscapes": SynthConfig(train=2975, val=500, train_extra=19998, height=1024, width=2048, cities=18),
})


@dataclass(frozen=True)
class SynthSample:
    """One drawn image with its fine and coarse annotations (label ids, polygons JSON)."""

    image: Array  # (H, W, 3) uint8 RGB
    fine: dict
    fine_ids: Array  # (H, W) uint8 label ids
    coarse: dict
    coarse_ids: Array  # (H, W) uint8 label ids, 0 = unlabelled


@dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote."""

    root: Path
    truth_root: Path
    images: Mapping[str, int]
    seconds: float

    def to_dict(self) -> dict:
        return {"root": str(self.root), "truth_root": str(self.truth_root), "images": dict(self.images),
                "seconds": round(self.seconds, 3)}


# --------------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Camera:
    """Pinhole camera one world unit above flat ground, looking down the street (+depth)."""

    height: int
    width: int
    focal: float
    cx: float
    horizon: float

    @property
    def near(self) -> float:
        """Depth of the ground seen by the bottom image row."""
        return self.focal / (self.height - self.horizon)

    def px(self, depth: float) -> float:
        """Pixels per world unit at `depth`."""
        return self.focal / depth

    def project(self, lateral, up, depth) -> Array:
        """World points (lateral, up, depth), broadcast together -> pixel xy (..., 2)."""
        lateral, up, depth = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (lateral, up, depth)))
        return np.stack([self.cx + self.focal * lateral / depth, self.horizon + self.focal * (1.0 - up) / depth], -1)


def ground_quad(cam: Camera, x0: float, x1: float, z0: float, z1: float) -> Array:
    return cam.project([x0, x1, x1, x0], 0.0, [z0, z0, z1, z1])


def side_quad(cam: Camera, x: float, z0: float, z1: float, u0: float, u1: float) -> Array:
    """A rectangle on the vertical plane `lateral = x`, running along the street."""
    return cam.project(x, [u0, u0, u1, u1], [z0, z1, z1, z0])


def front_quad(cam: Camera, x0: float, x1: float, u0: float, u1: float, z: float) -> Array:
    """A rectangle facing the camera at depth `z`."""
    return cam.project([x0, x1, x1, x0], [u0, u0, u1, u1], z)


def billboard(cam: Camera, x: float, z: float, outline: Array) -> Array:
    """A flat outline (P, 2) of (lateral offset, up) standing at (x, z), facing the camera."""
    return cam.project(x + outline[:, 0], outline[:, 1], z)


def box_hull(cam: Camera, boxes: Iterable[tuple[float, float, float, float, float, float]]) -> Array:
    """Silhouette of the union of boxes (x0, x1, z0, z1, u0, u1): convex hull of their corners."""
    bounds = np.array(list(boxes), dtype=np.float64)  # (B, 6)
    pick = np.array(np.meshgrid([0, 1], [2, 3], [4, 5], indexing="ij")).reshape(3, -1)  # (3, 8) column of each corner
    corners = cam.project(bounds[:, pick[0]], bounds[:, pick[2]], bounds[:, pick[1]])  # (B, 8, 2)
    hull = cv2.convexHull(corners.reshape(-1, 2).astype(np.float32))
    return hull[:, 0].astype(np.float64)


def circle(cx: float, cy: float, r: float, n: int = 12) -> Array:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], -1)


def clip_polygon(poly: Array, width: int, height: int) -> Array:
    """Clip a polygon (P, 2) to the pixel rectangle [0, width-1] x [0, height-1] (Sutherland-Hodgman)."""
    if poly.min() >= 0 and poly[:, 0].max() <= width - 1 and poly[:, 1].max() <= height - 1:
        return poly
    for axis, bound, sign in ((0, 0.0, -1.0), (0, width - 1.0, 1.0), (1, 0.0, -1.0), (1, height - 1.0, 1.0)):
        if len(poly) == 0:
            break
        outside = sign * (poly[:, axis] - bound)  # > 0 outside
        kept = []
        for i in range(len(poly)):
            a, b, da, db = poly[i - 1], poly[i], outside[i - 1], outside[i]
            if (da > 0) != (db > 0):
                kept.append(a + (b - a) * (da / (da - db)))
            if db <= 0:
                kept.append(b)
        poly = np.array(kept, dtype=np.float64).reshape(-1, 2)
    return poly


def pixel_polygon(poly: Array, width: int, height: int) -> Array | None:
    """Clip and round a polygon to integer pixel vertices (P, 2); None when nothing is inside the image."""
    clipped = clip_polygon(poly, width, height)
    if len(clipped) == 0:
        return None
    pts = np.rint(clipped).astype(np.int64)
    keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)
    pts = pts[keep] if keep.any() else pts[:1]
    return pts if len(pts) >= 2 else np.repeat(pts, 2, axis=0)


# --------------------------------------------------------------------------------------------- scene


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


def _palette(rng: np.random.Generator) -> Palette:
    kind = rng.choice(3, p=[0.55, 0.3, 0.15])
    sky = (hsv(rng.uniform(0.55, 0.63), rng.uniform(0.2, 0.6), rng.uniform(0.7, 0.95)),
           hsv(rng.uniform(0, 1), rng.uniform(0, 0.08), rng.uniform(0.55, 0.9)),
           hsv(rng.uniform(0.02, 0.12), rng.uniform(0.25, 0.5), rng.uniform(0.65, 0.9)))[kind]
    pavement = hsv(rng.uniform(0, 1), rng.uniform(0, 0.15), rng.uniform(0.25, 0.6))
    green = hsv(rng.uniform(0.15, 0.33), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.55))
    asphalt = dict(fine=rng.uniform(0.05, 0.12), mid=rng.uniform(0.03, 0.09), low=rng.uniform(0.02, 0.06))
    plant = dict(fine=rng.uniform(0.08, 0.15), mid=rng.uniform(0.1, 0.2), low=rng.uniform(0.03, 0.08))
    overcast = kind == 1 or rng.random() < 0.2
    return Palette(
        sky=Paint(sky, fine=0.01, mid=0.02, low=rng.uniform(0.03, 0.15), vgrad=rng.uniform(0.1, 0.5)),
        pavement=Paint(pavement, ground=True, **asphalt),
        grass=Paint(green, ground=True, **plant),
        foliage=Paint(green, **plant),
        kerb=scaled(pavement, rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.4) + 1.0),
        sun=0 if overcast else int(rng.choice([-1, 1])),
        shadow=rng.uniform(0.45, 0.7),
        shadow_length=rng.uniform(0.3, 1.5),
    )


def _side(rng: np.random.Generator, sign: int) -> Side:
    park = rng.random() < 0.3
    return Side(
        sign=sign,
        kerb=sign * (rng.uniform(1.5, 6.5) if sign < 0 else rng.uniform(1.2, 3.5)),
        verge=rng.uniform(0.5, 2.0) if rng.random() < 0.25 else 0.0,
        sidewalk=rng.uniform(1.2, 3.5) if rng.random() < 0.92 else 0.0,
        park=park,
        boundary=str(rng.choice(["none", "wall", "fence"], p=[0.3, 0.35, 0.35])) if park else "none",
    )


def _log_depth(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(lo * (hi / lo) ** rng.random())


def _sky(cam: Camera, pal: Palette, far: float) -> Part:
    bottom = cam.horizon + cam.px(far) + 1.0
    return Part("sky", np.array([[0, 0], [cam.width, 0], [cam.width, bottom], [0, bottom]], float), pal.sky)


def _backdrop(cam: Camera, rng: np.random.Generator, pal: Palette, far: float) -> list[Part]:
    """Buildings and trees closing the street at depth `far`."""
    x, x_end = -cam.cx / cam.px(far) - 2.0, (cam.width - cam.cx) / cam.px(far) + 2.0
    parts = []
    while x < x_end:
        w = rng.uniform(3.0, 14.0)
        if rng.random() < 0.2:
            t = np.linspace(0.0, np.pi, 9)
            base, crown = rng.uniform(1.0, 4.0), rng.uniform(2.0, 4.0)
            dome = np.stack([w / 2 * np.cos(t), base + crown * np.sin(t)], -1)
            outline = np.concatenate([dome, [[-w / 2, 0.0], [w / 2, 0.0]]])
            parts.append(Part("vegetation", billboard(cam, x + w / 2, far, outline), pal.foliage))
        else:
            color = hsv(rng.uniform(0, 1), rng.uniform(0, 0.3), rng.uniform(0.35, 0.8))
            parts.append(Part("building", front_quad(cam, x, x + w, 0.0, rng.uniform(3, 20), far),
                              Paint(color, fine=0.02, mid=0.05, low=0.02)))
        x += w
    return parts


def _ground(cam: Camera, rng: np.random.Generator, sides: tuple[Side, Side], pal: Palette, far: float,
            trees: list[tuple[float, float]]) -> list[Part]:
    """Road, verges, sidewalks, the land beyond, and the soil pits of street trees."""
    z0 = 0.3 * cam.near
    left, right = sides
    kerb_width = max(1, round(0.006 * cam.height))
    parts = [Part("road", ground_quad(cam, left.kerb, right.kerb, z0, far), pal.pavement)]
    for side in sides:
        beyond = "terrain" if side.park else "sidewalk"
        parts.append(Part(beyond, ground_quad(cam, side.outer, side.sign * 1000.0, z0, far),
                          pal.grass if side.park else pal.pavement))
        if side.verge:
            parts.append(Part("terrain", ground_quad(cam, side.kerb, side.lateral(side.verge), z0, far), pal.grass))
        if side.sidewalk:
            inner, outer = side.lateral(side.verge), side.outer
            kerb = cam.project(side.lateral(side.verge + 0.12), 0.0, [z0, far])
            parts.append(Part("sidewalk", ground_quad(cam, inner, outer, z0, far), pal.pavement,
                              (Detail(kerb[None], pal.kerb, kerb_width),)))
    for x, z in trees:
        r = rng.uniform(0.4, 0.7)
        parts.append(Part("terrain", ground_quad(cam, x - r, x + r, z - r, z + r), pal.grass))
    return parts


def _windows(cam: Camera, rng: np.random.Generator, x: float, z0: float, z1: float, top: float) -> Array:
    """Window quads (N, 4, 2) on a facade at lateral `x` between depths z0..z1, up to height `top`."""
    zs = np.arange(z0 + 0.8, z1 - 1.2, rng.uniform(1.8, 2.8))
    us = np.arange(rng.uniform(0.9, 1.5), top - 1.2, rng.uniform(2.2, 2.8))
    if len(zs) == 0 or len(us) == 0:
        return np.zeros((0, 4, 2))
    zz, uu = (a.reshape(-1, 1) for a in np.meshgrid(zs, us))  # (N, 1)
    ww, wh = rng.uniform(0.7, 1.2), rng.uniform(1.0, 1.5)
    quads = cam.project(x, uu + [0.0, 0.0, wh, wh], zz + [0.0, ww, ww, 0.0])  # (N, 4, 2)
    size = np.abs(quads[:, 1, 0] - quads[:, 0, 0])
    inside = (quads[..., 0].max(1) > 0) & (quads[..., 0].min(1) < cam.width) & (quads[..., 1].max(1) > 0)
    return quads[(size >= 1.5) & inside]


def _facades(cam: Camera, rng: np.random.Generator, side: Side, pal: Palette, far: float) -> list[Part]:
    """A row of buildings along the outer edge of the sidewalk; the one facing the sun is brighter.

    Buildings cast no shadow on the street: a long shadow would darken the sidewalk on one side
    only and make brightness tell sidewalk from road.
    """
    parts = []
    lit = 1.0 if pal.sun == 0 else (0.7 if pal.sun == side.sign else 1.1)
    z = 0.3 * cam.near
    x = side.outer
    while z < far:
        z1 = min(far, z + rng.uniform(6.0, 25.0))
        top = rng.uniform(4.0, 16.0)
        color = scaled(hsv(rng.uniform(0, 1), rng.uniform(0, 0.35), rng.uniform(0.35, 0.85)), lit)
        glass = hsv(rng.uniform(0.5, 0.7), rng.uniform(0, 0.3), rng.uniform(0.08, 0.35))
        windows = _windows(cam, rng, x, z, z1, top)
        lit_windows = rng.random(len(windows)) < 0.1
        details = (Detail(windows[~lit_windows], glass), Detail(windows[lit_windows], hsv(0.12, 0.4, 0.9)))
        parts.append(Part("building", side_quad(cam, x, z, z1, 0.0, top),
                          Paint(color, fine=0.02, mid=rng.uniform(0.02, 0.08), low=0.03, vgrad=0.1), details))
        z = z1
    return parts


def _wavy_band(cam: Camera, rng: np.random.Generator, x: float, z0: float, z1: float, height: float) -> Array:
    """Outline of a hedge or tree line on the plane `lateral = x`: flat bottom, bumpy top."""
    zs = np.geomspace(z0, z1, 24)
    tops = height * (1.0 + 0.25 * rng.standard_normal(len(zs)).clip(-2, 2))
    top = cam.project(x, tops, zs)
    bottom = cam.project(x, 0.0, zs[::-1])
    return np.concatenate([top, bottom])


def _park(cam: Camera, rng: np.random.Generator, side: Side, pal: Palette, far: float) -> list[Part]:
    """Tree line, park trees and hedge behind the sidewalk, then the wall or fence in front of them."""
    z0 = 0.3 * cam.near
    parts = [Part("vegetation", _wavy_band(cam, rng, side.lateral(side.verge + side.sidewalk + rng.uniform(8, 30)),
                                           z0, far, rng.uniform(4, 10)), pal.foliage)]
    trees = [_tree(cam, rng, side.lateral(side.verge + side.sidewalk + rng.uniform(1.5, 8)),
                   _log_depth(rng, cam.near, far * 0.7), pal) for _ in range(rng.integers(0, 6))]
    for group in sorted(trees, key=lambda g: -g.depth):
        parts.extend(group.parts)
    x = side.outer
    if side.boundary == "none":
        parts.append(Part("vegetation", _wavy_band(cam, rng, side.lateral(side.verge + side.sidewalk + 0.4),
                                                   z0, far, rng.uniform(0.6, 1.4)), pal.foliage))
    elif side.boundary == "wall":
        top = rng.uniform(0.5, 1.6)
        color = hsv(rng.uniform(0, 1), rng.uniform(0, 0.2), rng.uniform(0.4, 0.8))
        cap = Detail(side_quad(cam, x, z0, far, top * 0.9, top)[None], scaled(color, 1.2))
        parts.append(Part("wall", side_quad(cam, x, z0, far, 0.0, top), Paint(color, mid=0.06, low=0.04), (cap,)))
    else:
        parts.append(_fence(cam, rng, x, z0, far))
    return parts


def _fence(cam: Camera, rng: np.random.Generator, x: float, z0: float, z1: float) -> Part:
    top = rng.uniform(0.8, 1.5)
    color = hsv(rng.uniform(0, 1), rng.uniform(0, 0.4), rng.uniform(0.2, 0.6))
    bars = np.arange(z0, z1, rng.uniform(0.2, 0.5))
    ends = cam.project(x, np.array([[0.0], [top]]), bars).transpose(1, 0, 2)  # (N, 2, 2)
    spacing = np.abs(np.diff(ends[:, 0, 0], append=ends[-1, 0, 0]))
    bars_drawn = ends[spacing >= 3.0]
    rail = cam.project(x, top * 0.95, [z0, z1])[None]
    bar_color = scaled(color, rng.choice([0.5, 1.6]))
    details = (Detail(bars_drawn, bar_color, 1), Detail(rail, bar_color, 1)) if len(bars_drawn) else ()
    return Part("fence", side_quad(cam, x, z0, z1, 0.0, top), Paint(color, fine=0.06, mid=0.06), details)


def _tree(cam: Camera, rng: np.random.Generator, x: float, z: float, pal: Palette) -> Group:
    px = cam.px(z)
    trunk_top = rng.uniform(1.8, 3.0)
    trunk_w = max(1.0, 0.25 * px) / px
    r = rng.uniform(1.0, 2.3)
    n = 18
    radii = r * (1.0 + 0.18 * rng.standard_normal(n).clip(-2, 2))
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    crown = np.stack([radii * np.cos(t), trunk_top + r * 0.6 + radii * np.sin(t) * rng.uniform(0.8, 1.1)], -1)
    trunk = np.array([[-trunk_w / 2, 0.0], [trunk_w / 2, 0.0], [trunk_w / 2, trunk_top + r * 0.5],
                      [-trunk_w / 2, trunk_top + r * 0.5]])
    bark = Paint(hsv(rng.uniform(0.05, 0.12), rng.uniform(0.2, 0.5), rng.uniform(0.15, 0.4)), fine=0.06, mid=0.04)
    parts = (Part("vegetation", billboard(cam, x, z, trunk), bark), Part("vegetation", billboard(cam, x, z, crown),
                                                                          pal.foliage))
    shadows = ()
    if pal.sun:
        reach = -pal.sun * (trunk_top + r) * pal.shadow_length
        shadows = (Shadow(ground_quad(cam, x, x + reach, z - r * 0.6, z + r * 0.6)[None], pal.shadow),)
    return Group(z, parts, shadows)


def _sign_plates() -> tuple[Array, ...]:
    """Traffic-sign plates, unit size, centred at the origin (pixel axes: y down)."""
    return (
        circle(0.0, 0.0, 0.5, 12),
        np.array([[0.0, -0.5], [0.5, 0.4], [-0.5, 0.4]]),  # warning triangle
        np.array([[-0.5, -0.4], [0.5, -0.4], [0.0, 0.5]]),  # give way
        circle(0.0, 0.0, 0.5, 4),  # priority diamond
        np.array([[-0.6, -0.4], [0.6, -0.4], [0.6, 0.4], [-0.6, 0.4]]),  # information plate
    )


def _pole(cam: Camera, rng: np.random.Generator, x: float, z: float, pal: Palette) -> Group:
    """A 1-3 px pole, bare or carrying a traffic sign, a traffic light or a lamp arm."""
    px = cam.px(z)
    width = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
    top = rng.uniform(2.5, 5.0)
    (bx, by), (_, ty) = cam.project(x, [0.0, top], z)
    x0 = round(bx)
    metal = Paint(hsv(rng.uniform(0, 1), rng.uniform(0, 0.3), rng.uniform(0.15, 0.6)), fine=0.03, mid=0.02)
    parts = [Part("pole", np.array([[x0, ty], [x0 + width - 1, ty], [x0 + width - 1, by], [x0, by]], float), metal)]
    attachment = rng.choice(4, p=[0.25, 0.4, 0.2, 0.15])
    centre = x0 + (width - 1) / 2
    if attachment == 1:
        size = max(3.0, rng.uniform(0.5, 0.8) * px)
        plates = _sign_plates()
        plate = plates[rng.integers(len(plates))] * size + [centre, ty - size / 2]
        face = hsv(rng.choice([0.0, 0.6, 0.14]), rng.uniform(0.6, 1.0), rng.uniform(0.5, 0.9))
        inner = Detail(((plate - plate.mean(0)) * 0.6 + plate.mean(0))[None], hsv(0, 0, rng.uniform(0.8, 1)))
        parts.append(Part("traffic sign", plate, Paint(face, fine=0.03, mid=0.02), (inner,) if size >= 6 else ()))
    elif attachment == 2:
        w, h = max(2.0, 0.35 * px), max(5.0, 0.95 * px)
        box = np.array([[-w / 2, -h], [w / 2, -h], [w / 2, 0], [-w / 2, 0]]) + [centre, ty + 0.1 * h]
        r = w * 0.3
        on = rng.integers(3)
        lamps = tuple(
            Detail(circle(centre, ty - h * (0.8 - 0.3 * i), r, 8)[None],
                   hsv((0.0, 0.13, 0.35)[i], 0.9, 1.0) if i == on else hsv(0, 0, 0.1))
            for i in range(3)) if r >= 1.0 and rng.random() < 0.6 else ()
        housing = Paint(hsv(rng.choice([0.0, 0.14]), rng.uniform(0, 0.6), rng.uniform(0.08, 0.3)), fine=0.03)
        parts.append(Part("traffic light", box, housing, lamps))
    elif attachment == 3:
        reach = -np.sign(x) * rng.uniform(1.0, 2.0) * px
        head = max(2.0, 0.3 * px)
        parts.append(Part("pole", np.array([[x0, ty], [x0 + reach, ty]]), metal))
        parts.append(Part("pole", np.array([[x0 + reach - head, ty], [x0 + reach + head, ty],
                                             [x0 + reach, ty + head * 0.5]]), metal))
    shadows = ()
    if pal.sun:
        end = cam.project(x - pal.sun * top * pal.shadow_length, 0.0, z)
        shadows = (Shadow(np.array([[[bx, by], end]]), pal.shadow, width),)
    return Group(z, tuple(parts), shadows)


def _person_outline(rng: np.random.Generator, height: float) -> Array:
    """A standing person (P, 2) as (lateral, up) in world units, feet at up = 0."""
    s, a, f = rng.uniform(0.05, 0.14), rng.uniform(0.0, 0.06), 0.045
    pts = [(-s - f, 0), (-s + f, 0), (0, 0.45), (s - f, 0), (s + f, 0), (0.095, 0.5), (0.11 + a, 0.47),
           (0.165 + a, 0.49), (0.13, 0.8), (0.045, 0.84), (0.06, 0.89), (0.055, 0.95), (0.025, 0.99),
           (-0.025, 0.99), (-0.055, 0.95), (-0.06, 0.89), (-0.045, 0.84), (-0.13, 0.8), (-0.165 - a, 0.49),
           (-0.11 - a, 0.47), (-0.095, 0.5)]
    return np.array(pts, dtype=np.float64) * height


def _person_parts(cam: Camera, rng: np.random.Generator, label: str, x: float, z: float, up: float,
                  height: float) -> Part:
    outline = _person_outline(rng, height) + [0.0, up]
    shirt = hsv(rng.uniform(0, 1), rng.uniform(0, 0.8), rng.uniform(0.1, 0.9))
    legs = hsv(rng.uniform(0, 1), rng.uniform(0, 0.5), rng.uniform(0.05, 0.6))
    skin = hsv(rng.uniform(0.04, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.9))
    lower = np.array([[-0.3, 0.0], [0.3, 0.0], [0.3, 0.48], [-0.3, 0.48]]) * height + [0.0, up]
    head = circle(0.0, 0.93 * height + up, 0.065 * height, 8)
    details = (Detail(billboard(cam, x, z, lower)[None], legs), Detail(billboard(cam, x, z, head)[None], skin))
    return Part(label, billboard(cam, x, z, outline), Paint(shirt, fine=0.04, mid=0.04), details)


def _person(cam: Camera, rng: np.random.Generator, x: float, z: float, pal: Palette) -> Group:
    height = rng.uniform(1.25, 1.6)
    shadows = ()
    if pal.sun:
        reach = -pal.sun * height * pal.shadow_length
        shadows = (Shadow(ground_quad(cam, x - 0.15, x + reach, z - 0.15, z + 0.15)[None], pal.shadow),)
    return Group(z, (_person_parts(cam, rng, "person", x, z, 0.0, height),), shadows)


def _cycle_outline(motor: bool, side_view: bool, r: float) -> Array:
    """A bicycle or motorcycle (P, 2) in world units: seen from the side or from behind."""
    if not side_view:
        half = 0.25 if motor else 0.06
        bar = 0.4 if motor else 0.28
        return np.array([[-half, 0], [half, 0], [half, 2.2 * r], [bar, 2.2 * r], [bar, 2.45 * r],
                         [-bar, 2.45 * r], [-bar, 2.2 * r], [-half, 2.2 * r]])
    base = 1.15 if motor else 0.85
    pts = np.concatenate([circle(-base / 2, r, r, 10), circle(base / 2, r, r, 10),
                          [[-0.1, 2.3 * r], [base / 2 - 0.1, 2.6 * r]]])
    if motor:
        pts = np.concatenate([pts, [[-0.35, 2.6 * r], [0.3, 2.9 * r]]])
    return cv2.convexHull(pts.astype(np.float32))[:, 0].astype(np.float64)


def _cycle(cam: Camera, rng: np.random.Generator, x: float, z: float, ridden: bool) -> Group:
    """A bicycle or motorcycle, with its rider when ridden."""
    motor = rng.random() < 0.3
    side_view = rng.random() < 0.6
    r = rng.uniform(0.26, 0.31)
    frame = hsv(rng.uniform(0, 1), rng.uniform(0, 0.9), rng.uniform(0.1, 0.7))
    outline = _cycle_outline(motor, side_view, r)
    details = ()
    if side_view:
        base = 1.15 if motor else 0.85
        wheels = np.stack([billboard(cam, x, z, circle(sx * base / 2, r, r * 0.9, 12)) for sx in (-1, 1)])
        details = (Detail(np.concatenate([wheels, wheels[:, :1]], axis=1), hsv(0, 0, 0.08),
                          max(1, round(0.08 * cam.px(z)))),)
    parts = [Part("motorcycle" if motor else "bicycle", billboard(cam, x, z, outline),
                  Paint(frame, fine=0.05, mid=0.03), details)]
    if ridden:
        parts.append(_person_parts(cam, rng, "rider", x - (0.1 if side_view else 0.0), z - 0.05, 0.9 * r,
                                   rng.uniform(1.1, 1.35)))
    return Group(z, tuple(parts))


VEHICLES: Mapping[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = MappingProxyType({
    "car": ((1.35, 1.6), (3.3, 4.0), (1.05, 1.35)),
    "truck": ((1.8, 2.1), (5.0, 8.0), (2.3, 3.2)),
    "bus": ((2.0, 2.2), (9.0, 10.5), (2.4, 2.7)),
    "train": ((2.1, 2.3), (18.0, 25.0), (2.6, 3.0)),
})
"""Width, length and height ranges (world units, 1 = camera height) of each vehicle label."""


def _vehicle(cam: Camera, rng: np.random.Generator, label: str, x: float, z0: float, dims: Array,
             pal: Palette) -> Group:
    """A vehicle box centred at lateral `x`, its near end at depth `z0`."""
    w, length, h = dims
    x0, x1, z1 = x - w / 2, x + w / 2, z0 + length
    body = hsv(rng.uniform(0, 1), rng.uniform(0, 0.8) if rng.random() < 0.4 else rng.uniform(0, 0.1),
               rng.uniform(0.08, 0.95))
    glass = hsv(rng.uniform(0.5, 0.65), rng.uniform(0, 0.3), rng.uniform(0.05, 0.25))
    dark = hsv(0, 0, rng.uniform(0.03, 0.1))
    if label == "car":
        inset, cz0, cz1 = 0.08 * w, z0 + 0.25 * length, z1 - 0.2 * length
        boxes = [(x0, x1, z0, z1, 0.0, 0.55 * h), (x0 + inset, x1 - inset, cz0, cz1, 0.55 * h, h)]
        rear = front_quad(cam, x0 + 0.15 * w, x1 - 0.15 * w, 0.62 * h, 0.93 * h, cz0)
        glass_u0, glass_z = 0.6 * h, (cz0 + 0.05, cz1 - 0.05)
    else:
        boxes = [(x0, x1, z0, z1, 0.0, h)]
        rear = front_quad(cam, x0 + 0.1 * w, x1 - 0.1 * w, 0.5 * h, 0.85 * h, z0)
        glass_u0, glass_z = 0.5 * h, (z0 + 0.5, z1 - 0.5)
    details = [Detail(rear[None], glass), Detail(front_quad(cam, x0, x1, 0.0, 0.15 * h, z0)[None], dark)]
    lights = [front_quad(cam, x0 + 0.04 * w, x0 + 0.2 * w, 0.4 * h, 0.48 * h, z0),
              front_quad(cam, x1 - 0.2 * w, x1 - 0.04 * w, 0.4 * h, 0.48 * h, z0)]
    details.append(Detail(np.stack(lights), hsv(0.0 if rng.random() < 0.7 else 0.12, 0.3 + 0.6 * rng.random(), 0.9)))
    if x0 > 0 or x1 < 0:  # one long side faces the camera
        xs = x0 if x0 > 0 else x1
        details.append(Detail(side_quad(cam, xs, *glass_z, glass_u0, 0.92 * h)[None], glass))
        wheels = [side_quad(cam, xs, zc - 0.35, zc + 0.35, 0.0, 0.3) for zc in (z0 + 0.7, z1 - 0.7)]
        details.append(Detail(np.stack(wheels), dark))
    shadow = Shadow(ground_quad(cam, x0 - 0.1, x1 + 0.1, z0 - 0.1, z1 + 0.1)[None], 0.35)
    return Group(z0, (Part(label, box_hull(cam, boxes), Paint(body, fine=0.02, mid=0.03), tuple(details)),), (shadow,))


def _ego(cam: Camera, rng: np.random.Generator) -> Part:
    hood = cam.height * rng.uniform(0.05, 0.1)
    xs = np.linspace(-0.02 * cam.width, 1.02 * cam.width, 9)
    ys = cam.height - hood * (1.0 - 0.6 * ((xs - cam.width / 2) / (cam.width / 2)) ** 2)
    poly = np.concatenate([np.stack([xs, ys], -1), [[1.02 * cam.width, cam.height + 1], [-0.02 * cam.width,
                                                                                         cam.height + 1]]])
    paint = Paint(hsv(rng.uniform(0, 1), rng.uniform(0, 0.2), rng.uniform(0.05, 0.25)), fine=0.02, vgrad=-0.6)
    return Part("ego vehicle", poly, paint)


class _Footprints:
    """Ground rectangles already taken by vehicles, to keep boxes from intersecting."""

    def __init__(self) -> None:
        self._rects: list[tuple[float, float, float, float]] = []

    def take(self, x0: float, x1: float, z0: float, z1: float) -> bool:
        if any(x0 < b1 + 0.3 and b0 < x1 + 0.3 and z0 < c1 + 0.5 and c0 < z1 + 0.5 for b0, b1, c0, c1 in self._rects):
            return False
        self._rects.append((x0, x1, z0, z1))
        return True


def _street_objects(cam: Camera, rng: np.random.Generator, sides: tuple[Side, Side], pal: Palette, far: float,
                    trees: list[tuple[float, float]]) -> list[Group]:
    near = cam.near
    groups = [_tree(cam, rng, x, z, pal) for x, z in trees]
    left, right = sides
    for side in sides:
        if not (side.sidewalk or side.verge):
            continue
        for _ in range(rng.integers(1, 5)):
            groups.append(_pole(cam, rng, side.lateral(rng.uniform(0.15, 0.4)), _log_depth(rng, near, far * 0.6),
                                pal))
        if side.sidewalk > 0.8:
            for _ in range(rng.integers(0, 5)):
                x = side.lateral(side.verge + rng.uniform(0.3, side.sidewalk - 0.3))
                groups.append(_person(cam, rng, x, _log_depth(rng, near, far * 0.5), pal))
            if rng.random() < 0.25:
                x = side.lateral(side.verge + rng.uniform(0.3, side.sidewalk - 0.3))
                groups.append(_cycle(cam, rng, x, _log_depth(rng, near, far * 0.4), ridden=False))
    for _ in range(rng.integers(0, 3) if rng.random() < 0.2 else 0):
        groups.append(_person(cam, rng, rng.uniform(left.kerb, right.kerb), _log_depth(rng, 1.5 * near, 30.0), pal))
    for _ in range(rng.integers(1, 3) if rng.random() < 0.55 else 0):
        side = sides[rng.integers(2)]
        groups.append(_cycle(cam, rng, side.lateral(-rng.uniform(0.4, 1.2)), _log_depth(rng, near, far * 0.4),
                             ridden=True))
    taken = _Footprints()
    wanted = ["car"] * int(rng.integers(2, 12)) + [v for v, p in (("truck", 0.25), ("bus", 0.2), ("train", 0.12))
                                                  if rng.random() < p]
    lanes = np.arange(left.kerb + 1.25, right.kerb - 1.0, 2.5)
    for label in wanted:
        for _ in range(8):
            dims = np.array([rng.uniform(*r) for r in VEHICLES[label]])
            parked = label == "car" and rng.random() < 0.5
            if parked:
                side = sides[rng.integers(2)]
                x = side.lateral(-(dims[0] / 2 + rng.uniform(0.1, 0.3)))
            elif len(lanes):
                x = float(rng.choice(lanes)) + rng.uniform(-0.3, 0.3)
            else:
                continue
            z0 = _log_depth(rng, 0.9 * near if parked else 1.4 * near, far * 0.7)
            if taken.take(x - dims[0] / 2, x + dims[0] / 2, z0, z0 + dims[1]):
                groups.append(_vehicle(cam, rng, label, x, z0, dims, pal))
                break
    return groups


def compose_scene(height: int, width: int, rng: np.random.Generator) -> Scene:
    """Draw a random street as labelled parts in painter's order, with its shadows and light."""
    cam = Camera(height, width, focal=width * rng.uniform(0.85, 1.15), cx=width * rng.uniform(0.4, 0.6),
                 horizon=height * rng.uniform(0.36, 0.5))
    pal = _palette(rng)
    sides = (_side(rng, -1), _side(rng, 1))
    far = rng.uniform(60.0, 150.0)
    trees = [(side.lateral(side.verge + rng.uniform(0.6, 1.0)), _log_depth(rng, cam.near, far * 0.6))
             for side in sides if side.sidewalk > 1.5 and rng.random() < 0.5 for _ in range(rng.integers(1, 5))]
    parts = [_sky(cam, pal, far), *_backdrop(cam, rng, pal, far), *_ground(cam, rng, sides, pal, far, trees)]
    shadows: list[Shadow] = []
    for side in sides:
        parts.extend(_park(cam, rng, side, pal, far) if side.park else _facades(cam, rng, side, pal, far))
    for group in sorted(_street_objects(cam, rng, sides, pal, far, trees), key=lambda g: -g.depth):
        parts.extend(group.parts)
        shadows.extend(group.shadows)
    if rng.random() < 0.6:
        parts.append(_ego(cam, rng))
    lighting = Lighting(gain=rng.uniform(0.65, 1.3), gradient=(rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08)),
                        white=tuple(rng.uniform(0.88, 1.12, 3)), blur=rng.uniform(0.3, 0.7),
                        noise=rng.uniform(1.0, 5.0) / 255.0)
    return Scene(tuple(parts), tuple(shadows), lighting)


# --------------------------------------------------------------------------------------------- annotation


def annotation_json(height: int, width: int, objects: Iterable[tuple[str, Array]]) -> dict:
    """A Cityscapes polygons document; objects in painter's order."""
    return {"imgHeight": height, "imgWidth": width,
            "objects": [{"label": name, "polygon": np.asarray(poly).tolist()} for name, poly in objects]}


def rasterise(doc: dict) -> Array:
    """Label ids (H, W) uint8 of a polygons document, drawn by cityscapesscripts' createLabelImage."""
    annotation = Annotation()
    annotation.imgHeight, annotation.imgWidth = doc["imgHeight"], doc["imgWidth"]
    for i, obj in enumerate(doc["objects"]):
        poly = CsPoly()
        poly.fromJsonText(obj, i)
        annotation.objects.append(poly)
    return np.asarray(createLabelImage(annotation, "ids"), dtype=np.uint8)


def _index_map(polygons: list[Array], height: int, width: int) -> Array:
    """(H, W) int32 map of which polygon (1-based, 0 = none) owns each pixel; same rasteriser as the labels."""
    canvas = Image.new("I", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for k, poly in enumerate(polygons, start=1):
        draw.polygon([tuple(p) for p in poly.tolist()], fill=k)
    return np.asarray(canvas, dtype=np.int32)


def coarse_annotation(fine_ids: Array, rng: np.random.Generator, inset: int, min_unlabelled: float
                      ) -> tuple[dict, Array]:
    """Coarse polygons of a fine label map, as an annotator would draw them, and their label ids.

    Each region of an evaluated class is eroded by `inset` px and traced with few vertices; holes
    become 'unlabeled' polygons drawn over it. Thin classes are mostly skipped, small regions often.
    The inset grows until at least `min_unlabelled` of the pixels stay unlabelled.
    """
    height, width = fine_ids.shape
    small = 0.002 * height * width
    while True:
        entries = []
        eps = max(1.0, 0.5 * inset)
        for label_id in np.unique(fine_ids):
            if LABEL_ID_TO_TRAIN_ID[label_id] == IGNORE:
                continue
            name = LABEL_NAME_BY_ID[int(label_id)]
            depth = cv2.distanceTransform((fine_ids == label_id).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            mask = (depth > inset).astype(np.uint8)  # the region eroded by a disc of radius `inset`
            contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
            if hierarchy is None:
                continue
            parents = hierarchy[0][:, 3]
            for i in np.flatnonzero(parents == -1):
                area = cv2.contourArea(contours[i])
                keep = 0.15 if name in THIN_LABELS else (0.4 if area < small else 0.85)
                outline = cv2.approxPolyDP(contours[i], eps, True)[:, 0]
                if rng.random() >= keep or len(outline) < 3:
                    continue
                holes = [cv2.approxPolyDP(contours[j], eps, True)[:, 0] for j in np.flatnonzero(parents == i)]
                entries.append((area, [(name, outline), *(("unlabeled", hole) for hole in holes)]))
        entries.sort(key=lambda e: -e[0])
        doc = annotation_json(height, width, (obj for _, objs in entries for obj in objs))
        ids = rasterise(doc)
        if np.mean(ids == UNLABELED_LABEL_ID) >= min_unlabelled:
            return doc, ids
        inset = max(inset + 1, round(inset * 1.5))


# --------------------------------------------------------------------------------------------- painting


def _value_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> Array:
    """Smooth noise (H, W) float32 with features about `cell` px wide, roughly unit variance."""
    grid = rng.standard_normal((int(height / cell) + 2, int(width / cell) + 2)).astype(np.float32)
    field = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return field / max(float(field.std()), 1e-6)


def _int_polys(polys: Array) -> list[Array]:
    return [np.rint(np.clip(p, -1e5, 1e5)).astype(np.int32) for p in polys]


def _detail_layers(parts: tuple[Part, ...], height: int, width: int) -> tuple[Array, Array]:
    """Owner (H, W) int32 and colour (H, W, 3) float32 of all details, later parts on top."""
    owner = np.zeros((height, width), np.int32)
    color = np.zeros((height, width, 3), np.float32)
    for k, part in enumerate(parts, start=1):
        for detail in part.details:
            if len(detail.polygons) == 0:
                continue
            polys = _int_polys(detail.polygons)
            if detail.thickness:
                cv2.polylines(owner, polys, False, k, detail.thickness)
                cv2.polylines(color, polys, False, detail.color, detail.thickness)
            else:
                cv2.fillPoly(owner, polys, k)
                cv2.fillPoly(color, polys, detail.color)
    return owner, color


def _shade_map(shadows: tuple[Shadow, ...], height: int, width: int) -> Array:
    shade = np.ones((height, width), np.float32)
    for shadow in shadows:
        polys = _int_polys(shadow.polygons)
        if shadow.thickness:
            cv2.polylines(shade, polys, False, shadow.light, shadow.thickness)
        else:
            cv2.fillPoly(shade, polys, shadow.light)
    return cv2.GaussianBlur(shade, (0, 0), sigmaX=0.6 + 0.003 * height)


def paint_image(scene: Scene, index: Array, rng: np.random.Generator) -> Array:
    """RGB image (H, W, 3) uint8 of the scene; `index` (H, W) says which part owns each pixel."""
    height, width = index.shape
    parts = scene.parts
    color = np.zeros((len(parts) + 1, 3), np.float32)
    amp = np.zeros((len(parts) + 1, 3), np.float32)
    vgrad = np.zeros(len(parts) + 1, np.float32)
    ground = np.zeros(len(parts) + 1, bool)
    for k, part in enumerate(parts, start=1):
        paint = part.paint
        color[k], amp[k] = paint.color, (paint.fine, paint.mid, paint.low)
        vgrad[k], ground[k] = paint.vgrad, paint.ground
    noise = np.stack([rng.standard_normal((height, width), dtype=np.float32),
                      _value_noise(rng, height, width, max(2.0, height / 48)),
                      _value_noise(rng, height, width, height / 6)], axis=-1)  # (H, W, 3)
    ys = ((np.arange(height, dtype=np.float32) + 0.5) / height - 0.5)[:, None]  # (H, 1)
    xs = ((np.arange(width, dtype=np.float32) + 0.5) / width - 0.5)[None, :]  # (1, W)
    texture = (1.0 + (amp[index] * noise).sum(-1)) * (1.0 + vgrad[index] * ys)  # (H, W)
    base = color[index]  # (H, W, 3)
    owner, detail = _detail_layers(parts, height, width)
    mine = owner == index
    base[mine] = detail[mine]
    light = scene.lighting
    gx, gy = light.gradient
    shade = np.where(ground[index], _shade_map(scene.shadows, height, width), np.float32(1.0))
    gain = (light.gain * (1.0 + gx * xs + gy * ys) * shade * texture)[..., None]  # (H, W, 1)
    image = base * gain * np.asarray(light.white, np.float32)
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=light.blur)
    image += rng.normal(0.0, light.noise, image.shape).astype(np.float32)
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------- samples


def sample_rng(config: SynthConfig, split: str, index: int) -> np.random.Generator:
    """The generator of one image, derived from (seed, split, index) alone."""
    return np.random.default_rng([config.seed, SPLITS.index(split), index])


def sample_name(config: SynthConfig, split: str, index: int) -> tuple[str, str]:
    """(city, stem) of image `index` of `split`: images go round-robin over the split's cities."""
    cities = CITIES[split][: config.cities]
    city = cities[index % len(cities)]
    return city, f"{city}_{index // len(cities):06d}_{FRAME:06d}"


def render_sample(config: SynthConfig, split: str, index: int) -> SynthSample:
    """Draw image `index` of `split` with its fine and coarse labels (nothing is written)."""
    rng = sample_rng(config, split, index)
    h, w = config.height, config.width
    scene = compose_scene(h, w, rng)
    placed = [(part, pixel_polygon(part.polygon, w, h)) for part in scene.parts]
    placed = [(part, poly) for part, poly in placed if poly is not None]
    parts = tuple(part for part, _ in placed)
    index_map = _index_map([poly for _, poly in placed], h, w)
    visible = np.bincount(index_map.ravel(), minlength=len(placed) + 1)[1:] > 0
    fine = annotation_json(h, w, ((part.label, poly) for (part, poly), seen in zip(placed, visible) if seen))
    fine_ids = rasterise(fine)
    image = paint_image(Scene(parts, scene.shadows, scene.lighting), index_map, rng)
    inset = max(1, round(config.coarse_inset * h))
    coarse, coarse_ids = coarse_annotation(fine_ids, rng, inset, config.coarse_min_unlabelled)
    return SynthSample(image=image, fine=fine, fine_ids=fine_ids, coarse=coarse, coarse_ids=coarse_ids)


def _write_png(path: Path, array: Array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(array, level=PNG_LEVEL))


def _write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def write_sample(root: Path, truth_root: Path, split: str, city: str, stem: str, sample: SynthSample) -> None:
    """Write one sample's files where Cityscapes keeps them; train_extra fine labels go to `truth_root`."""
    _write_png(Path(root) / IMAGE_DIR / split / city / f"{stem}{IMAGE_SUFFIX}", sample.image)
    fine_root = root if split in FINE_SPLITS else truth_root
    _write_png(label_path(fine_root, split, stem, "gtFine"), sample.fine_ids)
    if split in FINE_SPLITS:
        _write_json(label_path(root, split, stem, "gtFine", "polygons").with_suffix(".json"), sample.fine)
        _write_png(label_path(root, split, stem, "gtFine", "color"), LABEL_ID_PALETTE[sample.fine_ids])
    _write_json(label_path(root, split, stem, "gtCoarse", "polygons").with_suffix(".json"), sample.coarse)
    _write_png(label_path(root, split, stem, "gtCoarse"), sample.coarse_ids)


def _prepare(root: Path, truth_root: Path, overwrite: bool) -> None:
    if root.resolve() == truth_root.resolve():
        raise ValueError(f"{truth_root}: the truth root must differ from the dataset root")
    owned_by = {root: [root / d for d in GENERATED_DIRS], truth_root: [truth_root / "gtFine" / "train_extra"]}
    for folder, owned in owned_by.items():
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{folder}: exists and is not a folder")
        if folder.is_dir() and any(folder.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{folder}: is not empty; pass overwrite=True to replace the generated data")
            for path in owned:
                if path.exists():
                    log.info("removing %s", path)
                    shutil.rmtree(path)
        folder.mkdir(parents=True, exist_ok=True)


def generate(root: Path | str, truth_root: Path | str, config: SynthConfig = SynthConfig(),
             progress: Progress | None = None, overwrite: bool = False) -> SynthSummary:
    """Write a synthetic Cityscapes dataset into `root` and the true train_extra fine labels into `truth_root`.

    Refuses a non-empty `root` or `truth_root` unless `overwrite`, which first removes the folders this
    function writes (leftImg8bit/, gtFine/, gtCoarse/ and truth gtFine/train_extra/). `progress(done, total)`
    is called after every image.
    """
    root, truth_root = Path(root), Path(truth_root)
    _prepare(root, truth_root, overwrite)
    total = sum(config.count(split) for split in SPLITS)
    start, done = time.perf_counter(), 0
    log.info("drawing %d synthetic images of %dx%d into %s", total, config.width, config.height, root)
    for split in SPLITS:
        for index in range(config.count(split)):
            city, stem = sample_name(config, split, index)
            write_sample(root, truth_root, split, city, stem, render_sample(config, split, index))
            done += 1
            if progress is not None:
                progress(done, total)
    seconds = time.perf_counter() - start
    log.info("wrote %d images in %.1f s", total, seconds)
    return SynthSummary(root=root, truth_root=truth_root, images=MappingProxyType({s: config.count(s) for s in SPLITS}),
                        seconds=seconds)
