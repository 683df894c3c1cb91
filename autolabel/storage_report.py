"""What a label store costs on disk, measured, against PNG, raw uint8 and soft probabilities.

The headline figures count every file of the store (maps, array metadata, records, manifest): what a
user pays. Image counts, pixels and class pixels come from the store's index, so a report reads no
label map except the PNG sample. The extrapolation to the full Cityscapes coarse set assumes the
measured bits per pixel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.compute as pc

from autolabel.errors import StoreError
from autolabel.images import encode_png
from autolabel.labels import CLASS_NAMES, NUM_CLASSES
from autolabel.store import CONFIDENCE, LABELS, LabelStore, Status

EXTRAPOLATION_IMAGES = 19_998
"""Cityscapes train_extra: the coarse images the teacher labels."""
EXTRAPOLATION_SHAPE = (1024, 2048)
SOFT_BYTES_PER_VALUE = {"fp16": 2, "fp32": 4}
DEFAULT_PNG_SAMPLE = 50
"""Images re-encoded as PNG to measure the PNG ratio (spread evenly over the store)."""


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _evenly_spaced(items: list[str], count: int) -> list[str]:
    if count >= len(items):
        return items
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def storage_report(store: LabelStore, png_sample: int = DEFAULT_PNG_SAMPLE) -> dict[str, Any]:
    """Measured sizes and savings of `store`; PNG is measured on up to `png_sample` of its images."""
    index = store.index()
    done = index.filter(pc.equal(index["status"], Status.DONE.value))
    images = done.num_rows
    if not images:
        raise StoreError(f"{store.url}: no complete images to report on ({index.num_rows} failed; their errors are "
                         "in the store's manifest)")
    heights, widths = done["height"].to_numpy(), done["width"].to_numpy()
    pixels = int(np.sum(heights.astype(np.int64) * widths))
    counts = np.asarray(pc.list_flatten(done["class_pixels"]).to_numpy()).reshape(images, NUM_CLASSES).sum(0)
    usage = store.disk_usage()
    on_disk, label_bytes, confidence_bytes = sum(usage.values()), usage[LABELS], usage[CONFIDENCE]
    bits_per_pixel = 8 * on_disk / pixels
    sample = _evenly_spaced(done["image_id"].to_pylist(), max(1, png_sample))
    png_per_image = sum(len(encode_png(store.read(image_id))) for image_id in sample) / len(sample)
    soft = {k: pixels * NUM_CLASSES * b for k, b in SOFT_BYTES_PER_VALUE.items()}
    big_pixels = EXTRAPOLATION_IMAGES * EXTRAPOLATION_SHAPE[0] * EXTRAPOLATION_SHAPE[1]
    return {
        "store": store.url,
        "codec": store.codec.name,
        "codec_level": store.codec_level,
        "reader": store.codec.reader,
        "images": images,
        "failed": index.num_rows - images,
        "pixels": pixels,
        "bytes_on_disk": on_disk,
        "bytes_per_image": on_disk / images,
        "bits_per_pixel": bits_per_pixel,
        "label_bytes": label_bytes,
        "confidence_bytes": confidence_bytes,
        "metadata_bytes": usage["metadata"],
        "labelled_fraction": float(counts.sum()) / pixels,
        "class_pixels": dict(zip(CLASS_NAMES, (int(c) for c in counts))),
        "png_sample_images": len(sample),
        "png_bytes_per_image": png_per_image,
        "vs_uint8": _ratio(pixels, on_disk),
        "vs_png": _ratio(png_per_image * images, on_disk),
        "vs_soft_fp16": _ratio(soft["fp16"], on_disk),
        "vs_soft_fp32": _ratio(soft["fp32"], on_disk),
        "extrapolation": {
            "images": EXTRAPOLATION_IMAGES,
            "height": EXTRAPOLATION_SHAPE[0],
            "width": EXTRAPOLATION_SHAPE[1],
            "store_bytes": big_pixels * bits_per_pixel / 8,
            "uint8_bytes": big_pixels,
            "soft_fp16_bytes": big_pixels * NUM_CLASSES * SOFT_BYTES_PER_VALUE["fp16"],
            "soft_fp32_bytes": big_pixels * NUM_CLASSES * SOFT_BYTES_PER_VALUE["fp32"],
        },
    }
