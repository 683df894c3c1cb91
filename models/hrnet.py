"""HRNetV2 backbone: four parallel branches at strides 4, 8, 16 and 32, fused repeatedly.

Module names follow the reference implementation (conv1, bn1, conv2, bn2, layer1,
transition1-3, stage2-4 with branches / fuse_layers), so its state dicts map key for key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from autolabel.errors import ConfigError

NUM_BRANCHES = 4
BOTTLENECK_EXPANSION = 4
STEM_STRIDE = 4
"""Stride of the first (highest-resolution) branch."""


@dataclasses.dataclass(frozen=True)
class HRNetConfig:
    """Architecture of an HRNetV2 backbone; `HRNetConfig.preset(name)` gives the named ones."""

    stem_channels: int = 64
    stage1_blocks: int = 4
    """Bottlenecks in stage 1."""
    stage1_channels: int = 64
    """Bottleneck width in stage 1 (its output has 4x as many channels)."""
    widths: tuple[int, int, int, int] = (48, 96, 192, 384)
    """Channels of the branches at strides 4, 8, 16, 32."""
    stage_modules: tuple[int, int, int] = (1, 4, 3)
    """HighResolutionModules in stages 2, 3 and 4."""
    branch_blocks: int = 4
    """BasicBlocks per branch in every HighResolutionModule."""
    align_corners: bool = False
    """Bilinear upsampling of lower-resolution branches (fusion and head input) with align_corners=True, as
    the official HRNet-OCR trained its weights; NVIDIA's and mmsegmentation's use False."""

    def __post_init__(self) -> None:
        # Checkpoints and JSON hand sequences back as lists; keep the config hashable.
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "stage_modules", tuple(self.stage_modules))
        if len(self.widths) != NUM_BRANCHES:
            raise ConfigError(f"HRNetConfig.widths needs {NUM_BRANCHES} values, got {self.widths}")
        if len(self.stage_modules) != NUM_BRANCHES - 1:
            raise ValueError(
                f"HRNetConfig.stage_modules needs {NUM_BRANCHES - 1} values (stages 2-4), "
                f"got {self.stage_modules}"
            )
        counts = (self.stem_channels, self.stage1_blocks, self.stage1_channels, self.branch_blocks)
        if min(counts + self.widths + self.stage_modules) < 1:
            raise ConfigError(f"HRNetConfig values must all be >= 1, got {self}")

    @property
    def stage1_out_channels(self) -> int:
        return self.stage1_channels * BOTTLENECK_EXPANSION

    @classmethod
    def preset(cls, name: str) -> HRNetConfig:
        """The named configuration: one of `HRNET_PRESETS`."""
        try:
            return HRNET_PRESETS[name]
        except KeyError:
            valid = ", ".join(sorted(HRNET_PRESETS))
            raise ConfigError(f"unknown HRNet preset {name!r}; valid presets: {valid}") from None


HRNET_PRESETS: Mapping[str, HRNetConfig] = MappingProxyType(
    {
        "tiny": HRNetConfig(
            stem_channels=16,
            stage1_blocks=1,
            stage1_channels=16,
            widths=(8, 16, 32, 64),
            stage_modules=(1, 1, 1),
            branch_blocks=1,
        ),
        "w18s": HRNetConfig(
            stage1_blocks=2, widths=(18, 36, 72, 144), stage_modules=(1, 3, 2), branch_blocks=2
        ),
        "w48": HRNetConfig(),
    }
)
"""HRNet-W18-Small-v2 (`w18s`), HRNet-W48 (`w48`) and a CPU-test-sized `tiny`."""


def conv_bn(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, relu: bool = True
) -> nn.Sequential:
    """Conv (no bias, 'same' padding) + BatchNorm [+ ReLU]."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False
        ),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def resize(x: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of (N, C, h, w) to (N, C, *size)."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity shortcut; keeps channels and resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, h, w) -> (N, C, h, w)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 residual block with 4x channel expansion."""

    def __init__(self, in_channels: int, planes: int) -> None:
        super().__init__()
        out_channels = planes * BOTTLENECK_EXPANSION
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            conv_bn(in_channels, out_channels, 1, relu=False)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, Cin, h, w) -> (N, 4P, h, w)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))


def _fuse_layer(widths: Sequence[int], source: int, target: int) -> nn.Module:
    """Brings branch `source` to branch `target`'s width (and, going down, resolution)."""
    if source == target:
        return nn.Identity()
    if source > target:  # to a higher resolution: 1x1 conv here, bilinear resize in forward
        return conv_bn(widths[source], widths[target], 1, relu=False)
    steps = target - source  # one stride-2 3x3 conv per halving; ReLU between, not after
    return nn.Sequential(
        *(conv_bn(widths[source], widths[source], 3, stride=2) for _ in range(steps - 1)),
        conv_bn(widths[source], widths[target], 3, stride=2, relu=False),
    )


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks, then every branch receives the sum of all others."""

    def __init__(self, widths: Sequence[int], num_blocks: int, align_corners: bool = False) -> None:
        super().__init__()
        self.align_corners = align_corners
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(width) for _ in range(num_blocks))) for width in widths
        )
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(_fuse_layer(widths, source, target) for source in range(len(widths)))
            for target in range(len(widths))
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """feats[i] (N, widths[i], h_i, w_i) -> same shapes."""
        feats = [branch(x) for branch, x in zip(self.branches, feats, strict=True)]
        fused = []
        for target, layers in enumerate(self.fuse_layers):
            size = feats[target].shape[-2:]
            total = feats[target]
            for source, (layer, x) in enumerate(zip(layers, feats, strict=True)):
                if source < target:
                    total = total + layer(x)
                elif source > target:
                    total = total + resize(layer(x), size, self.align_corners)
            fused.append(self.relu(total))
        return fused


def _transition(in_widths: Sequence[int], out_widths: Sequence[int]) -> nn.ModuleList:
    """Adapts existing branches' widths and spawns new branches from the lowest resolution."""
    layers: list[nn.Module] = []
    for i, width in enumerate(out_widths):
        if i < len(in_widths):
            same = in_widths[i] == width
            layers.append(nn.Identity() if same else conv_bn(in_widths[i], width, 3))
        else:
            # Nested like the reference implementation's, so state-dict keys line up.
            layers.append(nn.Sequential(conv_bn(in_widths[-1], width, 3, stride=2)))
    return nn.ModuleList(layers)


def _apply_transition(layers: nn.ModuleList, feats: list[torch.Tensor]) -> list[torch.Tensor]:
    return [layer(feats[min(i, len(feats) - 1)]) for i, layer in enumerate(layers)]


class HRNet(nn.Module):
    """HRNetV2: image (N, 3, H, W) -> 4 feature maps at strides 4, 8, 16, 32.

    Sizes not divisible by 32 are fine: branch i has size ceil(H / (4 * 2**i)).
    """

    def __init__(self, config: HRNetConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths
        self.conv1 = nn.Conv2d(3, config.stem_channels, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(config.stem_channels)
        self.conv2 = nn.Conv2d(
            config.stem_channels, config.stem_channels, 3, stride=2, padding=1, bias=False
        )
        self.bn2 = nn.BatchNorm2d(config.stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(
            Bottleneck(config.stem_channels, config.stage1_channels),
            *(
                Bottleneck(config.stage1_out_channels, config.stage1_channels)
                for _ in range(config.stage1_blocks - 1)
            ),
        )
        self.transition1 = _transition([config.stage1_out_channels], widths[:2])
        self.stage2 = self._stage(widths[:2], config.stage_modules[0])
        self.transition2 = _transition(widths[:2], widths[:3])
        self.stage3 = self._stage(widths[:3], config.stage_modules[1])
        self.transition3 = _transition(widths[:3], widths)
        self.stage4 = self._stage(widths, config.stage_modules[2])

    def _stage(self, widths: Sequence[int], num_modules: int) -> nn.Sequential:
        return nn.Sequential(
            *(
                HighResolutionModule(widths, self.config.branch_blocks, self.config.align_corners)
                for _ in range(num_modules)
            )
        )

    @property
    def widths(self) -> tuple[int, ...]:
        return self.config.widths

    @property
    def out_channels(self) -> int:
        """Channels of `concat_branches` of the output."""
        return sum(self.config.widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (N, 3, H, W) -> [(N, widths[i], ceil(H / 2**(i+2)), ceil(W / 2**(i+2))), i = 0..3]."""
        x = self.relu(self.bn1(self.conv1(x)))  # (N, stem, H/2, W/2)
        x = self.relu(self.bn2(self.conv2(x)))  # (N, stem, H/4, W/4)
        x = self.layer1(x)  # (N, 4 * stage1_channels, H/4, W/4)
        feats = self.stage2(_apply_transition(self.transition1, [x]))
        feats = self.stage3(_apply_transition(self.transition2, feats))
        return self.stage4(_apply_transition(self.transition3, feats))


def concat_branches(feats: Sequence[torch.Tensor], align_corners: bool = False) -> torch.Tensor:
    """Branches resized to the first one's size and concatenated: (N, sum(widths), H/4, W/4)."""
    size = feats[0].shape[-2:]
    return torch.cat([feats[0], *(resize(x, size, align_corners) for x in feats[1:])], dim=1)
