"""Converting between classic wheels and Wheel 2.0, both ways."""

from __future__ import annotations

import os
import shutil
import tempfile
from functools import partial
from pathlib import Path

from .errors import DestinationError, write_error
from .sources import DEFAULT_MAX_WINDOW_LOG, Archive, TreeSource
from .unpack import LinkMode, unpack
from .wheelinfo import DEFAULT_LEVEL, DEFAULT_WINDOW_LOG
from .writers import WriteResult, write_v1, write_v2


def convert(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    to: int = 2,
    level: int = DEFAULT_LEVEL,
    window_log: int = DEFAULT_WINDOW_LOG,
    max_window_log: int = DEFAULT_MAX_WINDOW_LOG,
    content_links: bool = True,
    timestamp: int | None = None,
    allow_overwrite_input: bool = False,
) -> WriteResult:
    """Convert archive `src` to format `to`, writing the file `dest`.

    Every input file is verified against RECORD on the way; on any failure
    nothing is written. A 2.0 source converted to 2.0 again (new level or
    window) is unpacked to a temporary directory first, since its payload can
    only be read in order."""
    src, dest = Path(src), Path(dest)
    if to not in (1, 2):
        raise ValueError("to must be 1 or 2")
    if dest.exists() and src.exists() and os.path.samefile(src, dest) and not allow_overwrite_input:
        raise DestinationError(
            "output would replace the input; choose another output directory with -o",
            rule="destination-is-input",
            archive=str(src),
        )
    with Archive.open(src, max_window_log=max_window_log) as archive:
        # Reading the archive raises only ArchiveError (its I/O errors
        # included); an OSError here came from the output or the scratch tree.
        try:
            return _convert(archive, dest, to, level, window_log, timestamp, content_links)
        except OSError as exc:
            raise write_error(exc, archive=archive.label, where=str(dest)) from None


def _convert(
    archive: Archive,
    dest: Path,
    to: int,
    level: int,
    window_log: int,
    timestamp: int | None,
    content_links: bool,
) -> WriteResult:
    if to == 1:
        return write_v1(archive.iter_files(), dest, timestamp=timestamp)
    write = partial(
        write_v2, level=level, window_log=window_log, timestamp=timestamp, content_links=content_links
    )
    if archive.format == 1:
        return write(archive, dest)
    tmp = Path(
        tempfile.mkdtemp(prefix=".nwcache-convert-", dir=dest.parent if dest.parent.exists() else None)
    )
    try:
        unpack(archive, tmp / "tree", links=LinkMode.HARDLINK)
        return write(TreeSource(tmp / "tree", filename=archive.filename), dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
