"""The Cityscapes label schema, taken from cityscapesscripts (never retyped here).

Label ids (0..33, -1) are what Cityscapes PNGs store; train ids (0..18) are what the
networks predict; 255 marks pixels that are ignored by training and evaluation.
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

IGNORE = 255
"""Train id of pixels that carry no label (unlabelled, void classes, below threshold)."""

_TRAIN_LABELS = sorted(
    (lab for lab in _CS_LABELS if 0 <= lab.trainId < IGNORE), key=lambda lab: lab.trainId
)

NUM_CLASSES = len(_TRAIN_LABELS)
"""19 evaluated classes."""

CLASS_NAMES: tuple[str, ...] = tuple(lab.name for lab in _TRAIN_LABELS)
"""Class name by train id: CLASS_NAMES[0] == 'road'."""

TRAIN_ID_TO_LABEL_ID = np.array([lab.id for lab in _TRAIN_LABELS], dtype=np.uint8)
"""(19,) label id of every train id."""

UNLABELED_LABEL_ID = next(lab.id for lab in _CS_LABELS if lab.name == "unlabeled")


KNOWN_LABEL_IDS = np.array(sorted({lab.id % 256 for lab in _CS_LABELS}), dtype=np.uint8)
"""Every value a Cityscapes label-id PNG may hold: the schema's ids, with -1 (license plate) stored as 255."""


def unknown_label_ids(label_ids: np.ndarray) -> list[int]:
    """The values of a label-id map (H, W) uint8 that the schema does not know, ascending."""
    present = np.flatnonzero(np.bincount(label_ids.ravel(), minlength=256))
    return [int(v) for v in np.setdiff1d(present, KNOWN_LABEL_IDS)]


def _label_id_lut() -> np.ndarray:
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for lab in _CS_LABELS:
        if 0 <= lab.id < 256 and 0 <= lab.trainId < IGNORE:
            lut[lab.id] = lab.trainId
    return lut


LABEL_ID_TO_TRAIN_ID = _label_id_lut()
"""(256,) lookup table: label id -> train id, 255 for everything not evaluated."""


def _palette() -> np.ndarray:
    palette = np.zeros((256, 3), dtype=np.uint8)
    for lab in _TRAIN_LABELS:
        palette[lab.trainId] = lab.color
    return palette


TRAIN_ID_PALETTE = _palette()
"""(256, 3) RGB colour of every train id (ignore is black)."""

LABEL_ID_BY_NAME: dict[str, int] = {lab.name: lab.id for lab in _CS_LABELS if lab.id >= 0}
"""Cityscapes label id of every label name, e.g. 'road' -> 7."""

TRAIN_ID_BY_NAME: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a label-id map (H, W) uint8 to train ids (H, W) uint8, 255 = ignore."""
    return LABEL_ID_TO_TRAIN_ID[label_ids]


def to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Map a train-id map (H, W) to label ids; ignore (255) becomes 0 'unlabeled'."""
    lut = np.full(256, UNLABELED_LABEL_ID, dtype=np.uint8)
    lut[:NUM_CLASSES] = TRAIN_ID_TO_LABEL_ID
    return lut[train_ids]


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """Colour-code a train-id map (H, W) as an RGB image (H, W, 3) uint8."""
    return TRAIN_ID_PALETTE[train_ids]
