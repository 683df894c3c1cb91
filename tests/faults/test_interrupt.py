"""Ctrl-C: a command stops within seconds with one line, and the same command resumes what it left."""

import os
import signal
import subprocess
import sys
import time

from autolabel.store import LabelStore


def _label(root, checkpoint, out) -> list[str]:
    return [sys.executable, "-m", "cli", "label", str(root), "--checkpoint", str(checkpoint), "--out", str(out),
            "--batch-size", "1"]


def test_ctrl_c_stops_label_within_seconds_and_the_rerun_resumes_it(dataset_root, teacher_checkpoint, tmp_path):
    """About 30 s: two label runs, each starting Ray."""
    out = tmp_path / "s.zarr"
    job = subprocess.Popen(_label(dataset_root, teacher_checkpoint, out), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (out / "zarr.json").exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.1)
    os.killpg(job.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground group
    start = time.monotonic()
    output, _ = job.communicate(timeout=60)
    assert time.monotonic() - start < 15
    assert job.returncode == 130, output
    assert "run the same command again to resume" in output
    rerun = subprocess.run(_label(dataset_root, teacher_checkpoint, out), capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert len(LabelStore.open(str(out)).completed_ids()) == len(list(dataset_root.glob("leftImg8bit/train_extra/*/*.png")))
