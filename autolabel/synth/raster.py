"""Labels from polygons: Cityscapes polygon documents, their label-id maps rasterised by cityscapesscripts, and
the coarse annotation traced from a fine label map."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

import cv2
import numpy as np
from cityscapesscripts.helpers.annotation import Annotation, CsPoly
from cityscapesscripts.helpers.labels import labels as _CS_LABELS
from cityscapesscripts.preparation.json2labelImg import createLabelImage

from autolabel.labels import IGNORE, LABEL_ID_TO_TRAIN_ID, UNLABELED_LABEL_ID
from autolabel.synth.config import Array

THIN_LABELS = frozenset({"pole", "traffic light", "traffic sign"})
LABEL_NAME_BY_ID: Mapping[int, str] = MappingProxyType({lab.id: lab.name for lab in _CS_LABELS if lab.id >= 0})


def annotation_json(height: int, width: int, objects: Iterable[tuple[str, Array]]) -> dict:
    """A Cityscapes polygons document; objects in painter's order."""
    return {"imgHeight": height, "imgWidth": width,
            "objects": [{"label": name, "polygon": np.asarray(poly).tolist()} for name, poly in objects]}


def rasterise(doc: dict) -> Array:
    """Label ids (H, W) uint8 of a polygons document, drawn by cityscapesscripts' createLabelImage."""
    annotation = Annotation()
    annotation.imgHeight, annotation.imgWidth = doc["imgHeight"], doc["imgWidth"]
    for i, obj in enumerate(doc["objects"]):
        poly = CsPoly()
        poly.fromJsonText(obj, i)
        annotation.objects.append(poly)
    return np.asarray(createLabelImage(annotation, "ids"), dtype=np.uint8)


def coarse_annotation(fine_ids: Array, rng: np.random.Generator, inset: int, min_unlabelled: float
                      ) -> tuple[dict, Array]:
    """Coarse polygons of a fine label map, as an annotator would draw them, and their label ids.

    Each region of an evaluated class is eroded by `inset` px and traced with few vertices; holes
    become 'unlabeled' polygons drawn over it. Thin classes are mostly skipped, small regions often.
    The inset grows until at least `min_unlabelled` of the pixels stay unlabelled.
    """
    height, width = fine_ids.shape
    small = 0.002 * height * width
    while True:
        entries = []
        eps = max(1.0, 0.5 * inset)
        for label_id in np.unique(fine_ids):
            if LABEL_ID_TO_TRAIN_ID[label_id] == IGNORE:
                continue
            name = LABEL_NAME_BY_ID[int(label_id)]
            depth = cv2.distanceTransform((fine_ids == label_id).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            mask = (depth > inset).astype(np.uint8)  # the region eroded by a disc of radius `inset`
            contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
            if hierarchy is None:
                continue
            parents = hierarchy[0][:, 3]
            for i in np.flatnonzero(parents == -1):
                area = cv2.contourArea(contours[i])
                keep = 0.15 if name in THIN_LABELS else (0.4 if area < small else 0.85)
                outline = cv2.approxPolyDP(contours[i], eps, True)[:, 0]
                if rng.random() >= keep or len(outline) < 3:
                    continue
                holes = [cv2.approxPolyDP(contours[j], eps, True)[:, 0] for j in np.flatnonzero(parents == i)]
                entries.append((area, [(name, outline), *(("unlabeled", hole) for hole in holes)]))
        entries.sort(key=lambda e: -e[0])
        doc = annotation_json(height, width, (obj for _, objs in entries for obj in objs))
        ids = rasterise(doc)
        if np.mean(ids == UNLABELED_LABEL_ID) >= min_unlabelled:
            return doc, ids
        inset = max(inset + 1, round(inset * 1.5))
