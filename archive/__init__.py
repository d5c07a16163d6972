"""The Wheel 2.0 archive library (docs/FORMAT.md is the specification).

Read a classic or 2.0 archive with `Archive.open`, write 2.0 with `write_v2`
and classic wheels with `write_v1`, convert with `convert`, unpack with
`unpack`. Every failure is an `ArchiveError` naming the archive, the member
and the rule broken.
"""

from .convert import convert
from .digest import content_digest
from .errors import (
    ArchiveError,
    DestinationError,
    InvalidArchive,
    RecordMismatch,
    UnsafePath,
    UnsupportedArchive,
)
from .sources import Archive, FileData, FileInfo, TreeSource
from .unpack import LinkMode, unpack
from .wheelinfo import DEFAULT_LEVEL, DEFAULT_WINDOW_LOG
from .writers import WriteResult, write_v1, write_v2

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_WINDOW_LOG",
    "Archive",
    "ArchiveError",
    "DestinationError",
    "FileData",
    "FileInfo",
    "InvalidArchive",
    "LinkMode",
    "RecordMismatch",
    "TreeSource",
    "UnsafePath",
    "UnsupportedArchive",
    "WriteResult",
    "content_digest",
    "convert",
    "unpack",
    "write_v1",
    "write_v2",
]
