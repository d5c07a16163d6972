"""Other users and other paths: a real second user reaches neither the socket
nor the view (directly or through a venv's site-packages symlink); a venv
path that is a symlink, a venv whose lib/ or site-packages is a symlink, and
a directory that is not a venv are refused with one line and change nothing;
a whole register/install/uninstall cycle, traced with strace, writes nothing
outside NWCACHE_HOME, the venv and the socket's directory."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import packaging
import pytest

from nwcache.daemon.linking import LEFTOVER_SUFFIXES
from nwcache.daemon.mount import clear_stale_mount
from tests.daemon_process import Daemon, request
from tests.helpers import new_venv, site_of

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
OTHER_USER = "nwcache-other"


@pytest.fixture
def open_root(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A directory every user may traverse (pytest's own are 0700), so that
    only the daemon's socket directory and the view's mount decide."""
    root = Path(tempfile.mkdtemp(prefix="nwcache-users-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def daemon(open_root: Path) -> Iterator[Daemon]:
    made = Daemon(open_root)
    made.env.pop("PYTHONDONTWRITEBYTECODE", None)  # the probe must not write bytecode on its own
    try:
        yield made
    finally:
        made.stop()


def second_user() -> str:
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"):
        pytest.skip("needs root, useradd and runuser to make a real second user")
    if subprocess.run(["id", OTHER_USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", OTHER_USER], check=True)
    return OTHER_USER


# Run as the other user with the system python: stat, listdir and read of
# each path; prints one errno name (or "ok") per operation and path.
_PROBE = r"""
import errno, json, os, sys
out = {}
for path in sys.argv[1:]:
    for what, fn in (("stat", os.stat), ("listdir", os.listdir), ("read", lambda p: open(p, "rb").read(1))):
        try:
            fn(path)
            out[f"{what} {path}"] = "ok"
        except OSError as exc:
            out[f"{what} {path}"] = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps(out))
"""


def test_second_user_reaches_neither_socket_nor_view(
    daemon: Daemon, open_root: Path, built_wheels: dict[str, Path]
) -> None:
    user = second_user()
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("needs a system python3 the other user can run")
    daemon.start()
    venv = new_venv(open_root / "venv")
    code, _, err = daemon.cli("install", built_wheels["pure"], "--env", venv)
    assert code == 0, err
    for path in (daemon.home, daemon.home.parent):
        path.chmod(0o755)  # everything up to the mount point is open: the view alone decides
    view = daemon.home / "view"
    env_dir = next(iter(os.listdir(view)))
    module = site_of(venv) / "nwdemo_pure" / "core.py"
    assert module.read_text()  # root reads it
    targets = [view, view / env_dir, site_of(venv), module, daemon.socket]
    done = subprocess.run(
        ["runuser", "-u", user, "--", python, "-c", _PROBE, *map(str, targets)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(done.stdout)
    for path in targets[:-1]:
        for what in ("stat", "listdir", "read"):
            assert seen[f"{what} {path}"] == "EACCES", (what, path, seen)
    # The socket's directory is 0700: not even a stat of the socket.
    assert seen[f"stat {daemon.socket}"] == "EACCES", seen
    assert daemon.answers()


def tree_of(root: Path) -> dict[str, str]:
    """Every entry under `root` (symlinks not followed), with content."""
    found: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(dirpath) / name
            if full.is_symlink():
                found[str(full)] = "-> " + os.readlink(full)
            elif full.is_file():
                found[str(full)] = hashlib.sha256(full.read_bytes()).hexdigest()
            else:
                found[str(full)] = "dir"
    return found


@pytest.mark.parametrize("shape", ["venv-link", "lib-link", "site-link", "not-a-venv"])
def test_symlinked_or_foreign_venvs_are_refused(
    daemon: Daemon, tmp_path: Path, shape: str, built_wheels: dict[str, Path]
) -> None:
    daemon.start()
    work = tmp_path / "work"
    venv = new_venv(work / "venv")
    (site_of(venv) / "mine.py").write_text("MINE = 1\n")
    given = venv
    if shape == "venv-link":
        given = work / "link"
        given.symlink_to(venv)
        expected = "is a symlink; pass the real directory"
    elif shape == "lib-link":
        shutil.move(venv / "lib", work / "elsewhere-lib")
        (venv / "lib").symlink_to(work / "elsewhere-lib")
        expected = "resolves outside it"
    elif shape == "site-link":
        shutil.move(site_of(venv), work / "elsewhere-site")
        site_of(venv).symlink_to(work / "elsewhere-site")
        expected = "resolves outside it"
    else:
        given = work / "plain"
        given.mkdir()
        (given / "lib").mkdir()
        expected = "is not a virtual environment (no pyvenv.cfg)"
    before = tree_of(work)
    for argv in (("env", "register", given), ("install", built_wheels["pure"], "--env", given)):
        code, out, err = daemon.cli(*argv)
        assert code == 1, (argv, out, err)
        lines = err.splitlines()
        assert len(lines) == 2, err
        assert lines[0].startswith("error:"), err
        assert expected in lines[0], err
        assert lines[1].startswith("hint:"), err
    assert tree_of(work) == before
    code, out, err = daemon.cli("env", "list", "--json")
    assert code == 0, err
    assert json.loads(out) == []


_WRITES = re.compile(
    r"^(?:\d+\s+)?(?P<call>open|openat|creat|mkdir|mkdirat|rename|renameat|renameat2|unlink|unlinkat|"
    r"rmdir|symlink|symlinkat|link|linkat|chmod|fchmodat|truncate|utimensat|mknod|mknodat)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+)"
)
_PATH = re.compile(r'(?:(?P<fd>-?\d+|AT_FDCWD)(?:<(?P<fdpath>[^>]*)>)?,\s*)?"(?P<path>[^"]*)"')


def written_paths(trace: str, cwd: Path) -> set[str]:
    """Paths the traced processes created, changed or removed (calls that
    succeeded; opens only with O_WRONLY, O_RDWR or O_CREAT)."""
    paths: set[str] = set()
    for line in trace.splitlines():
        match = _WRITES.match(line)
        if match is None or int(match["ret"]) < 0:
            continue
        call, args = match["call"], match["args"]
        if call in ("open", "openat") and not re.search(r"O_WRONLY|O_RDWR|O_CREAT", args):
            continue
        for index, found in enumerate(_PATH.finditer(args)):
            if call in ("symlink", "symlinkat") and index == 0:
                continue  # the link's target, not a path written
            path = found["path"]
            base = found["fdpath"] if found["fdpath"] else str(cwd)
            paths.add(os.path.normpath(os.path.join(base, path)))
    return paths


def test_writes_stay_inside_the_store_and_the_venv(
    daemon: Daemon, tmp_path: Path, built_wheels: dict[str, Path]
) -> None:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("needs strace (apt-get install strace)")
    work = tmp_path / "cwd"
    work.mkdir()
    trace = tmp_path / "trace.txt"
    venv = new_venv(tmp_path / "venv")
    # The daemon imports packaging from a copy without bytecode, and hands
    # that directory to the venv's interpreter when it probes it: the probe
    # must not write bytecode there (PYTHONDONTWRITEBYTECODE is unset). The
    # daemon itself runs with -B: its own modules' bytecode is the
    # installation's business.
    modules = tmp_path / "modules"
    shutil.copytree(
        Path(packaging.__file__).parent, modules / "packaging", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {**daemon.env, "PYTHONPATH": f"{modules}:{daemon.env['PYTHONPATH']}"}
    # The daemon under strace: every file-changing call of it and its children.
    tracer = subprocess.Popen(
        [
            strace,
            "-f",
            "-y",
            "-s",
            "4096",
            "-o",
            str(trace),
            "-e",
            "trace=%file",
            sys.executable,
            "-B",
            "-m",
            "nwcache",
            "daemon",
        ],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not daemon.answers():
            assert tracer.poll() is None, "the traced daemon exited"
            assert time.monotonic() < deadline, "the traced daemon did not answer within 120 s"
            time.sleep(0.05)  # polling for readiness, bounded by the deadline
        for argv in (
            ("env", "register", venv),
            ("install", built_wheels["pure"], "--env", venv),
            ("uninstall", "nwdemo-pure", "--env", venv),
            ("env", "unregister", venv),
        ):
            code, _, err = daemon.cli(*argv)
            assert code == 0, (argv, err)
        *_, last = request(daemon.socket, "ping", {}, timeout=60)
        os.kill(int(last["result"]["pid"]), signal.SIGTERM)  # the daemon, not strace
        assert tracer.wait(120) == 0
    finally:
        if tracer.poll() is None:
            tracer.kill()
            tracer.wait()
        clear_stale_mount(daemon.home / "view")
    # The venv's own path and the names beside it that switching it uses
    # (daemon/linking.py: venv.nwcache-link, venv.nwcache-restore).
    allowed = [daemon.home, venv, daemon.socket.parent, Path("/dev/fuse"), Path("/dev/null")]
    allowed += [venv.with_name(venv.name + suffix) for suffix in LEFTOVER_SUFFIXES]
    written = written_paths(trace.read_text(), work)
    outside = sorted(
        path
        for path in written
        if not any(path == str(a) or path.startswith(f"{a}/") for a in allowed)
        and not re.fullmatch(r"/sys/class/bdi/[0-9:]+/read_ahead_kb", path)
    )
    assert outside == []
    # The trace did see the daemon's writes: the console script it wrote and removed.
    # (Through the view: the venv's directory links there while registered.)
    view = daemon.home / "view"
    assert any(p.startswith(f"{view}/venv-") and p.endswith("/bin/nwdemo-pure") for p in written), written
