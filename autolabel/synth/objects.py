"""The things standing in the street, each a depth-ordered `Group`: trees, poles with signs, lights and lamps,
people, bicycles and motorcycles with riders, vehicles, the ego vehicle's hood, and where they are placed."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import cv2
import numpy as np

from autolabel.synth.config import Array
from autolabel.synth.geometry import Camera, billboard, box_hull, circle, front_quad, ground_quad, side_quad
from autolabel.synth.scene import Detail, Group, Paint, Palette, Part, Shadow, Side, hsv, log_depth


def tree(cam: Camera, rng: np.random.Generator, x: float, z: float, pal: Palette) -> Group:
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


def ego(cam: Camera, rng: np.random.Generator) -> Part:
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


def street_objects(cam: Camera, rng: np.random.Generator, sides: tuple[Side, Side], pal: Palette, far: float,
                    trees: list[tuple[float, float]]) -> list[Group]:
    near = cam.near
    groups = [tree(cam, rng, x, z, pal) for x, z in trees]
    left, right = sides
    for side in sides:
        if not (side.sidewalk or side.verge):
            continue
        for _ in range(rng.integers(1, 5)):
            groups.append(_pole(cam, rng, side.lateral(rng.uniform(0.15, 0.4)), log_depth(rng, near, far * 0.6),
                                pal))
        if side.sidewalk > 0.8:
            for _ in range(rng.integers(0, 5)):
                x = side.lateral(side.verge + rng.uniform(0.3, side.sidewalk - 0.3))
                groups.append(_person(cam, rng, x, log_depth(rng, near, far * 0.5), pal))
            if rng.random() < 0.25:
                x = side.lateral(side.verge + rng.uniform(0.3, side.sidewalk - 0.3))
                groups.append(_cycle(cam, rng, x, log_depth(rng, near, far * 0.4), ridden=False))
    for _ in range(rng.integers(0, 3) if rng.random() < 0.2 else 0):
        groups.append(_person(cam, rng, rng.uniform(left.kerb, right.kerb), log_depth(rng, 1.5 * near, 30.0), pal))
    for _ in range(rng.integers(1, 3) if rng.random() < 0.55 else 0):
        side = sides[rng.integers(2)]
        groups.append(_cycle(cam, rng, side.lateral(-rng.uniform(0.4, 1.2)), log_depth(rng, near, far * 0.4),
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
            z0 = log_depth(rng, 0.9 * near if parked else 1.4 * near, far * 0.7)
            if taken.take(x - dims[0] / 2, x + dims[0] / 2, z0, z0 + dims[1]):
                groups.append(_vehicle(cam, rng, label, x, z0, dims, pal))
                break
    return groups
