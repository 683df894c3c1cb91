"""Segmentation metrics: IoU exactly as the official Cityscapes evaluator, and Boundary IoU.

Everything is accumulated as integer pixel counts, so a metric over a dataset is the sum of
its images' counts (in any order, on any number of workers) and never an average of averages.

Confusion counts, shape (C, C + 1): rows are ground-truth classes, columns 0..C-1 predicted
classes, column C ("miss") labelled pixels predicted as ignore. Pixels whose ground truth is
ignore are not counted at all; a labelled pixel predicted as ignore is a false negative of its
class (cityscapesscripts' evalPixelLevelSemanticLabeling does the same with label id 0).

Boundary IoU (Cheng et al. 2021): the boundary of a class mask is the part of the mask within
d pixels (chessboard distance, i.e. d erosions by a 3x3 square) of a pixel outside the mask or
of the image border; d is 2% of the image diagonal, at least 1 px. Per class,
|G_b ∩ P_b| / |G_b ∪ P_b| over pixels whose ground truth is not ignore.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from autolabel.labels import CLASS_NAMES, IGNORE, NUM_CLASSES

BOUNDARY_RATIO = 0.02
"""Boundary band width as a fraction of the image diagonal (the Boundary IoU paper's value)."""


def _check_schema(num_classes: int, ignore: int) -> None:
    if not 0 < num_classes <= ignore <= 255:
        raise ValueError(
            f"need 0 < num_classes <= ignore <= 255, got num_classes={num_classes}, ignore={ignore}"
        )


def _validated(name: str, labels: np.ndarray, num_classes: int, ignore: int) -> np.ndarray:
    """Return `labels` as an (H, W) uint8 map after checking every value is a class or ignore."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name}: expected an (H, W) label map, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}: expected integer class ids, got dtype {labels.dtype}")
    if labels.dtype != np.uint8:
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ValueError(f"{name}: values must lie in 0..255, got {labels.min()}..{labels.max()}")
        labels = labels.astype(np.uint8)
    labels = np.ascontiguousarray(labels)  # OpenCV needs positive strides
    allowed = np.zeros(256, dtype=bool)
    allowed[:num_classes] = True
    allowed[ignore] = True
    bad = ~allowed[labels]
    if bad.any():
        raise ValueError(
            f"{name}: values {np.unique(labels[bad]).tolist()} are neither class ids "
            f"0..{num_classes - 1} nor ignore ({ignore})"
        )
    return labels


def _validated_pair(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore: int
) -> tuple[np.ndarray, np.ndarray]:
    _check_schema(num_classes, ignore)
    gt = _validated("gt", gt, num_classes, ignore)
    pred = _validated("pred", pred, num_classes, ignore)
    if gt.shape != pred.shape:
        raise ValueError(f"gt is {gt.shape} but pred is {pred.shape}; label maps must match")
    return gt, pred


# ---------------------------------------------------------------------------- confusion / IoU


def _confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C + 1) int64 counts of validated uint8 maps whose ignore value is >= num_classes."""
    cols = num_classes + 1
    rows = np.minimum(gt, num_classes).astype(np.int64)  # (H, W) ignore -> C, dropped below
    flat = rows * cols + np.minimum(pred, num_classes)  # (H, W) ignore pred -> miss column
    counts = np.bincount(flat.ravel(), minlength=cols * cols).reshape(cols, cols)
    return counts[:num_classes].astype(np.int64, copy=False)


def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int = NUM_CLASSES, ignore: int = IGNORE
) -> np.ndarray:
    """Confusion counts (C, C + 1) int64 of one (H, W) train-id map pair; see the module doc."""
    gt, pred = _validated_pair(gt, pred, num_classes, ignore)
    return _confusion(gt, pred, num_classes)


def _checked_counts(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[1] not in (cm.shape[0], cm.shape[0] + 1):
        raise ValueError(f"expected confusion counts of shape (C, C) or (C, C + 1), got {cm.shape}")
    return cm.astype(np.int64, copy=False)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """(C,) float IoU = TP / (TP + FP + FN); NaN for classes absent from gt and prediction."""
    cm = _checked_counts(cm)
    num_classes = cm.shape[0]
    tp = np.diagonal(cm).copy()  # (C,)
    fn = cm.sum(axis=1) - tp  # (C,) includes labelled pixels predicted as ignore
    fp = cm[:, :num_classes].sum(axis=0) - tp  # (C,) only on labelled gt pixels
    denom = tp + fp + fn
    iou = np.full(num_classes, np.nan)
    present = denom > 0
    iou[present] = tp[present] / denom[present]
    return iou


def _nanmean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def mean_iou(cm: np.ndarray) -> float:
    """Mean IoU over the classes present in gt or prediction (NaN if none is)."""
    return _nanmean(iou_per_class(cm))


def pixel_accuracy(cm: np.ndarray) -> float:
    """Fraction of labelled gt pixels predicted as their class (NaN if there are none)."""
    cm = _checked_counts(cm)
    total = int(cm.sum())
    return float(np.trace(cm[:, : cm.shape[0]]) / total) if total else math.nan


class ConfusionMatrix:
    """Confusion counts accumulated over images (and merged across workers)."""

    def __init__(self, num_classes: int = NUM_CLASSES, ignore: int = IGNORE) -> None:
        _check_schema(num_classes, ignore)
        self.num_classes = num_classes
        self.ignore = ignore
        self.counts = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one image's (H, W) ground truth and prediction."""
        self.counts += confusion_matrix(gt, pred, self.num_classes, self.ignore)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add the counts of another accumulator with the same schema."""
        if (other.num_classes, other.ignore) != (self.num_classes, self.ignore):
            raise ValueError(
                f"cannot merge confusion counts of {other.num_classes} classes / ignore {other.ignore} "
                f"into {self.num_classes} classes / ignore {self.ignore}"
            )
        self.counts += other.counts

    def iou(self) -> np.ndarray:
        return iou_per_class(self.counts)

    def mean_iou(self) -> float:
        return mean_iou(self.counts)

    def pixel_accuracy(self) -> float:
        return pixel_accuracy(self.counts)


# ---------------------------------------------------------------------------- Boundary IoU


def boundary_width(height: int, width: int, ratio: float = BOUNDARY_RATIO) -> int:
    """Boundary band width d in pixels: `ratio` of the image diagonal, rounded, at least 1."""
    return max(1, int(round(ratio * math.hypot(height, width))))


def boundary_band(labels: np.ndarray, width: int, border_value: int = IGNORE) -> np.ndarray:
    """(H, W) bool: pixels within `width` px (chessboard) of a different value or the border.

    For every value v other than `border_value` this is exactly mask(v) minus its erosion by
    `width` 3x3 steps with the image border counted as outside, so one min/max filter pair
    serves all classes at once. `border_value` must differ from every class value (ignore does).
    """
    size = 2 * width + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    border = {"borderType": cv2.BORDER_CONSTANT, "borderValue": border_value}
    low = cv2.erode(labels, kernel, **border)  # (H, W) window minimum
    high = cv2.dilate(labels, kernel, **border)  # (H, W) window maximum
    return low != high


def _boundary_counts(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore: int, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    d = boundary_width(*gt.shape, ratio=ratio)
    labelled = gt != ignore  # (H, W)
    gt_band = boundary_band(gt, d, ignore) & labelled  # (H, W) G_b of gt's class
    pred_band = boundary_band(pred, d, ignore) & labelled & (pred != ignore)  # (H, W) P_b
    both = gt_band & pred_band & (gt == pred)  # (H, W) in G_b and P_b of the same class
    intersection = np.bincount(gt[both], minlength=num_classes)
    gt_area = np.bincount(gt[gt_band], minlength=num_classes)
    pred_area = np.bincount(pred[pred_band], minlength=num_classes)
    union = gt_area + pred_area - intersection
    return intersection.astype(np.int64), union.astype(np.int64)


def boundary_counts(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int = NUM_CLASSES,
    ignore: int = IGNORE,
    ratio: float = BOUNDARY_RATIO,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class Boundary IoU intersection and union pixel counts, each (C,) int64, of one image."""
    gt, pred = _validated_pair(gt, pred, num_classes, ignore)
    return _boundary_counts(gt, pred, num_classes, ignore, ratio)


def boundary_iou_per_class(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """(C,) float intersection / union; NaN where the union is empty."""
    intersection = np.asarray(intersection, dtype=np.int64)
    union = np.asarray(union, dtype=np.int64)
    iou = np.full(union.shape, np.nan)
    defined = union > 0
    iou[defined] = intersection[defined] / union[defined]
    return iou


# ---------------------------------------------------------------------------- all together


MetricsResult = dict[str, float | dict[str, float]]


class SegmentationMetrics:
    """mIoU, per-class IoU, pixel accuracy and Boundary IoU accumulated over images."""

    def __init__(
        self,
        class_names: Sequence[str] = CLASS_NAMES,
        ignore: int = IGNORE,
        boundary_ratio: float = BOUNDARY_RATIO,
    ) -> None:
        self.class_names = tuple(class_names)
        self.ignore = ignore
        self.boundary_ratio = boundary_ratio
        self.confusion = ConfusionMatrix(len(self.class_names), ignore)
        self.boundary_intersection = np.zeros(len(self.class_names), dtype=np.int64)
        self.boundary_union = np.zeros(len(self.class_names), dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one image's (H, W) train-id ground truth and prediction (255 = ignore)."""
        gt, pred = _validated_pair(gt, pred, self.num_classes, self.ignore)
        self.confusion.counts += _confusion(gt, pred, self.num_classes)
        intersection, union = _boundary_counts(
            gt, pred, self.num_classes, self.ignore, self.boundary_ratio
        )
        self.boundary_intersection += intersection
        self.boundary_union += union

    def merge(self, other: SegmentationMetrics) -> None:
        """Add the counts of another accumulator with the same classes and settings."""
        mine = (self.class_names, self.ignore, self.boundary_ratio)
        theirs = (other.class_names, other.ignore, other.boundary_ratio)
        if mine != theirs:
            raise ValueError(
                "cannot merge metrics with different classes, ignore value or boundary ratio: "
                f"{theirs[1:]} into {mine[1:]}"
            )
        self.confusion.merge(other.confusion)
        self.boundary_intersection += other.boundary_intersection
        self.boundary_union += other.boundary_union

    def _by_name(self, values: np.ndarray) -> dict[str, float]:
        return {
            name: float(value)
            for name, value in zip(self.class_names, values, strict=True)
            if not np.isnan(value)
        }

    def result(self) -> MetricsResult:
        """JSON-ready fractions in 0..1; classes without a defined value are left out."""
        if not self.confusion.counts.any():
            raise ValueError("no labelled ground-truth pixels were accumulated; metrics are undefined")
        iou = self.confusion.iou()
        boundary_iou = boundary_iou_per_class(self.boundary_intersection, self.boundary_union)
        return {
            "miou": _nanmean(iou),
            "iou": self._by_name(iou),
            "pixel_accuracy": self.confusion.pixel_accuracy(),
            "boundary_iou": _nanmean(boundary_iou),
            "boundary_iou_per_class": self._by_name(boundary_iou),
        }
