"""The machine a benchmark ran on, printed and written next to its figures."""

from __future__ import annotations

import os
import platform


def machine(device: object | None = None, **versions: str) -> dict[str, object]:
    """Platform, processor and core count, plus torch's threads and device when `device` is given, plus
    the `versions` of the libraries the benchmark measures."""
    info: dict[str, object] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    if device is not None:
        import torch

        device = torch.device(device)
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(), device=str(device))
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
    return {**info, **versions}
