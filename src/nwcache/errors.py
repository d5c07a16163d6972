"""The one base of every error nwcache reports, and how its text is made safe
to print.

An error is a message, a `hint` (what to do about it) and a `kind` (its class
name unless it names another): the daemon sends the kind with the message and
the hint, and the client alone turns a kind into an exit code
(`nwcache.protocol.exit_code`) and prints it (`nwcache.report`). Standard
library only, and nothing of it imported at start: the console script's fast
path loads this module only when there is an error to report.
"""

from __future__ import annotations

# C0 and C1 controls, and the Unicode line and paragraph separators, which
# str.splitlines (and so whoever reads our stderr by lines) breaks on too.
_CONTROL = {
    code: (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}


def printable(text: str) -> str:
    """Control characters escaped: a hostile name (a wheel's member, a
    package, a path in a venv) must not reach a terminal as an escape
    sequence or a forged second line."""
    return text.translate(_CONTROL)


class NwcacheError(Exception):
    """Base class of the archive's, the store's, the daemon's and the
    client's errors; `hint` says what to do about it."""

    hint = "see docs/ARCHITECTURE.md"

    def __init__(self, message: str, *, hint: str | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint
        self._kind = kind

    @property
    def kind(self) -> str:
        """What the client maps to an exit code: the class name unless the
        error was raised with another."""
        return self._kind or type(self).__name__
