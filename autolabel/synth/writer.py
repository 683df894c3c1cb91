"""The dataset on disk: `generate` draws every image of a `SynthConfig` and writes its files where Cityscapes
keeps them (leftImg8bit/, gtFine/ with polygons and colour for train and val, gtCoarse/), the true fine labels
of train_extra into a separate truth root."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

from autolabel.errors import ConfigError, DatasetError
from autolabel.images import encode_png
from autolabel.layout import IMAGE_DIR, IMAGE_SUFFIX, label_path
from autolabel.synth.config import FINE_SPLITS, SPLITS, Array, SynthConfig
from autolabel.synth.sample import SynthSample, render_sample, sample_name

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

GENERATED_DIRS = (IMAGE_DIR, "gtFine", "gtCoarse")
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
        raise ConfigError(f"{truth_root}: the truth root must differ from the dataset root")
    owned_by = {root: [root / d for d in GENERATED_DIRS], truth_root: [truth_root / "gtFine" / "train_extra"]}
    for folder, owned in owned_by.items():
        if folder.exists() and not folder.is_dir():
            raise DatasetError(f"{folder}: exists and is not a folder")
        if folder.is_dir() and any(folder.iterdir()):
            if not overwrite:
                raise DatasetError(f"{folder}: is not empty; pass overwrite=True to replace the generated data")
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
