"""The client-daemon protocol (version 1), shared by both sides: JSON lines
over a Unix stream socket, and what each error kind means as an exit code.

One request per connection. The client sends one line:

    {"protocol": 1, "op": "install", "args": {"env": "/abs/venv", "archives": [...]}, "request": "9f0c..."}

"request" (optional) is the client's id for a request that changes something
(CHANGING): the daemon keeps the answer in memory and records the id in the
generation (or rollback) it commits, and answers {"op": "outcome", "args":
{"request": ID, "env": VENV}} with {"state": "running" | "done" (+ "result") |
"failed" (+ "error") | "unknown" (+ "current": the env's generation)}: a
client whose connection broke asks the daemon, restarted or not, what became
of its request.

The daemon answers with zero or more progress lines and exactly one final
line, then closes:

    {"event": "progress", "message": "ingesting numpy-2.1.3-...whl", "done": 0, "total": 2}
    {"event": "result", "result": {...}}
    {"event": "error", "kind": "UnknownEnv", "message": "...", "hint": "..."}

The daemon names the kind of an error; the client alone maps kinds to exit
codes (`exit_code`, the README's table) and prints them (nwcache.report). A
daemon that speaks another protocol version answers with an error of kind
"ProtocolMismatch". The daemon accepts connections only from its own uid
(SO_PEERCRED).

The console script imports this module on its fast path: os only, nothing
else at import time.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

PROTOCOL = 1
MAX_LINE = 16 << 20

OPS = frozenset(
    {
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
    }
)

# Requests that change something: each carries an id, the daemon records the
# outcome under it, and a client that loses the answer asks for it ("outcome").
CHANGING = frozenset(
    {
        "install",
        "install.files",
        "install.remote",
        "uninstall",
        "rollback",
        "env.register",
        "env.unregister",
        "gc",
    }
)

# Exit codes (README, "Exit codes").
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
EXIT_NO_SOLUTION = 4
EXIT_INTERRUPTED = 130

_EXIT_OF_KIND = {
    "UsageError": EXIT_USAGE,
    "BadRequest": EXIT_USAGE,
    "NoDaemon": EXIT_NO_DAEMON,
    "DaemonGone": EXIT_NO_DAEMON,
    "NoSolution": EXIT_NO_SOLUTION,
    "Interrupted": EXIT_INTERRUPTED,
}


def exit_code(kind: str) -> int:
    """The exit code of an error of this kind: 1 unless the table says otherwise."""
    return _EXIT_OF_KIND.get(kind, EXIT_FAILED)


def socket_path() -> str:
    """NWCACHE_SOCKET, default $XDG_RUNTIME_DIR/nwcache/daemon.sock."""
    if "NWCACHE_SOCKET" in os.environ:
        return os.environ["NWCACHE_SOCKET"]
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/nwcache-{os.getuid()}"
    return os.path.join(runtime, "nwcache", "daemon.sock")


def default_home() -> Path:
    """NWCACHE_HOME, default $XDG_DATA_HOME/nwcache."""
    from pathlib import Path

    if "NWCACHE_HOME" in os.environ:
        return Path(os.environ["NWCACHE_HOME"])
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data) / "nwcache"


def default_socket() -> Path:
    from pathlib import Path

    return Path(socket_path())


def answers(path: str | os.PathLike[str]) -> bool:
    """Whether something accepts connections at the socket."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(os.fspath(path))
        except OSError:
            return False
    return True


def encode(message: dict[str, Any]) -> bytes:
    """One line of the protocol (the daemon's side; the console script has
    its own encoder that needs no json package)."""
    import json

    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def error_event(kind: str, message: str, hint: str) -> dict[str, Any]:
    """The final line of a request that failed."""
    return {"event": "error", "kind": kind, "message": message, "hint": hint}
