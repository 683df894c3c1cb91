"""The Ray Train driver: runs one training loop on N data-parallel workers (gloo on CPU, nccl on GPU).

    driver ── ray_session(address) ──► TorchTrainer(loop, loop_config) ── N workers ──► loop(loop_config)

The loop itself (what a worker does, where it logs and checkpoints) belongs to the caller; this module only
knows how to place it on a Ray cluster. A worker that dies makes Ray Train restart the group, up to
`max_failures` times; the loop resumes from its own last checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.ray_session import ray_session


def run_on_ray_train(loop: Callable[[dict[str, Any]], None], loop_config: dict[str, Any], *, workers: int,
                     use_gpu: bool, storage_path: Path, address: str | None = None, max_failures: int = 2) -> None:
    """Run `loop(loop_config)` on `workers` Ray Train workers (one CPU, or one GPU, each) until all return."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    with ray_session(address):
        TorchTrainer(
            loop,
            train_loop_config=loop_config,
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                         resources_per_worker=None if use_gpu else {"CPU": 1}),
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            run_config=RunConfig(storage_path=str(Path(storage_path).resolve()), name="train",
                                 failure_config=FailureConfig(max_failures=max_failures)),
        ).fit()
