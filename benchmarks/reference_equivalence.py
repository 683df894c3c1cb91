"""Converted teachers against the reference implementations: same weights, same image, max logit difference.

Builds each reference network from its public source on the CPU with random weights (their training-only and
CUDA-only imports stubbed), runs it on one 128x256 image with the source's own preprocessing, saves its state dict
in the source's checkpoint layout, converts that file with `models.convert`, runs the converted teacher through
`models.predict` with this project's preprocessing, and prints the differences as JSON (scale 1.0, and NVIDIA's
n-scale inference at 0.5/1.0/2.0). Nothing of the references is copied here: pass the checkouts.

    python -m benchmarks.reference_equivalence --nvidia SEMSEG_DIR --hrnet HRNET_OCR_DIR --mmseg \
        --reference-python VENV/bin/python [--gain 30]

SEMSEG_DIR: NVIDIA/semantic-segmentation; HRNET_OCR_DIR: HRNet/HRNet-Semantic-Segmentation (branch HRNet-OCR);
--reference-python: an interpreter with torch, yacs (the official code's config) and, for --mmseg,
mmsegmentation 1.x, mmengine and mmcv-lite (compiled mmcv ops are stubbed). Each reference runs in its own
process: their `config` and `models` packages would shadow this project's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

IMAGE_HW = (128, 256)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MMSEG_MEAN, MMSEG_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
HRNET_OCR_CONFIG = "experiments/cityscapes/seg_hrnet_ocr_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml"
MMSEG_CONFIG = "configs/ocrnet/ocrnet_hr48_4xb2-40k_cityscapes-512x1024.py"
CLASS_LAYERS = ("cls_head.weight", "aux_head.2.weight", "aux_head.3.weight", "conv_seg.weight")


# --------------------------------------------------------------------------- reference side (own process)
def _randomise(model: nn.Module, gain: float, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics; class layers times `gain` (sharper object regions)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.3 + 0.1)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            elif isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for name, p in model.named_parameters():
            if name.endswith(CLASS_LAYERS):
                p.mul_(gain)
    return model.eval()


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def _image() -> np.ndarray:
    """A smooth random RGB image (H, W, 3) uint8 with pixel noise."""
    import cv2

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (16, 32, 3)).astype(np.uint8)
    image = cv2.resize(small, IMAGE_HW[::-1], interpolation=cv2.INTER_LINEAR).astype(np.int16)
    return np.clip(image + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)


def _normalised(image: np.ndarray, mean, std, scale: float) -> torch.Tensor:
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / scale  # (3, H, W) RGB
    return ((x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1))[None]


def run_nvidia(repo: Path, image: np.ndarray, gain: float) -> tuple[dict, dict]:
    sys.path.insert(0, str(repo))
    _stub("runx")
    _stub("runx.logx", logx=types.SimpleNamespace(msg=lambda *a, **k: None))
    apex = _stub("apex", amp=types.SimpleNamespace(float_function=lambda f: f, half_function=lambda f: f))
    apex.parallel = _stub("apex.parallel", SyncBatchNorm=nn.BatchNorm2d)
    import utils  # the repository's own package (attr_dict)

    utils.misc = _stub("utils.misc", fmt_scale=lambda prefix, s: f"{prefix}_{str(float(s)).replace('.', '')}x")
    from config import cfg

    cfg.MODEL.BNFUNC, cfg.DATASET.NUM_CLASSES, cfg.OPTIONS.TORCH_VERSION = nn.BatchNorm2d, 19, 2.0
    if not hasattr(np, "int"):
        np.int = int  # removed from numpy, used by the reference
    import network.hrnetv2 as hrnetv2

    hrnetv2.HighResolutionNet.init_weights.__defaults__ = ("",)  # no ImageNet weights to load
    from network.ocrnet import MscaleOCR

    model = _randomise(MscaleOCR(19), gain)
    x = _normalised(image, cfg.DATASET.MEAN, cfg.DATASET.STD, 255.0)  # ToTensor() then Normalize, RGB
    outputs = {"scale1": model.nscale_forward({"images": x}, [1.0])["pred"],
               "nscale": model.nscale_forward({"images": x}, [0.5, 1.0, 2.0])["pred"]}
    checkpoint = {"epoch": 1, "arch": "network.ocrnet.HRNet_Mscale", "num_classes": 19, "mean_iu": np.float64(0.5),
                  "command": "train.py", "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
    return checkpoint, outputs


def run_hrnet_ocr(repo: Path, image: np.ndarray, gain: float) -> tuple[dict, dict]:
    import torch.nn.functional as F

    sys.path.insert(0, str(repo / "lib"))
    if not hasattr(np, "int"):
        np.int = int
    from config import config

    config.defrost()
    config.merge_from_file(str(repo / HRNET_OCR_CONFIG))
    config.MODEL.PRETRAINED = ""
    config.freeze()
    import models.seg_hrnet_ocr as seg_hrnet_ocr

    model = _randomise(seg_hrnet_ocr.get_seg_model(config), gain)
    # base_dataset.input_transform: the BGR image read by cv2 flipped to RGB, /255, ImageNet mean/std
    x = _normalised(image[:, :, ::-1][:, :, ::-1], IMAGENET_MEAN, IMAGENET_STD, 255.0)
    logits = model(x)[1]
    full = F.interpolate(logits, size=IMAGE_HW, mode="bilinear", align_corners=config.MODEL.ALIGN_CORNERS)
    checkpoint = {f"model.{k}": v for k, v in model.state_dict().items()} | {"loss.criterion.weight": torch.ones(19)}
    return checkpoint, {"scale1": full, "stride4": logits}


def run_mmseg(image: np.ndarray, gain: float) -> tuple[dict, dict]:
    _stub("ftfy", fix_text=lambda s: s)  # the text tokenizer of other models
    for name in ("mmcv.ops", "mmcv.ops.multi_scale_deform_attn"):  # compiled ops of other models: placeholders
        _stub(name, __file__=name, __getattr__=lambda attr: (_ for _ in ()).throw(AttributeError(attr))
              if attr.startswith("__") else type(attr, (nn.Module,), {}))
    import mmseg
    import mmseg.models  # noqa: F401 - registers the networks
    from mmengine import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    cfg = Config.fromfile(str(Path(mmseg.__file__).parent / ".mim" / MMSEG_CONFIG))
    cfg.model.pretrained, cfg.model.data_preprocessor = None, None
    for part in (cfg.model.backbone, *cfg.model.decode_head):
        part.norm_cfg = dict(type="BN", requires_grad=True)
    model = _randomise(MODELS.build(cfg.model), gain)
    x = _normalised(image, MMSEG_MEAN, MMSEG_STD, 1.0)  # SegDataPreProcessor: bgr_to_rgb, then mean/std on 0..255
    metas = [dict(img_shape=IMAGE_HW, ori_shape=IMAGE_HW, pad_shape=IMAGE_HW)]
    feats = model.extract_feat(x)
    outputs = {"scale1": model.encode_decode(x, metas),
               "stride4": model.decode_head[1].forward(feats, model.decode_head[0].forward(feats))}
    preprocessor = f"data_preprocessor = dict(mean={list(MMSEG_MEAN)}, std={list(MMSEG_STD)}, bgr_to_rgb=True)"
    checkpoint = {"meta": {"config": preprocessor, "seed": np.int64(0)}, "state_dict": model.state_dict()}
    return checkpoint, outputs


def reference_main(source: str, repo: str, out: Path, gain: float) -> None:
    image = _image()
    with torch.no_grad():
        if source == "nvidia":
            checkpoint, outputs = run_nvidia(Path(repo), image, gain)
        elif source == "hrnet-ocr":
            checkpoint, outputs = run_hrnet_ocr(Path(repo), image, gain)
        else:
            checkpoint, outputs = run_mmseg(image, gain)
    torch.save(checkpoint, out / f"{source}.pth")
    torch.save({"image": torch.from_numpy(image), **outputs}, out / f"{source}_out.pt")


# --------------------------------------------------------------------------- project side
def compare(source: str, out: Path) -> dict:
    from autolabel.transforms import normalize_batch
    from models.convert import convert_checkpoint
    from models.predict import PredictOptions, predict_logits
    from models.teacher import Teacher

    conversion = convert_checkpoint(out / f"{source}.pth", source)
    model = Teacher(conversion.config).eval()
    model.load_state_dict(conversion.state_dict)
    ref = torch.load(out / f"{source}_out.pt")
    x = normalize_batch(ref["image"][None])  # this project's preprocessing of the same uint8 RGB image
    row = {"untrained": list(conversion.untrained), "folded_biases": len(conversion.folded)}
    checks = {"scale1": (1.0,)} | ({"nscale": (0.5, 1.0, 2.0)} if "nscale" in ref else {})
    with torch.no_grad():
        for name, scales in checks.items():
            ours = predict_logits(model, x, PredictOptions(scales=scales, pointrend=False))  # (1, K, H, W)
            diff, peak = (ours - ref[name]).abs().max().item(), ref[name].abs().max().item()
            row[name] = {"max_abs_diff": diff, "max_abs_logit": peak, "relative": diff / peak,
                         "argmax_agreement": (ours.argmax(1) == ref[name].argmax(1)).float().mean().item()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nvidia", help="NVIDIA/semantic-segmentation checkout")
    parser.add_argument("--hrnet", help="HRNet/HRNet-Semantic-Segmentation checkout (branch HRNet-OCR)")
    parser.add_argument("--mmseg", action="store_true", help="compare with mmsegmentation (installed)")
    parser.add_argument("--reference-python", default=sys.executable, help="python that runs the references")
    parser.add_argument("--gain", type=float, default=30.0, help="class layers' weight gain (logits of ~10)")
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    parser.add_argument("--repo", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference:
        reference_main(args.reference, args.repo, Path(args.out), args.gain)
        return
    torch.set_num_threads(1)
    runs = {"nvidia": args.nvidia, "hrnet-ocr": args.hrnet, "mmseg": "installed" if args.mmseg else None}
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for source, repo in runs.items():
            if not repo:
                continue
            env = dict(os.environ, PYTHONWARNINGS="ignore")
            subprocess.run([args.reference_python, __file__, "--reference", source, "--repo", repo, "--out", tmp,
                            "--gain", str(args.gain)], check=True, cwd=tmp, env=env)
            report[source] = compare(source, Path(tmp))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
