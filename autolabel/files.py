"""Writing a local file so that its name never points at a partial file: write beside it, then rename.

    path.parent/.{name}.{pid}.tmp  --write, flush, fsync-->  os.replace(tmp, path)

A crash at any moment leaves either the old file or the new one, never a torn one; the temporary file is
removed when writing fails.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write `path`'s new content to; renamed over `path` when the block ends cleanly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace `path` with `data` as indented JSON, atomically."""
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode())
