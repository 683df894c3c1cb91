"""The teacher: HRNet-OCR per scale, hierarchical multi-scale attention, PointRend refinement.

Training runs the scale pair (0.5, 1.0) and returns the loss terms; inference lives in
`models.predict`. The same network, at a smaller preset, is the student.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

import torch
from torch import nn

from autolabel.errors import ConfigError
from autolabel.labels import NUM_CLASSES
from models.checkpoint import Checkpoint, load_checkpoint
from models.hrnet import HRNet, HRNetConfig, concat_branches
from models.inputs import InputConfig, adapt_input
from models.losses import batch_class_weights, segmentation_loss
from models.mscale import FUSIONS, MSCALE_TRAIN_SCALES, AttentionHead, fuse_pair, scaled
from models.ocr import AUX_LOSS_WEIGHT, OCRConfig, OCRHead
from models.pointrend import PointHead, PointRendConfig, point_loss, point_train_targets, predict_points

SCALE_LOSS_WEIGHT = 0.05
"""The reference's weight of the optional per-scale supervision."""


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """Everything that defines a teacher/student network; stored whole in its checkpoints."""

    backbone: HRNetConfig = HRNetConfig()
    ocr: OCRConfig = OCRConfig()
    pointrend: PointRendConfig = PointRendConfig()
    num_classes: int = NUM_CLASSES
    attention_channels: int = 256
    use_mscale: bool = True
    """Train on the (0.5, 1.0) pair with attention; False trains a single-scale network."""
    use_pointrend: bool = True
    """Train the point head (and refine by subdivision at inference)."""
    aux_weight: float = AUX_LOSS_WEIGHT
    scale_loss_weight: float = 0.0
    """Weight of the optional per-scale supervision (the reference uses 0.05 when enabled)."""
    point_loss_weight: float = 1.0
    hard_pixel_fraction: float = 1.0
    """Share of the labelled pixels with the highest loss that the segmentation terms average (1.0: all)."""
    class_balance: float = 0.0
    """Weigh each class in the segmentation and point terms by its batch pixel frequency ** -class_balance (0: off);
    both alike, or the point head learns another class prior than the logits it refines."""
    input: InputConfig = InputConfig()
    """The input normalisation the weights were trained with (another one for converted teachers)."""
    fusion: str = "feature"
    """Multi-scale inference fusion: `feature` (on the highest scale's stride-4 grid, refined by PointRend
    subdivision) or `image` (on the images' grids, as NVIDIA's n-scale inference; see `models.mscale.FUSIONS`)."""

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ConfigError(f"TeacherConfig.fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")

    @property
    def align_corners(self) -> bool:
        """align_corners of the network's own bilinear upsampling (its backbone's, and logits to image size)."""
        return self.backbone.align_corners

    @classmethod
    def preset(cls, name: str, **overrides) -> TeacherConfig:
        """A named configuration (`tiny`, `w18s`, `w48`), optionally with fields replaced."""
        try:
            base = TEACHER_PRESETS[name]
        except KeyError:
            raise ConfigError(f"unknown model preset {name!r}; valid presets: {', '.join(TEACHER_PRESETS)}") from None
        return dataclasses.replace(base, **overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> TeacherConfig:
        data = dict(data)
        return cls(
            backbone=HRNetConfig(**data.pop("backbone")),
            ocr=OCRConfig(**data.pop("ocr")),
            pointrend=PointRendConfig(**data.pop("pointrend")),
            input=InputConfig(**data.pop("input", {})),
            **data,
        )


TEACHER_PRESETS: Mapping[str, TeacherConfig] = MappingProxyType(
    {
        "tiny": TeacherConfig(
            HRNetConfig.preset("tiny"), OCRConfig.preset("tiny"), PointRendConfig.preset("tiny"), attention_channels=16
        ),
        "w18s": TeacherConfig(HRNetConfig.preset("w18s"), OCRConfig.preset("w18s"), PointRendConfig.preset("default")),
        "w48": TeacherConfig(HRNetConfig.preset("w48"), OCRConfig.preset("w48"), PointRendConfig.preset("default")),
    }
)


class ScaleOutput(NamedTuple):
    """One scale's predictions, all at stride 4 of that scale's input."""

    logits: torch.Tensor  # (N, K, h, w)
    aux_logits: torch.Tensor  # (N, K, h, w)
    attention: torch.Tensor | None  # (N, 1, h, w); None where not asked for
    fine: torch.Tensor  # (N, sum(widths), h, w): PointRend's fine-grained features


class Teacher(nn.Module):
    def __init__(self, config: TeacherConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = HRNet(config.backbone)
        self.ocr = OCRHead(self.backbone.out_channels, config.num_classes, config.ocr)
        self.attention = AttentionHead(config.ocr.mid_channels, config.attention_channels)
        self.point_head = PointHead(
            self.backbone.out_channels, config.num_classes, config.pointrend.fc_channels, config.pointrend.num_fc
        )

    def run_scale(self, images: torch.Tensor, attention: bool = True) -> ScaleOutput:
        """Backbone + OCR + attention on one (already resized) batch (N, 3, H, W).

        `attention=False` skips the attention head, whose map the highest scale of a fusion never uses.
        """
        images = adapt_input(images, self.config.input)  # (N, 3, H, W) as the weights were trained on
        fine = concat_branches(self.backbone(images), self.config.align_corners)  # (N, sum(widths), H/4, W/4)
        ocr = self.ocr(fine)
        return ScaleOutput(ocr.logits, ocr.aux_logits, self.attention(ocr.mid) if attention else None, fine)

    def losses(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted loss terms for a batch: images (N, 3, H, W), labels (N, H, W) int64 with 255 ignored."""
        cfg = self.config
        hi = self.run_scale(images, attention=False)
        if cfg.use_mscale:
            lo = self.run_scale(scaled(images, MSCALE_TRAIN_SCALES[0]))
            joint = fuse_pair(lo.logits, hi.logits, lo.attention)  # (N, K, H/4, W/4)
            joint_aux = fuse_pair(lo.aux_logits, hi.aux_logits, lo.attention)
        else:
            joint, joint_aux = hi.logits, hi.aux_logits
        def seg_loss(logits: torch.Tensor) -> torch.Tensor:
            return segmentation_loss(logits, labels, cfg.hard_pixel_fraction, cfg.class_balance)

        terms = {"seg": seg_loss(joint), "aux": cfg.aux_weight * seg_loss(joint_aux)}
        if cfg.use_mscale and cfg.scale_loss_weight > 0:
            terms["scales"] = cfg.scale_loss_weight * (seg_loss(lo.logits) + seg_loss(hi.logits))
        if cfg.use_pointrend:
            coords, point_labels = point_train_targets(joint.detach(), labels, cfg.pointrend)
            point_logits = predict_points(self.point_head, hi.fine, joint, coords)  # (N, K, P)
            weights = batch_class_weights(labels, cfg.num_classes, cfg.class_balance) if cfg.class_balance > 0 else None
            terms["point"] = cfg.point_loss_weight * point_loss(point_logits, point_labels, class_weights=weights)
        return terms

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.losses(images, labels)


def build_model(config: TeacherConfig | str) -> Teacher:
    return Teacher(TeacherConfig.preset(config) if isinstance(config, str) else config)


def model_from_checkpoint(ckpt: Checkpoint) -> Teacher:
    """Rebuild a model from a checkpoint alone (its stored config and weights)."""
    model = Teacher(TeacherConfig.from_dict(ckpt.config))
    model.load_state_dict(ckpt.state_dict)
    return model.eval()


def load_model(path) -> tuple[Teacher, Checkpoint]:
    ckpt = load_checkpoint(path)
    return model_from_checkpoint(ckpt), ckpt
