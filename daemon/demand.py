"""Bytecode compiled on demand (docs/BYTECODE.md): a pyc Python asks for
before the background compiler reached its source is compiled at once, by
a worker process of the environment's interpreter that stays up for the
next one, at the priority of the process waiting for it (not nice 19).

The worker writes the pyc as the background worker does (daemon/bytecode.py:
the same header, the same constant file name); the service indexes it and
the view serves it like any other shared pyc.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
from typing import Any

import trio

from .bytecode import PYC_OF, SOURCE_TIMEOUT

# One JSON job a line on stdin: {"src": path or null, "data": base64 of an
# inline source or null, "mtime": s, "level": n, "out": path};
# one verdict a line on stdout: "ok", "fail" (the source does not compile)
# or "error <text>" (not the source's fault).
WORKER = (
    PYC_OF
    + r"""
for line in sys.stdin:
    job = json.loads(line)
    try:
        data = pyc_of(source_of(job), job["mtime"], job["level"])
        if data is None:
            print("fail", flush=True)
            continue
        with open(job["out"], "wb") as fh:
            fh.write(data)
        print("ok", flush=True)
    except OSError as exc:
        print("error", str(exc).replace("\n", " "), flush=True)
"""
)


# The daemon's own interpreter, as an environment's is named (schema:
# EnvRecord.interpreter): an environment whose interpreter accepts the
# daemon's bytecode gets its pycs compiled in the daemon itself.
HERE = f"{sys.implementation.cache_tag}:{importlib.util.MAGIC_NUMBER.hex()}"


# The daemon compiles with the very text its workers run (bytecode.PYC_OF).
_here: dict[str, Any] = {}
exec(PYC_OF, _here)


def compile_here(source: bytes, mtime: int, level: int) -> bytes | None:
    """The pyc the worker writes, compiled by the daemon's interpreter (in a
    worker thread); None if the source does not compile."""
    made: bytes | None = _here["pyc_of"](source, mtime, level)
    return made


class DemandWorker:
    """One long-lived worker process of one interpreter; one job at a time."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.lock = trio.Lock()
        self._process: trio.Process | None = None
        self._pending = b""

    async def _start(self) -> trio.Process:
        if self._process is None or self._process.returncode is not None:
            self._process = await trio.lowlevel.open_process(
                [self.python, "-I", "-S", "-B", "-c", WORKER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"},
            )
            self._pending = b""
        return self._process

    async def compile(self, source: bytes | str, mtime: int, level: int, out: str) -> str:
        """`source`: the body's path or (inline) its bytes. "ok", "fail" or "error <text>" (a worker that answers nothing
        for SOURCE_TIMEOUT seconds is killed: "error")."""
        async with self.lock:
            try:
                process = await self._start()
                assert process.stdin is not None
                assert process.stdout is not None
                job = {
                    "src": None if isinstance(source, bytes) else source,
                    "data": base64.b64encode(source).decode("ascii") if isinstance(source, bytes) else None,
                    "mtime": mtime,
                    "level": level,
                    "out": out,
                }
                await process.stdin.send_all(json.dumps(job).encode() + b"\n")
                with trio.move_on_after(SOURCE_TIMEOUT):
                    while b"\n" not in self._pending:
                        chunk = await process.stdout.receive_some()
                        if not chunk:
                            break
                        self._pending += chunk
                line, found, self._pending = self._pending.partition(b"\n")
                if found:
                    return line.decode("utf-8", "replace")
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                await self.aclose()
                return f"error {exc}"
            await self.aclose()
            return "error the worker answered nothing"

    async def aclose(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    await stream.aclose()
