"""Blob bodies on disk: immutable files named by their sha256.

A body is written to tmp/, made durable, renamed into blobs/ab/<hex>, and only
then may the index point at it. Nothing ever modifies a published body."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import tempfile
from pathlib import Path

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def syncfs(path: Path) -> None:
    """Flush every dirty page of the file system holding `path`: one call
    makes a whole batch of new bodies and renames durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


class BlobFiles:
    def __init__(self, home: Path) -> None:
        self.root = home / "blobs"
        self.tmp = home / "tmp"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, blob: str) -> Path:
        return self.root / blob[:2] / blob

    def exists(self, blob: str) -> bool:
        return self.path(blob).exists()

    def new_temp(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="body-")
        return fd, Path(name)

    def publish(self, temp: Path, blob: str) -> None:
        """Move a complete temporary body into place (read-only)."""
        final = self.path(blob)
        final.parent.mkdir(exist_ok=True)
        os.chmod(temp, 0o444)
        os.rename(temp, final)

    def delete(self, blob: str) -> None:
        try:
            os.unlink(self.path(blob))
        except FileNotFoundError:
            pass

    def all_bodies(self) -> set[str]:
        found: set[str] = set()
        for sub in self.root.iterdir():
            if sub.is_dir() and len(sub.name) == 2:
                found.update(p.name for p in sub.iterdir())
        return found

    def sweep_temp(self) -> int:
        """Remove bodies a crashed write left in tmp/ (start-up only)."""
        removed = 0
        for leftover in self.tmp.iterdir():
            leftover.unlink()
            removed += 1
        return removed


def fsync_path(path: Path) -> None:
    """Make one file's content, or one directory's entries, durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
