"""Label store vs PNG files for the same thresholded label maps: bytes, write/read speed per zstd level.

    python -m benchmarks.storage --images 16 --height 1024 --width 2048 --levels 1 3 9 19 --json

Maps are street-scene-like: sky, buildings, vegetation, road, sidewalk, cars, people, poles and
signs as piecewise-constant regions, with 255 (ignore) bands along class boundaries and a few
uncertain blobs, as hard thresholding leaves them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import numcodecs
import zarr
from rich.console import Console
from rich.table import Table

from autolabel.images import read_label, write_png
from autolabel.labels import IGNORE, TRAIN_ID_BY_NAME
from autolabel.store import LabelStore, Provenance
from benchmarks.machine import machine

PROVENANCE = Provenance(checkpoint_sha256="0" * 64, scales=(1.0,), threshold=0.5, pointrend=False)
DEFAULT_LEVELS = (1, 3, 5, 9, 15, 19, 22)


@dataclass(frozen=True)
class Result:
    format: str
    level: int
    bytes: int
    bytes_per_image: float
    bits_per_pixel: float
    write_images_per_s: float
    read_images_per_s: float
    window_reads_per_s: float


def _fill_polygon(labels: np.ndarray, points: np.ndarray, class_name: str) -> None:
    cv2.fillPoly(labels, [points.astype(np.int32)], int(TRAIN_ID_BY_NAME[class_name]))


def street_scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A thresholded-looking (H, W) uint8 label map of a street scene."""
    cls = TRAIN_ID_BY_NAME
    labels = np.full((height, width), cls["sky"], dtype=np.uint8)
    horizon = int(height * rng.uniform(0.35, 0.5))
    x = 0
    while x < width:  # buildings and trees along the street
        w = int(width * rng.uniform(0.05, 0.2))
        top = int(horizon * rng.uniform(0.1, 0.8))
        name = rng.choice(["building", "building", "vegetation", "wall"])
        labels[top:, x:x + w] = cls[name]
        x += w
    vanish = np.array([width * rng.uniform(0.4, 0.6), horizon])
    sidewalk = np.array([[-width * 0.5, height], [width * 1.5, height], vanish + [40, 0], vanish - [40, 0]])
    _fill_polygon(labels, sidewalk, "sidewalk")
    road = np.array([[width * 0.1, height], [width * 0.9, height], vanish + [20, 0], vanish - [20, 0]])
    _fill_polygon(labels, road, "road")
    for _ in range(rng.integers(2, 8)):  # cars on the road
        cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(horizon + 20, height - 10)
        size = (cy - horizon) / (height - horizon) * width * 0.15 + 8
        top_left, bottom_right = (int(cx - size), int(cy - size * 0.6)), (int(cx + size), int(cy))
        cv2.rectangle(labels, top_left, bottom_right, cls["car"], -1)
    for _ in range(rng.integers(0, 6)):  # people
        cx, cy = rng.uniform(0, width), rng.uniform(horizon, height)
        size = (cy - horizon) / (height - horizon) * height * 0.15 + 4
        center, axes = (int(cx), int(cy - size)), (max(1, int(size * 0.25)), int(size))
        cv2.ellipse(labels, center, axes, 0, 0, 360, cls["person"], -1)
    sign_top = int(horizon * 0.4)
    for _ in range(rng.integers(1, 5)):  # poles with signs
        px, bottom = int(rng.uniform(0, width)), int(rng.uniform(horizon + 10, height))
        cv2.line(labels, (px, bottom), (px, sign_top), cls["pole"], max(1, width // 400))
        cv2.rectangle(labels, (px - 8, sign_top), (px + 8, sign_top + 12), cls["traffic sign"], -1)
    return _threshold_holes(rng, _wobble(rng, labels))


def _wobble(rng: np.random.Generator, labels: np.ndarray, amplitude: float = 6.0) -> np.ndarray:
    """Bend straight class boundaries with a smooth random displacement, as predictions have them."""
    height, width = labels.shape
    grid = (max(2, width // 64), max(2, height // 64))
    dx, dy = (cv2.resize(rng.normal(0, amplitude, grid[::-1]).astype(np.float32), (width, height),
                         interpolation=cv2.INTER_CUBIC) for _ in range(2))
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return cv2.remap(labels, xs + dx, ys + dy, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)


def _threshold_holes(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Ignore bands along class boundaries and a few uncertain blobs, as a 0.5 threshold leaves."""
    kernel = np.ones((3, 3), np.uint8)
    edges = (cv2.dilate(labels, kernel) != cv2.erode(labels, kernel)).astype(np.uint8)
    uneven = _wobble(rng, edges * np.uint8(255), amplitude=2.0)
    labels = labels.copy()
    labels[cv2.dilate(uneven, kernel) > 0] = IGNORE
    height, width = labels.shape
    for _ in range(rng.integers(3, 12)):
        center = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        axes = (int(rng.uniform(5, width / 20)), int(rng.uniform(5, height / 20)))
        cv2.ellipse(labels, center, axes, rng.uniform(0, 180), 0, 360, IGNORE, -1)
    return labels


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _windows(rng: np.random.Generator, shape: tuple[int, int], count: int) -> list[tuple[int, int, int, int]]:
    """Random half-height, half-width crops (y0, y1, x0, x1), like training crops."""
    h, w = shape[0] // 2, shape[1] // 2
    ys, xs = rng.integers(0, shape[0] - h + 1, count), rng.integers(0, shape[1] - w + 1, count)
    return [(int(y), int(y) + h, int(x), int(x) + w) for y, x in zip(ys, xs)]


def bench_store(workdir: Path, maps: dict[str, np.ndarray], level: int, chunk: int) -> Result:
    url = str(workdir / f"labels-{level}.zarr")
    store = LabelStore.create(url, PROVENANCE, level=level, chunk=chunk)
    start = time.perf_counter()
    for image_id, labels in maps.items():
        store.write(image_id, labels, source=image_id)
    write_s = time.perf_counter() - start
    reader = LabelStore.open(url)
    start = time.perf_counter()
    for image_id, labels in maps.items():
        if not np.array_equal(reader.read(image_id), labels):
            raise RuntimeError(f"{url}: {image_id} does not read back as written")
    read_s = time.perf_counter() - start
    windows = _windows(np.random.default_rng(level), next(iter(maps.values())).shape, len(maps))
    start = time.perf_counter()
    for image_id, window in zip(maps, windows):
        reader.read_window(image_id, *window)
    window_s = time.perf_counter() - start
    size = reader.nbytes_on_disk("labels/", metadata=False)
    return _result("zarr+zstd", level, size, maps, write_s, read_s, window_s)


def bench_png(workdir: Path, maps: dict[str, np.ndarray]) -> Result:
    folder = workdir / "png"
    paths = {image_id: folder / f"{image_id}.png" for image_id in maps}
    start = time.perf_counter()
    for image_id, labels in maps.items():
        write_png(paths[image_id], labels)
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    for image_id, labels in maps.items():
        if not np.array_equal(read_label(paths[image_id]), labels):
            raise RuntimeError(f"{paths[image_id]}: does not read back as written")
    read_s = time.perf_counter() - start
    size = sum(p.stat().st_size for p in paths.values())
    return _result("png", 9, size, maps, write_s, read_s, read_s)


def _result(fmt: str, level: int, size: int, maps: dict[str, np.ndarray], write_s: float, read_s: float,
            window_s: float) -> Result:
    pixels = sum(m.size for m in maps.values())
    return Result(fmt, level, size, size / len(maps), 8 * size / pixels,
                  _rate(len(maps), write_s), _rate(len(maps), read_s), _rate(len(maps), window_s))



def _table(results: list[Result], raw_bytes_per_image: float, title: str) -> Table:
    table = Table(title=title)
    for column in ("format", "level", "kB/image", "bits/pixel", "vs uint8", "write img/s", "read img/s",
                   "crop reads/s"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(r.format, str(r.level), f"{r.bytes_per_image / 1e3:.1f}", f"{r.bits_per_pixel:.4f}",
                      f"{raw_bytes_per_image / r.bytes_per_image:.0f}x", f"{r.write_images_per_s:.1f}",
                      f"{r.read_images_per_s:.1f}", f"{r.window_reads_per_s:.1f}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=16, help="label maps per format (default 16)")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--levels", type=int, nargs="+", default=list(DEFAULT_LEVELS), help="zstd levels")
    parser.add_argument("--chunk", type=int, default=256, help="inner chunk side of the store")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON line with all figures last")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    maps = {f"bench_000000_{i:06d}": street_scene(rng, args.height, args.width) for i in range(args.images)}
    labelled = float(np.mean([np.mean(m != IGNORE) for m in maps.values()]))
    with tempfile.TemporaryDirectory(prefix="autolabel-storage-") as tmp:
        workdir = Path(tmp)
        stores = [bench_store(workdir, maps, level, args.chunk) for level in args.levels]
        results = [bench_png(workdir, maps), *stores]
    info = machine(zarr=zarr.__version__, numcodecs=numcodecs.__version__, opencv=cv2.__version__)
    console = Console(width=120)
    console.print(f"machine: {info['platform']}, {info['processor']}, {info['cpu_count']} CPUs; "
                  f"zarr {info['zarr']}, numcodecs {info['numcodecs']}")
    title = (f"{args.images} label maps of {args.width}x{args.height}, {labelled:.1%} labelled, "
             f"chunk {args.chunk}, temp dir {tempfile.gettempdir()}")
    console.print(_table(results, args.height * args.width, title))
    if args.json:
        print(json.dumps({
            "machine": info, "images": args.images, "height": args.height, "width": args.width,
            "chunk": args.chunk, "labelled_fraction": labelled, "results": [asdict(r) for r in results],
        }))


if __name__ == "__main__":
    main()
