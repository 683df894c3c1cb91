"""The one way commands reach Ray: join the running one, connect to an address, or start a local one.

Labelling (Ray Data) and distributed training (Ray Train) both enter `ray_session`; it honours `--address`
and RAY_ADDRESS, and shuts down only a Ray that it started itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


def node_cpus(nodes: Sequence[dict[str, Any]]) -> int:
    """CPUs of the smallest live node that has any (as `ray.nodes()` describes them), at least 1."""
    cpus = [node["Resources"].get("CPU", 0) for node in nodes if node.get("Alive")]
    return max(1, int(min((c for c in cpus if c > 0), default=1)))


@contextmanager
def ray_session(address: str | None = None) -> Iterator[int]:
    """Use the running Ray, connect to `address` (or RAY_ADDRESS), or start a local Ray on every core.

    Yields the CPU count of the cluster's smallest node with CPUs: actors may share any node, so torch
    threads sized from it never oversubscribe one. Shuts down only a Ray it started.
    """
    import ray

    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
        started = True
    elif address:
        log.info("Ray is already initialised; ignoring address %s", address)
    try:
        yield node_cpus(ray.nodes())
    finally:
        if started:
            ray.shutdown()
