"""One fuzz execution: what the daemon does with an archive before and while
storing it, without the daemon. Open (container and metadata checks), the
install-time checks into an environment, every file read and verified, then
the install planned (scripts generated, shebangs rewritten, installed RECORD).

Then the local commands' library calls on the same input: `unpack` and
`convert` (to the other form; a 2.0 input also to 2.0 again) must refuse
exactly when the reader refuses, leave nothing behind when they do, and a
conversion must keep the content digest. On a sample of inputs the real
command line (`python -m nwcache`, a process of its own) runs one command and
must answer with exit 0, or exit 1 and exactly one `error:` line ending in a
rule and one `hint:` line, never a traceback.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from nwcache.archive import Archive, ArchiveError, LinkMode, convert, unpack
from nwcache.archive.parallel import PARALLEL_MIN
from nwcache.daemon.errors import StoreError
from nwcache.daemon.layout import check_installable, plan_install
from nwcache.daemon.schema import EnvRecord, FileRef, PackageRecord

PYTHON_VERSION = "3.11.7"


def make_env(root: Path) -> EnvRecord:
    """A venv's skeleton, enough for the layout checks (which look at the
    file system: lib64 -> lib, an existing bin/python, site-packages)."""
    site = root / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    (root / "bin").mkdir(exist_ok=True)
    (root / "include").mkdir(exist_ok=True)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\n")
    python = root / "bin" / "python"
    if not python.exists():
        python.write_text("#!/bin/sh\n")
    if not (root / "lib64").exists():
        os.symlink("lib", root / "lib64")
    return EnvRecord(
        path=str(root),
        python=str(python),
        version=PYTHON_VERSION,
        cache_tag="cpython-311",
        tags=["py3-none-any"],
        site_packages="lib/python3.11/site-packages",
        scripts="bin",
        include="include/site/python3.11",
        current=1,
        next=2,
        created=0.0,
    )


@dataclass(frozen=True)
class Outcome:
    """ "accepted", or the rule / store error class that refused the input;
    for an accepted read, the content digest of the files read."""

    verdict: str
    digest: str = ""
    installed_size: int = 0  # when the archive opened


class Violation(AssertionError):
    """A command broke its promise on this input (a finding)."""


ACCEPTED = "accepted"
# The rule an operation that writes may refuse with, whatever reading says: its
# output cannot be written (a path component longer than the file system allows).
WRITE_RULE = "destination-io"
# The command line's failure: `error: ... [rule]` then `hint: ...`, nothing else.
_ERROR_LINE = re.compile(r"error: .*\[([a-z0-9-]+)\]")
CLI_COMMANDS = ("verify", "inspect", "unpack", "convert")


def execute(path: Path, env: EnvRecord, scratch: Path | None = None, cli: str | None = None) -> Outcome:
    """The install path's outcome. Raises anything that is neither an
    ArchiveError nor a StoreError, and Violation when unpack, convert or the
    command line (`cli`: one of CLI_COMMANDS) disagree with reading or leave
    files behind. Without `scratch` (for their output) only the install path runs."""
    verdict = install_outcome(path, env)
    if scratch is None:
        return verdict
    read = read_outcome(path)
    # Both read in the same order (the install path checks its layout first).
    installing = verdict.verdict
    if (
        installing != read.verdict
        and ACCEPTED in (installing, read.verdict)
        and not installing.startswith("store:")
    ):
        raise Violation(f"reading says {read.verdict}, the install path {installing}")
    # Below PARALLEL_MIN installed bytes, unpack and ingest check every file on
    # the decoding thread, in stream order: they must name the same rule as
    # reading. Above it, a file's hash is checked on a worker while decoding
    # goes on, and with two faults either may be reported first.
    strict = read.installed_size < PARALLEL_MIN
    outcomes = {
        "verify": read,
        "unpack": unpack_outcome(path, scratch / "unpack", read, strict),
        "convert": convert_outcome(path, scratch / "convert", read, strict),
    }
    if cli is not None:
        cli_outcome(path, scratch / "cli", cli, outcomes.get(cli), read, strict)
    return verdict


def _agree(what: str, got: str, read: str, strict: bool) -> None:
    if got in (read, WRITE_RULE):  # a name the file system refuses may come before any fault
        return
    if read == ACCEPTED:
        raise Violation(f"{what} refuses with {got} what reading accepts")
    if got == ACCEPTED:
        raise Violation(f"{what} accepts what reading refuses with {read}")
    if strict and read != ACCEPTED:
        raise Violation(f"{what} refuses with {got}, reading with {read}")


def _left_behind(where: Path) -> list[str]:
    return sorted(str(p.relative_to(where)) for p in where.rglob("*")) if where.exists() else []


def read_outcome(path: Path) -> Outcome:
    """What reading alone says (`nwcache verify`): open, every file read and verified."""
    size = 0
    try:
        with Archive.open(path) as archive:
            size = archive.installed_size
            for data in archive.iter_files():
                if data.link_to is None:
                    for _ in data.chunks():
                        pass
            return Outcome(ACCEPTED, archive.verified_digest, size)
    except ArchiveError as exc:
        return Outcome(exc.rule, installed_size=size)


def unpack_outcome(path: Path, out: Path, read: Outcome, strict: bool) -> Outcome:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    dest = out / "tree"
    try:
        with Archive.open(path) as archive:
            count = unpack(archive, dest, links=LinkMode.HARDLINK)
        got = Outcome(ACCEPTED)
        if count != sum(1 for p in dest.rglob("*") if not p.is_dir()):
            raise Violation(f"unpack reported {count} files and wrote another number")
    except ArchiveError as exc:
        got = Outcome(exc.rule)
        if _left_behind(out):
            raise Violation(f"unpack refused ({exc.rule}) and left {_left_behind(out)[:3]}") from None
    _agree("unpack", got.verdict, read.verdict, strict)
    shutil.rmtree(out)
    return got


def convert_outcome(path: Path, out: Path, read: Outcome, strict: bool) -> Outcome:
    """To both forms (a 2.0 input to 2.0 goes through a scratch tree); an
    accepted conversion must read back with the input's content digest.
    Returns the outcome of --to 2, the command line's default."""
    got = Outcome(ACCEPTED)
    for to in (1, 2):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        dest = out / path.name
        try:
            result = convert(path, dest, to=to, level=1, timestamp=0)
            got = Outcome(ACCEPTED)
        except ArchiveError as exc:
            got = Outcome(exc.rule)
            if _left_behind(out):
                raise Violation(
                    f"convert --to {to} refused ({exc.rule}) and left {_left_behind(out)[:3]}"
                ) from None
        _agree(f"convert --to {to}", got.verdict, read.verdict, strict)
        if got.verdict == ACCEPTED:
            back = read_outcome(dest)
            if back.verdict != ACCEPTED or not read.digest == result.content_digest == back.digest:
                raise Violation(
                    f"convert --to {to}: digest {read.digest} became {result.content_digest}, reads back {back}"
                )
        shutil.rmtree(out)
    return got


def cli_outcome(
    path: Path, out: Path, command: str, library: Outcome | None, read: Outcome, strict: bool
) -> None:
    """The real command line, in a process of its own: exit 0 where the
    library accepts, else exit 1 with one `error:` line ending in the rule and
    one `hint:` line, nothing written, never a traceback."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    argv = {
        "verify": ["verify", str(path)],
        "inspect": ["inspect", str(path)],
        "unpack": ["unpack", str(path), str(out / "tree")],
        "convert": ["convert", str(path), "-o", str(out), "--level", "1"],
    }[command]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "80"}
    done = subprocess.run(
        [sys.executable, "-m", "nwcache", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    lines = done.stderr.splitlines()
    if "Traceback" in done.stderr or done.returncode not in (0, 1):
        raise Violation(f"nwcache {command} exited {done.returncode}:\n{done.stderr}")
    # inspect reads the metadata only: it accepts some archives reading refuses.
    wanted = library.verdict if library is not None else None
    if done.returncode == 0:
        if lines:
            raise Violation(f"nwcache {command} succeeded with output on stderr: {done.stderr!r}")
        if wanted is not None and wanted != ACCEPTED:
            raise Violation(f"nwcache {command} succeeded where the library refuses with {wanted}")
    else:
        match = _ERROR_LINE.fullmatch(lines[0]) if len(lines) == 2 else None
        if match is None or not lines[1].startswith("hint: "):
            raise Violation(f"nwcache {command} failed without one error and one hint line:\n{done.stderr}")
        rule = match.group(1)
        if command == "inspect" and read.verdict == ACCEPTED:
            raise Violation(f"nwcache inspect refuses with {rule} what reading accepts")
        if wanted is not None:
            _agree(f"nwcache {command}", rule, wanted, strict)
        if _left_behind(out):
            raise Violation(f"nwcache {command} failed and left {_left_behind(out)[:3]}")
    shutil.rmtree(out)


def install_outcome(path: Path, env: EnvRecord) -> Outcome:
    """The daemon's path: open, install checks, every file read, install planned."""
    try:
        with Archive.open(path) as archive:
            entry_points = next(
                (f for f in archive.files if f.path == f"{archive.dist_info}/entry_points.txt"), None
            )
            text = b"".join(archive.open_file(entry_points).chunks()) if entry_points is not None else None
            name = str(archive.wheel_name.name)
            label = f"{name} {archive.version}"
            check_installable(label, archive.dist_info, name, (f.path for f in archive.files), text, env)
            blobs: dict[str, bytes] = {}
            files: dict[str, FileRef] = {}
            produced = []
            for data in archive.iter_files():
                produced.append(data)
                if data.link_to is None:
                    content = b"".join(data.chunks())
                    blobs[hashlib.sha256(content).hexdigest()] = content
            for data in produced:
                assert data.sha256 is not None
                files[data.path] = FileRef(data.sha256.hex(), data.info.size, data.info.executable)
            package = PackageRecord(
                name=name,
                version=archive.version,
                digest=archive.verified_digest,
                tags=["py3-none-any"],
                filename=path.name,
                source="archive",
                dist_info=archive.dist_info,
                files=files,
            )

            def put(content: bytes, executable: bool) -> FileRef:
                blob = hashlib.sha256(content).hexdigest()
                blobs[blob] = content
                return FileRef(blob, len(content), executable)

            plan_install(package, env, requested=True, read_blob=blobs.__getitem__, put_blob=put)
    except ArchiveError as exc:
        return Outcome(exc.rule)
    except StoreError as exc:
        return Outcome(f"store:{type(exc).__name__}")
    return Outcome(ACCEPTED)
