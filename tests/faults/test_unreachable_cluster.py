"""A Ray address nobody answers at: a one-line error within seconds instead of Ray's endless retries."""

import socket
import subprocess
import sys
import time

import pytest

from autolabel.errors import ConfigError
from pipelines.ray_session import address_endpoint, check_reachable


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("address, endpoint", [
    ("10.0.0.5:6379", ("10.0.0.5", 6379)),
    ("ray://head.example:10001", ("head.example", 10001)),
    ("head.example", ("head.example", 6379)),
    ("auto", None),
])
def test_a_ray_address_names_the_endpoint_it_is_reached_at(address, endpoint):
    assert address_endpoint(address) == endpoint


def test_a_malformed_ray_address_is_refused():
    with pytest.raises(ConfigError, match="HOST:PORT"):
        address_endpoint("head:port")


def test_an_address_nobody_answers_at_is_a_config_error_naming_it():
    address = f"127.0.0.1:{_closed_port()}"
    with pytest.raises(ConfigError, match=f"no Ray cluster answers at {address}"):
        check_reachable(address, timeout_s=2.0)


def test_label_with_an_unreachable_address_exits_1_within_seconds(dataset_root, teacher_checkpoint, tmp_path):
    address = f"127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "cli", "label", str(dataset_root), "--checkpoint", str(teacher_checkpoint),
         "--out", str(tmp_path / "s.zarr"), "--address", address],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"no Ray cluster answers at {address}" in result.stdout + result.stderr
    assert time.monotonic() - start < 60


def test_a_cluster_that_refuses_the_connection_is_a_config_error_naming_token_authentication(monkeypatch):
    import ray

    from pipelines.ray_session import ray_session

    def refuse(**_):
        raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr("pipelines.ray_session.check_reachable", lambda address, timeout_s: None)
    with pytest.raises(ConfigError, match="RAY_AUTH_MODE=token"):
        with ray_session("127.0.0.1:6379"):
            pass
