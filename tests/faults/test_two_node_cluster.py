"""A real two-node Ray cluster on this machine (a head and a worker node started with `ray start`, joined with
the head's token): `label --address` labels on it and stores every image once."""

import os
import shutil
import socket
import subprocess
import sys

import pytest

from autolabel.store import LabelStore


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("ray"), *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def two_node_cluster():
    """Head and worker node with one CPU each; joining uses the head's token, as on a real cluster."""
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    head = _ray("start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                "--disable-usage-stats", env=env)
    assert head.returncode == 0, head.stdout + head.stderr
    address = f"127.0.0.1:{port}"
    try:
        worker = _ray("start", f"--address={address}", "--num-cpus=1", "--disable-usage-stats", env=env)
        assert worker.returncode == 0, worker.stdout + worker.stderr
        yield address, env
    finally:
        _ray("stop", "--force", env=env)


def test_label_on_a_two_node_cluster_stores_every_image_once(two_node_cluster, dataset_root, teacher_checkpoint,
                                                             tmp_path):
    """About 30 s: two labelling actors on a cluster of two one-CPU nodes."""
    address, env = two_node_cluster
    out = tmp_path / "s.zarr"
    result = subprocess.run(
        [sys.executable, "-m", "cli", "label", str(dataset_root), "--checkpoint", str(teacher_checkpoint),
         "--out", str(out), "--workers", "2", "--address", address],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    images = sorted(p.name.removesuffix("_leftImg8bit.png") for p in dataset_root.glob("leftImg8bit/train_extra/*/*.png"))
    store = LabelStore.open(str(out))
    assert sorted(store.completed_ids()) == images
    assert store.manifest().num_rows == len(images)
