"""Choose a labelling threshold from evidence: coverage and accuracy of the kept pixels on a labelled split.

The teacher runs on a split with fine labels exactly as `label` runs it (same scales, PointRend, flip), and
every threshold from 0.50 to 0.99 is scored against the true labels (`autolabel.calibration`); the
threshold recommended for a target accuracy is the lowest one whose kept pixels reach it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from autolabel.calibration import Calibration, ThresholdPoint, check_target_accuracy
from autolabel.errors import DatasetError
from models.teacher import Teacher, load_model
from pipelines.evaluate import EvaluateConfig, labelled_images, predict_probabilities

DEFAULT_TARGET_ACCURACY = 0.95


@dataclass(frozen=True)
class CalibrationResult:
    split: str
    images: int
    evaluable_pixels: int
    scales: tuple[float, ...]
    pointrend: bool
    points: tuple[ThresholdPoint, ...]
    """Coverage and accuracy at 0.50, 0.55, ..., 0.95."""
    target_accuracy: float
    recommended: ThresholdPoint | None
    """The lowest threshold (0.01 steps) reaching the target accuracy; None when none does."""

    def to_dict(self) -> dict:
        return {
            "split": self.split,
            "images": self.images,
            "evaluable_pixels": self.evaluable_pixels,
            "scales": list(self.scales),
            "pointrend": self.pointrend,
            "thresholds": [p.to_dict() for p in self.points],
            "target_accuracy": self.target_accuracy,
            "recommended": None if self.recommended is None else self.recommended.to_dict(),
        }


def calibrate(config: EvaluateConfig, *, target_accuracy: float = DEFAULT_TARGET_ACCURACY,
              progress: Callable[[int, int], None] | None = None, model: Teacher | None = None) -> CalibrationResult:
    """Coverage and accuracy of the teacher's thresholded labels on the split's gtFine labels, per threshold,
    predicted as `config.predict` says (as `label` will)."""
    check_target_accuracy(target_accuracy)
    options = config.predict
    if model is None:
        model, _ = load_model(config.checkpoint)
    model = model.to(config.device).eval()
    calibration = Calibration()
    for _, image, truth in labelled_images(config.root, config.split, progress):
        probs = predict_probabilities(model, image, options.scales, options.pointrend, options.max_pixels,
                                      options.flip)  # (K, H, W)
        max_prob, pred = probs.max(0)  # (H, W) x2
        calibration.update(max_prob.cpu().numpy(), pred.cpu().numpy(), truth)
    if not calibration.evaluable:
        raise DatasetError(f"{config.root}: split {config.split!r} has no labelled pixels to calibrate on")
    return CalibrationResult(
        split=config.split,
        images=calibration.images,
        evaluable_pixels=calibration.evaluable,
        scales=options.scales,
        pointrend=options.pointrend,
        points=tuple(calibration.curve()),
        target_accuracy=target_accuracy,
        recommended=calibration.threshold_for(target_accuracy),
    )
