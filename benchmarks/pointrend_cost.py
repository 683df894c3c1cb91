"""PointRend subdivision inference vs evaluating the point head at every output pixel: FLOPs and time.

    python -m benchmarks.pointrend_cost --preset w18s --height 1024 --width 2048 --repeats 3 --json

Inputs are those of the chosen preset's head: coarse logits at stride 4 and fine features with the
backbone's concatenated channels (270 for w18s, 720 for w48). FLOPs are counted with
`torch.utils.flop_counter.FlopCounterMode`, which counts the point head's matrix products (its 1x1
convolutions); point sampling, top-k and interpolation are not counted but are in the wall time.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.machine import machine
from models.pointrend import PointHead, predict_points, subdivision_inference
from models.teacher import TeacherConfig

FEATURE_STRIDE = 4
"""Stride of the coarse logits and fine features the point head reads."""

SMOOTH_STRIDE = 32
"""Random coarse logits vary at this stride, so uncertain cells cluster along boundaries as in real maps."""


@dataclass(frozen=True)
class Cost:
    method: str
    points: int
    """Point-head evaluations per image."""
    gflops: float
    seconds: float
    """Best wall time of one image over the repeats."""



def head_inputs(
    config: TeacherConfig, height: int, width: int, device: torch.device, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coarse logits (1, K, H/4, W/4), smooth like a network's, and fine features (1, C, H/4, W/4)."""
    gen = torch.Generator().manual_seed(seed)
    size = (-(-height // FEATURE_STRIDE), -(-width // FEATURE_STRIDE))
    low = (max(1, height // SMOOTH_STRIDE), max(1, width // SMOOTH_STRIDE))
    coarse = F.interpolate(
        4 * torch.randn(1, config.num_classes, *low, generator=gen), size=size, mode="bilinear", align_corners=False
    )
    fine = torch.randn(1, sum(config.backbone.widths), *size, generator=gen)
    return coarse.to(device), fine.to(device)


def dense_inference(
    coarse: torch.Tensor, fine: torch.Tensor, head: PointHead, output_hw: tuple[int, int], chunk: int
) -> torch.Tensor:
    """The point head at every output pixel centre, `chunk` pixels at a time: (1, K, H, W)."""
    height, width = output_hw
    out = coarse.new_empty(coarse.shape[0], coarse.shape[1], height * width)  # (1, K, HW)
    ys, xs = torch.meshgrid(
        (torch.arange(height, device=coarse.device, dtype=torch.float32) + 0.5) / height,
        (torch.arange(width, device=coarse.device, dtype=torch.float32) + 0.5) / width,
        indexing="ij",
    )
    coords = torch.stack([xs, ys], dim=2).reshape(1, height * width, 2)  # (1, HW, 2)
    for start in range(0, height * width, chunk):
        out[..., start : start + chunk] = predict_points(head, fine, coarse, coords[:, start : start + chunk])
    return out.view(coarse.shape[0], coarse.shape[1], height, width)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, points: int, run: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> Cost:
    """FLOPs of one run (which also warms up), then the best time of `repeats` runs."""
    with FlopCounterMode(display=False) as counter:
        run()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    return Cost(name, points, counter.get_total_flops() / 1e9, min(times))


def _table(costs: list[Cost], title: str) -> Table:
    table = Table(title=title)
    for column in ("method", "head points", "GFLOPs", "seconds", "FLOPs x", "time x"):
        table.add_column(column, justify="right")
    base = costs[0]
    for c in costs:
        table.add_row(c.method, f"{c.points:,}", f"{c.gflops:.2f}", f"{c.seconds:.4f}",
                      f"{c.gflops / base.gflops:.1f}", f"{c.seconds / base.seconds:.1f}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="w18s", help="model preset whose head sizes are used (default w18s)")
    parser.add_argument("--height", type=int, default=1024, help="output height (default 1024)")
    parser.add_argument("--width", type=int, default=2048, help="output width (default 2048)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method; the best is reported")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--chunk", type=int, default=1 << 16, help="pixels per dense point-head call (bounds memory)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON line with all figures last")
    args = parser.parse_args()
    if min(args.height, args.width, args.repeats, args.chunk) < 1:
        parser.error("--height, --width, --repeats and --chunk must be positive")

    device = torch.device(args.device)
    config = TeacherConfig.preset(args.preset)
    torch.manual_seed(args.seed)
    head = PointHead(
        sum(config.backbone.widths), config.num_classes, config.pointrend.fc_channels, config.pointrend.num_fc
    ).to(device).eval()
    coarse, fine = head_inputs(config, args.height, args.width, device, args.seed)
    output_hw = (args.height, args.width)
    steps, points = config.pointrend.subdivision(tuple(coarse.shape[-2:]), output_hw)

    with torch.inference_mode():
        costs = [
            measure(f"subdivision {steps}x{points}", steps * points,
                    lambda: subdivision_inference(coarse, fine, head, output_hw, steps, points), args.repeats, device),
            measure("dense", args.height * args.width,
                    lambda: dense_inference(coarse, fine, head, output_hw, args.chunk), args.repeats, device),
        ]
    subdivision, dense = costs
    info = machine(device)
    console = Console()
    console.print(" ".join(f"{k}={v}" for k, v in info.items()))
    title = (f"PointRend head, preset {args.preset} ({fine.shape[1]} fine channels, {config.num_classes} classes), "
             f"coarse {coarse.shape[-2]}x{coarse.shape[-1]} -> {args.height}x{args.width}")
    console.print(_table(costs, title))
    if args.json:
        print(json.dumps({
            "machine": info,
            "preset": args.preset,
            "height": args.height,
            "width": args.width,
            "fine_channels": fine.shape[1],
            "num_classes": config.num_classes,
            "subdivision_steps": steps,
            "subdivision_points": points,
            "results": [asdict(c) for c in costs],
            "flops_ratio": dense.gflops / subdivision.gflops,
            "time_ratio": dense.seconds / subdivision.seconds,
        }))


if __name__ == "__main__":
    main()
