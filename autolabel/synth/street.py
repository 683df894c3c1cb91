"""The street itself and the whole scene: the per-image palette and the two sides, sky, backdrop, road, sidewalks
and verges, facades with windows, parks behind walls, fences or hedges, and `compose_scene`, which draws all of it
with the street's objects in painter's order."""

from __future__ import annotations

import numpy as np

from autolabel.synth.config import Array
from autolabel.synth.geometry import Camera, billboard, front_quad, ground_quad, side_quad
from autolabel.synth.objects import ego, street_objects, tree
from autolabel.synth.scene import Detail, Lighting, Paint, Palette, Part, Scene, Shadow, Side, hsv, log_depth, scaled


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
    trees = [tree(cam, rng, side.lateral(side.verge + side.sidewalk + rng.uniform(1.5, 8)),
                   log_depth(rng, cam.near, far * 0.7), pal) for _ in range(rng.integers(0, 6))]
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


def compose_scene(height: int, width: int, rng: np.random.Generator) -> Scene:
    """Draw a random street as labelled parts in painter's order, with its shadows and light."""
    cam = Camera(height, width, focal=width * rng.uniform(0.85, 1.15), cx=width * rng.uniform(0.4, 0.6),
                 horizon=height * rng.uniform(0.36, 0.5))
    pal = _palette(rng)
    sides = (_side(rng, -1), _side(rng, 1))
    far = rng.uniform(60.0, 150.0)
    trees = [(side.lateral(side.verge + rng.uniform(0.6, 1.0)), log_depth(rng, cam.near, far * 0.6))
             for side in sides if side.sidewalk > 1.5 and rng.random() < 0.5 for _ in range(rng.integers(1, 5))]
    parts = [_sky(cam, pal, far), *_backdrop(cam, rng, pal, far), *_ground(cam, rng, sides, pal, far, trees)]
    shadows: list[Shadow] = []
    for side in sides:
        parts.extend(_park(cam, rng, side, pal, far) if side.park else _facades(cam, rng, side, pal, far))
    for group in sorted(street_objects(cam, rng, sides, pal, far, trees), key=lambda g: -g.depth):
        parts.extend(group.parts)
        shadows.extend(group.shadows)
    if rng.random() < 0.6:
        parts.append(ego(cam, rng))
    lighting = Lighting(gain=rng.uniform(0.65, 1.3), gradient=(rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08)),
                        white=tuple(rng.uniform(0.88, 1.12, 3)), blur=rng.uniform(0.3, 0.7),
                        noise=rng.uniform(1.0, 5.0) / 255.0)
    return Scene(tuple(parts), tuple(shadows), lighting)
