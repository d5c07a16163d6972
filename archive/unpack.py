"""Unpacking an archive into a directory, all or nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from enum import StrEnum
from pathlib import Path

from .errors import DestinationError
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
            "exists and is not a directory",
            rule="destination-exists",
            archive=label,
            member=str(dest),
        )
    if dest.is_dir() and any(dest.iterdir()):
        raise DestinationError(
            "exists and is not empty", rule="destination-exists", archive=label, member=str(dest)
        )


def unpack(archive: Archive, dest: Path, *, links: LinkMode = LinkMode.COPY) -> int:
    """Write every file of `archive` under `dest` (which must not exist or be
    empty). Files land in a temporary sibling directory that is renamed into
    place once the whole archive verified; on failure nothing is left.
    .dist-info/WHEEL is written in its classic form, the one RECORD hashes.
    Returns the number of files."""
    dest = Path(dest)
    _prepare_destination(dest, archive.label)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".unpacking"))
    try:
        made: set[str] = set()
        linked: list[FileData] = []
        count = 0
        for data in archive.iter_files():
            parent = data.path.rpartition("/")[0]
            if parent and parent not in made:
                os.makedirs(tmp / parent, exist_ok=True)
                made.add(parent)
            if data.link_to is not None:
                linked.append(data)
            else:
                _write(tmp / data.path, data)
            count += 1
        for data in linked:
            _link(tmp, data, links)
        if dest.is_dir():
            dest.rmdir()
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count


def _write(path: Path, data: FileData) -> None:
    mode = 0o755 if data.info.executable else 0o644
    fd = os.open(path, _WRITE_FLAGS, mode)
    try:
        for chunk in data.chunks():
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _link(root: Path, data: FileData, mode: LinkMode) -> None:
    assert data.link_to is not None
    target = root / data.link_to.path
    path = root / data.path
    same_mode = data.info.executable == data.link_to.info.executable
    if mode is LinkMode.SYMLINK:
        os.symlink(os.path.relpath(target, path.parent), path)
        return
    if mode is LinkMode.HARDLINK and same_mode:
        os.link(target, path)
        return
    # A copy, also for a hardlink that would change the target's mode.
    shutil.copyfile(target, path, follow_symlinks=False)
    os.chmod(path, 0o755 if data.info.executable else 0o644)
