import numpy as np
import pytest

from autolabel.labels import IGNORE, TRAIN_ID_PALETTE
from autolabel.overlay import render_overlay


def test_labelled_pixels_blend_image_and_class_colour_and_ignore_stays_plain():
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    labels = np.array([[0, 13, IGNORE], [IGNORE, 10, 0]], dtype=np.uint8)
    out = render_overlay(image, labels, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    road = np.rint((100 + TRAIN_ID_PALETTE[0].astype(float)) / 2)
    assert np.array_equal(out[0, 0], road) and np.array_equal(out[1, 2], road)
    assert np.array_equal(out[0, 2], image[0, 2]) and np.array_equal(out[1, 0], image[1, 0])


def test_alpha_one_shows_only_the_class_colours():
    image = np.random.default_rng(0).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    labels = np.full((4, 4), 11, dtype=np.uint8)
    expected = np.broadcast_to(TRAIN_ID_PALETTE[11], (4, 4, 3))
    assert np.array_equal(render_overlay(image, labels, alpha=1.0), expected)


def test_labels_of_another_size_are_rejected():
    with pytest.raises(ValueError, match="do not match"):
        render_overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.uint8))
