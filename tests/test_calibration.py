import numpy as np
import pytest

from autolabel.calibration import REPORTED_THRESHOLDS, Calibration
from autolabel.labels import IGNORE


def _calibration(probs, preds, truth) -> Calibration:
    calibration = Calibration()
    calibration.update(np.array([probs], np.float32), np.array([preds], np.uint8), np.array([truth], np.uint8))
    return calibration


def test_coverage_and_accuracy_count_the_pixels_above_the_threshold():
    calibration = _calibration([0.95, 0.8, 0.7, 0.6, 0.52], [1, 1, 2, 2, 3], [1, 1, 1, 2, 3])
    point = calibration.point(0.65)
    assert (point.kept, point.correct) == (3, 2)
    assert point.coverage == pytest.approx(3 / 5) and point.accuracy == pytest.approx(2 / 3)


def test_a_probability_equal_to_the_threshold_is_not_kept():
    calibration = _calibration([0.7, 0.71], [0, 0], [0, 0])
    assert calibration.point(0.7).kept == 1


def test_pixels_without_a_true_label_are_left_out():
    calibration = _calibration([0.9, 0.9, 0.9], [0, 0, 5], [0, IGNORE, 4])
    point = calibration.point(0.5)
    assert calibration.evaluable == 2
    assert (point.kept, point.correct, point.coverage) == (2, 1, 1.0)


def test_images_accumulate():
    calibration = _calibration([0.9], [0], [0])
    calibration.update(np.array([[0.6]]), np.array([[1]]), np.array([[2]]))
    point = calibration.point(0.5)
    assert (calibration.images, point.kept, point.correct) == (2, 2, 1)


def test_recommended_threshold_is_the_lowest_reaching_the_target_accuracy():
    calibration = _calibration([0.95, 0.9, 0.8, 0.6], [0, 0, 1, 1], [0, 0, 0, 0])
    assert calibration.threshold_for(1.0).threshold == 0.8
    assert calibration.threshold_for(0.5).threshold == 0.5


def test_no_threshold_is_recommended_when_none_reaches_the_target():
    calibration = _calibration([0.99, 0.9], [1, 1], [0, 0])
    assert calibration.threshold_for(0.9) is None


def test_curve_reports_every_tenth_from_half_to_0_95():
    calibration = _calibration([0.9], [0], [0])
    assert [p.threshold for p in calibration.curve()] == list(REPORTED_THRESHOLDS)
    assert REPORTED_THRESHOLDS[0] == 0.5 and REPORTED_THRESHOLDS[-1] == 0.95 and len(REPORTED_THRESHOLDS) == 10


def test_a_threshold_off_the_grid_is_refused():
    with pytest.raises(ValueError, match="grid"):
        _calibration([0.9], [0], [0]).point(0.333)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        Calibration().update(np.zeros((2, 2)), np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))
