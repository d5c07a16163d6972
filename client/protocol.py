"""The client-daemon protocol (version 1): JSON lines over a Unix stream socket.

One request per connection. The client sends one line:

    {"protocol": 1, "op": "install", "args": {"env": "/abs/venv", "archives": [...]}}

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROTOCOL = 1
MAX_LINE = 16 << 20

OPS = (
    "ping",
    "env.register",
    "env.list",
    "env.show",
    "env.unregister",
    "install",
    "uninstall",
    "list",
    "history",
    "rollback",
    "gc",
    "fsck",
    "stats",
)


def default_home() -> Path:
    if "NWCACHE_HOME" in os.environ:
        return Path(os.environ["NWCACHE_HOME"])
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "nwcache"


def default_socket() -> Path:
    if "NWCACHE_SOCKET" in os.environ:
        return Path(os.environ["NWCACHE_SOCKET"])
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/nwcache-{os.getuid()}"
    return Path(runtime) / "nwcache" / "daemon.sock"


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


class DaemonUnavailable(Exception):
    """No daemon answers at the socket."""


class ProtocolError(Exception):
    """The daemon answered something this client cannot read."""


def request(
    socket_path: Path, op: str, args: dict[str, Any], *, timeout: float | None = None
) -> Iterator[dict[str, Any]]:
    """Send one request; yield every line of the answer (the last one is the
    result or the error)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnavailable(f"no nwcache daemon at {socket_path} ({exc.strerror})") from None
        except PermissionError:
            raise DaemonUnavailable(f"{socket_path} is not yours to use (permission denied)") from None
        sock.sendall(encode({"protocol": PROTOCOL, "op": op, "args": args}))
        reader = sock.makefile("rb")
        final = False
        for line in reader:
            if len(line) > MAX_LINE:
                raise ProtocolError("the daemon sent an oversized message")
            message = json.loads(line)
            yield message
            if message.get("event") in ("result", "error"):
                final = True
                break
        if not final:
            raise ProtocolError("the daemon closed the connection before answering (did it stop?)")
    finally:
        sock.close()
