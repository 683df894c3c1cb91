"""The image from a scene: per-part colour and noise, details, cast shadows, light, blur and sensor noise over
the map of which part owns each pixel."""

from __future__ import annotations

import cv2
import numpy as np

from autolabel.synth.config import Array
from autolabel.synth.scene import Part, Scene, Shadow


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
