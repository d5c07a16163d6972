"""Bodies fetched from a remote at their first read (docs/REMOTE.md, "Lazy bodies").

A blob indexed as remote-only (schema: blob kind 2) has no body here. The
first read of it through the view (bodies.BodyCache), the bytecode compiler
or `nwcache prefetch` calls `Lazy.ensure`: one fetch per blob at a time (later
readers wait for it), at most FETCHES at once for reads (trio
CapacityLimiter) and as many for the compiler and prefetch on a limiter of
their own, so that a read never queues behind them; each
streamed by digest into tmp/, checked against its size and sha256, then
renamed into blobs/ and served at once; a committer task makes such bodies
durable and rewrites their entries as local bodies in batches (one syncfs or
a few fsyncs, one write transaction), off the reads' path, since a body lost
in a crash before its commit is only fetched again (its entry still says
remote-only, and the next fetch replaces it). A body that does not match is
deleted and never published. Transient failures are retried with backoff (registry.
retrying, stamina) within NWCACHE_REMOTE_WAIT seconds in all (default 20);
then the read fails (the view answers EIO), the failure is counted, and the
first failure of a remote is logged (once, until it answers again).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from nwcache.errors import NwcacheError
from nwcache.remotes import RemoteError

from . import schema
from .blobs import fsync_path, syncfs
from .index import Index
from .registry import Registry, RegistryError, Transient, retrying
from .staging import FSYNC_ONE_BY_ONE

if TYPE_CHECKING:
    from .tier import Tier

log = logging.getLogger("nwcache.daemon")
FETCHES = 8  # bodies fetched at once
WAIT = 20.0  # seconds a read waits for a body in all (NWCACHE_REMOTE_WAIT)


def wait_bound() -> float:
    try:
        return max(0.1, float(os.environ.get("NWCACHE_REMOTE_WAIT", WAIT)))
    except ValueError:
        return WAIT


class FetchFailed(RegistryError):
    hint = (
        "the body could not be fetched from its remote in time: check the registry ('nwcache remote list'); "
        "what is local keeps working"
    )


@dataclass
class Counters:
    fetched: int = 0  # bodies fetched and kept
    bytes: int = 0  # their bytes
    failures: int = 0  # fetches that failed (each read that got EIO counts once per fetch)
    refused: int = 0  # bodies refused: not matching their digest or size
    waiting: int = 0  # reads waiting for a body right now
    in_flight: int = 0  # fetches running right now


@dataclass(eq=False)
class _Fetch:
    done: trio.Event = field(default_factory=trio.Event)
    error: NwcacheError | None = None


def remote_of(index: Index, blob: str) -> tuple[int, str] | None:
    """(size, remote) of a remote-only blob; None when its body is local
    (or the blob is gone from the index)."""
    with index.env.begin() as txn:
        value = txn.get(bytes.fromhex(blob), db=index.db["blobs"])
    if value is None:
        return None
    remote = schema.blob_remote(value)
    return None if remote is None else (schema.decode_blob(value)[0], remote)


def publish_body(index: Index, blob: str, temp: Path) -> bool:
    """Rename a verified body into place, read-only, not yet durable nor
    indexed (`commit_bodies` does both, in batches). A body a fetch left
    there before (published, then the daemon died before its commit: maybe
    not durable) is replaced. False (and `temp` deleted) when the blob is no
    longer indexed as remote-only (GC dropped it, or an install brought it)."""
    with index.gate.shared():
        if remote_of(index, blob) is None:
            temp.unlink(missing_ok=True)
            return False
        final = index.bodies.path(blob)
        final.parent.mkdir(exist_ok=True)
        os.chmod(temp, 0o444)
        os.rename(temp, final)
    return True


def commit_bodies(index: Index, blobs: dict[str, int]) -> int:
    """Make published bodies durable (fsync, or one syncfs for many), then
    index them as local bodies in one write transaction; returns how many.
    Until then their entries say remote-only, so a crash loses nothing but
    the fetch: the next one replaces the body."""
    with index.gate.shared():
        present = {b: s for b, s in blobs.items() if index.bodies.exists(b)}
        paths = [index.bodies.path(b) for b in present]
        if len(paths) > FSYNC_ONE_BY_ONE:
            syncfs(index.bodies.root)
        else:
            for path in paths:
                fsync_path(path)
            for directory in {path.parent for path in paths}:
                fsync_path(directory)
        done = 0
        with index.write() as txn:
            for blob, size in present.items():
                value = txn.get(bytes.fromhex(blob), db=index.db["blobs"])
                if value is not None and schema.blob_remote(value) is not None:
                    txn.put(bytes.fromhex(blob), schema.encode_blob(size, None), db=index.db["blobs"])
                    done += 1
    return done


class Lazy:
    def __init__(self, tier: Tier, *, fetches: int = FETCHES) -> None:
        self.tier = tier
        self.index = tier.store.index
        self.limiter = trio.CapacityLimiter(fetches)
        # Fetches nobody waits on (the compiler's sources, prefetch) queue on
        # a limiter of their own, so that a read never waits behind them.
        self.background = trio.CapacityLimiter(fetches)
        self.counters = Counters()
        self._running: dict[str, _Fetch] = {}
        self._failing: set[str] = set()  # remotes whose last fetch failed (logged once)
        # Published bodies not durable and indexed yet (blob -> size): the
        # committer (or `flush`) does that in batches, off the reads' path.
        self._pending: dict[str, int] = {}
        self._committing: dict[str, int] = {}  # the batch being committed
        self._wake = trio.Event()
        self._commit_lock = trio.Lock()

    async def ensure(self, blob: str, *, background: bool = False) -> None:
        """Make the body of `blob` local (nothing to do when it is); raises
        FetchFailed (a NwcacheError) when it cannot within the wait bound.
        `background`: no reader waits for it (see `self.background`)."""
        if blob in self._pending or blob in self._committing:
            return  # fetched and published; its commit is on its way
        running = self._running.get(blob)
        if running is not None:
            self.counters.waiting += 1
            try:
                await running.done.wait()
            finally:
                self.counters.waiting -= 1
            if running.error is not None:
                raise FetchFailed(str(running.error), hint=running.error.hint)
            return
        running = self._running[blob] = _Fetch()
        self.counters.waiting += 1
        try:
            await self._fetch(blob, self.background if background else self.limiter)
        except NwcacheError as exc:
            running.error = exc
            raise
        except BaseException:
            running.error = FetchFailed(f"the fetch of blob {blob} was cancelled")
            raise
        finally:
            self.counters.waiting -= 1
            running.done.set()
            del self._running[blob]

    async def ensure_all(self, blobs: Iterable[str]) -> int:
        """Fetch every remote-only body of `blobs` (bounded); returns how many
        were fetched; the first failure is raised once all were tried."""
        todo = sorted(set(blobs))
        remote = await trio.to_thread.run_sync(
            lambda: [
                b
                for b in todo
                if b not in self._pending
                and b not in self._committing
                and remote_of(self.index, b) is not None
            ]
        )
        failures: list[NwcacheError] = []
        before = self.counters.fetched

        async def one(blob: str) -> None:
            try:
                await self.ensure(blob, background=True)
            except NwcacheError as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            for blob in remote:
                nursery.start_soon(one, blob)
        await self.flush()  # callers go on to read them through the index
        if failures:
            first = failures[0]
            more = f" (and {len(failures) - 1} more bodies)" if len(failures) > 1 else ""
            raise FetchFailed(f"{first}{more}", hint=first.hint)
        return self.counters.fetched - before

    async def _fetch(self, blob: str, limiter: trio.CapacityLimiter) -> None:
        where = await trio.to_thread.run_sync(remote_of, self.index, blob)
        if where is None:
            return  # local meanwhile (an install brought it), or no longer indexed
        size, name = where
        bound = wait_bound()
        kept = False
        try:
            registry = self.tier.registry(name)
            with trio.fail_after(bound):
                async with limiter:
                    self.counters.in_flight += 1
                    try:
                        temp = await retrying(lambda: self.download(registry, blob, size), bound=bound)
                    finally:
                        self.counters.in_flight -= 1
            # Outside the bound: a verified body is kept however long the disk takes.
            kept = await trio.to_thread.run_sync(publish_body, self.index, blob, temp)
        except trio.TooSlowError:
            self._failed(name, f"no body of blob {blob} from remote {name} within {bound:g} s")
        except RemoteError as exc:  # the registry's errors, and a remote gone or its credentials refused
            self._failed(name, str(exc), exc.hint)
        if name in self._failing:
            self._failing.discard(name)
            log.info("remote %s answers again", name)
        if kept:
            self.counters.fetched += 1
            self.counters.bytes += size
            self._pending[blob] = size
            self._wake.set()

    async def committer(self) -> None:
        """Commit published bodies as they come, until cancelled (the daemon
        runs it beside its socket). What is pending when the daemon stops is
        not committed (the store may be closing): fetched again when read."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Every body published so far durable and indexed as local. A batch
        that cannot be committed (a full disk) is logged and left as it is:
        its entries still say remote-only, so its bodies are fetched again."""
        async with self._commit_lock:
            self._committing, self._pending = self._pending, {}
            try:
                if self._committing:
                    await trio.to_thread.run_sync(commit_bodies, self.index, self._committing)
            except Exception as exc:
                log.warning(
                    "could not index %d fetched bodies (%s); they are fetched again when read",
                    len(self._committing),
                    exc,
                )
            finally:
                self._committing = {}

    def _failed(self, name: str, message: str, hint: str | None = None) -> None:
        self.counters.failures += 1
        if name not in self._failing:
            self._failing.add(name)
            log.warning("%s (further failures of remote %s are counted, not logged)", message, name)
        raise FetchFailed(message, hint=hint)

    async def download(self, registry: Registry, blob: str, size: int) -> Path:
        """The blob's body, verified, in a new file under tmp/;
        nothing is left behind when it fails."""
        bodies = self.index.bodies
        fd, temp = await trio.to_thread.run_sync(bodies.new_temp)
        handle = os.fdopen(fd, "wb")

        async def write(chunk: bytes) -> None:
            await trio.to_thread.run_sync(handle.write, chunk)

        try:
            try:
                await registry.get_blob(blob, size, write)
            finally:
                await trio.to_thread.run_sync(handle.close)
        except BaseException as exc:
            temp.unlink(missing_ok=True)
            if not isinstance(exc, Transient) and isinstance(exc, RegistryError):
                self.counters.refused += 1
            raise
        return temp

    def stats(self) -> dict[str, Any]:
        return dict(vars(self.counters))


def eio(exc: NwcacheError) -> OSError:
    """What the view answers a read whose body could not be fetched."""
    return OSError(errno.EIO, str(exc))
