"""A small stage graph: each stage runs once and is reused on a rerun only while what it consumed is unchanged.

    workdir/stages/{name}.json = {"result": ..., "seconds": ..., "key": ..., "run": ...}

A stage's `key` hashes its own parameters and the `run` ids of the stages it consumes (`after`). Every time a
stage really runs it gets a new `run` id, so rerunning a stage (its output was deleted, its parameters changed)
reruns everything downstream of it, and nothing downstream is reused stale. A stage is reused when its record
holds the same key and every file it names in `outputs` still exists.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from autolabel.files import write_json_atomic


class Reporter(Protocol):
    def stage(self, name: str, reused: bool) -> None: ...
    def progress(self, done: int, total: int | None) -> None: ...


class SilentReporter:
    """A reporter that says nothing."""

    def stage(self, name: str, reused: bool) -> None:
        pass

    def progress(self, done: int, total: int | None) -> None:
        pass


def stage_key(params: Any, upstream_runs: dict[str, str]) -> str:
    """The reuse key of a stage: its JSON-able parameters and the run ids of the stages it consumes."""
    text = json.dumps({"params": params, "after": upstream_runs}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class StageGraph:
    """Runs named stages in `workdir/stages`, reusing a stage only while its inputs are those it ran on."""

    def __init__(self, workdir: Path, reporter: Reporter | None = None) -> None:
        self.dir = Path(workdir) / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.reporter = reporter or SilentReporter()
        self._runs: dict[str, str] = {}

    def run(self, name: str, fn: Callable[[], dict], *, after: Sequence[str] = (),
            outputs: Sequence[str | Path] = (), params: Any = None) -> dict:
        """`fn`'s result: read back when the last run had the same `params` and upstream runs (`after`, names of
        stages already run in this graph) and its `outputs` all exist; else run now."""
        key = stage_key(params, {dep: self._runs[dep] for dep in after})
        path = self.dir / f"{name}.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        if record.get("key") == key and all(Path(p).exists() for p in outputs):
            self.reporter.stage(name, reused=True)
        else:
            self.reporter.stage(name, reused=False)
            tic = time.perf_counter()
            result = fn()
            record = {"result": result, "seconds": time.perf_counter() - tic, "key": key, "run": uuid.uuid4().hex}
            write_json_atomic(path, record)
        self._runs[name] = record["run"]
        return record["result"]
