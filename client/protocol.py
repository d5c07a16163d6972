"""The client-daemon protocol (version 1): JSON lines over a Unix stream socket.

One request per connection. The client sends one line:

    {"protocol": 1, "op": "install", "args": {"env": "/abs/venv", "archives": [...]}, "request": "9f0c..."}

"request" (optional) is the client's id for a request that changes something
(install, uninstall, rollback, env register/unregister, gc): the daemon keeps
the answer in memory and records the id in the generation (or rollback) it
commits, and answers {"op": "outcome", "args": {"request": ID, "env": VENV}}
with {"state": "running" | "done" (+ "result") | "failed" (+ "error") |
"unknown" (+ "current": the env's generation)}: a client whose connection
broke asks the daemon, restarted or not, what became of its request.

and the daemon answers with zero or more progress lines and exactly one final
line, then closes:

    {"event": "progress", "message": "ingesting numpy-2.1.3-...whl", "done": 0, "total": 2}
    {"event": "result", "result": {...}}
    {"event": "error", "kind": "UnknownEnv", "message": "...", "hint": "...", "exit": 1}

A daemon that speaks another protocol version answers with an error of kind
"ProtocolMismatch". The daemon accepts connections only from its own uid
(SO_PEERCRED). This module is imported by the client, so it imports nothing
beyond the standard library.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

# The client's side of the protocol (the request, its constants and errors)
# lives in nwcache.client.remote, which imports no more than it must.
from nwcache.client.remote import (
    MAX_LINE,
    PROTOCOL,
    DaemonUnavailable,
    ProtocolError,
    request,
    socket_path,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "MAX_LINE",
    "OPS",
    "PROTOCOL",
    "DaemonUnavailable",
    "ProtocolError",
    "answers",
    "default_home",
    "default_socket",
    "encode",
    "request",
]

OPS = (
    "ping",
    "env.register",
    "env.list",
    "env.show",
    "env.unregister",
    "install",
    "install.files",
    "uninstall",
    "list",
    "history",
    "rollback",
    "gc",
    "fsck",
    "stats",
    "outcome",
    "push",
    "remote.find",
    "install.remote",
    "prefetch",
)


def default_home() -> Path:
    if "NWCACHE_HOME" in os.environ:
        return Path(os.environ["NWCACHE_HOME"])
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "nwcache"


def default_socket() -> Path:
    return Path(socket_path())


def answers(socket_path: Path) -> bool:
    """Whether something accepts connections at the socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(socket_path))
        except OSError:
            return False
    return True


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"
