"""Checkpoints: {config as plain dict, state_dict, metadata}; loaded with weights_only=True.

A checkpoint file alone rebuilds its model; the sha256 of the file is its identity in provenance.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch

from autolabel.errors import CheckpointError
from autolabel.files import atomic_path

FORMAT_VERSION = 1
REQUIRED_KEYS = ("config", "state_dict", "metadata")


@dataclass(frozen=True)
class Checkpoint:
    config: dict
    state_dict: dict
    metadata: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    """Training state for resuming (optimizer, iteration, RNG); empty in final models."""
    sha256: str = ""
    """The file's sha256 when loaded from one (its identity in a store's provenance)."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(path: Path, ckpt: Checkpoint) -> str:
    """Write atomically (a crash never leaves a half-written file); return the file's sha256."""
    path = Path(path)
    payload = {
        "format": FORMAT_VERSION,
        "config": ckpt.config,
        "state_dict": {k: v.detach().cpu() for k, v in ckpt.state_dict.items()},
        "metadata": ckpt.metadata,
        "extra": ckpt.extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return file_sha256(path)


def one_line_reason(exc: BaseException) -> str:
    """The line of a (possibly multi-line) torch.load error that says what is wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    unpickler = [line for line in lines if "Unsupported global" in line or "WeightsUnpickler" in line]
    return (unpickler or lines or [type(exc).__name__])[0]


def load_checkpoint(path: Path) -> Checkpoint:
    """Load a checkpoint safely (weights_only=True) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint does not exist")
    data = path.read_bytes()  # read once: the bytes give both the weights and the file's identity
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise CheckpointError(f"{path}: not a readable autolabel checkpoint ({one_line_reason(exc)})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not an autolabel checkpoint (format {FORMAT_VERSION} expected)")
    missing = [key for key in REQUIRED_KEYS if not isinstance(payload.get(key), dict)]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return Checkpoint(payload["config"], payload["state_dict"], payload["metadata"], payload.get("extra", {}),
                      hashlib.sha256(data).hexdigest())
