"""A real nwcache daemon in its own process, for tests: its own NWCACHE_HOME
and socket under a temporary directory, readiness polled with a deadline,
the real CLI run against it, and the mount cleared when it stops."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nwcache.daemon.mount import clear_stale_mount
from nwcache.protocol import PROTOCOL, answers, encode
from tests.helpers import clean_env

READY_TIMEOUT = 60.0


def run_cli(env: dict[str, str], *argv: str | Path) -> tuple[int, str, str]:
    """The real `nwcache` command line in a child process: (exit code, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "nwcache", *map(str, argv)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


class Daemon:
    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.socket = root / "run" / "daemon.sock"
        self.env = clean_env({"NWCACHE_HOME": str(self.home), "NWCACHE_SOCKET": str(self.socket)})
        self.env["PYTHONPATH"] = str(Path(__file__).parent.parent)
        self.process: subprocess.Popen[str] | None = None
        self.log = root / "daemon.log"

    def start(self, notify: Path | None = None) -> None:
        env = dict(self.env)
        if notify is not None:
            env["NOTIFY_SOCKET"] = str(notify)
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nwcache", "daemon"], env=env, stdout=log, stderr=log, text=True
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.answers():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the daemon exited with {self.process.returncode}:\n{self.log.read_text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the daemon did not answer within {READY_TIMEOUT} s:\n{self.log.read_text()}"
                )
            time.sleep(0.05)  # polling for readiness, bounded by the deadline above

    def answers(self) -> bool:
        return answers(self.socket)

    def stop(self) -> int:
        if self.process is None:
            return 0
        process, self.process = self.process, None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        finally:
            clear_stale_mount(self.home / "view")

    def cli(self, *argv: str | Path) -> tuple[int, str, str]:
        """The real CLI in this process (the daemon is another one)."""
        return run_cli(self.env, *argv)

    def call(self, op: str, **args: Any) -> Any:
        """One request over the socket; its result (an error fails the test)."""
        *_, last = request(self.socket, op, args, timeout=300)
        if last.get("event") != "result":
            raise AssertionError(f"{op} {args}: {last}")
        return last["result"]


def request(path: Path, op: str, args: dict[str, Any], *, timeout: float) -> Iterator[dict[str, Any]]:
    """One request to a daemon, every line of its answer: the protocol
    (nwcache.protocol) spoken directly, with a timeout on every receive."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(encode({"protocol": PROTOCOL, "op": op, "args": args}))
        for line in sock.makefile("rb"):
            message: dict[str, Any] = json.loads(line)
            yield message
            if message.get("event") in ("result", "error"):
                return
    raise ConnectionError(f"the daemon closed the connection before answering {op}")
