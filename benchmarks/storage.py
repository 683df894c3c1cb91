"""Label store vs PNG files for the same label maps: on-disk bytes, write and read speed, per codec.

    taskset -c 1 python -m benchmarks.storage --checkpoint RUN/model.pt --json

Four kinds of maps, at each size: `drawn` street-scene-like maps with the ignore bands and blobs a
threshold leaves; `gtFine` and `gtCoarse`, synthetic scenes whose polygon annotations are rasterised by
cityscapesscripts' json2labelImg as the real Cityscapes labels are; `teacher`, the teacher checkpoint's
predictions on the synthetic images thresholded at 0.5 (skipped without --checkpoint), made as `autolabel label`
makes them: its scales 0.5/1.0/2.0 and PointRend, relative to the size of the images the teacher was trained on
(`--teacher-height`: the quickstart's teacher saw 128x256 images, so it labels a 512x1024 image at scales
0.125/0.25/0.5), with PointRend rendering the map at full size. `labelled` is the share of pixels that hold a
class (teacher maps: those that clear the threshold). Each kind goes
through LabelStore.write (class counts and centroids included) into a fresh store per codec, then the
manifest. Bytes count every file of the store (maps, zarr.json documents, manifest) divided by the
images; the metadata column is the part that is not maps (a fixed ~4 kB plus about 75 B per image, so it
shrinks per image as a store grows). PNG is OpenCV level 9 of the same maps. Reads open the store anew:
whole maps, then random crops of half the height and width (512x1024 of 1024x2048).

Speeds are maps per second of this process's CPU time (every thread), so on one core (taskset) they are
the per-core speed even when other processes share that core; wall-clock rates are in the JSON. With a
checkpoint, the teacher maps are also written to a --keep-confidence store: `confidence` is the bytes
of its kept confidence maps over those of its label maps.

`--label-pngs FILE ...` also measures label maps you have, e.g. real Cityscapes gtFine or gtCoarse
(`*_labelIds.png` are converted to train ids; any other PNG must hold train ids, as `*_labelTrainIds.png`):
kind `files`, one row per size among them.

`--index-images N` also times `inspect` (storage_report) and `fuse` on a store of N small maps.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import zarr
from rich.console import Console
from rich.table import Table

from autolabel.codecs import CODECS
from autolabel.images import encode_png, read_label
from autolabel.labels import IGNORE, TRAIN_ID_BY_NAME, to_train_ids
from autolabel.storage_report import storage_report
from autolabel.store import CONFIDENCE, LABELS, LabelStore, Provenance
from autolabel.synth import SynthConfig, render_sample
from benchmarks.machine import machine
from pipelines.label import LABEL_SCALES

PROVENANCE = Provenance(checkpoint_sha256="0" * 64, scales=(1.0,), threshold=0.5, pointrend=False)
KINDS = ("drawn", "gtFine", "gtCoarse", "teacher")
DEFAULT_SIZES = ("512x1024", "1024x2048")


@dataclass(frozen=True)
class Result:
    kind: str
    size: str
    codec: str
    level: int | None
    """The codec's level (None: the codec has none, as context)."""
    images: int
    bytes_per_image: float
    """Every file of the store (PNG: the files) per image."""
    vs_png: float
    map_bytes_per_image: float
    """The label maps' chunks alone."""
    metadata_bytes_per_image: float
    write_maps_per_s: float
    read_maps_per_s: float
    crop_reads_per_s: float
    wall_write_maps_per_s: float
    wall_read_maps_per_s: float
    wall_crop_reads_per_s: float
    labelled: float = 1.0
    """Share of the maps' pixels that hold a class (the rest are ignore, 255)."""
    confidence: float | None = None
    """Bytes of the kept confidence maps over the label maps' (teacher maps with --checkpoint)."""


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


def _crops(rng: np.random.Generator, shape: tuple[int, int], count: int) -> list[tuple[int, int, int, int]]:
    """Random half-height, half-width crops (y0, y1, x0, x1), like training crops."""
    h, w = shape[0] // 2, shape[1] // 2
    ys, xs = rng.integers(0, shape[0] - h + 1, count), rng.integers(0, shape[1] - w + 1, count)
    return [(int(y), int(y) + h, int(x), int(x) + w) for y, x in zip(ys, xs)]


def synthetic_maps(count: int, height: int, width: int, checkpoint: Path | None, teacher_height: int = 128
                   ) -> tuple[dict[str, list[np.ndarray]], list[np.ndarray]]:
    """The gtFine, gtCoarse and (with a checkpoint) teacher maps of `count` synthetic scenes, as train ids,
    and the teacher maps' confidence steps (empty without a checkpoint). The teacher predicts at the label
    stage's scales times teacher_height / height: relative to the images it was trained on."""
    config = SynthConfig(train_extra=count, height=height, width=width)
    samples = [render_sample(config, "train_extra", i) for i in range(count)]
    maps = {"gtFine": [to_train_ids(s.fine_ids) for s in samples],
            "gtCoarse": [to_train_ids(s.coarse_ids) for s in samples]}
    confidences: list[np.ndarray] = []
    if checkpoint is not None:
        import torch

        from autolabel.threshold import threshold_probs
        from autolabel.transforms import normalize_batch
        from models.predict import predict
        from models.teacher import load_model

        model = load_model(checkpoint)[0].eval()
        maps["teacher"] = []
        for sample in samples:
            probs = predict(model, normalize_batch(torch.from_numpy(sample.image)[None]),
                            scales=tuple(s * teacher_height / height for s in LABEL_SCALES),
                            pointrend=True)  # (1, K, H, W)
            labels, confidence = threshold_probs(probs, PROVENANCE.threshold, with_confidence=True)
            maps["teacher"].append(labels[0].numpy())
            confidences.append(confidence[0].numpy())
    return maps, confidences


def read_label_pngs(paths: list[Path]) -> dict[str, list[np.ndarray]]:
    """The train-id maps of label PNG files by size ("HxW"): `*_labelIds.png` converted, any other file as it is."""
    by_size: dict[str, list[np.ndarray]] = {}
    for path in paths:
        labels = read_label(path)  # train ids 0..18 and 255 are label ids too, so both kinds pass its checks
        if path.name.endswith("_labelIds.png"):
            labels = to_train_ids(labels)
        by_size.setdefault(f"{labels.shape[0]}x{labels.shape[1]}", []).append(labels)
    return by_size


def labelled_fraction(maps: list[np.ndarray]) -> float:
    """Share of the pixels of `maps` that hold a class rather than ignore."""
    return sum(int(np.count_nonzero(m != IGNORE)) for m in maps) / sum(m.size for m in maps)


def _ids(count: int) -> list[str]:
    return [f"bench_000000_{i:06d}" for i in range(count)]


class _Clock:
    """Seconds of this process's CPU time and of the wall clock since it was made."""

    def __init__(self) -> None:
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def rates(self, count: int) -> tuple[float, float]:
        """(per CPU second, per wall second) of `count` maps."""
        return _rate(count, time.process_time() - self.cpu), _rate(count, time.perf_counter() - self.wall)


def confidence_ratio(workdir: Path, size: str, maps: list[np.ndarray], confidences: list[np.ndarray],
                     codec: str) -> float:
    """Bytes of the kept confidence maps over the label maps' bytes, in one --keep-confidence store."""
    store = LabelStore.create(workdir / f"confidence-{size}-{codec}.zarr", replace(PROVENANCE, keep_confidence=True),
                              codec=codec)
    for image_id, labels, confidence in zip(_ids(len(maps)), maps, confidences):
        store.write(image_id, labels, source=image_id, confidence=confidence)
    usage = store.disk_usage()
    return usage[CONFIDENCE] / usage[LABELS]


def bench_store(workdir: Path, kind: str, size: str, maps: list[np.ndarray], codec: str) -> Result:
    url = str(workdir / f"{kind}-{size}-{codec}.zarr")
    ids = _ids(len(maps))
    store = LabelStore.create(url, PROVENANCE, codec=codec)
    clock = _Clock()
    for image_id, labels in zip(ids, maps):
        store.write(image_id, labels, source=image_id)
    store.write_manifest()
    write = clock.rates(len(maps))
    reader = LabelStore.open(url)
    reader.completed_ids()  # the index, read once as any reader does
    clock = _Clock()
    read = [reader.read(image_id) for image_id in ids]
    read_rates = clock.rates(len(maps))
    crops = _crops(np.random.default_rng(0), maps[0].shape, len(maps))
    clock = _Clock()
    for image_id, crop in zip(ids, crops):
        reader.read_window(image_id, *crop)
    crop = clock.rates(len(maps))
    for image_id, labels, back in zip(ids, maps, read):
        if not np.array_equal(back, labels):
            raise RuntimeError(f"{url}: {image_id} does not read back as written")
    png = sum(len(encode_png(m)) for m in maps)
    usage = reader.disk_usage()
    on_disk, n = sum(usage.values()), len(maps)
    return Result(kind, size, codec, reader.codec_level, n, on_disk / n, png / on_disk, usage[LABELS] / n,
                  usage["metadata"] / n, write[0], read_rates[0], crop[0], write[1], read_rates[1], crop[1])


def warm_up(workdir: Path, codec: str) -> None:
    """Write and read one small map with `codec`, so that one-time costs (imports, loading the context coder's
    compiled code) stay out of the timings."""
    store = LabelStore.create(workdir / f"warm-up-{codec}.zarr", PROVENANCE, codec=codec)
    store.write(_ids(1)[0], np.zeros((16, 32), np.uint8), source="warm-up")
    store.read(_ids(1)[0])


def bench_png(kind: str, size: str, maps: list[np.ndarray]) -> Result:
    clock = _Clock()
    encoded = [encode_png(m) for m in maps]
    write = clock.rates(len(maps))
    clock = _Clock()
    for data in encoded:
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    read = clock.rates(len(maps))
    size_bytes = sum(len(d) for d in encoded)
    n = len(maps)
    return Result(kind, size, "png", 9, n, size_bytes / n, 1.0, size_bytes / n, 0.0, write[0], read[0], read[0],
                  write[1], read[1], read[1])


def bench_index(workdir: Path, count: int) -> dict[str, float]:
    """Seconds of `inspect` (storage_report) and `fuse` on a store of `count` 128x256 maps, whose images the
    dataset root lists (empty image files: neither reads them)."""
    from autolabel.layout import IMAGE_DIR, IMAGE_SUFFIX
    from autolabel.synth import generate
    from pipelines.fuse import fuse

    root = workdir / "index-root"
    generate(root, workdir / "index-truth", SynthConfig(train=4, val=0, train_extra=0, height=64, width=128))
    rng = np.random.default_rng(0)
    maps = [street_scene(rng, 128, 256) for _ in range(16)]
    store = LabelStore.create(workdir / "index.zarr", PROVENANCE)
    ids = [f"{city}_{i:06d}_000019" for i in range(count // 4 + 1) for city in ("aachen", "bonn", "kiel", "ulm")][:count]
    start = time.perf_counter()
    for i, image_id in enumerate(ids):
        image = root / IMAGE_DIR / "train_extra" / image_id.rsplit("_", 2)[0] / f"{image_id}{IMAGE_SUFFIX}"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.touch()
        store.write(image_id, maps[i % len(maps)], source=str(image))
    store.write_manifest()
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    report = storage_report(LabelStore.open(store.url))
    inspect_s = time.perf_counter() - start
    start = time.perf_counter()
    summary = fuse(root, workdir / "fused.parquet", labels=store.url)
    fuse_s = time.perf_counter() - start
    if report["images"] != count or summary.rows["auto_coarse"] != count:
        raise RuntimeError(f"index benchmark: expected {count} images, got {report['images']}, {summary.rows}")
    return {"images": count, "write_s": write_s, "inspect_s": inspect_s, "fuse_s": fuse_s,
            "bytes_per_image": report["bytes_per_image"]}


def _table(results: list[Result], title: str) -> Table:
    table = Table(title=title)
    columns = ("maps", "size", "codec", "B/image", "vs PNG", "metadata B/image", "write maps/s", "read maps/s",
               "crop reads/s", "labelled", "confidence")
    for column in columns:
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(r.kind, r.size, r.codec if r.level is None else f"{r.codec} {r.level}", f"{r.bytes_per_image:,.0f}",
                      f"{1 / r.vs_png:.2f}x", f"{r.metadata_bytes_per_image:,.0f}", f"{r.write_maps_per_s:.1f}",
                      f"{r.read_maps_per_s:.1f}", f"{r.crop_reads_per_s:.1f}", f"{r.labelled:.0%}",
                      "" if r.confidence is None else f"{r.confidence:.2f}x")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="maps per kind and size (default 64)")
    parser.add_argument("--sizes", nargs="*", default=list(DEFAULT_SIZES),
                        help="HxW sizes (default 512x1024 1024x2048; none with --index-images alone)")
    parser.add_argument("--codecs", nargs="+", default=list(CODECS), choices=list(CODECS))
    parser.add_argument("--checkpoint", type=Path, help="teacher checkpoint for the `teacher` maps")
    parser.add_argument("--teacher-height", type=int, default=128,
                        help="height of the images the checkpoint was trained on: it labels each image scaled to "
                             "it (default 128, the quickstart's)")
    parser.add_argument("--label-pngs", nargs="+", type=Path, default=[],
                        help="also measure these label PNGs (train ids; *_labelIds.png are converted), as kind files")
    parser.add_argument("--index-images", type=int, default=0, help="also time inspect and fuse on this many maps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON line with all figures last")
    args = parser.parse_args()

    results: list[Result] = []
    index = None
    with tempfile.TemporaryDirectory(prefix="autolabel-storage-") as tmp:
        workdir = Path(tmp)
        for codec in args.codecs:
            warm_up(workdir, codec)
        for size in args.sizes:
            height, width = (int(v) for v in size.split("x"))
            rng = np.random.default_rng(args.seed)
            drawn = [street_scene(rng, height, width) for _ in range(args.images)]
            synthetic, confidences = synthetic_maps(args.images, height, width, args.checkpoint,
                                                       args.teacher_height)
            for kind, maps in {"drawn": drawn, **synthetic}.items():
                labelled = labelled_fraction(maps)
                results.append(replace(bench_png(kind, size, maps), labelled=labelled))
                for codec in args.codecs:
                    result = replace(bench_store(workdir, kind, size, maps, codec), labelled=labelled)
                    if kind == "teacher" and confidences:
                        result = replace(result, confidence=confidence_ratio(workdir, size, maps, confidences, codec))
                    results.append(result)
        for size, maps in read_label_pngs(args.label_pngs).items():
            labelled = labelled_fraction(maps)
            results.append(replace(bench_png("files", size, maps), labelled=labelled))
            results.extend(replace(bench_store(workdir, "files", size, maps, codec), labelled=labelled)
                           for codec in args.codecs)
        if args.index_images:
            index = bench_index(workdir, args.index_images)
    info = machine(zarr=zarr.__version__, imagecodecs=imagecodecs.__version__, opencv=cv2.__version__)
    console = Console(width=120)
    console.print(f"machine: {info['platform']}, {info['processor']}, {info['cpu_count']} CPUs; "
                  f"zarr {info['zarr']}, imagecodecs {info['imagecodecs']}, OpenCV {info['opencv']}")
    console.print(_table(results, f"{args.images} maps per kind and size; bytes: every file of the store per image; "
                                  "speeds: maps per CPU second"))
    if index:
        console.print(f"index: {index['images']:,} maps of 128x256: inspect {index['inspect_s']:.1f} s, "
                      f"fuse {index['fuse_s']:.1f} s (writing them: {index['write_s']:.0f} s)")
    if args.json:
        print(json.dumps({"machine": info, "images": args.images, "results": [asdict(r) for r in results],
                          "index": index}))


if __name__ == "__main__":
    main()
