"""A real two-node Ray cluster on this machine (a head and a worker node started with `ray start`, joined with
the head's token): `label --address` labels on it and stores every image once, also when the worker node dies
mid-run."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from autolabel.store import LabelStore


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_node(args: list[str], env: dict) -> subprocess.Popen:
    """`ray start --block` in a process group of its own: stopping the group stops this node alone (`ray stop`
    would stop every Ray on the machine, the test session's included)."""
    return subprocess.Popen([shutil.which("ray"), "start", "--block", "--num-cpus=1", "--disable-usage-stats", *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _alive_nodes(address: str, env: dict) -> int:
    status = subprocess.run([shutil.which("ray"), "status", f"--address={address}"], env=env, capture_output=True,
                            text=True, timeout=60)
    active = status.stdout.split("Active:")[-1].split("Pending:")[0]
    return sum(line.strip().startswith("1 node_") for line in active.splitlines())


def _wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the cluster did not come up"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def two_node_cluster():
    """Head and worker node with one CPU each; joining uses the head's token, as on a real cluster. Shared by the
    tests below in their order: the last one kills the worker node."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray2n", dir="/tmp")  # short: Ray's sockets live there
    # RAY_TMPDIR of its own, so the cluster's address file never leads the session's `ray.init()` to it
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_TMPDIR": temp}
    address = f"127.0.0.1:{port}"
    nodes = [_start_node(["--head", f"--port={port}", "--include-dashboard=false"], env)]
    try:
        _wait_for(lambda: _alive_nodes(address, env) == 1, 120)
        nodes.append(_start_node([f"--address={address}"], env))
        _wait_for(lambda: _alive_nodes(address, env) == 2, 120)
        yield address, env, nodes[1].pid  # the worker node's process group
    finally:
        for node in reversed(nodes):
            try:
                os.killpg(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            node.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_label_on_a_two_node_cluster_stores_every_image_once(two_node_cluster, dataset_root, teacher_checkpoint,
                                                             tmp_path):
    """About 30 s: two labelling actors on a cluster of two one-CPU nodes."""
    address, env, _ = two_node_cluster
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


LABEL_AND_REPORT = """
import os, sys, time
from pathlib import Path
from pipelines.label import Labeler, label
from tests.runs import label_config

root, checkpoint, out, address, pids = sys.argv[1:]

class ReportingLabeler(Labeler):
    def label_claimed(self, batch, attempts):
        Path(pids, str(os.getpid())).touch()
        time.sleep(1.0)  # holding its claims
        return super().label_claimed(batch, attempts)

summary = label(label_config(root, checkpoint, out, threshold=0.0, address=address, workers=2),
                labeler=ReportingLabeler)
print(summary.done, summary.shared, len(summary.failed))
"""


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def _descendants(root: int) -> set[int]:
    """The processes under `root` (read from /proc): a Ray node's raylet and its workers."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = _parent(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker node's processes in /proc")
def test_label_survives_the_death_of_a_worker_node(two_node_cluster, dataset_root, teacher_checkpoint, tmp_path):
    """About 40 s: the worker node is killed while its actor holds an image; the head labels the rest."""
    address, env, worker_node = two_node_cluster
    out, pids = tmp_path / "s.zarr", tmp_path / "pids"
    pids.mkdir()
    run = subprocess.Popen([sys.executable, "-c", LABEL_AND_REPORT, str(dataset_root), str(teacher_checkpoint),
                            str(out), address, str(pids)],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))

    def labelling_on_worker_node() -> bool:
        return bool({int(p.name) for p in pids.iterdir()} & _descendants(worker_node))

    try:
        _wait_for(lambda: labelling_on_worker_node() or run.poll() is not None, 120)
        assert run.poll() is None, "the run ended before an actor ran on the worker node"
        for pid in _descendants(worker_node) | {worker_node}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stdout, _ = run.communicate(timeout=300)
    finally:
        run.kill()
    assert run.returncode == 0
    images = sorted(p.name.removesuffix("_leftImg8bit.png") for p in dataset_root.glob("leftImg8bit/train_extra/*/*.png"))
    store = LabelStore.open(str(out))
    assert sorted(store.completed_ids()) == images and store.manifest().num_rows == len(images)
    assert stdout.split()[-1] == "0"  # no image failed
