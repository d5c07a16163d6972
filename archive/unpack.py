"""Unpacking an archive into a directory, all or nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import Executor
from enum import StrEnum
from functools import partial
from pathlib import Path

from .errors import DestinationError, write_error
from .parallel import SMALL_FILE, InFlight, Inline, executors, write_all
from .sources import Archive, FileData

_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class LinkMode(StrEnum):
    """How a content link is materialised on disk."""

    COPY = "copy"
    HARDLINK = "hardlink"
    SYMLINK = "symlink"


def _prepare_destination(dest: Path, label: str) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise DestinationError(
            "exists and is not a directory", rule="destination-exists", archive=label, member=str(dest)
        )
    if dest.is_dir() and any(dest.iterdir()):
        raise DestinationError(
            "exists and is not empty", rule="destination-exists", archive=label, member=str(dest)
        )


def unpack(
    archive: Archive, dest: Path, *, links: LinkMode = LinkMode.COPY, workers: int | None = None
) -> int:
    """Write every file of `archive` under `dest` (which must not exist or be
    empty). Files land in a temporary sibling directory that is renamed into
    place once the whole archive verified; on failure nothing is left.
    .dist-info/WHEEL is written in its classic form, the one RECORD hashes.
    Returns the number of files."""
    dest = Path(dest)
    try:
        _prepare_destination(dest, archive.label)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".unpacking"))
    except OSError as exc:
        raise write_error(exc, archive=archive.label, where=str(dest)) from None
    workers = workers or min(4, os.cpu_count() or 1)
    try:
        with executors(archive.installed_size, workers) as (pool, serial):
            count = _unpack_into(archive, tmp, links, pool, serial)
        if dest.is_dir():
            dest.rmdir()
        os.rename(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        # Reading the archive maps its own OSErrors (rule io); what is left
        # came from writing the tree.
        if isinstance(exc, OSError):
            raise write_error(exc, archive=archive.label, where=_member(exc, tmp, dest)) from None
        raise
    return count


def _member(exc: OSError, tmp: Path, dest: Path) -> str:
    """The archive path of the file an OSError names, else the destination."""
    if isinstance(exc.filename, str) and exc.filename.startswith(f"{tmp}/"):
        return exc.filename[len(str(tmp)) + 1 :]
    return str(dest)


class _Tree:
    """Files written under `root` with three system calls each (open with
    O_CREAT|O_EXCL and the mode, one write, close). A directory is made once,
    by whichever thread first needs it; `made` is shared by the threads (the
    GIL keeps the set whole, and a lost race only costs an EEXIST)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.made: set[str] = {""}

    def parent(self, path: str) -> None:
        folder = path.rpartition("/")[0]
        if folder not in self.made:
            self._mkdir(folder)

    def _mkdir(self, folder: str) -> None:
        up = folder.rpartition("/")[0]
        if up not in self.made:
            self._mkdir(up)
        try:
            os.mkdir(f"{self.root}/{folder}")
        except FileExistsError:  # another writer made it first
            pass
        self.made.add(folder)

    def open(self, path: str, mode: int) -> int:
        self.parent(path)
        return os.open(f"{self.root}/{path}", _WRITE_FLAGS, mode)

    def write(self, path: str, mode: int, content: bytes) -> None:
        fd = self.open(path, mode)
        try:
            write_all(fd, content)
        except BaseException:
            os.close(fd)
            raise
        _close(fd, mode)

    def write_batch(self, batch: list[tuple[FileData, bytes]]) -> None:
        """Verify each file against RECORD, then write it."""
        for data, content in batch:
            data.verify(content)
            self.write(data.path, data.info.mode, content)

    def copy_batch(self, batch: list[tuple[FileData, bytes]]) -> None:
        """Content links as copies, from their verified target's bytes."""
        for data, content in batch:
            self.write(data.path, data.info.mode, content)


class _Batches:
    """Small files collected on the decoding thread and sent to the pool a
    batch at a time: one hand-over (and one wake-up of a worker) per batch
    instead of per file. Inline (a small archive), every file is its own
    batch, so that faults surface in stream order."""

    def __init__(self, pool: Executor, run: Callable[[list[tuple[FileData, bytes]]], None]) -> None:
        self.pool = pool
        self.run = run
        self.in_flight = InFlight()
        self.batch: list[tuple[FileData, bytes]] = []
        self.bytes = 0
        inline = isinstance(pool, Inline)
        self.max_files = 1 if inline else _BATCH_FILES
        self.max_bytes = 0 if inline else _BATCH_BYTES

    def add(self, data: FileData, content: bytes) -> None:
        self.batch.append((data, content))
        self.bytes += len(content)
        if len(self.batch) >= self.max_files or self.bytes >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        batch, size = self.batch, self.bytes
        self.batch, self.bytes = [], 0
        job = self.pool.submit(self.run, batch)
        for data, _ in batch:
            data.pending = job
        self.in_flight.add(job, size)

    def wait(self) -> None:
        self.flush()
        self.in_flight.wait_all()


def _unpack_into(archive: Archive, root: Path, links: LinkMode, pool: Executor, serial: Executor) -> int:
    """Decoding stays on this thread; hashing and writing go to `pool` (small
    files, in batches) and `serial` (large files, chunk by chunk, in order)."""
    tree = _Tree(root)
    batches = _Batches(pool, tree.write_batch)
    in_flight = InFlight()
    # Copies of content links are written from their target's bytes, kept
    # when the metadata shows the content more than once.
    shared = _shared_keys(archive) if links is LinkMode.COPY else set()
    kept: dict[tuple[str, int], bytes] = {}
    kept_bytes = 0
    linked: list[FileData] = []
    count = 0
    for data in archive.iter_files(drain=batches.flush):
        count += 1
        info = data.info
        if data.link_to is not None:
            linked.append(data)
        elif info.size <= SMALL_FILE:
            content = data.take()
            batches.add(data, content)
            if info.link_key in shared and info.link_key not in kept and kept_bytes < _KEEP_BYTES:
                kept[info.link_key] = content
                kept_bytes += len(content)
        else:
            fd = tree.open(data.path, info.mode)
            job = data.stream_then(serial, partial(write_all, fd), partial(_close, fd, info.mode))
            in_flight.add(job, info.size)
    # iter_files waited for every verification before its final check.
    batches.wait()
    in_flight.wait_all()
    copies = _Batches(pool, tree.copy_batch)
    for data in linked:
        assert data.link_to is not None
        content_of = kept.get(data.link_to.info.link_key)
        if content_of is not None and _materialised_as_copy(data, links):
            copies.add(data, content_of)
        else:
            tree.parent(data.path)
            _link(root, data, links)
    copies.wait()
    return count


# Small files go to the pool in batches of at most this many files or bytes.
_BATCH_FILES = 64
_BATCH_BYTES = 1 << 20
# At most this many bytes of link targets are kept for their copies; past it,
# a copy reads its target back from disk.
_KEEP_BYTES = 64 << 20


def _shared_keys(archive: Archive) -> set[tuple[str, int]]:
    seen: set[tuple[str, int]] = set()
    shared: set[tuple[str, int]] = set()
    for info in archive.files:
        key = info.link_key
        (shared if key in seen else seen).add(key)
    return shared


def _materialised_as_copy(data: FileData, mode: LinkMode) -> bool:
    assert data.link_to is not None
    return mode is LinkMode.COPY or data.info.executable != data.link_to.info.executable


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: changing the umask is process-wide, so never do it per file.
_UMASK = _current_umask()


def _close(fd: int, mode: int) -> None:
    try:
        if mode & _UMASK:  # open() honoured the umask; the archive's mode wins
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _link(root: Path, data: FileData, mode: LinkMode) -> None:
    assert data.link_to is not None
    target = root / data.link_to.path
    path = root / data.path
    # A link shares its target's mode: where the modes differ, only a copy
    # keeps each path's own executable bit.
    if data.info.executable == data.link_to.info.executable:
        if mode is LinkMode.SYMLINK:
            os.symlink(os.path.relpath(target, path.parent), path)
            return
        if mode is LinkMode.HARDLINK:
            os.link(target, path)
            return
    shutil.copyfile(target, path, follow_symlinks=False)
    os.chmod(path, data.info.mode)
