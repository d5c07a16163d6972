"""One exception hierarchy for everything the archive library refuses.

Every error names the archive, the member (when one is at fault) and the rule
broken. Rules are short stable identifiers listed in docs/FORMAT.md section 9,
so that tests, test vectors and other implementations can match on them.
"""

from __future__ import annotations

from os import PathLike


class ArchiveError(Exception):
    """Base class: the archive, or an operation on it, failed."""

    def __init__(
        self,
        message: str,
        *,
        rule: str,
        archive: str | PathLike[str] | None = None,
        member: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule
        self.archive = str(archive) if archive is not None else None
        self.member = member

    def __str__(self) -> str:
        where = [part for part in (self.archive, self.member) if part]
        prefix = ": ".join(where)
        return f"{prefix}: {self.message} [{self.rule}]" if prefix else f"{self.message} [{self.rule}]"


class InvalidArchive(ArchiveError):
    """The container is malformed or breaks a structural rule of the format."""


class UnsafePath(InvalidArchive):
    """A member or RECORD path could escape or alias its destination."""


class RecordMismatch(InvalidArchive):
    """Content disagrees with RECORD, the declared sizes or the content digest."""


class UnsupportedArchive(ArchiveError):
    """Well formed, but needs more than this reader accepts (version, window, ...)."""


class DestinationError(ArchiveError):
    """The output location cannot be used (exists, not empty, same as input)."""
