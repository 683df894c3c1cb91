"""Published teachers in this project's network: state dicts of NVIDIA semantic-segmentation (`ocrnet.HRNet_Mscale`),
the official HRNet-Semantic-Segmentation HRNet-OCR and mmsegmentation's OCRNet, mapped tensor for tensor.

The three name the same HRNet-W48 + OCR modules differently and differ in details that change what the network
computes; each is handled so the converted network computes what the source does:

- key prefixes (`module.`, `model.`) and wrappers (`{"state_dict": ...}`) are removed;
- a conv bias followed by BatchNorm (NVIDIA's and the official OCR head) is folded into the BatchNorm's running
  mean: BN(conv(x) + b) with mean m is BN(conv(x)) with mean m - b, exactly, in eval and in training;
- a bias the source lacks where this network has one is filled with zeros (exact);
- the official HRNet-OCR upsamples with align_corners=True: the converted config says so (`HRNetConfig`);
- the OCR spatial gather's softmax runs over pixels, as the published weights expect (`OCRConfig.gather_softmax`);
- the input normalisation each source trained with is recorded (`models.inputs.InputConfig`);
- NVIDIA's n-scale inference fuses on the images' grids: its teachers get `fusion="image"`.

Parts the source lacks (the point head always; the scale attention for hrnet-ocr and mmseg) keep their fresh
initialisation and are listed as untrained. Training-only entries (loss weights) are skipped; anything else that
has no counterpart is an error naming the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from autolabel.errors import CheckpointError
from models.inputs import InputConfig
from models.parts import HEADS, UNTRAINED_KEY
from models.teacher import Teacher, TeacherConfig

SOURCES = ("nvidia", "hrnet-ocr", "mmseg")

_BACKBONE_MODULES = ("conv1", "bn1", "conv2", "bn2", "layer1", "transition1", "transition2", "transition3",
                     "stage2", "stage3", "stage4")


def _object_context(src: str, bn: str, tail: str) -> dict[str, str]:
    """The OCR object-context block of the official code (and NVIDIA's copy): f_pixel / f_object are two
    conv + BNReLU pairs, f_down / f_up one; `bn` is the BatchNorm's suffix inside BNReLU."""
    block = f"{src}ocr_distri_head.object_context_block"
    table = {}
    for name, target in (("f_pixel", "query"), ("f_object", "key")):
        table |= {f"{block}.{name}.0": f"ocr.{target}.0.0", f"{block}.{name}.1{bn}": f"ocr.{target}.0.1",
                  f"{block}.{name}.2": f"ocr.{target}.1.0", f"{block}.{name}.3{bn}": f"ocr.{target}.1.1"}
    for name, target in (("f_down", "value"), ("f_up", "up")):
        table |= {f"{block}.{name}.0": f"ocr.{target}.0", f"{block}.{name}.1{bn}": f"ocr.{target}.1"}
    return table | {
        f"{src}ocr_distri_head.conv_bn_dropout.0": "ocr.fuse.0.0",
        f"{src}ocr_distri_head.conv_bn_dropout.1{bn}": "ocr.fuse.0.1",
        f"{src}cls_head": "ocr.classifier",
    } | tail


_NVIDIA_ATTENTION = {"conv0": 0, "bn0": 1, "conv1": 3, "bn1": 4, "conv2": 6}

MODULE_MAPS: Mapping[str, dict[str, str]] = {
    "nvidia": {"backbone": "backbone"}
    | _object_context("ocr.", ".0", {
        "ocr.conv3x3_ocr.0": "ocr.conv3x3.0", "ocr.conv3x3_ocr.1.0": "ocr.conv3x3.1",
        "ocr.aux_head.0": "ocr.aux_head.0.0", "ocr.aux_head.1.0": "ocr.aux_head.0.1", "ocr.aux_head.2": "ocr.aux_head.1",
    })
    | {f"scale_attn.{name}": f"attention.layers.{i}" for name, i in _NVIDIA_ATTENTION.items()}
    | {f"scale_attn.{i}": f"attention.layers.{i}" for i in _NVIDIA_ATTENTION.values()},  # MSCALE_OLDARCH
    "hrnet-ocr": {name: f"backbone.{name}" for name in _BACKBONE_MODULES}
    | _object_context("", ".0", {
        "conv3x3_ocr.0": "ocr.conv3x3.0", "conv3x3_ocr.1": "ocr.conv3x3.1",
        "aux_head.0": "ocr.aux_head.0.0", "aux_head.1": "ocr.aux_head.0.1", "aux_head.3": "ocr.aux_head.1",
    }),
    "mmseg": {
        "backbone": "backbone",
        "decode_head.0.convs.0.conv": "ocr.aux_head.0.0", "decode_head.0.convs.0.bn": "ocr.aux_head.0.1",
        "decode_head.0.conv_seg": "ocr.aux_head.1",
        "decode_head.1.bottleneck.conv": "ocr.conv3x3.0", "decode_head.1.bottleneck.bn": "ocr.conv3x3.1",
        "decode_head.1.conv_seg": "ocr.classifier",
    }
    | {f"decode_head.1.object_context_block.{name}_project.{i}.{layer}": f"ocr.{name}.{i}.{j}"
       for name in ("query", "key") for i in (0, 1) for j, layer in enumerate(("conv", "bn"))}
    | {f"decode_head.1.object_context_block.{name}.{layer}": f"ocr.{target}.{j}"
       for name, target in (("value_project", "value"), ("out_project", "up"), ("bottleneck", "fuse.0"))
       for j, layer in enumerate(("conv", "bn"))},
}
"""Per source: module path in the source -> module path in `Teacher`; longest match wins, the rest of the path
and the parameter name carry over."""

PREFIXES = {"nvidia": ("module.",), "hrnet-ocr": ("module.", "model."), "mmseg": ("module.",)}
"""Wrapper prefixes removed from every key (DataParallel's `module.`, the official trainer's `model.`)."""

TRAINING_ONLY = re.compile(r"^(loss|criterion)\.|(^|\.)loss_decode\.")
"""Entries of the training loss (class weights), which the network does not use."""

SOURCE_MARKERS = (("scale_attn.", "nvidia"), ("ocr.ocr_distri_head.", "nvidia"), ("decode_head.", "mmseg"),
                  ("ocr_distri_head.", "hrnet-ocr"))


@dataclasses.dataclass(frozen=True)
class Conversion:
    """A converted network's config and weights, and how each source entry was used."""

    config: TeacherConfig
    state_dict: dict[str, torch.Tensor]
    untrained: tuple[str, ...]
    """`HEADS` left at their initialisation."""
    consumed: tuple[str, ...]
    """Source keys (prefixes removed) mapped onto the network, biases folded included."""
    folded: tuple[str, ...]
    """Source conv biases folded into the following BatchNorm's running mean."""
    zero_filled: tuple[str, ...]
    """Target keys the source has no value for, filled with zeros (biases, BatchNorm step counts)."""
    skipped: tuple[str, ...]
    """Training-only source entries (`TRAINING_ONLY`)."""

    def metadata(self) -> dict:
        return {UNTRAINED_KEY: list(self.untrained), "folded_biases": list(self.folded),
                "zero_filled": list(self.zero_filled), "skipped": list(self.skipped)}


def source_config(source: str, preset: str = "w48", input_config: InputConfig | None = None) -> TeacherConfig:
    """The network a `source` checkpoint of `preset`'s widths becomes: align_corners, fusion and inputs as the
    source computes them."""
    _check_source(source)
    base = TeacherConfig.preset(preset)
    if source == "hrnet-ocr":
        base = dataclasses.replace(base, backbone=dataclasses.replace(base.backbone, align_corners=True))
    if input_config is None:
        # All three normalise RGB with the ImageNet mean/std; NVIDIA and the official code on 0..1 values.
        input_config = InputConfig() if source == "mmseg" else InputConfig.scaled_to_unit("RGB")
    return dataclasses.replace(base, input=input_config, fusion="image" if source == "nvidia" else "feature",
                               ocr=dataclasses.replace(base.ocr, gather_softmax="pixels"))


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise CheckpointError(f"unknown checkpoint source {source!r}; known sources: {', '.join(SOURCES)}")


def unwrap_state_dict(payload: object, source: str) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint, its wrapper and key prefixes removed."""
    state = payload
    if isinstance(payload, Mapping):
        for wrapper in ("state_dict", "model_state", "model"):
            if isinstance(payload.get(wrapper), Mapping):
                state = payload[wrapper]
                break
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{source} checkpoint holds no state dict")
    tensors = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source} checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")
        tensors[_strip(key, PREFIXES[source])] = value
    return tensors


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def target_key(key: str, module_map: Mapping[str, str]) -> str | None:
    """`key` (module path + parameter name) in `Teacher`'s names, or None when no module of the map matches."""
    module, _, param = key.rpartition(".")
    for length in range(module.count(".") + 1, 0, -1):
        prefix = ".".join(module.split(".")[:length])
        if prefix in module_map:
            rest = module[len(prefix):]
            return f"{module_map[prefix]}{rest}.{param}"
    return None


def _guess_source(keys) -> str | None:
    for marker, source in SOURCE_MARKERS:
        if any(k.startswith(marker) or f".{marker}" in k for k in keys):
            return source
    return None


def _fold_target(key: str, target_state: Mapping[str, torch.Tensor]) -> str | None:
    """For a conv bias `X.0.bias` this network lacks, the running mean of the BatchNorm `X.1` that follows it."""
    match = re.fullmatch(r"(.+)\.0\.bias", key)
    if match and key not in target_state and f"{match[1]}.1.running_mean" in target_state:
        return f"{match[1]}.1.running_mean"
    return None


def map_state_dict(
    source_state: Mapping[str, torch.Tensor], source: str, target_state: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str], list[tuple[str, str]], list[str]]:
    """Rename source tensors onto the target's keys, checking shapes: (mapped, consumed source keys, (source bias,
    running-mean key) pairs to fold, skipped source keys). Unmappable keys are a `CheckpointError` naming them."""
    module_map = MODULE_MAPS[source]
    mapped, consumed, folds, skipped = {}, [], [], []
    for key, value in source_state.items():
        if TRAINING_ONLY.search(key):
            skipped.append(key)
            continue
        target = target_key(key, module_map)
        fold = None if target is None else _fold_target(target, target_state)
        if target is None or (target not in target_state and fold is None):
            guess = _guess_source(source_state)
            hint = f" (it has the {guess} layout: --from {guess})" if guess not in (None, source) else ""
            raise CheckpointError(f"{source} checkpoint key {key!r} has no counterpart in this network{hint}")
        expected = target_state[fold or target].shape
        if tuple(value.shape) != tuple(expected):
            raise CheckpointError(
                f"{source} checkpoint key {key!r} has shape {tuple(value.shape)}, but {fold or target} needs "
                f"{tuple(expected)} (another width than this preset?)"
            )
        if fold:
            folds.append((key, fold))
        else:
            mapped[target] = value.detach().to(target_state[target].dtype).clone()
        consumed.append(key)
    return mapped, consumed, folds, skipped


def convert_state_dict(
    source_state: Mapping[str, torch.Tensor], source: str, config: TeacherConfig, seed: int = 0
) -> Conversion:
    """Map a source state dict (prefixes removed) onto a fresh `Teacher(config)`: every target tensor comes from
    the source, from a folded/zero-filled value, or from an untrained part's initialisation."""
    _check_source(source)
    with torch.random.fork_rng():  # the untrained parts' initialisation is reproducible; the caller's RNG untouched
        torch.manual_seed(seed)
        target_state = Teacher(config).state_dict()
    mapped, consumed, folds, skipped = map_state_dict(source_state, source, target_state)
    for bias_key, mean_key in folds:
        if mean_key not in mapped:
            raise CheckpointError(f"{source} checkpoint has conv bias {bias_key!r} but not its BatchNorm's running mean")
        mapped[mean_key] = mapped[mean_key] - source_state[bias_key].to(mapped[mean_key].dtype)
    source_parts = {key.split(".")[0] for key in mapped}
    untrained = tuple(head for head in HEADS if head not in source_parts)
    zero_filled = []
    state = {}
    for key, value in target_state.items():
        if key in mapped:
            state[key] = mapped[key]
        elif key.split(".")[0] in untrained:
            state[key] = value
        elif key.endswith("num_batches_tracked") or (key.endswith(".bias") and key[:-5] + ".weight" in mapped):
            state[key] = torch.zeros_like(value)
            zero_filled.append(key)
        else:
            raise CheckpointError(f"{source} checkpoint has no value for this network's {key!r}")
    return Conversion(config, state, untrained, tuple(consumed), tuple(k for k, _ in folds), tuple(zero_filled),
                      tuple(skipped))


# --------------------------------------------------------------------------- safe loading
class SkippedObject:
    """Stands in for a training-state object of another library (a log buffer) found by name in a checkpoint:
    built without running any of that library's code, its state dropped."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass


SKIPPED_GLOBALS = ("mmengine.logging.history_buffer.HistoryBuffer", "mmcv.runner.log_buffer.LogBuffer")
"""Objects of training logs that mmsegmentation checkpoints carry beside the weights."""


def _numpy_globals() -> list:
    """Numpy scalars, dtypes and arrays in checkpoint metadata, under the names numpy 1 and 2 pickle them with."""
    from numpy.core import multiarray  # noqa: F401 - numpy 1's name, kept by numpy 2 for unpickling

    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    found = [np.dtype, np.ndarray, core.scalar, core._reconstruct]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found += [(core.scalar, f"{module}.scalar"), (core._reconstruct, f"{module}._reconstruct")]
    return found + [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]


def safe_globals() -> list:
    """The non-tensor objects a foreign checkpoint may hold, allowed by name: an argparse Namespace (training
    arguments), numpy scalars/dtypes/arrays (metrics, seeds), and `SKIPPED_GLOBALS` as `SkippedObject`."""
    return [argparse.Namespace, *_numpy_globals(), *((SkippedObject, name) for name in SKIPPED_GLOBALS)]


def _one_line(exc: Exception) -> str:
    """Torch's refusal, condensed: it names the global the file wanted to call, over several lines."""
    text = str(exc)
    match = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", text)
    if match:
        return f"it would call {match[1]} while loading"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[2:3] or lines[:1])[:200]


def load_foreign_checkpoint(path: Path) -> object:
    """Open another implementation's checkpoint with `weights_only=True`, allowing only `safe_globals()`; a file
    that would run code on load is a one-line `CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint does not exist")
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused, {_one_line(exc)} (only tensors and plain data are loaded)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({' '.join(str(exc).split())[:200]})") from None


def mmseg_input_config(payload: object) -> InputConfig | None:
    """The input normalisation an mmsegmentation checkpoint's embedded config trained with, when it says."""
    meta = payload.get("meta") if isinstance(payload, Mapping) else None
    text = meta.get("config") if isinstance(meta, Mapping) else None
    if not isinstance(text, str):
        return None
    mean = re.search(r"mean\s*=\s*\[([^\]]+)\]", text)
    std = re.search(r"std\s*=\s*\[([^\]]+)\]", text)
    if not (mean and std):
        return None
    rgb = re.search(r"(?:to_rgb|bgr_to_rgb)\s*=\s*(True|False)", text)
    channels = "RGB" if rgb is None or rgb[1] == "True" else "BGR"
    return InputConfig(channels, 255.0, [float(v) for v in mean[1].split(",")], [float(v) for v in std[1].split(",")])


def convert_checkpoint(path: Path, source: str, preset: str = "w48") -> Conversion:
    """Read a `source` checkpoint file safely and convert it onto `preset`'s network."""
    _check_source(source)
    payload = load_foreign_checkpoint(path)
    try:
        state = unwrap_state_dict(payload, source)
        input_config = mmseg_input_config(payload) if source == "mmseg" else None
        return convert_state_dict(state, source, source_config(source, preset, input_config))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None

