"""Calibration as users run it: the teacher over a labelled split, every threshold scored against the truth."""

from pathlib import Path

import pytest

from autolabel.errors import ConfigError
from autolabel.images import read_image, read_label
from autolabel.labels import IGNORE, to_train_ids
from autolabel.layout import list_samples
from autolabel.synth import SynthConfig, generate
from autolabel.threshold import threshold_probs
from models.teacher import load_model
from pipelines.calibrate import calibrate
from pipelines.evaluate import predict_probabilities
from tests.runs import evaluate_config


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("calibrate")
    generate(base / "root", base / "truth", SynthConfig(train=1, val=2, train_extra=1, height=64, width=128))
    return base / "root"


def test_coverage_and_accuracy_are_those_of_the_labels_label_writes(root, teacher_checkpoint):
    result = calibrate(evaluate_config(root, teacher_checkpoint, "val", scales=(1.0,)), target_accuracy=0.99)
    model, _ = load_model(teacher_checkpoint)
    kept = correct = evaluable = 0
    for sample in list_samples(root, "val", "gtFine"):
        image = read_image(sample.image)
        truth = to_train_ids(read_label(sample.label))
        probs = predict_probabilities(model, image, (1.0,), True)[None]  # (1, K, H, W)
        labels = threshold_probs(probs, 0.6)[0].numpy()
        valid = truth != IGNORE
        evaluable += int(valid.sum())
        kept += int((valid & (labels != IGNORE)).sum())
        correct += int((valid & (labels == truth)).sum())
    point = next(p for p in result.points if p.threshold == 0.6)
    assert (point.kept, point.correct, result.evaluable_pixels) == (kept, correct, evaluable)


def test_result_lists_ten_thresholds_with_falling_coverage(root, teacher_checkpoint):
    result = calibrate(evaluate_config(root, teacher_checkpoint, "val", scales=(1.0,), pointrend=False))
    coverage = [p.coverage for p in result.points]
    assert [p.threshold for p in result.points] == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert coverage == sorted(coverage, reverse=True)
    assert result.to_dict()["thresholds"][0]["threshold"] == 0.5


def test_split_without_fine_labels_is_a_named_error(root, teacher_checkpoint):
    from autolabel.errors import DatasetError

    with pytest.raises(DatasetError, match="train_extra"):
        calibrate(evaluate_config(root, teacher_checkpoint, "train_extra", scales=(1.0,)))


@pytest.mark.parametrize("target", [0.0, 1.5, float("nan")])
def test_a_target_accuracy_outside_0_1_is_refused_before_any_prediction(root, teacher_checkpoint, target):
    def no_model():
        raise AssertionError("predicted before checking the target")

    with pytest.raises(ConfigError, match="target accuracy"):
        calibrate(evaluate_config(root, teacher_checkpoint, "val"), target_accuracy=target, model=no_model)
