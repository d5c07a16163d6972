"""How nwcache reports: the one JSON document of --json, and every error as
one `error:` line and one `hint:` line on stderr (plus {"error": ...} on
stdout with --json), its exit code from its kind (nwcache.protocol).

The only place that prints `error:` lines; imported only when there is
something to report beyond a plain result, so that the console script's fast
path loads no more than it needs. Standard library only.
"""

from __future__ import annotations

import sys

from nwcache.errors import NwcacheError, printable
from nwcache.protocol import exit_code


def emit(value: object) -> None:
    """The one JSON document of a --json command, on stdout."""
    import json

    print(json.dumps(value, indent=2, sort_keys=True))


def fail(kind: str, message: str, hint: str, as_json: bool = False) -> int:
    """Report an error: `error:` and `hint:` lines on stderr and, with
    --json, {"error": {kind, message, hint, exit}} on stdout. Returns its
    exit code."""
    code = exit_code(kind)
    message, hint = printable(message), printable(hint)
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    if as_json:
        emit({"error": {"kind": kind, "message": message, "hint": hint, "exit": code}})
    return code


def error(exc: NwcacheError, as_json: bool = False) -> int:
    """Report one of nwcache's errors."""
    return fail(exc.kind, str(exc), exc.hint, as_json)


def interrupted(as_json: bool = False) -> int:
    return fail("Interrupted", "interrupted; nothing was kept", "", as_json)


def os_error(exc: OSError, as_json: bool = False) -> int:
    where = f"{exc.filename}: " if exc.filename else ""
    return fail(
        "OSError",
        f"{where}{exc.strerror or exc}",
        "check the path, its permissions and the free space; nothing was kept",
        as_json,
    )
