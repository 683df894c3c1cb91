"""Train a teacher (or student) network: AdamW (or SGD) with warm-up and poly decay, periodic checkpoints, resume.

One worker trains in-process; `workers > 1` runs the same loop data-parallel on Ray Train
(pipelines/train_ray.py). Everything a run produces lives in its run directory:
`model.pt` (final), `checkpoints/iter_*.pt` (resumable state) and `metrics.jsonl`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from autolabel.dataset import SegmentationDataset, cityscapes_dataset
from autolabel.errors import ConfigError, TrainingError
from autolabel.files import write_bytes_atomic
from autolabel.fused import fused_dataset
from autolabel.transforms import AugmentConfig
from models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from models.parts import HEADS, PARTS, UNTRAINED_KEY, freeze_except, parse_parts, train_mode, untrained_after
from models.predict import PredictOptions
from models.teacher import Teacher, TeacherConfig
from pipelines.evaluate import EvaluateConfig, evaluate
from pipelines.ray_session import available_cores
from pipelines.train_ray import run_on_ray_train

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
FINAL_MODEL = "model.pt"
METRICS_LOG = "metrics.jsonl"
KEEP_CHECKPOINTS = 2
OPTIMIZERS = {"adamw": 0.01, "sgd": 1e-4}
"""The optimizers a run may use, with their default weight decay."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training run; stored in its checkpoints' metadata."""

    root: str
    run_dir: str
    preset: str = "tiny"
    iters: int = 1000
    batch_size: int = 8
    crop: tuple[int, int] = (64, 128)
    scale: tuple[float, float] = (0.5, 2.0)
    """Random rescale range before cropping; (1.0, 1.0) keeps the images' size."""
    flip: bool = True
    jitter: float = 0.25
    """Colour jitter strength; 0 turns it off."""
    optimizer: str = "adamw"
    """`adamw` (the default: from scratch on a short budget it learns far faster) or `sgd` (momentum 0.9, the
    reference recipe for long runs from pretrained backbones)."""
    lr: float = 0.003
    momentum: float = 0.9
    weight_decay: float | None = None
    """None: 0.01 for adamw, 1e-4 for sgd."""
    warmup_iters: int = 25
    """Iterations of linear warm-up to `lr` before the poly decay."""
    poly_power: float = 1.0
    workers: int = 1
    device: str = "cpu"
    split: str = "train"
    source: str = "gtFine"
    samples: str | None = None
    storage_options: dict[str, Any] | None = None
    """With --samples: fsspec options of the label stores the table names (an S3 endpoint, credentials); never
    written to a checkpoint."""
    class_uniform: float = 0.5
    class_balance: float = 0.5
    """Weigh each class's pixels (and PointRend's points) by its batch frequency ** -class_balance: 0.5 lifts a
    class 100x rarer than road 10x, so the thin and rare classes that decide the mIoU are learnt within a short
    budget. 0 is plain cross-entropy."""
    fine_fraction: float | None = None
    """With --samples: share of each epoch's samples from fine labels (None = natural proportions)."""
    coarse_rare_only: bool = False
    """With --samples: centre coarse-label crops on rare classes only (the reference's coarse boost)."""
    loader_workers: int = 0
    """DataLoader processes; 0 loads in the training process (best on small CPU machines)."""
    threads: int | None = None
    """torch threads per worker; None = the cores this process may use (its affinity), shared among workers and
    loader processes."""
    checkpoint_every: int = 200
    log_every: int = 10
    eval_every: int = 0
    """Every N iterations (and at the end), log the val mIoU (scale 1.0, bilinear) to the metrics log as
    `val_miou`: the learning curve. 0 turns it off."""
    eval_split: str = "val"
    seed: int = 0
    use_mscale: bool = True
    use_pointrend: bool = True
    init: str | None = None
    """Start from this checkpoint's network and weights instead of a fresh `preset` network (a student that
    continues from its teacher, a converted pretrained teacher)."""
    train_only: tuple[str, ...] | None = None
    """With `init`: fit only these parts (`models.parts.PARTS`, e.g. point_head, attention) with the rest frozen,
    their BatchNorm statistics included; None trains everything."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop", tuple(self.crop))
        object.__setattr__(self, "scale", tuple(self.scale))
        if self.train_only is not None:
            object.__setattr__(self, "train_only", parse_parts(self.train_only))
            _check_train_only(self)
        if self.iters < 1 or self.batch_size < 1 or self.workers < 1:
            raise ConfigError(f"iters, batch size and workers must be >= 1 (got {self.iters}, {self.batch_size}, {self.workers})")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.batch_size % self.workers:
            raise ConfigError(f"batch size {self.batch_size} must be divisible by the {self.workers} workers")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not (math.isfinite(self.class_balance) and self.class_balance >= 0):
            raise ConfigError(f"class_balance must be a number >= 0, got {self.class_balance}")
        if not (math.isfinite(self.lr) and self.lr > 0) or self.warmup_iters < 0:
            raise ConfigError(f"lr must be a positive number and warmup_iters >= 0 (got {self.lr}, {self.warmup_iters})")

    @property
    def trained_parts(self) -> tuple[str, ...]:
        """The parts this run fits: `train_only`, else all but heads switched off."""
        if self.train_only is not None:
            return self.train_only
        off = {"attention"} if not self.use_mscale else set()
        off |= {"point_head"} if not self.use_pointrend else set()
        return tuple(p for p in PARTS if p not in off)

    @property
    def decay(self) -> float:
        """The weight decay in effect."""
        return OPTIMIZERS[self.optimizer] if self.weight_decay is None else self.weight_decay

    def model_config(self) -> TeacherConfig:
        return TeacherConfig.preset(self.preset, use_mscale=self.use_mscale, use_pointrend=self.use_pointrend,
                                    class_balance=self.class_balance)


def _check_train_only(config: TrainConfig) -> None:
    if config.init is None:
        raise ConfigError("--train-only fits parts of an existing network: it needs --init CHECKPOINT")
    if "point_head" in config.train_only and not config.use_pointrend:
        raise ConfigError("--train-only point_head needs PointRend on (use_pointrend)")
    if "attention" in config.train_only and not config.use_mscale:
        raise ConfigError("--train-only attention needs multi-scale training on (use_mscale)")


def initial_model(config: TrainConfig) -> Teacher:
    """The network a run starts from: the preset's, freshly initialised, or with `init` the checkpoint's network
    and weights (its preset wins over `config.preset`)."""
    if config.init is None:
        return Teacher(config.model_config())
    ckpt = load_checkpoint(Path(config.init))
    model_config = dataclasses.replace(TeacherConfig.from_dict(ckpt.config), use_mscale=config.use_mscale,
                                       use_pointrend=config.use_pointrend, class_balance=config.class_balance)
    model = Teacher(model_config)
    model.load_state_dict(ckpt.state_dict)
    return model


@dataclasses.dataclass(frozen=True)
class StepReport:
    iteration: int
    total: int
    loss: float
    terms: dict
    lr: float
    images_per_s: float


Reporter = Callable[[StepReport], None]


def poly_lr(base_lr: float, iteration: int, total: int, power: float, warmup: int = 0) -> float:
    """The learning rate of 0-based `iteration`: linear warm-up over `warmup` iterations, then poly decay."""
    if iteration < warmup:
        return base_lr * (iteration + 1) / warmup
    return base_lr * (1 - iteration / total) ** power


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer over the parameters that require gradients (those of `train_only` when the rest is frozen)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.decay)


class EpochSampler(Sampler[int]):
    """This rank's share of a seeded per-epoch permutation, from `start` on (for resuming mid-epoch)."""

    def __init__(self, size: int, seed: int, epoch: int, rank: int = 0, world: int = 1, start: int = 0) -> None:
        order = np.random.default_rng([seed, epoch]).permutation(size)
        per_rank = size // world
        self.indices = order[rank * per_rank : (rank + 1) * per_rank][start:].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def compute_threads(workers: int, loader_workers: int) -> int:
    """torch threads per training worker so workers and loader processes never oversubscribe the cores."""
    return max(1, available_cores() // workers - loader_workers)


CENTROID_CACHE = "label_centroids.parquet"
"""Class centroids of the run's label files, kept in the run directory with what it was derived for."""


def build_dataset(config: TrainConfig) -> SegmentationDataset:
    augment = AugmentConfig(crop=config.crop, scale=config.scale, flip=config.flip, jitter=config.jitter)
    if config.samples:
        return fused_dataset(config.samples, augment, class_uniform=config.class_uniform,
                             fine_fraction=config.fine_fraction, coarse_rare_only=config.coarse_rare_only,
                             seed=config.seed, storage_options=config.storage_options)
    return cityscapes_dataset(
        config.root, config.split, config.source, augment, class_uniform=config.class_uniform,
        cache_file=Path(config.run_dir) / CENTROID_CACHE, seed=config.seed,
    )


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((Path(run_dir) / CHECKPOINTS).glob("iter_*.pt"))
    return found[-1] if found else None


def inherited_untrained(config: TrainConfig) -> list[str]:
    """The heads untrained before this run: those the `init` checkpoint lists, or all of them for a fresh network."""
    if config.init is None:
        return list(HEADS)
    return list(load_checkpoint(Path(config.init)).metadata.get(UNTRAINED_KEY, []))


def _metadata(config: TrainConfig, iteration: int, loss: float | None, untrained: list[str] | None = None) -> dict:
    return {
        UNTRAINED_KEY: untrained_after(HEADS if untrained is None else untrained, config.trained_parts),
        "training": {k: v for k, v in dataclasses.asdict(config).items() if k != "storage_options"},
        "iterations": iteration,
        "metrics": {"train_loss": loss},
        "torch": str(torch.__version__),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def check_finite(model: torch.nn.Module, iteration: int) -> None:
    """A TrainingError naming the first non-finite weight or BatchNorm statistic: such a model is never saved."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TrainingError(f"{name} became non-finite at iteration {iteration}; nothing was saved past the last "
                                "checkpoint: lower --lr and resume")


def _save_state(run_dir: Path, model: Teacher, optimizer, config: TrainConfig, iteration: int, loss: float,
                untrained: list[str] | None = None) -> None:
    check_finite(model, iteration)
    ckpt_dir = Path(run_dir) / CHECKPOINTS
    extra = {"optimizer": optimizer.state_dict(), "iteration": iteration}
    ckpt = Checkpoint(model.config.to_dict(), model.state_dict(), _metadata(config, iteration, loss, untrained), extra)
    save_checkpoint(ckpt_dir / f"iter_{iteration:08d}.pt", ckpt)
    for old in sorted(ckpt_dir.glob("iter_*.pt"))[:-KEEP_CHECKPOINTS]:
        old.unlink()


def _append_metrics(run_dir: Path, row: dict) -> None:
    with open(Path(run_dir) / METRICS_LOG, "a") as f:
        f.write(json.dumps(row) + "\n")


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of a run's metrics log; a last line torn by a crash mid-write is left out."""
    path = Path(run_dir) / METRICS_LOG
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s: skipping a torn line: %.60s", path, line)
    return rows


def _truncate_metrics(run_dir: Path, iteration: int) -> None:
    """Drop log rows past the resumed iteration (and a torn last line), so a resumed run never logs a step
    twice."""
    rows = [row for row in read_metrics(run_dir) if row["iteration"] <= iteration]
    write_bytes_atomic(Path(run_dir) / METRICS_LOG, "".join(json.dumps(row) + "\n" for row in rows).encode())


def _batches(dataset: SegmentationDataset, config: TrainConfig, start_iter: int, rank: int, world: int):
    """Endless (images, labels) batches from iteration `start_iter` on, epoch after epoch."""
    per_rank = config.batch_size // world
    steps_per_epoch = max(1, len(dataset) // config.batch_size)
    epoch, step = divmod(start_iter, steps_per_epoch)
    while True:
        dataset.set_epoch(epoch)
        sampler = EpochSampler(len(dataset), config.seed, epoch, rank, world, start=step * per_rank)
        if len(dataset) < config.batch_size:  # tiny datasets: repeat to fill a batch
            sampler.indices = (sampler.indices * math.ceil(config.batch_size / max(1, len(sampler.indices))))
        loader = DataLoader(
            dataset,
            batch_size=per_rank,
            sampler=sampler,
            num_workers=config.loader_workers,
            drop_last=True,
            pin_memory=config.device == "cuda",
        )
        yield from loader
        epoch, step = epoch + 1, 0


def train_worker(config: TrainConfig, reporter: Reporter | None = None, rank: int = 0, world: int = 1,
                 wrap: Callable[[Teacher], torch.nn.Module] | None = None) -> Path:
    """The training loop of one worker; rank 0 writes logs and checkpoints. Returns the final model path."""
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed + rank)
    torch.set_num_threads(config.threads or compute_threads(config.workers, config.loader_workers))
    device = torch.device(config.device)
    model = initial_model(config).to(device)
    untrained = inherited_untrained(config)
    if config.train_only:
        freeze_except(model, config.train_only)
    optimizer = build_optimizer(model, config)
    start = 0
    resume = latest_checkpoint(run_dir)
    if resume is not None:
        state = load_checkpoint(resume)
        if TeacherConfig.from_dict(state.config) != model.config:
            raise ConfigError(f"{resume}: this run was started with another network (a different --preset, "
                              "--init or model setting); resume it with its own settings or train into another --out")
        model.load_state_dict(state.state_dict)
        optimizer.load_state_dict(state.extra["optimizer"])
        start = int(state.extra["iteration"])
        log.info("resuming %s from iteration %d", run_dir, start)
        if rank == 0:
            _truncate_metrics(run_dir, start)
    net = wrap(model) if wrap else model
    train_mode(net, config.train_only)
    dataset = build_dataset(config)
    loss_value = float("nan")
    tic, seen = time.perf_counter(), 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    batches = _batches(dataset, config, start, rank, world)
    for iteration in range(start + 1, config.iters + 1):
        images, labels = next(batches)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        lr = poly_lr(config.lr, iteration - 1, config.iters, config.poly_power, config.warmup_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast:
            terms = net(images, labels)
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise TrainingError(f"loss became {loss_value} at iteration {iteration}; lower --lr")
        seen += images.shape[0] * world
        if rank != 0:
            continue
        if iteration % config.log_every == 0 or iteration == config.iters:
            elapsed = time.perf_counter() - tic
            report = StepReport(iteration, config.iters, loss_value, {k: float(v.detach()) for k, v in terms.items()}, lr,
                                seen / elapsed if elapsed > 0 else 0.0)
            _append_metrics(run_dir, {"iteration": iteration, "loss": loss_value, **report.terms, "lr": lr,
                                      "images_per_s": report.images_per_s})
            if reporter:
                reporter(report)
            tic, seen = time.perf_counter(), 0
        if config.eval_every and (iteration % config.eval_every == 0 or iteration == config.iters):
            _append_metrics(run_dir, {"iteration": iteration, "val_miou": validation_miou(model, config)})
            train_mode(net, config.train_only)
        if iteration % config.checkpoint_every == 0 and iteration < config.iters:
            _save_state(run_dir, model, optimizer, config, iteration, loss_value, untrained)
    final = run_dir / FINAL_MODEL
    if rank == 0:
        if start < config.iters or not final.exists():
            check_finite(model, config.iters)
            ckpt = Checkpoint(model.config.to_dict(), model.state_dict(),
                              _metadata(config, config.iters, loss_value, untrained))
            save_checkpoint(final, ckpt)
            _save_state(run_dir, model, optimizer, config, config.iters, loss_value, untrained)
    return final


def _ray_worker_loop(config_dict: dict) -> None:
    import ray.train
    import ray.train.torch

    config = TrainConfig(**config_dict)
    ctx = ray.train.get_context()
    unused = not (config.use_mscale and config.use_pointrend)

    def wrap(model: Teacher) -> torch.nn.Module:
        return ray.train.torch.prepare_model(
            model, move_to_device=False, parallel_strategy_kwargs={"find_unused_parameters": unused}
        )

    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def reporter(report: StepReport) -> None:
        log.info("iter %d/%d loss %.4f %.1f img/s", report.iteration, report.total, report.loss, report.images_per_s)

    device = "cuda" if config.device == "cuda" else "cpu"
    if device == "cuda":
        torch.cuda.set_device(ray.train.torch.get_device())
    train_worker(config, reporter, rank=ctx.get_world_rank(), world=ctx.get_world_size(), wrap=wrap)


def _absolute_paths(config: TrainConfig) -> TrainConfig:
    """The config with its local paths made absolute: Ray workers run in directories of their own."""
    samples = str(Path(config.samples).resolve()) if config.samples else None
    init = str(Path(config.init).resolve()) if config.init else None
    return dataclasses.replace(config, root=str(Path(config.root).resolve()),
                               run_dir=str(Path(config.run_dir).resolve()), samples=samples, init=init)


def _iteration_of(checkpoint: Path | None) -> int:
    return int(checkpoint.stem.removeprefix("iter_")) if checkpoint else 0


def validation_miou(model: Teacher, config: TrainConfig) -> float:
    """mIoU of the model on the config's validation split at scale 1.0 without PointRend (the cheap view)."""
    cheap = EvaluateConfig(root=Path(config.root), checkpoint=Path(config.run_dir), split=config.eval_split,
                           predict=PredictOptions(scales=(1.0,), pointrend=False), device=config.device)
    return evaluate(cheap, model=model).miou


def learning_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(iteration, val mIoU) rows a run with `eval_every` logged, in order."""
    return [(row["iteration"], row["val_miou"]) for row in read_metrics(run_dir) if "val_miou" in row]


def _report_row(row: dict, total: int) -> StepReport:
    terms = {k: v for k, v in row.items() if k not in ("iteration", "loss", "lr", "images_per_s")}
    return StepReport(row["iteration"], total, row["loss"], terms, row["lr"], row["images_per_s"])


def follow_metrics(run_dir: Path, total: int, reporter: Reporter, stop: threading.Event, poll_s: float = 0.5) -> None:
    """Report the rows that rank 0 appends to the metrics log past the resumed iteration, until `stop` is set."""
    path, last = Path(run_dir) / METRICS_LOG, _iteration_of(latest_checkpoint(run_dir))
    while True:
        finished = stop.wait(poll_s)
        text = path.read_text() if path.exists() else ""
        for line in text[: text.rfind("\n") + 1].splitlines():  # whole lines only
            row = json.loads(line)
            if "loss" in row and row["iteration"] > last:
                reporter(_report_row(row, total))
                last = row["iteration"]
        if finished:
            return


def train_ray(config: TrainConfig, address: str | None = None, reporter: Reporter | None = None) -> Path:
    """Data-parallel training on `config.workers` Ray Train workers; `reporter` hears each logged step."""
    config = _absolute_paths(config)
    stop = threading.Event()
    follower = threading.Thread(target=follow_metrics, args=(config.run_dir, config.iters, reporter, stop), daemon=True)
    if reporter:
        follower.start()
    try:
        run_on_ray_train(_ray_worker_loop, dataclasses.asdict(config), workers=config.workers,
                         use_gpu=config.device == "cuda", storage_path=Path(config.run_dir) / "ray", address=address)
    finally:
        stop.set()
        if reporter:
            follower.join()
    return Path(config.run_dir) / FINAL_MODEL


def train(config: TrainConfig, reporter: Reporter | None = None, address: str | None = None) -> Path:
    """Train to `config.iters` (resuming from the run directory's last checkpoint); return model.pt's path."""
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    if config.workers == 1:
        return train_worker(config, reporter)
    return train_ray(config, address, reporter)
