import copy
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from autolabel.images import write_png
from autolabel.labels import CLASS_NAMES, IGNORE, NUM_CLASSES, TRAIN_ID_BY_NAME, to_label_ids
from autolabel.metrics import (
    ConfusionMatrix,
    SegmentationMetrics,
    boundary_band,
    boundary_counts,
    boundary_iou_per_class,
    boundary_width,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)

ROAD, SIDEWALK, BUILDING, CAR = (TRAIN_ID_BY_NAME[n] for n in ("road", "sidewalk", "building", "car"))


def halves(left: int, right: int, shape: tuple[int, int] = (2, 4)) -> np.ndarray:
    labels = np.full(shape, left, dtype=np.uint8)
    labels[:, shape[1] // 2 :] = right
    return labels


def blobs(rng: np.random.Generator, shape: tuple[int, int], values: list[int]) -> np.ndarray:
    """A blocky label map: coarse random cells upsampled, so classes form regions with contours."""
    cells = rng.choice(values, size=(shape[0] // 8, shape[1] // 8)).astype(np.uint8)
    return cv2.resize(cells, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def test_perfect_prediction_scores_one():
    gt = halves(ROAD, CAR, (16, 32))
    metrics = SegmentationMetrics()
    metrics.update(gt, gt)
    result = metrics.result()
    assert result["miou"] == 1.0
    assert result["pixel_accuracy"] == 1.0
    assert result["boundary_iou"] == 1.0
    assert result["iou"] == {"road": 1.0, "car": 1.0}


def test_class_predicted_entirely_wrong_has_zero_iou():
    # gt: 4 px road | 4 px car; pred: all road.
    # road: TP 4, FP 4 (the car pixels), FN 0 -> 4/8; car: TP 0, FN 4 -> 0.
    cm = confusion_matrix(halves(ROAD, CAR), halves(ROAD, ROAD))
    iou = iou_per_class(cm)
    assert iou[ROAD] == 0.5
    assert iou[CAR] == 0.0
    assert pixel_accuracy(cm) == 0.5


def test_absent_classes_are_nan_and_left_out_of_the_mean():
    # As above: only road (0.5) and car (0.0) occur, so mIoU = 0.25, not 0.5 / 19.
    cm = confusion_matrix(halves(ROAD, CAR), halves(ROAD, ROAD))
    iou = iou_per_class(cm)
    assert np.isnan(np.delete(iou, [ROAD, CAR])).all()
    assert mean_iou(cm) == 0.25


def test_ignored_gt_pixels_are_not_counted():
    # Right half of gt is ignore; the prediction there (building) is neither a hit nor a false positive.
    gt = halves(ROAD, IGNORE)
    pred = halves(ROAD, BUILDING)
    cm = confusion_matrix(gt, pred)
    assert cm.sum() == 4
    assert np.isnan(iou_per_class(cm)[BUILDING])
    assert mean_iou(cm) == 1.0


def test_ignore_prediction_on_labelled_pixel_is_a_false_negative():
    # gt: 8 px car; pred: 4 px car, 4 px ignore -> car IoU 4 / (4 + 0 + 4) = 0.5, no other class.
    cm = confusion_matrix(halves(CAR, CAR), halves(CAR, IGNORE))
    assert cm[CAR, NUM_CLASSES] == 4
    assert iou_per_class(cm)[CAR] == 0.5
    assert mean_iou(cm) == 0.5
    assert pixel_accuracy(cm) == 0.5


def test_accumulating_two_images_equals_one_concatenated_image():
    rng = np.random.default_rng(0)
    gts = [blobs(rng, (16, 32), [ROAD, CAR, IGNORE]) for _ in range(2)]
    preds = [blobs(rng, (16, 32), [ROAD, CAR, BUILDING, IGNORE]) for _ in range(2)]
    acc = ConfusionMatrix()
    for gt, pred in zip(gts, preds):
        acc.update(gt, pred)
    whole = confusion_matrix(np.concatenate(gts), np.concatenate(preds))
    np.testing.assert_array_equal(acc.counts, whole)


def test_merged_accumulators_equal_one_accumulator():
    rng = np.random.default_rng(1)
    pairs = [(blobs(rng, (16, 32), [ROAD, CAR]), blobs(rng, (16, 32), [ROAD, CAR, IGNORE])) for _ in range(3)]
    single, first, second = SegmentationMetrics(), SegmentationMetrics(), SegmentationMetrics()
    for gt, pred in pairs:
        single.update(gt, pred)
    first.update(*pairs[0])
    for gt, pred in pairs[1:]:
        second.update(gt, pred)
    first.merge(second)
    assert first.result() == single.result()


def test_boundary_width_is_two_percent_of_the_diagonal():
    assert boundary_width(64, 128) == 3  # 0.02 * 143.1 = 2.86
    assert boundary_width(1024, 2048) == 46  # 0.02 * 2289.7 = 45.8
    assert boundary_width(3, 4) == 1  # 0.02 * 5 = 0.1, at least one pixel


def test_boundary_iou_of_shifted_square():
    # 20x20 image -> d = round(0.02 * 28.3) = 1: a square's boundary is its 1 px outer ring.
    # gt square rows 5..10, cols 5..10 (ring: 20 px); pred: the same square shifted 2 px right.
    # The rings share rows 5 and 10 at cols 7..10 (8 px): Boundary IoU = 8 / (20 + 20 - 8) = 0.25,
    # while the mask IoU is 24 / 48 = 0.5.
    gt = np.full((20, 20), ROAD, dtype=np.uint8)
    pred = gt.copy()
    gt[5:11, 5:11] = CAR
    pred[5:11, 7:13] = CAR
    intersection, union = boundary_counts(gt, pred)
    assert (intersection[CAR], union[CAR]) == (8, 32)
    assert boundary_iou_per_class(intersection, union)[CAR] == 0.25
    assert iou_per_class(confusion_matrix(gt, pred))[CAR] == 0.5


def test_boundary_band_is_each_class_mask_minus_its_erosion():
    # The paper's definition, one class at a time: mask minus d erosions by a 3x3 square, the
    # image border counting as outside the mask.
    rng = np.random.default_rng(2)
    labels = blobs(rng, (48, 96), [ROAD, SIDEWALK, CAR, IGNORE])
    d = boundary_width(*labels.shape)
    band = boundary_band(labels, d)
    for value in np.unique(labels[labels != IGNORE]):
        mask = (labels == value).astype(np.uint8)
        padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:-1, 1:-1]
        np.testing.assert_array_equal(band & (labels == value), (mask - eroded).astype(bool))


def test_ignored_gt_pixels_do_not_count_in_boundary_iou():
    # gt right half is ignore, where the prediction says building: building gets no boundary
    # value, and road's contour sits at the same place in gt and prediction.
    gt = halves(ROAD, IGNORE, (16, 32))
    pred = halves(ROAD, BUILDING, (16, 32))
    intersection, union = boundary_counts(gt, pred)
    assert union[BUILDING] == 0
    assert intersection[ROAD] == union[ROAD] > 0


def test_result_is_json_with_class_names_and_fractions():
    gt = halves(ROAD, CAR, (16, 32))
    pred = halves(ROAD, ROAD, (16, 32))
    metrics = SegmentationMetrics()
    metrics.update(gt, pred)
    result = json.loads(json.dumps(metrics.result(), allow_nan=False))
    assert set(result) == {"miou", "iou", "pixel_accuracy", "boundary_iou", "boundary_iou_per_class"}
    assert result["iou"] == {"road": 0.5, "car": 0.0}
    assert set(result["boundary_iou_per_class"]) == {"road", "car"}
    assert all(0.0 <= v <= 1.0 for v in result["boundary_iou_per_class"].values())


def test_result_without_labelled_pixels_raises():
    metrics = SegmentationMetrics()
    metrics.update(np.full((4, 4), IGNORE, np.uint8), np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="no labelled"):
        metrics.result()


def test_values_outside_the_schema_are_named():
    with pytest.raises(ValueError, match=r"pred: values \[19\]"):
        confusion_matrix(halves(ROAD, CAR), halves(ROAD, 19))
    with pytest.raises(ValueError, match="must match"):
        confusion_matrix(halves(ROAD, CAR), np.zeros((3, 4), np.uint8))


def official_cityscapes_iou(tmp_path: Path, gts: list[np.ndarray], preds: list[np.ndarray]) -> dict:
    """Run cityscapesscripts' evaluator on train-id maps written as a Cityscapes layout."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    gt_files, pred_files = [], []
    for frame, (gt, pred) in enumerate(zip(gts, preds)):
        stem = f"aachen_000000_{frame:06d}"
        gt_files.append(str(tmp_path / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_labelIds.png"))
        pred_files.append(str(tmp_path / "results" / f"{stem}_pred.png"))
        write_png(Path(gt_files[-1]), to_label_ids(gt))
        write_png(Path(pred_files[-1]), to_label_ids(pred))
    args = copy.copy(official.args)
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized = False
    return official.evaluateImgLists(pred_files, gt_files, args)


def test_miou_matches_official_cityscapes_evaluator(tmp_path):
    rng = np.random.default_rng(3)
    present = [ROAD, SIDEWALK, BUILDING, CAR, TRAIN_ID_BY_NAME["person"], IGNORE]
    gts = [blobs(rng, (32, 64), present) for _ in range(3)]
    preds = []
    for gt in gts:
        noise = rng.choice([ROAD, CAR, TRAIN_ID_BY_NAME["sky"], IGNORE], size=gt.shape).astype(np.uint8)
        preds.append(np.where(rng.random(gt.shape) < 0.3, noise, gt))
    metrics = SegmentationMetrics()
    for gt, pred in zip(gts, preds):
        metrics.update(gt, pred)
    ours = metrics.result()
    official = official_cityscapes_iou(tmp_path, gts, preds)
    assert ours["miou"] == pytest.approx(official["averageScoreClasses"], abs=1e-12)
    for name in CLASS_NAMES:
        expected = official["classScores"][name]
        if math.isnan(expected):
            assert name not in ours["iou"]
        else:
            assert ours["iou"][name] == pytest.approx(expected, abs=1e-12)
