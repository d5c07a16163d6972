"""Unpacking an archive into a directory, all or nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import Executor
from enum import StrEnum
from functools import partial
from pathlib import Path

from .errors import DestinationError, write_error
from .parallel import SMALL_FILE, InFlight, executors, write_all
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


def _unpack_into(archive: Archive, root: Path, links: LinkMode, pool: Executor, serial: Executor) -> int:
    """Decoding stays on this thread; hashing and writing go to `pool` (small
    files, whole) and `serial` (large files, chunk by chunk, in order)."""
    made: set[str] = set()
    linked: list[FileData] = []
    in_flight = InFlight()
    count = 0
    for data in archive.iter_files():
        count += 1
        parent = data.path.rpartition("/")[0]
        if parent and parent not in made:
            os.makedirs(root / parent, exist_ok=True)
            made.add(parent)
        if data.link_to is not None:
            linked.append(data)
            continue
        if data.info.size <= SMALL_FILE:
            job = data.read_then(pool, partial(_write_bytes, root / data.path, data.info.mode))
        else:
            fd = os.open(root / data.path, _WRITE_FLAGS, data.info.mode)
            job = data.stream_then(serial, partial(write_all, fd), partial(_close, fd, data.info.mode))
        in_flight.add(job, data.info.size)
    # iter_files waited for every verification before its final check.
    for data in linked:
        _link(root, data, links)
    return count


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


def _write_bytes(path: Path, mode: int, content: bytes) -> None:
    fd = os.open(path, _WRITE_FLAGS, mode)
    try:
        write_all(fd, content)
    except BaseException:
        os.close(fd)
        raise
    _close(fd, mode)


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
