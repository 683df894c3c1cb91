"""One image with its labels, drawn in memory: the generator and name of image (seed, split, index), and
`render_sample`, which composes its scene, rasterises the fine labels, paints the image and traces the coarse
labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from autolabel.synth.config import CITIES, FRAME, SPLITS, Array, SynthConfig
from autolabel.synth.geometry import pixel_polygon
from autolabel.synth.paint import paint_image
from autolabel.synth.raster import annotation_json, coarse_annotation, rasterise
from autolabel.synth.scene import Scene
from autolabel.synth.street import compose_scene


@dataclass(frozen=True)
class SynthSample:
    """One drawn image with its fine and coarse annotations (label ids, polygons JSON)."""

    image: Array  # (H, W, 3) uint8 RGB
    fine: dict
    fine_ids: Array  # (H, W) uint8 label ids
    coarse: dict
    coarse_ids: Array  # (H, W) uint8 label ids, 0 = unlabelled


def _index_map(polygons: list[Array], height: int, width: int) -> Array:
    """(H, W) int32 map of which polygon (1-based, 0 = none) owns each pixel; same rasteriser as the labels."""
    canvas = Image.new("I", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for k, poly in enumerate(polygons, start=1):
        draw.polygon([tuple(p) for p in poly.tolist()], fill=k)
    return np.asarray(canvas, dtype=np.int32)


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
