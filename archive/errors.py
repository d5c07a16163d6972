"""One exception hierarchy for everything the archive library refuses.

Every error names the archive, the member (when one is at fault) and the rule
broken. Rules are short stable identifiers listed in docs/FORMAT.md section 9,
so that tests, test vectors and other implementations can match on them.
"""

from __future__ import annotations

import re
from os import PathLike

# C0 and C1 controls, and the Unicode line and paragraph separators, which
# str.splitlines (and so whoever reads our stderr by lines) breaks on too.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """Control characters escaped: a hostile member name must not reach a
    terminal as an escape sequence or a forged second line."""
    return _CONTROL.sub(lambda m: _escape(m.group()), text)


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
        text = f"{prefix}: {self.message} [{self.rule}]" if prefix else f"{self.message} [{self.rule}]"
        return printable(text)


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
