"""Evaluate a checkpoint on a fine-labelled split: mIoU, per-class IoU, pixel accuracy, Boundary IoU."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autolabel.errors import ConfigError
from autolabel.images import read_image, read_label, write_png
from autolabel.labels import to_label_ids, to_train_ids
from autolabel.layout import Sample, list_samples
from autolabel.metrics import SegmentationMetrics
from autolabel.transforms import normalize_batch
from models.predict import DEFAULT_MAX_PIXELS, PredictOptions, predict
from models.teacher import Teacher, load_model

PREDICTION_SUFFIX = "_pred_labelIds.png"


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    """Which checkpoint to score on which fine-labelled split, and how to predict (the same for calibrate)."""

    root: Path
    checkpoint: Path
    split: str = "val"
    predict: PredictOptions = field(default_factory=PredictOptions)
    device: str = "cpu"
    save_predictions: Path | None = None
    """Where to write label-id PNGs in the Cityscapes results format, if anywhere."""

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is available")


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """A checkpoint's scores on a split (fractions 0..1; classes without a defined value are left out)."""

    miou: float
    """Mean IoU over the classes present in the ground truth or the predictions."""
    iou: dict[str, float]
    pixel_accuracy: float
    boundary_iou: float
    """Mean Boundary IoU: IoU of the bands within a few pixels of each class's contours."""
    boundary_iou_per_class: dict[str, float]
    images: int
    split: str
    scales: tuple[float, ...]
    """The inference scales, largest first."""
    pointrend: bool
    flip: bool

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "scales": list(self.scales)}


def predict_probabilities(
    model: Teacher, image: np.ndarray, scales: Sequence[float], pointrend: bool, max_pixels: int = DEFAULT_MAX_PIXELS,
    flip: bool = False,
) -> torch.Tensor:
    """Class probabilities (K, H, W) float32, on the model's device, of one RGB image (H, W, 3) uint8."""
    device = next(model.parameters()).device
    batch = normalize_batch(torch.from_numpy(image).unsqueeze(0).to(device))  # (1, 3, H, W)
    return predict(model, batch, scales=scales, pointrend=pointrend, max_pixels=max_pixels, flip=flip)[0]


def predict_labels(
    model: Teacher, image: np.ndarray, scales: Sequence[float], pointrend: bool, max_pixels: int = DEFAULT_MAX_PIXELS,
    flip: bool = False,
) -> np.ndarray:
    """Argmax train ids (H, W) uint8 of one RGB image (H, W, 3) uint8."""
    probs = predict_probabilities(model, image, scales, pointrend, max_pixels, flip)  # (K, H, W)
    return probs.argmax(0).to(torch.uint8).cpu().numpy()


def prediction_path(out_dir: Path, city: str, stem: str) -> Path:
    """Where a prediction goes in the Cityscapes results format (the official evaluator finds it by stem)."""
    return Path(out_dir) / city / f"{stem}{PREDICTION_SUFFIX}"


def labelled_images(
    root: Path, split: str, progress: Callable[[int, int], None] | None = None
) -> Iterator[tuple[Sample, np.ndarray, np.ndarray]]:
    """(sample, RGB image (H, W, 3) uint8, gtFine train ids (H, W) uint8) of every image of a split, in order;
    `progress(done, total)` hears each one once the caller is done with it."""
    samples = list_samples(Path(root), split, "gtFine")
    for i, sample in enumerate(samples):
        image = read_image(sample.image)
        yield sample, image, to_train_ids(read_label(sample.label, shape=image.shape[:2]))
        if progress:
            progress(i + 1, len(samples))


def evaluate(config: EvaluateConfig, *, progress: Callable[[int, int], None] | None = None,
             model: Teacher | None = None) -> Evaluation:
    """Scores of a checkpoint's predictions against a split's gtFine labels.

    A scaled input of more than `max_pixels` pixels is predicted in sliding windows; `flip` averages each
    prediction with that of the mirrored image. `model`, when given, is scored instead of loading the checkpoint.
    """
    options = config.predict
    if model is None:
        model, _ = load_model(config.checkpoint)
    model = model.to(config.device).eval()
    metrics = SegmentationMetrics()
    images = 0
    for sample, image, gt in labelled_images(config.root, config.split, progress):
        images += 1
        pred = predict_labels(model, image, options.scales, options.pointrend, options.max_pixels, options.flip)
        metrics.update(gt, pred)
        if config.save_predictions is not None:
            write_png(prediction_path(config.save_predictions, sample.city, sample.stem), to_label_ids(pred))
    return Evaluation(**metrics.result(), images=images, split=config.split, scales=options.scales,
                      pointrend=options.pointrend, flip=options.flip)
