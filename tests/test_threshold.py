import numpy as np
import pytest
import torch

from autolabel.errors import ConfigError
from autolabel.labels import IGNORE
from autolabel.threshold import check_threshold, rethreshold, threshold_probs


def _probs(rows: list[list[float]]) -> torch.Tensor:
    """(1, C, 1, W) probabilities from a list of per-pixel class distributions."""
    return torch.tensor(rows, dtype=torch.float32).T[None, :, None, :]


def test_confident_pixels_keep_their_class_and_others_become_ignore():
    probs = _probs([[0.9, 0.1, 0.0], [0.3, 0.3, 0.4], [0.0, 0.2, 0.8]])
    labels = threshold_probs(probs, 0.5)
    assert labels.tolist() == [[[0, IGNORE, 2]]]


def test_probability_exactly_at_threshold_is_not_kept():
    probs = _probs([[0.5, 0.5], [0.75, 0.25], [0.25, 0.75]])
    assert threshold_probs(probs, 0.5).tolist() == [[[IGNORE, 0, 1]]]
    assert threshold_probs(probs, 0.75).tolist() == [[[IGNORE, IGNORE, IGNORE]]]


def test_output_is_uint8_on_the_input_device_with_batch_shape():
    probs = torch.softmax(torch.randn(2, 19, 8, 16), dim=1)
    labels, confidence = threshold_probs(probs, 0.2, with_confidence=True)
    assert labels.dtype == torch.uint8 and confidence.dtype == torch.uint8
    assert labels.shape == confidence.shape == (2, 8, 16)
    assert labels.device == confidence.device == probs.device


def test_confidence_is_the_tenth_step_of_the_max_probability_and_zero_where_unlabelled():
    probs = _probs([[1.0, 0.0], [0.6, 0.4], [0.1, 0.9], [0.61, 0.39], [0.3, 0.7]])
    _, confidence = threshold_probs(probs, 0.5, with_confidence=True)
    assert confidence.tolist() == [[[9, 5, 8, 6, 6]]]
    _, confidence = threshold_probs(probs, 0.65, with_confidence=True)
    assert confidence.tolist() == [[[9, 0, 8, 0, 6]]]


def test_zero_threshold_labels_every_pixel_with_argmax():
    probs = torch.softmax(torch.randn(1, 5, 4, 4), dim=1)
    assert torch.equal(threshold_probs(probs, 0.0), probs.argmax(dim=1).to(torch.uint8))


@pytest.mark.parametrize("t", [-0.1, 1.0, 1.5, float("nan"), float("inf")])
def test_threshold_outside_unit_interval_is_a_config_error(t):
    with pytest.raises(ConfigError, match="threshold"):
        check_threshold(t)


def test_more_than_255_classes_is_rejected():
    with pytest.raises(ValueError, match="class count"):
        threshold_probs(torch.rand(1, 256, 2, 2))


def test_rethreshold_drops_pixels_at_or_below_the_new_threshold():
    labels = np.array([[3, 4, 5, IGNORE]], dtype=np.uint8)
    confidence = np.array([[9, 8, 7, 0]], dtype=np.uint8)
    kept, kept_confidence = rethreshold(labels, confidence, 0.8)
    assert kept.tolist() == [[3, 4, IGNORE, IGNORE]]
    assert kept_confidence.tolist() == [[9, 8, 0, 0]]


@pytest.mark.parametrize("t", [0.6, 0.7, 0.8, 0.9])
def test_rethreshold_at_a_multiple_of_a_tenth_equals_thresholding_the_probabilities(t):
    probs = torch.softmax(3 * torch.randn(1, 19, 32, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    probs[0, 0, 0, :4] = torch.tensor([t, t + 1e-6, 0.9, 0.95])  # at and just above the threshold
    labels, confidence = threshold_probs(probs, 0.5, with_confidence=True)
    exact = threshold_probs(probs, t)[0].numpy()
    assert np.array_equal(rethreshold(labels[0].numpy(), confidence[0].numpy(), t)[0], exact)


def test_rethreshold_between_steps_acts_as_the_next_step_up():
    probs = torch.softmax(3 * torch.randn(1, 19, 32, 32), dim=1)
    labels, confidence = threshold_probs(probs, 0.5, with_confidence=True)
    re, _ = rethreshold(labels[0].numpy(), confidence[0].numpy(), 0.83)
    assert np.array_equal(re, threshold_probs(probs, 0.9)[0].numpy())
