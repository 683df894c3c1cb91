"""The one way commands reach Ray: join the running one, connect to an address, or start a local one.

Labelling (Ray Data) and distributed training (Ray Train) both enter `ray_session`; it honours `--address`
and RAY_ADDRESS, and shuts down only a Ray that it started itself.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from autolabel.errors import ConfigError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0
"""How long `--address` may take to answer before a command gives up (AUTOLABEL_RAY_CONNECT_TIMEOUT)."""
GCS_PORT = 6379


def available_cores() -> int:
    """Cores this process may run on (its affinity under taskset or a container's cpuset), else the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def connect_timeout_s() -> float:
    return float(os.environ.get("AUTOLABEL_RAY_CONNECT_TIMEOUT", CONNECT_TIMEOUT_S))


def address_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) that a Ray address is reached at; None for `auto`, which finds a local Ray by itself."""
    if address == "auto":
        return None
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", str(GCS_PORT))
    if not host or not port.isdigit():
        raise ConfigError(f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    return host, int(port)


def check_reachable(address: str, timeout_s: float) -> None:
    """A ConfigError within `timeout_s` when nothing answers at `address`: Ray itself would retry for ever."""
    endpoint = address_endpoint(address)
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"no Ray cluster answers at {address} within {timeout_s:g} s ({exc.strerror or exc}); "
                          "start one with `ray start --head` or check --address / RAY_ADDRESS") from None


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
            check_reachable(address, connect_timeout_s())
            try:
                ray.init(address=address)
            except ConnectionError as exc:
                raise ConfigError(f"could not join the Ray cluster at {address} ({exc}); a cluster with token "
                                  "authentication (Ray's default) needs RAY_AUTH_MODE=token and its token in "
                                  "RAY_AUTH_TOKEN or ~/.ray/auth_token") from None
        else:
            ray.init(num_cpus=available_cores(), include_dashboard=False)
        started = True
    elif address:
        log.info("Ray is already initialised; ignoring address %s", address)
    try:
        yield node_cpus(ray.nodes())
    finally:
        if started:
            ray.shutdown()
