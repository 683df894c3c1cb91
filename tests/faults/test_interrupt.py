"""Ctrl-C: a command stops within seconds with one line, and the same command resumes what it left."""

import os
import signal
import subprocess
import sys
import time

import pytest

from autolabel.store import LabelStore
from cli import redeliver_swallowed_interrupt


def _label(root, checkpoint, out) -> list[str]:
    return [sys.executable, "-m", "cli", "label", str(root), "--checkpoint", str(checkpoint), "--out", str(out),
            "--batch-size", "1"]


def _sigint_as_at_a_terminal() -> None:
    """A child's Ctrl-C handling as at a terminal, even where the tests run with SIGINT ignored (a background
    job of a non-interactive shell, as some CI runners start them), which a child would inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop_group(pid: int) -> None:
    """Kill what is left of the job's process group (Ray's own processes), so none outlives the test."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_ctrl_c_stops_label_within_seconds_and_the_rerun_resumes_it(dataset_root, teacher_checkpoint, tmp_path):
    """About 30 s: two label runs, each starting Ray. Output goes to a file: Ray's processes may hold a pipe."""
    out, log = tmp_path / "s.zarr", tmp_path / "label.log"
    with open(log, "w") as sink:
        job = subprocess.Popen(_label(dataset_root, teacher_checkpoint, out), stdout=sink, stderr=subprocess.STDOUT,
                               start_new_session=True, preexec_fn=_sigint_as_at_a_terminal)
    try:
        deadline = time.monotonic() + 120
        while not (out / "zarr.json").exists() and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.1)
        os.killpg(job.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground group
        start = time.monotonic()
        code = job.wait(timeout=60)
        assert time.monotonic() - start < 15
    finally:
        _stop_group(job.pid)
    assert code == 130, log.read_text()
    assert "run the same command again to resume" in log.read_text()
    with open(log, "w") as sink:
        rerun = subprocess.run(_label(dataset_root, teacher_checkpoint, out), stdout=sink, stderr=subprocess.STDOUT,
                               timeout=180)
    assert rerun.returncode == 0, log.read_text()
    assert len(LabelStore.open(str(out)).completed_ids()) == len(list(dataset_root.glob("leftImg8bit/train_extra/*/*.png")))


class _Finaliser:
    """Raises `error` when dropped: Python prints it as ignored and goes on, as with one in an at-fork hook."""

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def __del__(self) -> None:
        raise self.error


def _drop(error: type[BaseException], wait_s: float = 1.0) -> None:
    previous, sys.unraisablehook = sys.unraisablehook, redeliver_swallowed_interrupt
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, even if SIGINT was ignored
    try:
        _Finaliser(error)
        deadline = time.monotonic() + wait_s  # the main thread takes a pending interrupt as a sleep returns
        while time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sys.unraisablehook = previous
        signal.signal(signal.SIGINT, handler)


def test_a_ctrl_c_python_would_swallow_is_raised_again_in_the_main_thread():
    with pytest.raises(KeyboardInterrupt):
        _drop(KeyboardInterrupt, wait_s=10.0)  # ends at the interrupt, 50 ms in; a loaded machine may take longer


def test_other_swallowed_errors_are_only_reported(capsys):
    _drop(ValueError)
    assert "Exception ignored" in capsys.readouterr().err
