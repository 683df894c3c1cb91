"""The teacher's parts, which of them a checkpoint's weights have fitted, and fitting some with the rest frozen.

A converted teacher lacks the point head (and, for single-scale sources, the scale attention); its checkpoint
lists them as untrained, inference warns before using them, and `train --train-only` fits them alone.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from torch import nn

from autolabel.errors import ConfigError

PARTS = ("backbone", "ocr", "attention", "point_head")
"""The `Teacher`'s top-level modules."""
HEADS = ("attention", "point_head")
"""Parts a network may carry untrained: a converted teacher's missing heads, or a head its training switched off."""
UNTRAINED_KEY = "untrained"
"""Checkpoint metadata key: the `HEADS` no training has fitted."""


def parse_parts(parts: Iterable[str]) -> tuple[str, ...]:
    """Validated part names, in `PARTS` order, without repeats."""
    parts = {p.strip() for p in parts if p.strip()}
    unknown = sorted(parts - set(PARTS))
    if unknown or not parts:
        raise ConfigError(f"parts to train must be among {', '.join(PARTS)}, got {', '.join(unknown) or 'none'}")
    return tuple(p for p in PARTS if p in parts)


def freeze_except(model: nn.Module, trainable: Collection[str]) -> list[nn.Parameter]:
    """Turn off gradients of every part but `trainable`; returns the parameters left to train."""
    for name, part in model.named_children():
        part.requires_grad_(name in trainable)
    return [p for p in model.parameters() if p.requires_grad]


def train_mode(model: nn.Module, trainable: Collection[str] | None = None) -> nn.Module:
    """`model.train()`, except that parts outside `trainable` (all train when None) stay in eval mode, so their
    BatchNorm layers normalise with, and never update, their running statistics (and dropout stays off)."""
    model.train()
    if trainable is not None:
        for name, part in model.named_children():
            if name not in trainable:
                part.eval()
    return model


def untrained_after(before: Iterable[str], fitted: Iterable[str]) -> list[str]:
    """The heads still untrained once `fitted` parts have been trained."""
    fitted = set(fitted)
    return [head for head in HEADS if head in set(before) and head not in fitted]


def untrained_in_use(metadata: Mapping, config, scales: Collection[float], pointrend: bool) -> list[str]:
    """The untrained heads (checkpoint metadata) that inference at `scales`, with PointRend on or off, uses;
    `config` is the checkpoint's `TeacherConfig`."""
    untrained = set(metadata.get(UNTRAINED_KEY, ()))
    used = []
    if "attention" in untrained and len(set(scales)) > 1:
        used.append("attention")
    if "point_head" in untrained and pointrend and config.use_pointrend:
        used.append("point_head")
    return used
