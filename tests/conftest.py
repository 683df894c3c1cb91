"""Shared fixtures: one local Ray for the session, a tiny dataset (and a copy with broken images), a tiny teacher,
a labelled store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from autolabel.images import write_png
from autolabel.layout import IMAGE_DIR, IMAGE_SUFFIX

IMAGE_SIZE = (64, 128)
"""(H, W) of the dataset's images; one image is TALL_SIZE, so batches hold two sizes."""
TALL_SIZE = (96, 128)
EXTRA_STEMS = (
    "augsburg_000000_000019", "augsburg_000001_000019", "augsburg_000002_000019",
    "bamberg_000000_000019", "bamberg_000001_000019", "bamberg_000002_000019",
)


def street_image(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A smooth random RGB image (H, W, 3) uint8: bands of colour with noise."""
    h, w = size
    rows = np.linspace(0.0, 1.0, h)[:, None, None]  # (H, 1, 1)
    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    image = top * (1 - rows) + bottom * rows + rng.normal(0, 12, (h, w, 3))  # (H, W, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def image_path(root: Path, split: str, stem: str) -> Path:
    return root / IMAGE_DIR / split / stem.rsplit("_", 2)[0] / f"{stem}{IMAGE_SUFFIX}"


@pytest.fixture(scope="session")
def ray_address():
    """A local 2-CPU Ray for the whole session; yields its address for subprocess drivers."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory) -> Path:
    """A Cityscapes-layout root whose train_extra split holds the EXTRA_STEMS images."""
    root = tmp_path_factory.mktemp("dataset")
    rng = np.random.default_rng(0)
    for i, stem in enumerate(EXTRA_STEMS):
        write_png(image_path(root, "train_extra", stem), street_image(rng, TALL_SIZE if i == 1 else IMAGE_SIZE))
    return root


CLASSIFIER_GAIN = 1000.0
"""Scales the untrained classifiers so predictions hold several classes and confidences over 0.1..1."""


@pytest.fixture(scope="session")
def teacher_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny teacher with sharpened classifiers, saved as a checkpoint file."""
    import torch

    from models.checkpoint import Checkpoint, save_checkpoint
    from models.teacher import build_model

    torch.manual_seed(0)
    model = build_model("tiny")
    with torch.no_grad():
        for name in ("ocr.classifier", "point_head.classifier"):
            classifier = model.get_submodule(name)
            classifier.weight.mul_(CLASSIFIER_GAIN)
            classifier.bias.zero_()
    path = tmp_path_factory.mktemp("teacher") / "model.pt"
    save_checkpoint(path, Checkpoint(config=model.config.to_dict(), state_dict=model.state_dict()))
    return path


@pytest.fixture(scope="session")
def labelled_store(ray_address, dataset_root, teacher_checkpoint, tmp_path_factory) -> str:
    """train_extra labelled at threshold 0 (every pixel labelled) with the defaults, confidence kept."""
    from pipelines.label import label
    from tests.runs import label_config

    out = str(tmp_path_factory.mktemp("stores") / "labels.zarr")
    label(label_config(dataset_root, teacher_checkpoint, out, threshold=0.0, keep_confidence=True))
    return out


@pytest.fixture
def broken_root(dataset_root, tmp_path) -> Path:
    """The dataset plus an empty and a truncated image in train_extra."""
    root = tmp_path / "broken"
    shutil.copytree(dataset_root, root)
    image_path(root, "train_extra", "zurich_000000_000019").parent.mkdir(parents=True)
    image_path(root, "train_extra", "zurich_000000_000019").write_bytes(b"")
    data = image_path(root, "train_extra", EXTRA_STEMS[0]).read_bytes()
    image_path(root, "train_extra", "zurich_000001_000019").write_bytes(data[: len(data) // 2])
    return root
