"""Where things land in the image: the pinhole `Camera` over flat ground, the world-to-pixel quads and outlines
built with it, and clipping polygons to integer pixel vertices."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from autolabel.synth.config import Array


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
