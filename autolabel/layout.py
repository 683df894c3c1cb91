"""Discover a Cityscapes-format dataset root: splits, cities, stems and their label files.

    leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png
    gtFine/{split}/{city}/{stem}_gtFine_labelIds.png
    gtCoarse/{split}/{city}/{stem}_gtCoarse_labelIds.png

Reading a dataset never writes to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from autolabel.errors import DatasetError

IMAGE_DIR = "leftImg8bit"
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SOURCES = ("gtFine", "gtCoarse")
LabelSource = Literal["gtFine", "gtCoarse"]

STEM_PATTERN = re.compile(r"^[a-z][a-z_\-]*_\d{6}_\d{6}$")
"""A Cityscapes stem: {city}_{sequence:06d}_{frame:06d}."""


@dataclass(frozen=True)
class Sample:
    """One image of a split and, when asked for, its label-id PNG."""

    split: str
    city: str
    stem: str
    image: Path
    label: Path | None = None


def validate_stem(stem: str) -> str:
    """Return `stem` if it is a Cityscapes stem (safe as a file/array name), else raise."""
    if not STEM_PATTERN.match(stem):
        raise DatasetError(
            f"{stem!r} is not a Cityscapes image id ({{city}}_{{seq:06d}}_{{frame:06d}})"
        )
    return stem


def stem_of(image_path: Path) -> str:
    name = Path(image_path).name
    if not name.endswith(IMAGE_SUFFIX):
        raise DatasetError(f"{image_path}: not a Cityscapes image (expected *{IMAGE_SUFFIX})")
    return validate_stem(name[: -len(IMAGE_SUFFIX)])


def stem_parts(stem: str) -> tuple[str, int, int]:
    """(city, sequence, frame) of a Cityscapes stem {city}_{seq:06d}_{frame:06d}; a city may hold underscores."""
    city, seq, frame = validate_stem(stem).rsplit("_", 2)
    return city, int(seq), int(frame)


def city_of(stem: str) -> str:
    """The city of a Cityscapes stem."""
    return stem_parts(stem)[0]


def label_path(root: Path, split: str, stem: str, source: LabelSource, kind: str = "labelIds") -> Path:
    """Where the `source` label file of an image lives (it may not exist)."""
    if source not in LABEL_SOURCES:
        raise DatasetError(f"unknown label source {source!r}; expected one of {LABEL_SOURCES}")
    return Path(root) / source / split / city_of(stem) / f"{stem}_{source}_{kind}.png"


def check_root(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root does not exist")
    if not (root / IMAGE_DIR).is_dir():
        raise DatasetError(f"{root}: not a Cityscapes root (no {IMAGE_DIR}/ folder)")
    return root


def list_splits(root: Path) -> list[str]:
    """Split names that have images, sorted."""
    images = check_root(root) / IMAGE_DIR
    return sorted(p.name for p in images.iterdir() if p.is_dir() and any(p.glob(f"*/*{IMAGE_SUFFIX}")))


def list_samples(
    root: Path,
    split: str,
    source: LabelSource | None = None,
    require_labels: bool = True,
) -> list[Sample]:
    """All images of `split` sorted by stem, each paired with its `source` labels.

    With `require_labels`, an image whose label file is missing is an error; without,
    such images get `label=None`.
    """
    root = check_root(root)
    split_dir = root / IMAGE_DIR / split
    if not split_dir.is_dir():
        raise DatasetError(f"{split_dir}: split {split!r} does not exist (have: {list_splits(root)})")
    images = sorted(split_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise DatasetError(f"{split_dir}: split {split!r} has no images")
    samples, seen = [], {}
    for image in images:
        stem = stem_of(image)
        if stem in seen:
            raise DatasetError(f"{image}: the same image name as {seen[stem]}; each stem may appear once in a split")
        seen[stem] = image
        label = None
        if source is not None:
            label = label_path(root, split, stem, source)
            if not label.is_file():
                if require_labels:
                    raise DatasetError(f"{image}: has no {source} label (expected {label})")
                label = None
        samples.append(Sample(split=split, city=image.parent.name, stem=stem, image=image, label=label))
    return samples


def label_sources(root: Path, split: str) -> list[str]:
    """Label kinds (gtFine, gtCoarse) that have at least one label file for `split`."""
    root = check_root(root)
    return [s for s in LABEL_SOURCES if any((root / s / split).glob(f"*/*_{s}_labelIds.png"))]
