"""Convert a published teacher's checkpoint (NVIDIA, official HRNet-OCR, mmsegmentation) into this project's."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from models.checkpoint import Checkpoint, file_sha256, save_checkpoint
from models.convert import convert_checkpoint

PUBLISHED = {
    "nvidia": "NVIDIA semantic-segmentation ocrnet.HRNet_Mscale: 86.9 mIoU Cityscapes val at scales 0.5/1.0/2.0",
    "hrnet-ocr": "HRNet-Semantic-Segmentation HRNet-OCR W48: 81.6 mIoU Cityscapes val, single scale",
    "mmseg": "mmsegmentation OCRNet HRNetV2p-W48: 80.7-81.4 mIoU Cityscapes val",
}
RECOMMENDED_SCALES = {"nvidia": (0.5, 1.0, 2.0), "hrnet-ocr": (1.0,), "mmseg": (1.0,)}
"""Scales the source was published at; scales other than 1.0 use the attention head, untrained unless NVIDIA's."""


@dataclasses.dataclass(frozen=True)
class ConvertSummary:
    out: str
    sha256: str
    source: str
    source_file: str
    source_sha256: str
    preset: str
    consumed: int
    folded_biases: int
    zero_filled: int
    skipped: list[str]
    untrained: list[str]
    recommended_scales: list[float]
    input: dict


def convert(src: Path, source: str, out: Path, preset: str = "w48") -> ConvertSummary:
    """Read `src` safely, map it onto `preset`'s network and write a checkpoint `evaluate`, `label` and
    `train --init` accept; its metadata says where it came from and which parts are untrained."""
    src, out = Path(src), Path(out)
    conversion = convert_checkpoint(src, source, preset)
    source_sha = file_sha256(src)
    metadata = conversion.metadata() | {
        "converted_from": {"source": source, "file": src.name, "sha256": source_sha, "published": PUBLISHED[source],
                           "recommended_scales": list(RECOMMENDED_SCALES[source])},
        "preprocessing": dataclasses.asdict(conversion.config.input),
        "torch": str(torch.__version__),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    sha = save_checkpoint(out, Checkpoint(conversion.config.to_dict(), conversion.state_dict, metadata))
    return ConvertSummary(str(out), sha, source, str(src), source_sha, preset, len(conversion.consumed),
                          len(conversion.folded), len(conversion.zero_filled), list(conversion.skipped),
                          list(conversion.untrained), list(RECOMMENDED_SCALES[source]),
                          dataclasses.asdict(conversion.config.input))
