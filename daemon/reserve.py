"""Room for the commits that free space, on a full disk.

LMDB writes copy-on-write: even a transaction that only deletes (gc,
uninstall, unregister, rollback) writes new pages, and when the index's data
file has no free pages left the file must grow. On a full file system that
write fails ("mdb_txn_commit: Input/output error": LMDB reports a short write
as EIO) and the store could never be shrunk with nwcache.

So the store keeps `$NWCACHE_HOME/reserve`, a file of allocated blocks as
large as the index's data file (at least MIN_BYTES): a commit can dirty at most
every page the index has. Before a commit that frees space, the reserve is
released when the file system has less free space than its size; it is
allocated again (posix_fallocate, no data written) once there is room.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

log = logging.getLogger("nwcache.daemon")

MIN_BYTES = 8 << 20
MAX_BYTES = 1 << 30


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class Reserve:
    def __init__(self, path: Path, index: Path) -> None:
        self.path = path
        self.index = index  # LMDB's data file: the reserve follows its size

    def wanted(self) -> int:
        try:
            size = os.path.getsize(self.index)
        except OSError:
            size = 0
        return min(MAX_BYTES, max(MIN_BYTES, size))

    def size(self) -> int:
        try:
            return os.stat(self.path).st_blocks * 512
        except FileNotFoundError:
            return 0

    def release_if_short(self) -> bool:
        """Before a commit that frees space: give the reserve's blocks back
        when the file system could not hold that commit otherwise. Whether it
        released them."""
        if free_bytes(self.path.parent) >= self.wanted():
            return False
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        log.warning("the disk of %s is full: released the reserve for this commit", self.path.parent)
        return True

    def keep(self) -> None:
        """Allocate the reserve up to its wanted size when there is room;
        best effort (a full disk leaves it smaller, to be grown next time)."""
        wanted = self.wanted()
        if self.size() >= wanted:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("cannot make the reserve %s: %s", self.path, exc)
            return
        had = os.fstat(fd).st_size
        try:
            try:
                os.posix_fallocate(fd, 0, wanted)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                self._write_zeros(fd, had, wanted)  # a file system without fallocate
        except OSError as exc:
            os.ftruncate(fd, had)  # what it held before, not blocks half allocated
            log.warning("no room for the reserve %s (%d bytes) yet: %s", self.path, wanted, exc)
        finally:
            os.close(fd)

    @staticmethod
    def _write_zeros(fd: int, start: int, end: int) -> None:
        block = bytes(1 << 20)
        os.lseek(fd, start, os.SEEK_SET)
        while start < end:
            start += os.write(fd, block[: end - start])
        os.fsync(fd)
