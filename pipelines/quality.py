"""How good are labels? Coverage and accuracy of auto-labels and hand-made coarse labels against the truth."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from autolabel.images import read_label
from autolabel.labels import IGNORE, to_train_ids
from autolabel.layout import label_path, list_samples
from autolabel.store import LabelStore


@dataclass
class LabelQuality:
    """Pixel counts over images whose true labels are known; ratios as properties."""

    images: int = 0
    evaluable: int = 0
    """Pixels whose true label is not ignore."""
    labelled: int = 0
    """Evaluable pixels that carry a label (not 255)."""
    correct: int = 0
    """Labelled pixels whose label equals the truth."""

    def update(self, labels: np.ndarray, truth: np.ndarray) -> None:
        valid = truth != IGNORE
        labelled = valid & (labels != IGNORE)
        self.images += 1
        self.evaluable += int(valid.sum())
        self.labelled += int(labelled.sum())
        self.correct += int((labelled & (labels == truth)).sum())

    @property
    def labelled_fraction(self) -> float:
        return self.labelled / self.evaluable if self.evaluable else 0.0

    @property
    def accuracy(self) -> float:
        """Accuracy of the labelled pixels."""
        return self.correct / self.labelled if self.labelled else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "labelled_fraction": self.labelled_fraction, "accuracy": self.accuracy}


def _truth(truth_root: Path, split: str, stem: str) -> np.ndarray:
    return to_train_ids(read_label(label_path(truth_root, split, stem, "gtFine")))


def store_quality(store_url: str, truth_root: Path, split: str = "train_extra") -> LabelQuality:
    """Coverage and accuracy of a label store's maps against the true fine labels under `truth_root`."""
    store = LabelStore.open(store_url)
    quality = LabelQuality()
    for image_id in sorted(store.completed_ids()):
        quality.update(store.read(image_id), _truth(truth_root, split, image_id))
    return quality


def coarse_quality(root: Path, truth_root: Path, split: str = "train_extra") -> LabelQuality:
    """Coverage and accuracy of the hand-made gtCoarse labels of `split` against the true fine labels."""
    quality = LabelQuality()
    for sample in list_samples(Path(root), split, "gtCoarse"):
        quality.update(to_train_ids(read_label(sample.label)), _truth(truth_root, split, sample.stem))
    return quality
