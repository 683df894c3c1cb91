import numpy as np

from autolabel import labels


def test_nineteen_train_classes_in_cityscapes_order():
    assert labels.NUM_CLASSES == 19
    assert labels.CLASS_NAMES[0] == "road"
    assert labels.CLASS_NAMES[18] == "bicycle"


def test_label_ids_map_to_train_ids_as_cityscapes_defines():
    ids = np.array([[7, 8, 11, 33], [0, 1, 255, 26]], dtype=np.uint8)
    assert labels.to_train_ids(ids).tolist() == [[0, 1, 2, 18], [255, 255, 255, 13]]


def test_train_ids_round_trip_through_label_ids():
    train = np.arange(19, dtype=np.uint8).reshape(1, 19)
    assert np.array_equal(labels.to_train_ids(labels.to_label_ids(train)), train)


def test_ignore_becomes_unlabeled_label_id():
    assert labels.to_label_ids(np.array([[255]], dtype=np.uint8)).item() == 0


def test_colorize_uses_cityscapes_colours_and_black_for_ignore():
    rgb = labels.colorize(np.array([[0, 255]], dtype=np.uint8))
    assert rgb.shape == (1, 2, 3)
    assert tuple(rgb[0, 0]) == (128, 64, 128)
    assert tuple(rgb[0, 1]) == (0, 0, 0)
