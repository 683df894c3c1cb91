"""A Ray Train worker lost mid-run: Ray Train restarts the group and the run resumes from its last checkpoint."""

import os
import threading
import time
from pathlib import Path

import cloudpickle

from autolabel.synth import SynthConfig, generate
from pipelines import train as training
from pipelines.train import FINAL_MODEL, TrainConfig, read_metrics
from pipelines.train_ray import run_on_ray_train

KILLED = "killed_rank_1"


def _die_after_first_checkpoint(run_dir: Path) -> None:
    """In rank 1, once: wait for rank 0's first checkpoint, then end the process as a lost node would."""
    marker = run_dir / KILLED
    if marker.exists():
        return
    while not any((run_dir / training.CHECKPOINTS).glob("iter_*.pt")):
        time.sleep(0.005)
    marker.touch()
    os._exit(1)


def _loop_losing_rank_1_once(config: dict) -> None:
    import ray.train

    if ray.train.get_context().get_world_rank() == 1:
        threading.Thread(target=_die_after_first_checkpoint, args=(Path(config["run_dir"]),), daemon=True).start()
    training._ray_worker_loop(config)


cloudpickle.register_pickle_by_value(__import__(__name__))


def test_two_worker_training_survives_a_lost_worker_and_logs_every_iteration_once(tmp_path, ray_address):
    """About 60 s: two Ray Train group start-ups."""
    generate(tmp_path / "root", tmp_path / "truth", SynthConfig(train=2, val=1, train_extra=0, height=64, width=128))
    run_dir = tmp_path / "run"
    config = TrainConfig(root=str(tmp_path / "root"), run_dir=str(run_dir), iters=8, batch_size=2, crop=(64, 128),
                         scale=(1.0, 1.0), jitter=0.0, class_uniform=0.0, use_mscale=False, use_pointrend=False,
                         log_every=1, checkpoint_every=2, workers=2)
    run_on_ray_train(_loop_losing_rank_1_once, training._absolute_paths(config).__dict__, workers=2, use_gpu=False,
                     storage_path=tmp_path / "ray")
    assert (run_dir / KILLED).exists()
    assert (run_dir / FINAL_MODEL).is_file()
    assert [row["iteration"] for row in read_metrics(run_dir) if "loss" in row] == list(range(1, 9))
