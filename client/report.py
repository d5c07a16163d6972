"""How the client reports: the one JSON document of --json, and errors as
`error:` + `hint:` lines (plus {"error": ...} on stdout with --json).

Imported only when there is something to report beyond a plain result, so
that the console script's fast path (nwcache.client.remote) compiles and
loads no more than it needs. Standard library only.
"""

from __future__ import annotations

import sys

from nwcache.client.remote import EXIT_FAILED, EXIT_INTERRUPTED

# Control characters in a daemon's error (a hostile name) never reach the terminal.
_CONTROL = {code: "?" for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)}


def emit(value: object) -> None:
    """The one JSON document of a --json command, on stdout."""
    import json

    print(json.dumps(value, indent=2, sort_keys=True))


def fail(kind: str, message: str, hint: str, code: int, as_json: bool) -> int:
    """Report an error: `error:` and `hint:` lines on stderr and, with
    --json, {"error": {kind, message, hint, exit}} on stdout. Returns `code`."""
    message = message.translate(_CONTROL)
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    if as_json:
        emit({"error": {"kind": kind, "message": message, "hint": hint, "exit": code}})
    return code


def interrupted(as_json: bool) -> int:
    return fail("Interrupted", "interrupted; nothing was kept", "", EXIT_INTERRUPTED, as_json)


def os_error(exc: OSError, as_json: bool) -> int:
    where = f"{exc.filename}: " if exc.filename else ""
    return fail(
        "OSError",
        f"{where}{exc.strerror or exc}",
        "check the path, its permissions and the free space; nothing was kept",
        EXIT_FAILED,
        as_json,
    )
