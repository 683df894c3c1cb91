import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import IGNORE_INDEX, batch_class_weights, segmentation_loss


def _labels() -> torch.Tensor:
    labels = torch.zeros(1, 10, 10, dtype=torch.long)  # class 0: 90 pixels
    labels[0, 0, :] = 1  # class 1: 10 pixels
    return labels


def test_class_weights_lift_a_rare_class_by_its_frequency_ratio_to_the_power():
    weights = batch_class_weights(_labels(), num_classes=3, power=0.5)
    assert weights[1] / weights[0] == pytest.approx(math.sqrt(9))


def test_class_weights_average_one_over_the_labelled_pixels_and_zero_for_absent_classes():
    labels = _labels()
    labels[0, 5, :] = IGNORE_INDEX
    weights = batch_class_weights(labels, num_classes=3, power=1.0)
    counts = torch.tensor([80.0, 10.0, 0.0])
    assert float((weights * counts).sum() / counts.sum()) == pytest.approx(1.0)
    assert weights[2] == 0


def test_class_balance_zero_is_plain_cross_entropy():
    logits = torch.randn(1, 3, 10, 10)
    plain = F.cross_entropy(logits, _labels())
    assert float(segmentation_loss(logits, _labels(), class_power=0.0)) == pytest.approx(float(plain))


def test_class_balance_makes_the_rare_class_errors_cost_more():
    logits = torch.zeros(1, 3, 10, 10)
    logits[:, 0] = 5.0  # predicts class 0 everywhere: only the rare class's pixels are wrong
    assert segmentation_loss(logits, _labels(), class_power=1.0) > segmentation_loss(logits, _labels())


def test_hard_fraction_averages_only_the_hardest_pixels():
    logits = torch.zeros(1, 3, 10, 10)
    logits[:, 0] = 5.0
    per_pixel = F.cross_entropy(logits, _labels(), reduction="none").flatten()
    hardest = per_pixel.sort(descending=True).values[:10].mean()
    assert float(segmentation_loss(logits, _labels(), hard_fraction=0.1)) == pytest.approx(float(hardest))


def test_weighted_and_hard_losses_are_zero_not_nan_when_every_pixel_is_ignored():
    logits = torch.randn(1, 3, 10, 10, requires_grad=True)
    labels = torch.full((1, 10, 10), IGNORE_INDEX)
    loss = segmentation_loss(logits, labels, hard_fraction=0.25, class_power=0.5)
    loss.backward()
    assert float(loss.detach()) == 0.0 and logits.grad is not None
