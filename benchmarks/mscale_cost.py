"""Hierarchical multi-scale attention vs explicit attention over every scale: training cost, inference cost.

    python -m benchmarks.mscale_cost --json                       # CPU: tiny preset, 256x512
    python -m benchmarks.mscale_cost --device cuda --preset w18s --height 1024 --width 2048 --json

Training (forward + backward per image, FLOPs by `torch.utils.flop_counter.FlopCounterMode`, and wall
time): the hierarchical pair (0.5, 1.0) as `Teacher.losses` trains it, against explicit attention in
the manner of Chen et al. ("Attention to Scale"), which runs every scale (0.5, 1.0, 2.0) in training
and fuses them with a softmax over scales of per-scale attention scores (here the logit of the same
attention head), with the same main + aux losses. PointRend is off in both: its cost is the same.

Inference (`models.predict.predict`) per scale set: FLOPs, best wall time and peak memory, each set
in a fresh process. Peak memory is `torch.cuda.max_memory_allocated` growth on CUDA; on the CPU it is
the process's peak resident set during the call (VmHWM, reset through /proc/self/clear_refs) minus
its resident set just before it (Linux only). Neither tracemalloc (it does not see torch's tensor
allocations) nor `ru_maxrss` (a child process inherits its parent's peak) would measure the call.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.machine import machine
from models.losses import resize_logits, segmentation_loss
from models.mscale import MSCALE_TRAIN_SCALES, scaled
from models.predict import predict
from models.teacher import Teacher, TeacherConfig, build_model

EXPLICIT_TRAIN_SCALES = (0.5, 1.0, 2.0)
INFERENCE_SCALE_SETS = ((1.0,), (0.5, 1.0), (0.5, 1.0, 2.0))
ATTENTION_EPS = 1e-6
"""Clamp of the attention before its logit, so saturated sigmoids give finite scores."""


@dataclass(frozen=True)
class TrainCost:
    method: str
    scales: tuple[float, ...]
    gflops_per_image: float
    seconds_per_image: float


@dataclass(frozen=True)
class InferenceCost:
    scales: tuple[float, ...]
    gflops: float
    seconds: float
    peak_mib: float



def explicit_attention_losses(
    model: Teacher, images: torch.Tensor, labels: torch.Tensor, scales: tuple[float, ...] = EXPLICIT_TRAIN_SCALES
) -> dict[str, torch.Tensor]:
    """Every scale run and fused by a softmax over scales at the 1.0 output size (Chen et al.)."""
    outputs = [model.run_scale(scaled(images, s)) for s in scales]
    size = tuple(outputs[scales.index(1.0)].logits.shape[-2:])
    scores = torch.stack(
        [resize_logits(torch.logit(o.attention, eps=ATTENTION_EPS), size) for o in outputs]
    )  # (S, N, 1, h, w)
    weights = scores.softmax(dim=0)

    def fuse(logits: list[torch.Tensor]) -> torch.Tensor:
        return sum(w * resize_logits(p, size) for w, p in zip(weights, logits))  # (N, K, h, w)

    return {
        "seg": segmentation_loss(fuse([o.logits for o in outputs]), labels),
        "aux": model.config.aux_weight * segmentation_loss(fuse([o.aux_logits for o in outputs]), labels),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Best wall time of `repeats` runs: the one least disturbed by other load on the machine."""
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def train_cost(
    name: str,
    scales: tuple[float, ...],
    losses: Callable[[Teacher, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
    model: Teacher,
    images: torch.Tensor,
    labels: torch.Tensor,
    repeats: int,
) -> TrainCost:
    """FLOPs (counted on the first, warm-up step) and best time of forward + backward, per image."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        sum(losses(model, images, labels).values()).backward()

    with FlopCounterMode(display=False) as counter:
        step()
    seconds = _timed(step, repeats, images.device)
    n = images.shape[0]
    return TrainCost(name, scales, counter.get_total_flops() / 1e9 / n, seconds / n)


def _proc_status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field} field")


def _reset_resident_peak() -> None:
    """Start VmHWM (the peak resident set) again from the current resident set."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as exc:
        raise RuntimeError(f"/proc/self/clear_refs: cannot reset the peak resident set ({exc})") from exc


def _peak_growth(run: Callable[[], object], device: torch.device) -> float:
    """Peak memory (MiB) that one run adds to what was held before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    _reset_resident_peak()
    before = _proc_status_bytes("VmRSS")
    run()
    return max(0, _proc_status_bytes("VmHWM") - before) / 2**20


def inference_cost(
    preset: str, scales: tuple[float, ...], height: int, width: int, device_name: str, pointrend: bool, repeats: int
) -> InferenceCost:
    """One scale set, meant to run in a fresh process so its peak memory is its own."""
    device = torch.device(device_name)
    torch.manual_seed(0)
    model = build_model(preset).to(device).eval()
    images = torch.randn(1, 3, height, width, device=device)

    def run() -> torch.Tensor:
        return predict(model, images, scales=scales, pointrend=pointrend)

    predict(model, images[..., :64, :64], scales=scales, pointrend=pointrend)  # load kernels and libraries
    peak_mib = _peak_growth(run, device)
    with FlopCounterMode(display=False) as counter:
        run()
    return InferenceCost(scales, counter.get_total_flops() / 1e9, _timed(run, repeats, device), peak_mib)


def _train_table(costs: list[TrainCost], title: str) -> Table:
    table = Table(title=title)
    for column in ("training", "scales", "GFLOPs/image", "s/image", "FLOPs x", "time x"):
        table.add_column(column, justify="right")
    base = costs[0]
    for c in costs:
        table.add_row(c.method, ", ".join(map(str, c.scales)), f"{c.gflops_per_image:.2f}",
                      f"{c.seconds_per_image:.3f}", f"{c.gflops_per_image / base.gflops_per_image:.2f}",
                      f"{c.seconds_per_image / base.seconds_per_image:.2f}")
    return table


def _inference_table(costs: list[InferenceCost], title: str, memory: str) -> Table:
    table = Table(title=title, caption=f"peak memory: {memory}")
    for column in ("scales", "GFLOPs", "seconds", "peak MiB", "time x", "memory x"):
        table.add_column(column, justify="right")
    base = costs[0]
    for c in costs:
        table.add_row(", ".join(map(str, c.scales)), f"{c.gflops:.2f}", f"{c.seconds:.3f}", f"{c.peak_mib:.0f}",
                      f"{c.seconds / base.seconds:.2f}", f"{c.peak_mib / base.peak_mib:.2f}" if base.peak_mib else "-")
    return table


def _key(scales: tuple[float, ...]) -> str:
    return ",".join(map(str, scales))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", help="model preset (default: tiny on CPU, w18s on CUDA)")
    parser.add_argument("--height", type=int, help="image height (default: 256 on CPU, 1024 on CUDA)")
    parser.add_argument("--width", type=int, help="image width (default: 512 on CPU, 2048 on CUDA)")
    parser.add_argument("--train-batch", type=int, default=2, help="images per training step (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the best is reported")
    parser.add_argument("--pointrend", action=argparse.BooleanOptionalAction, default=True,
                        help="refine inference with PointRend (default on)")
    parser.add_argument("--json", action="store_true", help="print one JSON line with all figures last")
    args = parser.parse_args()

    device = torch.device(args.device)
    on_cpu = device.type == "cpu"
    preset = args.preset or ("tiny" if on_cpu else "w18s")
    height = args.height or (256 if on_cpu else 1024)
    width = args.width or (512 if on_cpu else 2048)
    if min(height, width, args.train_batch, args.repeats) < 1:
        parser.error("--height, --width, --train-batch and --repeats must be positive")
    if on_cpu and not os.path.exists("/proc/self/clear_refs"):
        parser.error("CPU peak memory is read from /proc (Linux only); use --device cuda elsewhere")

    torch.manual_seed(0)
    model = build_model(TeacherConfig.preset(preset, use_mscale=True, use_pointrend=False)).to(device).train()
    images = torch.randn(args.train_batch, 3, height, width, device=device)
    labels = torch.randint(0, model.config.num_classes, (args.train_batch, height, width), device=device)
    train = [
        train_cost("hierarchical", MSCALE_TRAIN_SCALES, Teacher.losses, model, images, labels, args.repeats),
        train_cost("explicit", EXPLICIT_TRAIN_SCALES, explicit_attention_losses, model, images, labels, args.repeats),
    ]
    del model, images, labels

    context = multiprocessing.get_context("spawn")
    inference = []
    for scales in INFERENCE_SCALE_SETS:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            job = pool.submit(inference_cost, preset, scales, height, width, args.device, args.pointrend, args.repeats)
            inference.append(job.result())

    memory = ("torch.cuda.max_memory_allocated growth" if not on_cpu
              else "peak resident set (VmHWM) during the call minus resident set before it")
    info = machine(device)
    console = Console()
    console.print(" ".join(f"{k}={v}" for k, v in info.items()))
    console.print(_train_table(train, f"Training, preset {preset}, {height}x{width} crops, per image"))
    console.print(_inference_table(
        inference, f"Inference, preset {preset}, {height}x{width}, PointRend {'on' if args.pointrend else 'off'}",
        memory))
    hierarchical, explicit = train
    single = inference[0]
    if args.json:
        print(json.dumps({
            "machine": info,
            "preset": preset,
            "height": height,
            "width": width,
            "pointrend": args.pointrend,
            "train": [asdict(c) for c in train],
            "inference": [asdict(c) for c in inference],
            "memory_measure": memory,
            "train_flops_ratio": explicit.gflops_per_image / hierarchical.gflops_per_image,
            "train_time_ratio": explicit.seconds_per_image / hierarchical.seconds_per_image,
            "inference_flops_ratio": {_key(c.scales): c.gflops / single.gflops for c in inference},
            "inference_time_ratio": {_key(c.scales): c.seconds / single.seconds for c in inference},
            "inference_memory_ratio": {
                _key(c.scales): c.peak_mib / single.peak_mib if single.peak_mib else None for c in inference
            },
        }))


if __name__ == "__main__":
    main()
