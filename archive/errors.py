"""One exception hierarchy for everything the archive library refuses.

Every error names the archive, the member (when one is at fault) and the rule
broken. Rules are short stable identifiers listed in docs/FORMAT.md section 9,
so that tests, test vectors and other implementations can match on them.
"""

from __future__ import annotations

from os import PathLike

from nwcache.errors import NwcacheError, printable


class ArchiveError(NwcacheError):
    """Base class: the archive, or an operation on it, failed. Its hint
    follows from its class and rule."""

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
        self.hint = self._hint()  # from its class and rule

    def __str__(self) -> str:
        where = [part for part in (self.archive, self.member) if part]
        prefix = ": ".join(where)
        text = f"{prefix}: {self.message} [{self.rule}]" if prefix else f"{self.message} [{self.rule}]"
        return printable(text)

    def _hint(self) -> str:
        if self.rule == "window-log-limit":
            return "if you trust this archive, raise the limit with --max-window-log"
        if self.rule == "io":
            return "check the path and its permissions"
        if self.rule == "destination-io":
            return "check the destination's permissions, free space and file name limits; nothing was written"
        if isinstance(self, DestinationError):
            return "choose an empty or new destination"
        if isinstance(self, UnsupportedArchive):
            return "this archive needs a newer or differently configured reader"
        return "the archive is malformed or was tampered with; nothing was written"


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


def write_error(exc: OSError, *, archive: str | PathLike[str] | None, where: str | None) -> DestinationError:
    """An OSError writing the output (no space, permissions, a name the file
    system refuses): the archive's error, naming the file that failed."""
    return DestinationError(
        f"cannot write ({exc.strerror or exc})", rule="destination-io", archive=archive, member=where
    )
