"""Keys of a label store that one process at a time may hold: created exclusively, then read back.

    {url}/zarr.json             the settings document: written once, the first job that creates the store wins
    {url}/claims/{image_id}     a Claim (JSON): a labelling process holds the image; deleted once its record is written
    {url}/manifest.lock         a Claim held while a manifest is folded

Exclusive creation (`put_if_absent`): a local store writes a temporary file beside the key and links it to the key's
name (os.link fails when the name exists), so the key is never seen half written; an fsspec store puts with
mode="create" (S3: `If-None-Match: *`, refused with 412 when the key exists). A filesystem without an exclusive put
falls back to check-then-put, where two racing processes can both believe they won: object stores that ignore
`If-None-Match` have no exclusive create, and reading the key back (`claim_key`) narrows that race but cannot close it.

A Claim is stale, and may be taken over, when its process is gone (a claim made on this host by a pid that no longer
runs), it is older than its timeout (a claim made on another host), or it was made by the same job (a claim names
its job: within one job an image is only retried once the worker holding it is gone, on whichever node): a job that
dies mid-claim loses nothing; the images it held are labelled by the next run on its host at once, elsewhere after
the timeout, and by its own retry at once. A claim counts the
attempts on its key: taking over a stale claim makes attempt `holder.attempt + 1`, so a process that keeps dying
on one image (its worker killed for memory, a crash in native code) shows as a growing count, which its caller
bounds (pipelines.label: MAX_LABEL_ATTEMPTS).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from zarr.abc.store import Store
from zarr.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore

from autolabel.errors import StoreError

CLAIM_TIMEOUT_S = 1800.0
"""Age after which a claim made on another host is stale: longer than any batch takes to label."""
LOCK_TIMEOUT_S = 300.0
"""Age after which a lock (manifest.lock) is stale: longer than any fold takes."""
LOCK_POLL_S = 0.05


async def put_if_absent(zstore: Store, key: str, data: bytes) -> None:
    """Store `data` at `key` unless the key exists, exclusively where the store can (see the module docstring)."""
    if isinstance(zstore, FsspecStore):
        try:
            await zstore.fs._pipe_file(f"{zstore.path.rstrip('/')}/{key}", data, mode="create")
        except FileExistsError:
            pass
        return
    await zstore.set_if_not_exists(key, default_buffer_prototype().buffer.from_bytes(data))


async def read_key(zstore: Store, key: str) -> bytes | None:
    buffer = await zstore.get(key, prototype=default_buffer_prototype())
    return None if buffer is None else buffer.to_bytes()


def claim_key(zstore: Store, key: str, data: bytes) -> bytes:
    """Create `key` holding `data` unless it exists, then read it back: the bytes of whoever won (ours when they
    equal `data`)."""
    sync(put_if_absent(zstore, key, data))
    stored = sync(read_key(zstore, key))
    return data if stored is None else stored  # deleted since by its holder: ours was written, then released


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Claim:
    """Who holds a key: a token unique to this claim, the host and pid that made it, when (UTC ISO), and the how
    many-th attempt on the key it is (1 + the stale claims taken over before it)."""

    token: str
    host: str
    pid: int
    time: str
    attempt: int = 1
    job: str = ""
    """The job the claim was made for ("": none named)."""

    @classmethod
    def mine(cls, attempt: int = 1, job: str = "") -> Claim:
        return cls(uuid.uuid4().hex, socket.gethostname(), os.getpid(), datetime.now(timezone.utc).isoformat(),
                   attempt, job)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Claim | None:
        """The claim `data` holds; None when it is not one (a write cut short on a store without atomic puts)."""
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError):
            return None

    def age_s(self, now: datetime) -> float:
        return (now - datetime.fromisoformat(self.time)).total_seconds()

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.time}"


def is_stale(claim: Claim | None, now: datetime, host: str, timeout_s: float,
             alive: Callable[[int], bool] = pid_alive, job: str = "") -> bool:
    """Whether a claim may be taken over: unreadable, made on `host` by a process that is gone, older than
    `timeout_s`, or made for `job` (when one is named) by a process its retry replaces."""
    if claim is None:
        return True
    if job and claim.job == job:
        return True
    return (claim.host == host and not alive(claim.pid)) or claim.age_s(now) > timeout_s


def acquire(zstore: Store, key: str, timeout_s: float = CLAIM_TIMEOUT_S, job: str = ""
            ) -> tuple[Claim | None, Claim | None]:
    """Try to hold `key` for `job`: (our claim, None) when we do, else (None, the holder's claim). A stale claim is
    deleted and claimed once more, as the attempt after it."""
    holder = None
    for attempt in range(2):
        mine = Claim.mine(1 if holder is None else holder.attempt + 1, job)
        stored = claim_key(zstore, key, mine.to_bytes())
        if stored == mine.to_bytes():
            return mine, None
        holder = Claim.from_bytes(stored)
        if attempt or not is_stale(holder, datetime.now(timezone.utc), socket.gethostname(), timeout_s, job=job):
            return None, holder
        if sync(read_key(zstore, key)) == stored:  # still the stale claim: not one another process took over since
            sync(zstore.delete(key))
    return None, holder


def release(zstore: Store, key: str, claim: Claim) -> None:
    """Delete `key` if `claim` still holds it (a claim taken over as stale is left to its new holder)."""
    if sync(read_key(zstore, key)) == claim.to_bytes():
        sync(zstore.delete(key))


@contextmanager
def held(zstore: Store, key: str, url: str, wait_s: float = LOCK_TIMEOUT_S + 60.0) -> Iterator[Claim]:
    """Hold the lock `key` for the block, waiting while another live process holds it (at most `wait_s`)."""
    deadline = time.monotonic() + wait_s
    while True:
        claim, holder = acquire(zstore, key, LOCK_TIMEOUT_S)
        if claim is not None:
            break
        if time.monotonic() > deadline:
            raise StoreError(f"{url}: {key} is held by {holder}; if no job writes the store, delete {url}/{key}")
        time.sleep(LOCK_POLL_S)
    try:
        yield claim
    finally:
        release(zstore, key, claim)
