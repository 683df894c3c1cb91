"""Converting published teachers' checkpoints: key layouts, exact transforms, safe loading, the CLI command.

Checkpoints in each source's layout are written here from a tiny project network with the sources' own module
names (NVIDIA semantic-segmentation, the official HRNet-OCR, mmsegmentation), so every test runs in well under
a second; equivalence with the reference code itself is measured as the README says.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from autolabel.errors import CheckpointError
from autolabel.transforms import normalize_batch
from models.convert import (
    SOURCES, convert_checkpoint, convert_state_dict, load_foreign_checkpoint, mmseg_input_config, source_config,
    unwrap_state_dict,
)
from models.hrnet import conv_bn
from models.inputs import InputConfig, adapt_input
from models.mscale import fuse_scales_on_images
from models.ocr import spatial_gather
from models.parts import untrained_in_use
from models.predict import PredictOptions, predict_logits
from models.teacher import Teacher, TeacherConfig, load_model

PRESET = "tiny"
OCR_BLOCK = "ocr_distri_head.object_context_block"


def _layout_tables() -> dict[str, dict[str, str]]:
    """Per source: this network's module path -> the source's, written from the sources' module names."""
    official = {
        "ocr.conv3x3.0": "conv3x3_ocr.0", "ocr.conv3x3.1": "conv3x3_ocr.1",
        "ocr.aux_head.0.0": "aux_head.0", "ocr.aux_head.0.1": "aux_head.1", "ocr.aux_head.1": "aux_head.3",
        "ocr.classifier": "cls_head", "ocr.fuse.0.0": "ocr_distri_head.conv_bn_dropout.0",
        "ocr.fuse.0.1": "ocr_distri_head.conv_bn_dropout.1.0",
        "ocr.value.0": f"{OCR_BLOCK}.f_down.0", "ocr.value.1": f"{OCR_BLOCK}.f_down.1.0",
        "ocr.up.0": f"{OCR_BLOCK}.f_up.0", "ocr.up.1": f"{OCR_BLOCK}.f_up.1.0",
    }
    for ours, theirs in (("query", "f_pixel"), ("key", "f_object")):
        official |= {f"ocr.{ours}.0.0": f"{OCR_BLOCK}.{theirs}.0", f"ocr.{ours}.0.1": f"{OCR_BLOCK}.{theirs}.1.0",
                     f"ocr.{ours}.1.0": f"{OCR_BLOCK}.{theirs}.2", f"ocr.{ours}.1.1": f"{OCR_BLOCK}.{theirs}.3.0"}
    nvidia = {k: f"ocr.{v}" for k, v in official.items()} | {
        "ocr.conv3x3.1": "ocr.conv3x3_ocr.1.0", "ocr.aux_head.0.1": "ocr.aux_head.1.0", "ocr.aux_head.1": "ocr.aux_head.2",
        "attention.layers.0": "scale_attn.conv0", "attention.layers.1": "scale_attn.bn0",
        "attention.layers.3": "scale_attn.conv1", "attention.layers.4": "scale_attn.bn1",
        "attention.layers.6": "scale_attn.conv2", "backbone": "backbone",
    }
    official |= {"backbone": ""}
    head = "decode_head.1.object_context_block"
    mmseg = {
        "backbone": "backbone", "ocr.aux_head.0.0": "decode_head.0.convs.0.conv", "ocr.aux_head.0.1": "decode_head.0.convs.0.bn",
        "ocr.aux_head.1": "decode_head.0.conv_seg", "ocr.conv3x3.0": "decode_head.1.bottleneck.conv",
        "ocr.conv3x3.1": "decode_head.1.bottleneck.bn", "ocr.classifier": "decode_head.1.conv_seg",
        "ocr.value.0": f"{head}.value_project.conv", "ocr.value.1": f"{head}.value_project.bn",
        "ocr.up.0": f"{head}.out_project.conv", "ocr.up.1": f"{head}.out_project.bn",
        "ocr.fuse.0.0": f"{head}.bottleneck.conv", "ocr.fuse.0.1": f"{head}.bottleneck.bn",
    }
    for ours, theirs in (("query", "query_project"), ("key", "key_project")):
        mmseg |= {f"ocr.{ours}.{i}.{j}": f"{head}.{theirs}.{i}.{layer}" for i in (0, 1) for j, layer in ((0, "conv"), (1, "bn"))}
    return {"nvidia": nvidia, "hrnet-ocr": official, "mmseg": mmseg}


LAYOUTS = _layout_tables()
CONV_BIASES = {"nvidia": ("ocr.conv3x3", "ocr.aux_head.0"), "hrnet-ocr": ("ocr.conv3x3", "ocr.aux_head.0"), "mmseg": ()}
"""conv_bn modules whose conv has a bias in the source (NVIDIA's and the official OCR head)."""


def _source_name(key: str, table: dict[str, str]) -> str | None:
    module, _, param = key.rpartition(".")
    for prefix in sorted(table, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return ".".join(part for part in (table[prefix] + module[len(prefix):]).split(".") if part) + f".{param}"
    return None


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics (eval mode), so every tensor matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=g) * 0.3 + 0.1 if name.endswith(("running_var", "bn.weight")) \
                    else torch.randn(tensor.shape, generator=g) * 0.2
                tensor.copy_(values)
    return model.eval()


def source_checkpoint(model: Teacher, source: str, seed: int = 1) -> tuple[dict, dict[str, torch.Tensor]]:
    """`model`'s weights in `source`'s layout and wrapper, with random conv biases before BatchNorm where the source
    has them (running means shifted to match), and the conv biases drawn."""
    g = torch.Generator().manual_seed(seed)
    state, table, biases = model.state_dict(), LAYOUTS[source], {}
    out = {}
    for key, value in state.items():
        if key.startswith("point_head") or (key.startswith("attention") and source != "nvidia"):
            continue
        out[_source_name(key, table)] = value.clone()
    for module in CONV_BIASES[source]:
        bias = torch.randn(state[f"{module}.1.running_mean"].shape, generator=g)
        out[_source_name(f"{module}.0.bias", table)] = bias
        out[_source_name(f"{module}.1.running_mean", table)] = state[f"{module}.1.running_mean"] + bias
        biases[module] = bias
    if source == "nvidia":
        payload = {"epoch": 3, "arch": "network.ocrnet.HRNet_Mscale", "num_classes": 19, "mean_iu": np.float64(0.869),
                   "command": "train.py --arch ocrnet.HRNet_Mscale", "args": argparse.Namespace(lr=0.01),
                   "state_dict": {f"module.{k}": v for k, v in out.items()}}
    elif source == "hrnet-ocr":
        payload = {f"model.{k}": v for k, v in out.items()} | {"loss.criterion.weight": torch.ones(19)}
    else:
        payload = {"meta": {"config": "data_preprocessor = dict(mean=[123.675, 116.28, 103.53], "
                                      "std=[58.395, 57.12, 57.375], bgr_to_rgb=True)", "seed": np.int64(0)},
                   "state_dict": out}
    return payload, biases


@pytest.fixture(scope="module")
def tiny_model() -> Teacher:
    return randomised(Teacher(TeacherConfig.preset(PRESET)))


def _convert(payload, source: str):
    return convert_state_dict(unwrap_state_dict(payload, source), source, source_config(source, PRESET))


@pytest.mark.parametrize("source", SOURCES)
def test_every_source_key_is_consumed_and_every_target_key_filled_with_its_shape(tiny_model, source):
    payload, _ = source_checkpoint(tiny_model, source)
    state = unwrap_state_dict(payload, source)
    conversion = _convert(payload, source)
    assert sorted(conversion.consumed + conversion.skipped) == sorted(state)
    target = Teacher(conversion.config).state_dict()
    assert conversion.state_dict.keys() == target.keys()
    assert all(conversion.state_dict[k].shape == v.shape for k, v in target.items())


@pytest.mark.parametrize("source", SOURCES)
def test_converted_weights_are_the_sources_with_biases_folded_exactly(tiny_model, source):
    conversion = _convert(source_checkpoint(tiny_model, source)[0], source)
    expected = tiny_model.state_dict()
    untrained = {"point_head"} | ({"attention"} if source != "nvidia" else set())
    for key, value in conversion.state_dict.items():
        if key.split(".")[0] not in untrained and not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-6, msg=key)
    assert set(conversion.untrained) == untrained


def test_folding_a_conv_bias_into_the_batchnorm_mean_keeps_the_output_in_eval_and_training():
    torch.manual_seed(0)
    source = randomised(nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6)))
    folded = randomised(conv_bn(4, 6, 3, relu=False))
    folded[0].weight.data.copy_(source[0].weight)
    folded[1].load_state_dict(source[1].state_dict())
    folded[1].running_mean.sub_(source[0].bias.data)
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(folded(x), source(x), rtol=0, atol=1e-5)
    torch.testing.assert_close(folded.train()(x), source.train()(x), rtol=0, atol=1e-5)


def test_official_hrnet_ocr_upsamples_with_align_corners_and_the_others_without():
    assert source_config("hrnet-ocr", PRESET).align_corners
    assert not source_config("nvidia", PRESET).align_corners and not source_config("mmseg", PRESET).align_corners


def test_align_corners_reaches_every_upsampling_of_the_network(tiny_model):
    corners = dataclasses.replace(tiny_model.config, backbone=dataclasses.replace(tiny_model.config.backbone,
                                                                                  align_corners=True))
    other = Teacher(corners).eval()
    other.load_state_dict(tiny_model.state_dict())
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        assert not torch.allclose(other.run_scale(x).logits, tiny_model.run_scale(x).logits, atol=1e-4)
        a = predict_logits(other, x, PredictOptions(pointrend=False))
        resized = F.interpolate(other.run_scale(x).logits, size=(64, 128), mode="bilinear", align_corners=True)
    torch.testing.assert_close(a, resized)


def test_every_source_gathers_object_regions_with_a_softmax_over_pixels():
    assert {source_config(s, PRESET).ocr.gather_softmax for s in SOURCES} == {"pixels"}


def test_gather_softmax_runs_over_pixels_or_over_classes():
    feats, logits = torch.randn(1, 5, 3, 4), torch.randn(1, 2, 3, 4)
    by_pixels = spatial_gather(feats, logits, "pixels")  # (1, 2, 5)
    by_classes = spatial_gather(feats, logits, "classes")
    flat = feats.flatten(2).transpose(1, 2)  # (1, 12, 5)
    torch.testing.assert_close(by_pixels, logits.flatten(2).softmax(2) @ flat)
    torch.testing.assert_close(by_classes, logits.flatten(2).softmax(1) @ flat)


def test_nvidia_teachers_fuse_scales_on_the_images_grids():
    assert source_config("nvidia", PRESET).fusion == "image"
    assert {source_config(s, PRESET).fusion for s in ("hrnet-ocr", "mmseg")} == {"feature"}


def test_image_fusion_takes_the_lower_scale_where_its_attention_is_one():
    high, low = torch.randn(1, 3, 8, 16), torch.randn(1, 3, 4, 8)
    sizes = {1.0: (32, 64), 0.5: (16, 32)}
    fused = fuse_scales_on_images({1.0: high, 0.5: low}, {0.5: torch.ones(1, 1, 4, 8)}, sizes)
    up = F.interpolate(F.interpolate(low, size=(16, 32), mode="bilinear", align_corners=False), size=(32, 64),
                       mode="bilinear", align_corners=False)
    torch.testing.assert_close(fused, up)
    fused = fuse_scales_on_images({1.0: high, 0.5: low}, {0.5: torch.zeros(1, 1, 4, 8)}, sizes)
    torch.testing.assert_close(fused, F.interpolate(high, size=(32, 64), mode="bilinear", align_corners=False))


def test_image_fusion_resizes_higher_scales_down_to_scale_one():
    preds = {2.0: torch.randn(1, 3, 16, 32), 1.0: torch.randn(1, 3, 8, 16)}
    fused = fuse_scales_on_images(preds, {1.0: torch.full((1, 1, 8, 16), 0.25)}, {2.0: (64, 128), 1.0: (32, 64)})
    assert fused.shape == (1, 3, 32, 64)


def test_input_adapter_feeds_the_network_the_sources_normalisation_exactly():
    image = torch.randint(0, 256, (1, 8, 8, 3), dtype=torch.uint8)
    config = InputConfig("BGR", 1.0, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    pixels = image.permute(0, 3, 1, 2).float()  # (1, 3, 8, 8) RGB 0..255
    expected = (pixels.flip(1) / 255 - torch.tensor(config.mean).view(1, 3, 1, 1)) / torch.tensor(config.std).view(1, 3, 1, 1)
    torch.testing.assert_close(adapt_input(normalize_batch(image), config), expected, rtol=0, atol=1e-5)


def test_project_normalisation_is_passed_through_untouched():
    x = torch.randn(1, 3, 4, 4)
    assert adapt_input(x, InputConfig()) is x and adapt_input(x, InputConfig.scaled_to_unit()) is x


def test_mmseg_input_normalisation_is_read_from_the_checkpoints_config():
    payload = {"meta": {"config": "img_norm_cfg = dict(mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0], to_rgb=False)"}}
    assert mmseg_input_config(payload) == InputConfig("BGR", 255.0, (1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    assert mmseg_input_config({"state_dict": {}}) is None


def test_unmappable_key_is_a_one_line_error_naming_it(tiny_model):
    payload, _ = source_checkpoint(tiny_model, "mmseg")
    payload["state_dict"]["decode_head.2.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=re.escape("'decode_head.2.extra.weight'")) as info:
        _convert(payload, "mmseg")
    assert "\n" not in str(info.value)


def test_checkpoint_of_another_layout_names_the_layout_it_has(tiny_model):
    payload, _ = source_checkpoint(tiny_model, "mmseg")
    with pytest.raises(CheckpointError, match="--from mmseg"):
        _convert(payload, "nvidia")


def test_other_widths_are_refused_naming_the_key_and_shapes(tiny_model):
    payload, _ = source_checkpoint(tiny_model, "nvidia")
    with pytest.raises(CheckpointError, match=r"'backbone\.conv1\.weight' has shape \(16, 3, 3, 3\)"):
        convert_state_dict(unwrap_state_dict(payload, "nvidia"), "nvidia", source_config("nvidia", "w18s"))


def test_missing_source_tensor_is_an_error_naming_the_target_key(tiny_model):
    payload, _ = source_checkpoint(tiny_model, "mmseg")
    del payload["state_dict"]["decode_head.1.conv_seg.weight"]
    with pytest.raises(CheckpointError, match="'ocr.classifier.weight'"):
        _convert(payload, "mmseg")


def test_a_bias_the_source_lacks_is_filled_with_zeros_exactly(tiny_model):
    payload, _ = source_checkpoint(tiny_model, "mmseg")
    del payload["state_dict"]["decode_head.1.conv_seg.bias"]
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if not k.endswith("num_batches_tracked")}
    conversion = _convert(payload, "mmseg")
    assert "ocr.classifier.bias" in conversion.zero_filled
    assert torch.equal(conversion.state_dict["ocr.classifier.bias"], torch.zeros(19))
    assert all(conversion.state_dict[k] == 0 for k in conversion.state_dict if k.endswith("num_batches_tracked"))


def test_metadata_objects_are_allowed_by_name(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"args": argparse.Namespace(lr=0.01), "mean_iu": np.float64(0.8), "seed": np.int64(3),
                "hist": np.zeros(3, dtype=np.float32), "state_dict": {"w": torch.ones(1)}}, path)
    loaded = load_foreign_checkpoint(path)
    assert loaded["args"].lr == 0.01 and float(loaded["mean_iu"]) == 0.8 and loaded["hist"].shape == (3,)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_a_file_that_would_run_code_is_refused_in_one_line_without_running_it(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refused") as info:
        load_foreign_checkpoint(path)
    assert "\n" not in str(info.value) and "exec" in str(info.value)
    assert not marker.exists()


def test_converted_teacher_computes_the_sources_logits_after_a_file_round_trip(tiny_model, tmp_path):
    payload, _ = source_checkpoint(tiny_model, "hrnet-ocr")
    torch.save(payload, tmp_path / "official.pth")
    conversion = convert_checkpoint(tmp_path / "official.pth", "hrnet-ocr", PRESET)
    converted = Teacher(conversion.config).eval()
    converted.load_state_dict(conversion.state_dict)
    reference = Teacher(conversion.config).eval()
    reference.load_state_dict(tiny_model.state_dict())
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(converted.run_scale(x).logits, reference.run_scale(x).logits, rtol=0, atol=1e-5)


def test_untrained_heads_in_use_depend_on_scales_and_pointrend():
    config = TeacherConfig.preset(PRESET)
    metadata = {"untrained": ["attention", "point_head"]}
    assert untrained_in_use(metadata, config, (0.5, 1.0), True) == ["attention", "point_head"]
    assert untrained_in_use(metadata, config, (1.0,), False) == []
    assert untrained_in_use({}, config, (0.5, 1.0), True) == []


def test_cli_writes_a_checkpoint_that_loads_and_lists_untrained_parts(tiny_model, tmp_path):
    from cli import app

    payload, _ = source_checkpoint(tiny_model, "mmseg")
    torch.save(payload, tmp_path / "ocrnet.pth")
    out = tmp_path / "teacher.pt"
    result = CliRunner().invoke(app, ["convert-checkpoint", str(tmp_path / "ocrnet.pth"), "--from", "mmseg",
                                      "--out", str(out), "--preset", PRESET, "--json"])
    assert result.exit_code == 0, result.output
    model, ckpt = load_model(out)
    assert ckpt.metadata["untrained"] == ["attention", "point_head"]
    assert ckpt.metadata["converted_from"]["source"] == "mmseg" and model.config.input.is_project_default


def test_cli_refuses_an_unknown_source_as_bad_usage(tmp_path):
    from cli import app

    result = CliRunner().invoke(app, ["convert-checkpoint", str(tmp_path / "x.pth"), "--from", "detectron2",
                                      "--out", str(tmp_path / "y.pt")])
    assert result.exit_code == 2
