"""Evaluation as users score a checkpoint: our numbers against the official Cityscapes evaluator's, on the
prediction files that --save-predictions writes."""

import copy
import math
from pathlib import Path

import pytest

from autolabel.layout import list_samples
from autolabel.synth import SynthConfig, generate
from pipelines.evaluate import evaluate
from tests.runs import evaluate_config


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("evaluate")
    generate(base / "root", base / "truth", SynthConfig(train=1, val=3, train_extra=1, height=64, width=128))
    return base / "root"


def official_scores(root: Path, predictions: Path) -> dict:
    """cityscapesscripts' evaluator over val, finding each prediction by its stem the way it does."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    args = copy.copy(official.args)
    args.predictionPath, args.predictionWalk = str(predictions), None
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized = False
    gt_files = [str(s.label) for s in list_samples(root, "val", "gtFine")]
    pred_files = [official.getPrediction(args, gt) for gt in gt_files]
    return official.evaluateImgLists(pred_files, gt_files, args)


def test_saved_predictions_score_the_same_with_the_official_evaluator(root, teacher_checkpoint, tmp_path):
    ours = evaluate(evaluate_config(root, teacher_checkpoint, "val", save_predictions=tmp_path / "results"))
    official = official_scores(root, tmp_path / "results")
    assert ours.miou == pytest.approx(official["averageScoreClasses"], abs=1e-9)
    for name, expected in official["classScores"].items():
        if math.isnan(expected):
            assert name not in ours.iou
        else:
            assert ours.iou[name] == pytest.approx(expected, abs=1e-9)


def test_one_prediction_file_per_image_named_by_city_and_stem(root, teacher_checkpoint, tmp_path):
    evaluate(evaluate_config(root, teacher_checkpoint, "val", pointrend=False, save_predictions=tmp_path / "results"))
    expected = sorted(f"{s.city}/{s.stem}_pred_labelIds.png" for s in list_samples(root, "val"))
    assert sorted(str(p.relative_to(tmp_path / "results")) for p in (tmp_path / "results").rglob("*.png")) == expected
