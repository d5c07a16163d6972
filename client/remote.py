"""The `nwcache` console script, and every request the client sends.

`nwcache install ARCHIVE... --env VENV [--json]` is what users run most and
wait on: that line is read here by hand and sent with nothing but the C parts
of the standard library (_socket, _json), so the client costs about what
Python's own start costs. Any other command line, a malformed one included,
goes to the full argparse parser (nwcache.client.cli), whose commands end in
the same install() and call().

Imports are the point of this module: os and sys (loaded by Python's start
anyway), _socket and _json. No argparse, pathlib, typing, json, socket.
The protocol is described in nwcache.client.protocol.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

PROTOCOL = 1
MAX_LINE = 16 << 20
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NO_DAEMON = 3
EXIT_INTERRUPTED = 130


class DaemonUnavailable(Exception):
    """No daemon answers at the socket."""


class ProtocolError(Exception):
    """The daemon answered something this client cannot read."""


class ConnectionLost(ProtocolError):
    """The connection broke after the request was sent and before the answer:
    the daemon stopped (or was killed) while it worked on the request."""


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


def socket_path() -> str:
    """NWCACHE_SOCKET, default $XDG_RUNTIME_DIR/nwcache/daemon.sock."""
    if "NWCACHE_SOCKET" in os.environ:
        return os.environ["NWCACHE_SOCKET"]
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/nwcache-{os.getuid()}"
    return os.path.join(runtime, "nwcache", "daemon.sock")


# -- JSON without the json package (it imports re) --------------------------------


def dumps(value: object) -> str:
    """Compact JSON of dicts, lists, strings, ints, bools and None, as
    json.dumps(value, separators=(",", ":")) writes it."""
    import _json

    if isinstance(value, str):
        return str(_json.encode_basestring_ascii(value))
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot send {type(value).__name__} to the daemon")


class _Scanning:
    """What _json.make_scanner reads from its context (json.JSONDecoder's defaults)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name.replace("Infinity", "inf"))


def loads(text: str) -> Any:
    import _json

    try:
        value, end = _json.make_scanner(_Scanning)(text, 0)  # type: ignore[arg-type]  # any object with these attributes
    except StopIteration:
        raise ValueError("not JSON") from None
    if text[end:].strip():
        raise ValueError("trailing data after JSON")
    return value


# -- the connection ---------------------------------------------------------------


def request(
    path: str, op: str, args: dict[str, Any], request_id: str | None = None
) -> Iterator[dict[str, Any]]:
    """Send one request; yield every line of the answer (the last one is the
    result or the error). ConnectionLost when the daemon goes away first."""
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnavailable(f"no nwcache daemon at {path} ({exc.strerror})") from None
        except PermissionError:
            raise DaemonUnavailable(f"{path} is not yours to use (permission denied)") from None
        message: dict[str, Any] = {"protocol": PROTOCOL, "op": op, "args": args}
        if request_id is not None:
            message["request"] = request_id
        lost = "the daemon stopped before answering (the connection closed)"
        try:
            sock.sendall(dumps(message).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            raise ConnectionLost(lost) from None
        buffer = b""
        while True:
            newline = buffer.find(b"\n")
            if newline < 0:
                if len(buffer) > MAX_LINE:
                    raise ProtocolError("the daemon sent an oversized message")
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    raise ConnectionLost(lost) from None
                if not chunk:
                    raise ConnectionLost(lost)
                buffer += chunk
                continue
            line, buffer = buffer[:newline], buffer[newline + 1 :]
            try:
                message = loads(line.decode())
            except (ValueError, UnicodeDecodeError):
                raise ProtocolError("the daemon sent something that is not a JSON line") from None
            if not isinstance(message, dict):
                raise ProtocolError("the daemon sent something that is not a message")
            yield message
            if message.get("event") in ("result", "error"):
                return
    finally:
        sock.close()


def _fail(kind: str, message: str, hint: str, code: int, as_json: bool) -> int:
    from nwcache.client.report import fail

    return fail(kind, message, hint, code, as_json)


def print_result(result: Any, as_json: bool, render: Callable[[Any], str]) -> int:
    if as_json:
        from nwcache.client.report import emit

        emit(result)
    else:
        text = render(result)
        if text:
            print(text)
    return EXIT_OK


def call(
    op: str,
    args: dict[str, Any],
    as_json: bool,
    render: Callable[[Any], str],
    exit_of: Callable[[Any], int] | None = None,
) -> int:
    """One request to the daemon: progress on stderr when it is a terminal,
    the result on stdout (JSON with --json), errors as `error:` + `hint:`.
    A request that changes something and loses its answer is asked after.
    `exit_of(result)` gives the exit code of a result (default 0)."""
    bar = None
    request_id = os.urandom(8).hex() if op in CHANGING else None
    try:
        for message in request(socket_path(), op, args, request_id):
            event = message.get("event")
            if event == "progress":
                if not as_json and sys.stderr.isatty():
                    if bar is None:
                        from nwcache.client.progress import ProgressBar

                        bar = ProgressBar()
                    bar.update(
                        str(message.get("message")),
                        int(message.get("done") or 0),
                        int(message.get("total") or 0),
                        message.get("files"),
                    )
                continue
            if bar is not None:
                bar.close()
                bar = None
            if event == "error":
                return _fail(
                    str(message.get("kind") or "Error"),
                    str(message.get("message")),
                    str(message.get("hint") or ""),
                    int(message.get("exit", EXIT_FAILED)),
                    as_json,
                )
            if event == "result":
                code = print_result(message.get("result"), as_json, render)
                return exit_of(message.get("result")) if code == 0 and exit_of is not None else code
    except ConnectionLost as exc:
        if bar is not None:
            bar.close()
            bar = None
        if request_id is None:
            return _fail(
                "ConnectionLost",
                str(exc),
                f"'{op}' changes nothing: run it again once the daemon is back ('nwcache daemon' or systemd)",
                EXIT_FAILED,
                as_json,
            )
        from nwcache.client.lost import recover

        return recover(op, args, request_id, as_json, render)
    except DaemonUnavailable as exc:
        return _fail(
            "NoDaemon",
            str(exc),
            "start it with 'nwcache daemon' (foreground) or 'nwcache service install'",
            EXIT_NO_DAEMON,
            as_json,
        )
    except ProtocolError as exc:
        return _fail(
            "ProtocolError",
            str(exc),
            "check the daemon's log ('nwcache service status', or the terminal running 'nwcache daemon')",
            EXIT_FAILED,
            as_json,
        )
    finally:
        if bar is not None:
            bar.close()
    return EXIT_FAILED


def install(archives: list[str], env: str, as_json: bool) -> int:
    """`nwcache install`: every archive must be a file; paths go to the daemon absolute."""
    absolute = [os.path.abspath(a) for a in archives]
    for given, path in zip(archives, absolute, strict=True):
        if os.path.isdir(path):
            return _fail(
                "NotAFile",
                f"{path}: is a directory, not an archive",
                f"pass the wheels in it: nwcache install {given.rstrip('/')}/*.whl --env {env}",
                EXIT_FAILED,
                as_json,
            )
        if not os.path.isfile(path):
            return _fail(
                "NotAFile",
                f"{path}: no such file",
                "pass paths of .whl archives (classic or 2.0)",
                EXIT_FAILED,
                as_json,
            )
    return call(
        "install",
        {"env": os.path.abspath(env), "archives": absolute},
        as_json,
        render_install,
    )


def render_install(gen: dict[str, Any]) -> str:
    """The result line; the dependency check's findings as warnings on
    stderr; a failure to compile bytecode that the daemon reports (bytecode
    compiles in the background: it is the last attempt's)."""
    for warning in gen.get("warnings") or []:
        sys.stderr.write(f"warning: {warning}\n")
    if gen.get("unchanged"):
        return f"nothing to do: generation {gen['number']} already holds it"
    text = f"generation {gen['number']}: {gen['action']}"
    error = (gen.get("bytecode") or {}).get("error")
    if error:
        text += f"\nwarning: compiling bytecode failed: {error} (imports work; Python compiles for itself)"
    return text


# -- the console script -------------------------------------------------------------


def plain_install(argv: list[str]) -> tuple[list[str], str, bool] | None:
    """(archives, venv, --json) when argv is exactly `install ARCHIVE...
    --env VENV [--json]` in any order, each flag once, every archive a .whl
    path not starting with '-'; None for anything else (argparse's to read,
    requirements by name included)."""
    if not argv or argv[0] != "install":
        return None
    archives: list[str] = []
    env: str | None = None
    as_json = False
    words = iter(argv[1:])
    for word in words:
        if word == "--json" and not as_json:
            as_json = True
        elif word == "--env" and env is None:
            env = next(words, None)
            if env is None or env.startswith("-") or not env:
                return None
        elif word.startswith("--env=") and env is None and len(word) > len("--env="):
            env = word[len("--env=") :]
        elif word.startswith("-") or not word or not word.endswith(".whl"):
            return None  # a flag, or a requirement by name: the full parser's
        else:
            archives.append(word)
    if env is None or not archives:
        return None
    return archives, env, as_json


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    plain = plain_install(words)
    if plain is None:
        from nwcache.client.cli import main as full

        return full(words)
    try:
        return install(*plain)
    except KeyboardInterrupt:
        from nwcache.client.report import interrupted

        return interrupted(plain[2])
    except OSError as exc:
        from nwcache.client.report import os_error

        return os_error(exc, plain[2])
