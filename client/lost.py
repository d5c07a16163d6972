"""A request that changes something lost its answer: the daemon stopped (or
was killed) after the request was sent. Ask the daemon, once one answers
again, what became of it by request id (protocol op "outcome").

Imported only then, so that it costs the console script nothing otherwise;
like nwcache.client.remote it imports nothing beyond the standard library's
C parts.
"""

from __future__ import annotations

import os
import sys

from nwcache.client.remote import (
    DaemonUnavailable,
    ProtocolError,
    print_result,
    request,
)
from nwcache.protocol import socket_path
from nwcache.report import fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

WAIT_DEFAULT = 30.0  # seconds a client waits for a daemon to come back (NWCACHE_WAIT)


def _wait_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("NWCACHE_WAIT", WAIT_DEFAULT)))
    except ValueError:
        return WAIT_DEFAULT


def recover(
    op: str, args: dict[str, Any], request_id: str, as_json: bool, render: Callable[[Any], str]
) -> int:
    """The daemon went away while working on a request that changes
    something: wait (bounded by NWCACHE_WAIT, polling) for a daemon to answer
    again and ask it by request id what became of the request."""
    import time

    env = args.get("env")
    check = f"'nwcache history --env {env} --json'" if env else "'nwcache history --env VENV --json'"
    waited = _wait_seconds()
    print(
        f"nwcache: the daemon stopped answering during '{op}'; waiting up to {waited:g} s for it to "
        f"come back to ask what became of it (request {request_id})",
        file=sys.stderr,
    )
    deadline = time.monotonic() + waited
    while True:
        answer: dict[str, Any] | None = None
        try:
            for message in request(socket_path(), "outcome", {"request": request_id, "env": env, "op": op}):
                answer = message
        except (DaemonUnavailable, ProtocolError):
            answer = None
        if answer is not None and answer.get("event") == "error":
            return fail(
                "OutcomeUnknown",
                f"the daemon stopped during '{op}' and cannot say what became of it ({answer.get('message')})",
                f"{check} shows whether it took effect" if env else "run it again",
                as_json,
            )
        if answer is not None and answer.get("event") == "result":
            outcome = answer.get("result") or {}
            state = outcome.get("state")
            if state == "done":
                print(
                    f"nwcache: the connection was lost, but '{op}' completed (request {request_id})",
                    file=sys.stderr,
                )
                return print_result(outcome.get("result"), as_json, render)
            if state == "failed":
                error = outcome.get("error") or {}
                return fail(
                    str(error.get("kind") or "Error"),
                    str(error.get("message")),
                    str(error.get("hint") or ""),
                    as_json,
                )
            if state == "unknown" and op == "gc":
                return fail(
                    "OutcomeUnknown",
                    "the daemon stopped during gc, before it could answer",
                    "gc is safe to run again: 'nwcache gc' (what it dropped, if it got that far, stays dropped)",
                    as_json,
                )
            if state == "unknown":
                where = f"; {env} is at generation {outcome['current']}" if outcome.get("current") else ""
                return fail(
                    "NotDone",
                    f"the daemon stopped before '{op}' took effect: no generation records it{where}",
                    "run the command again",
                    as_json,
                )
            deadline = time.monotonic() + waited  # "running": the daemon is alive and still at it
        if time.monotonic() > deadline:
            return fail(
                "DaemonGone",
                f"the daemon stopped during '{op}' and did not come back within {waited:g} s",
                f"once it runs again ('nwcache daemon', or systemd restarts it), {check} shows whether "
                f"it took effect: a generation with request {request_id!r}",
                as_json,
            )
        time.sleep(0.2)  # polling for the daemon's return, bounded by the deadline
