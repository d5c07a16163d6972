"""Open bodies of store blobs, shared by every inode, handle and read of the
same (blob, executable) pair.

A body is an open descriptor of `blobs/ab/<hex>` or, for a blob kept inline
in the index, its bytes. Users (an open handle, or one read in progress)
hold it; a body nobody holds stays open in a bounded LRU, so reading a
module again is a dictionary lookup instead of an open on a worker thread.
A descriptor stays valid after GC unlinks its file, so a body never needs
its file once it is open.
"""

from __future__ import annotations

import errno
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from nwcache.errors import NwcacheError

from .errors import RemoteBody
from .schema import FileRef

# Bodies kept open after their last user let go.
KEPT_OPEN = 8192

BodyKey = tuple[str, bool]


class BlobSource(Protocol):
    def blob_location(self, blob: str) -> tuple[int, bytes | Path]: ...

    def body_path(self, blob: str) -> Path: ...


@dataclass(eq=False)
class Body:
    fd: int | None
    data: bytes | None
    users: int = 0

    def read(self, size: int, off: int) -> bytes:
        if self.data is not None:
            return self.data[off : off + size]
        assert self.fd is not None
        return os.pread(self.fd, size, off)


def body_key(ref: FileRef) -> BodyKey:
    return (ref.blob, ref.executable)


def pread_cached(fd: int, size: int, off: int, expected: int) -> bytes | None:
    """`size` bytes at `off` if the page cache holds all `expected` of them,
    without blocking (RWF_NOWAIT): a read served on the event loop costs a
    few microseconds where a worker thread costs a hundred. None: go to a
    thread (the disk must be read, or the kernel cannot say)."""
    if expected <= 0:
        return b""
    buf = bytearray(size)
    try:
        got = os.preadv(fd, [buf], off, os.RWF_NOWAIT)
    except (BlockingIOError, OSError):
        return None
    if got < expected:
        return None
    del buf[got:]
    return bytes(buf)


class BodyCache:
    def __init__(self, blobs: BlobSource, limiter: trio.CapacityLimiter, kept: int = KEPT_OPEN) -> None:
        self.blobs = blobs
        self.limiter = limiter
        self.kept = kept
        self.bodies: dict[BodyKey, Body] = {}
        self.idle: OrderedDict[BodyKey, Body] = OrderedDict()
        # Makes a remote-only body local (daemon/lazy.py), set by the daemon.
        self.fetch: Callable[[str], Awaitable[None]] | None = None

    def held(self) -> set[str]:
        """Blobs whose bodies some user holds right now."""
        return {blob for (blob, _), body in self.bodies.items() if body.users}

    def known(self, ref: FileRef) -> Body | None:
        return self.bodies.get(body_key(ref))

    def hold(self, ref: FileRef, body: Body) -> Body:
        self.idle.pop(body_key(ref), None)
        body.users += 1
        return body

    def _open(self, blob: str) -> Body:
        _size, where = self.blobs.blob_location(blob)
        if isinstance(where, bytes):
            return Body(None, where)
        return Body(os.open(where, os.O_RDONLY | os.O_CLOEXEC), None)

    def _keep(self, key: BodyKey, opened: Body) -> Body:
        """Keep a body opened off the event loop, unless another one raced it."""
        body = self.bodies.get(key)
        if body is None:
            self.bodies[key] = body = opened
        elif opened.fd is not None:
            os.close(opened.fd)
        return body

    async def acquire(self, ref: FileRef) -> Body:
        """The body of `ref`, opened on a worker thread if it is not open
        (fetched from its remote first if it is there only); the caller must
        `release` it."""
        key = body_key(ref)
        body = self.bodies.get(key)
        if body is None:
            try:
                opened = await trio.to_thread.run_sync(self._open, ref.blob, limiter=self.limiter)
            except RemoteBody as exc:
                opened = await self._fetched(ref.blob, exc)
            body = self._keep(key, opened)
        return self.hold(ref, body)

    async def _fetched(self, blob: str, remote: RemoteBody) -> Body:
        """The body of a remote-only blob, fetched (daemon/lazy.py) and opened;
        EIO when it cannot be (the fetcher counted and logged why)."""
        if self.fetch is None:
            raise OSError(errno.EIO, str(remote))
        try:
            await self.fetch(blob)
        except NwcacheError as exc:  # the tier's errors (a registry's) and the store's
            raise OSError(errno.EIO, str(exc)) from None

        def open_fetched() -> Body:
            try:
                return self._open(blob)
            except RemoteBody:  # published and verified, its entry not committed yet
                return Body(os.open(self.blobs.body_path(blob), os.O_RDONLY | os.O_CLOEXEC), None)

        return await trio.to_thread.run_sync(open_fetched, limiter=self.limiter)

    async def prefetch(self, refs: Iterable[FileRef]) -> int:
        """Open the bodies of files a flip just made visible, in one worker
        thread hop, so that their first reads (the first import after an
        install) are served on the event loop. Idle, within the LRU's bound."""
        wanted: dict[BodyKey, str] = {}
        for ref in refs:
            key = body_key(ref)
            if key not in self.bodies and len(wanted) < self.kept // 2:
                wanted[key] = ref.blob

        def open_all() -> list[tuple[BodyKey, Body]]:
            opened = []
            for key, blob in wanted.items():
                try:
                    opened.append((key, self._open(blob)))
                except Exception:
                    continue
            return opened

        if not wanted:
            return 0
        opened = await trio.to_thread.run_sync(open_all, limiter=self.limiter)
        for key, body in opened:
            kept = self._keep(key, body)
            if kept.users == 0 and key not in self.idle:
                self.idle[key] = kept
        self._evict()
        return len(opened)

    def _evict(self) -> None:
        while len(self.idle) > self.kept:
            old_key, old = self.idle.popitem(last=False)
            del self.bodies[old_key]
            if old.fd is not None:
                os.close(old.fd)

    def release(self, ref: FileRef, body: Body) -> None:
        body.users -= 1
        if body.users:
            return
        self.idle[body_key(ref)] = body
        self._evict()

    async def read(self, ref: FileRef, size: int, off: int) -> bytes:
        body = await self.acquire(ref)
        try:
            return await self.read_from(body, ref, size, off)
        finally:
            self.release(ref, body)

    async def read_from(self, body: Body, ref: FileRef, size: int, off: int) -> bytes:
        """Read a body held by the caller: from memory, from the page cache
        on the event loop, or from the disk on a worker thread."""
        if body.data is not None:
            return body.data[off : off + size]
        assert body.fd is not None
        cached = pread_cached(body.fd, size, off, min(size, ref.size - off))
        if cached is not None:
            return cached
        return await trio.to_thread.run_sync(body.read, size, off, limiter=self.limiter)

    def close(self) -> None:
        """Close every body (after unmount)."""
        for body in self.bodies.values():
            if body.fd is not None:
                os.close(body.fd)
        self.bodies.clear()
        self.idle.clear()
