"""Claims on images of a store: which a job may take over, and the attempts they count."""

from __future__ import annotations

import socket
from datetime import datetime, timezone
from pathlib import Path

from zarr.storage import LocalStore

from autolabel.claims import Claim, acquire

KEY = "claims/image"


def held_by(root: Path, claim: Claim) -> LocalStore:
    (root / "claims").mkdir()
    (root / KEY).write_bytes(claim.to_bytes())
    return LocalStore(root)


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def test_taking_over_the_claim_of_a_dead_process_counts_one_more_attempt(tmp_path):
    dead = Claim("t", socket.gethostname(), 2**22 + 12345, now(), attempt=2)  # above Linux's pid_max default
    claim, holder = acquire(held_by(tmp_path, dead), KEY, 60.0)
    assert holder is None and claim.attempt == 3


def test_a_job_takes_over_its_own_claim_made_on_another_node_at_once(tmp_path):
    elsewhere = Claim("t", "another-node", 1, now(), job="job-a")
    claim, holder = acquire(held_by(tmp_path, elsewhere), KEY, 60.0, job="job-a")
    assert holder is None and (claim.job, claim.attempt) == ("job-a", 2)


def test_another_jobs_fresh_claim_made_on_another_node_is_left_to_it(tmp_path):
    elsewhere = Claim("t", "another-node", 1, now(), job="job-a")
    claim, holder = acquire(held_by(tmp_path, elsewhere), KEY, 60.0, job="job-b")
    assert claim is None and holder == elsewhere
