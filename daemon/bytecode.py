"""Bytecode compiled once per (source blob, interpreter, optimization level)
and served from every environment's `__pycache__` (docs/BYTECODE.md).

A pyc is a timestamp pyc whose header names the mtime and size the view
reports for its source. The view derives a store file's mtime from its
content, so one pyc is valid for that content at every path, in every
environment of that interpreter. Compiling runs in the environment's own
interpreter (its magic number and its compiler), in worker processes the
daemon awaits: the event loop never compiles and reads never wait for it.

Bytecode is a cache, never part of a generation: adoption and folding leave
`__pycache__/*.pyc` out, and GC drops an entry with its source blob or once
no registered environment runs its interpreter.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .schema import FileRef

# The worker runs inside the environment's interpreter (CPython 3.9+) with
# -I -S -B: nothing of the environment's site-packages or of PYTHON*
# variables can change what it compiles; it reports one line per job. The
# file name compiled into the code object is a constant, so that the pyc
# depends on the source's content alone; the import system replaces it with
# the real path when it loads the pyc.
#
# What every compile of a source runs, in the environment's interpreter (the
# two workers below and daemon/demand.py's) or in the daemon's own: the pyc
# exactly as py_compile writes it (magic, flags 0, mtime, size, marshalled
# code), None when the source does not compile. One text, so that all of
# them write the same pyc.
PYC_OF = r"""
import base64, importlib.util, json, marshal, sys, warnings
DOES_NOT_COMPILE = (SyntaxError, ValueError, UnicodeError, OverflowError, RecursionError, MemoryError)

def source_of(job):
    if job["data"] is not None:
        return base64.b64decode(job["data"])
    with open(job["src"], "rb") as fh:
        return fh.read()

def pyc_of(source, mtime, level):
    head = (importlib.util.MAGIC_NUMBER + b"\0\0\0\0" + (mtime & 0xFFFFFFFF).to_bytes(4, "little")
            + (len(source) & 0xFFFFFFFF).to_bytes(4, "little"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarnings: Python shows them when it compiles itself
        try:
            code = compile(source, "<nwcache>", "exec", dont_inherit=True, optimize=level)
        except DOES_NOT_COMPILE:
            return None
    return head + marshal.dumps(code)
"""
WORKER = (
    PYC_OF
    + r"""
jobs, out = sys.argv[1], sys.argv[2]
with open(jobs, "rb") as listing:
    for line in listing:
        job = json.loads(line)
        try:
            source = source_of(job)
            pycs = [(level, pyc_of(source, job["mtime"], level)) for level in job["levels"]]
            if any(data is None for _, data in pycs):
                print("fail", job["id"], flush=True)
                continue
            for level, data in pycs:
                with open(out + job["id"] + "." + str(level), "wb") as fh:
                    fh.write(data)
            print("ok", job["id"], flush=True)
        except OSError as exc:  # not the source's fault (a full disk): said, and the rest left
            print("error", job["id"], str(exc).replace("\n", " "), flush=True)
            sys.exit(3)
"""
)
# Jobs per worker process below which another process is not worth its start.
JOBS_PER_WORKER = 64
# A worker that reports nothing for this long is killed, and the source it
# was compiling is remembered as not compiling: a hostile source must not
# hold an install for longer.
SOURCE_TIMEOUT = 60.0

_BYTECODE_PATH = re.compile(r"(?:^|/)__pycache__/[^/]+\.pyc$")
_LEVEL_SUFFIX = {0: "", 1: ".opt-1", 2: ".opt-2"}
LEVELS = tuple(_LEVEL_SUFFIX)


def is_bytecode(path: str) -> bool:
    """A cached pyc (never adopted, never folded into a generation)."""
    return _BYTECODE_PATH.search(path) is not None


def compilable(path: str) -> bool:
    """Sources Python would import and pip would compile: `.py` files
    outside `.dist-info`."""
    return path.endswith(".py") and not path.split("/", 1)[0].endswith(".dist-info")


def pyc_path(source: str, cache_tag: str, level: int) -> str:
    """Where Python looks for the pyc of `source` (importlib.util.cache_from_source)."""
    head, _, name = source.rpartition("/")
    stem = name[: -len(".py")]
    cached = f"__pycache__/{stem}.{cache_tag}{_LEVEL_SUFFIX[level]}.pyc"
    return f"{head}/{cached}" if head else cached


def source_of_pyc(path: str, cache_tag: str) -> tuple[str, int] | None:
    """(source, level) whose pyc Python looks for at `path`, for an
    interpreter of `cache_tag`; None if `path` is no such pyc."""
    folder, _, name = path.rpartition("/")
    package, _, cache = folder.rpartition("/")
    if cache != "__pycache__" or not name.endswith(".pyc"):
        return None
    stem, dot, rest = name[: -len(".pyc")].partition("." + cache_tag)
    if not dot or not stem:
        return None
    level = {suffix: level for level, suffix in _LEVEL_SUFFIX.items()}.get(rest)
    if level is None:
        return None
    return (f"{package}/{stem}.py" if package else f"{stem}.py"), level


def parse_levels(value: str | None) -> tuple[int, ...]:
    """NWCACHE_BYTECODE: "0" (the default), a list such as "0,1", or "off"."""
    if value is None or not value.strip():
        return (0,)
    if value.strip().lower() in ("off", "none", "no", "false"):
        return ()
    try:
        levels = tuple(sorted({int(part) for part in value.split(",") if part.strip()}))
    except ValueError:
        levels = ()
    if not levels or any(level not in _LEVEL_SUFFIX for level in levels):
        raise ValueError(f"NWCACHE_BYTECODE={value!r}: use 'off' or optimization levels such as '0' or '0,1'")
    return levels


def sources(tree: Mapping[str, FileRef]) -> dict[str, FileRef]:
    """The compilable sources of a site-packages tree."""
    return {path: ref for path, ref in tree.items() if compilable(path)}


def missing(
    tree: Mapping[str, FileRef], known: Mapping[tuple[str, int], FileRef | None], levels: Iterable[int]
) -> dict[str, FileRef]:
    """The compilable sources of `tree` (by blob) lacking an entry at some level."""
    wanted = tuple(levels)
    return {
        ref.blob: ref
        for path, ref in tree.items()
        if compilable(path) and any((ref.blob, level) not in known for level in wanted)
    }


def with_bytecode(
    tree: Mapping[str, FileRef], known: Mapping[tuple[str, int], FileRef | None], cache_tag: str
) -> dict[str, FileRef]:
    """`tree` plus the pyc of every source whose bytecode is known (one that
    an archive shipped at the same path is replaced: Python checks a pyc
    against the mtime the view reports, which only ours records)."""
    out = dict(tree)
    levels = sorted({level for _blob, level in known})
    for path, ref in tree.items():
        if not compilable(path):
            continue
        for level in levels:
            pyc = known.get((ref.blob, level))
            if pyc is not None:
                out[pyc_path(path, cache_tag, level)] = pyc
    return out


@dataclass(frozen=True)
class Job:
    """One source to compile at some levels."""

    id: str
    source: FileRef
    levels: tuple[int, ...]


def write_jobs(
    listing: Path, jobs: Iterable[Job], location: Mapping[str, bytes | Path], mtime: Mapping[str, int]
) -> None:
    """The worker's job file: one JSON line per source, its body's path or
    (inline blobs) its bytes."""
    with open(listing, "w", encoding="ascii") as out:
        for job in jobs:
            where = location[job.source.blob]
            line = {
                "id": job.id,
                "src": None if isinstance(where, bytes) else os.fspath(where),
                "data": base64.b64encode(where).decode("ascii") if isinstance(where, bytes) else None,
                "mtime": mtime[job.source.blob],
                "levels": list(job.levels),
            }
            out.write(json.dumps(line) + "\n")


def split_jobs(jobs: list[Job], workers: int) -> list[list[Job]]:
    """Share the jobs out by source size, largest first, so that workers end together."""
    shares: list[list[Job]] = [[] for _ in range(workers)]
    loads = [0] * workers
    for job in sorted(jobs, key=lambda j: j.source.size, reverse=True):
        i = loads.index(min(loads))
        shares[i].append(job)
        loads[i] += job.source.size + 512
    return [share for share in shares if share]


@dataclass
class WorkerRun:
    """What one worker process reported: job id -> compiled (True) or not."""

    outcome: dict[str, bool] = field(default_factory=dict)
    error: str | None = None  # a failure that is not the source's (the worker stopped there)
    returncode: int | None = None
    timed_out: bool = False
    stderr: str = ""


# Workers compile in the background, behind the requests of every process
# on the machine (imports included): the lowest priority, nice 19.
NICE = 19


def _lower_priority() -> None:
    os.nice(NICE)


async def run_worker(python: str, listing: str, prefix: str, *, silence: float = SOURCE_TIMEOUT) -> WorkerRun:
    """Run the worker in `python` over a job listing, taking its verdicts as
    they come, and kill it after `silence` seconds without one; its stderr
    goes to a file beside the outputs (no pipe to fill)."""
    run = WorkerRun()
    errors = trio.Path(f"{listing}.err")
    err = await trio.to_thread.run_sync(os.open, errors, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        process = await trio.lowlevel.open_process(
            [python, "-I", "-S", "-B", "-c", WORKER, listing, prefix],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"},
            preexec_fn=_lower_priority,
        )
    finally:
        os.close(err)
    stdout = process.stdout
    assert stdout is not None
    try:
        pending = b""
        while True:
            with trio.move_on_after(silence) as waited:
                chunk = await stdout.receive_some()
            if waited.cancelled_caught:
                run.timed_out = True
                process.kill()
                break
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                verdict, _, rest = line.decode("utf-8", "replace").partition(" ")
                job, _, detail = rest.partition(" ")
                if verdict == "error":
                    run.error = detail
                else:
                    run.outcome[job] = verdict == "ok"
        run.returncode = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        await stdout.aclose()
    if run.returncode != 0:
        run.stderr = (await errors.read_bytes())[-2000:].decode("utf-8", "replace").strip()
    return run
