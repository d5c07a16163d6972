"""Living with the daemon (issue 20), through the real CLI against a real
daemon process: history and rollback as Nix and conda users know them."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon_process import Daemon
from tests.helpers import new_venv
from tests.test_cli import one_json_error
from tests.vectors import generate

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def demo_wheel(folder: Path, version: str) -> Path:
    """demo-VERSION-py3-none-any.whl (format 2.0) whose demo/__init__.py says its version."""
    spec = generate.Spec(
        dist_info=f"demo-{version}.dist-info",
        files=[generate.F("demo/__init__.py", f"VERSION = {version!r}\n".encode())],
    )
    wheel = folder / f"demo-{version}-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    wheel.write_bytes(generate.v2(spec))
    return wheel


def bare_venv(path: Path) -> Path:
    new_venv(path)
    return path


def imported_version(venv: Path) -> str:
    done = subprocess.run(
        [venv / "bin" / "python", "-c", "import demo; print(demo.VERSION)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


def kill_and_wait_unmounted(daemon: Daemon) -> None:
    """SIGKILL the daemon, then wait until its view is gone (daemon/mount.py's
    watcher unmounts it)."""
    import time

    from nwcache.daemon.linking import is_mount_point

    process = daemon.process
    assert process is not None
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while is_mount_point(daemon.home / "view"):
        if time.monotonic() > deadline:
            helpers = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
            raise AssertionError(
                "the view of a killed daemon is still mounted after 30 s (is its unmount watcher alive?)\n"
                + "\n".join(
                    line for line in helpers.splitlines() if "fusermount" in line or "read -r" in line
                )
            )
        time.sleep(0.05)  # polling for the kernel to drop the mount, bounded by the deadline


def test_history_and_rollback(daemon: Daemon, tmp_path: Path) -> None:
    daemon.start()
    venv = bare_venv(tmp_path / "venv")
    new, old = demo_wheel(tmp_path / "w", "2.0"), demo_wheel(tmp_path / "w", "1.0")
    for wheel in (new, old):  # generations 2 and 3: a downgrade
        code, out, err = daemon.cli("install", wheel, "--env", venv)
        assert code == 0, err
    assert out == "generation 3: install demo==1.0\n"
    code, out, err = daemon.cli("uninstall", "demo", "--env", venv)  # generation 4
    assert code == 0, err

    code, out, err = daemon.cli("history", "--env", venv)
    assert code == 0, err
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    lines = out.splitlines()
    assert re.fullmatch(rf"     1  {stamp}  register \(adopted site-packages\): no change", lines[0]), lines
    assert re.fullmatch(rf"     2  {stamp}  install demo==2.0: \+demo 2.0", lines[1]), lines
    assert re.fullmatch(rf"     3  {stamp}  install demo==1.0: demo 2.0 -> 1.0", lines[2]), lines
    assert re.fullmatch(rf"\*    4  {stamp}  uninstall demo: -demo 1.0", lines[3]), lines

    # rollback --to 2, then a plain rollback goes back to 4 (where the venv
    # was), not to 1 (2's parent); the next one returns to 2.
    code, out, err = daemon.cli("rollback", "--env", venv, "--to", "2")
    assert (code, out) == (0, "now at generation 2 (install demo==2.0): +demo 2.0\n"), err
    assert imported_version(venv) == "2.0"
    code, out, err = daemon.cli("rollback", "--env", venv)
    assert (code, out) == (0, "now at generation 4 (uninstall demo): -demo 2.0\n"), err
    assert imported_version(venv) == "ModuleNotFoundError: No module named 'demo'"
    code, out, err = daemon.cli("rollback", "--env", venv, "--json")
    assert code == 0, err
    back = json.loads(out)
    assert (back["number"], back["changes"]) == (2, [{"name": "demo", "old": None, "new": "2.0"}])
    assert imported_version(venv) == "2.0"
    code, out, err = daemon.cli("history", "--env", venv, "--json")
    history = json.loads(out)
    assert [g["number"] for g in history if g["current"]] == [2]
    assert history[2]["changes"] == [{"name": "demo", "old": "2.0", "new": "1.0"}]
    assert history[0]["created"] <= history[3]["created"]

    # Out of range: one bounded line each, the kept generations named.
    code, out, err = daemon.cli("rollback", "--env", venv, "--to", "0")
    assert code == 2
    assert "error: argument --to: generations are numbered from 1, not 0" in err.splitlines()
    code, out, err = daemon.cli("rollback", "--env", venv, "--to", "9" * 40)
    assert code == 2
    assert f"error: argument --to: no generation is numbered {'9' * 20}..." in err.splitlines()
    code, out, err = daemon.cli("rollback", "--env", venv, "--to", "7")
    assert code == 1
    assert err.splitlines() == [
        f"error: {venv} has no generation 7; it keeps 1-4",
        "hint: 'nwcache history --env VENV' lists the generations kept",
    ]


def test_json_from_the_daemon(daemon: Daemon, tmp_path: Path) -> None:
    """--json: an install answers what changed, not the package list; the
    daemon's errors are one JSON document on stdout as well."""
    daemon.start()
    venv = bare_venv(tmp_path / "venv")
    code, out, err = daemon.cli("install", demo_wheel(tmp_path / "w", "1.0"), "--env", venv, "--json")
    assert code == 0, err
    installed = json.loads(out)
    assert "packages" not in installed
    assert (installed["number"], installed["action"]) == (2, "install demo==1.0")
    assert installed["changes"] == [{"name": "demo", "old": None, "new": "1.0"}]
    code, out, err = daemon.cli("install", demo_wheel(tmp_path / "w", "2.0"), "--env", venv, "--json")
    assert json.loads(out)["changes"] == [{"name": "demo", "old": "1.0", "new": "2.0"}]
    code, out, err = daemon.cli("uninstall", "demo", "--env", venv, "--json")
    assert json.loads(out)["changes"] == [{"name": "demo", "old": "2.0", "new": None}]

    code, out, err = daemon.cli("uninstall", "nosuch", "--env", venv, "--json")
    one_json_error(out, err, "UnknownPackage", 1)
    code, out, err = daemon.cli("list", "--env", tmp_path, "--json")
    one_json_error(out, err, "UnknownEnv", 1)
    code, out, err = daemon.cli("rollback", "--env", venv, "--to", "9", "--json")
    assert (
        one_json_error(out, err, "NoSuchGeneration", 1)["message"]
        == f"{venv} has no generation 9; it keeps 1-4"
    )
    for argv in (["gc", "--json"], ["fsck", "--json"], ["stats", "--json"], ["env", "list", "--json"]):
        code, out, err = daemon.cli(*argv)
        assert code == 0, err
        json.loads(out)


def test_messages_for_common_mistakes(daemon: Daemon, tmp_path: Path) -> None:
    """Each: the exact first line, a hint that helps, the exit code, and
    nothing changed (no environment registered on the way)."""
    daemon.start()
    venv = bare_venv(tmp_path / "venv")
    wheels = tmp_path / "w"
    old, new = demo_wheel(wheels, "1.0"), demo_wheel(wheels, "2.0")

    code, out, err = daemon.cli("install", old, "--env", venv / "bin" / "python")
    assert code == 1
    assert err.splitlines() == [
        f"error: {venv / 'bin' / 'python'} is the interpreter of the virtual environment {venv}, not the environment",
        f"hint: pass the venv's directory instead: {venv}",
    ]
    python = venv / "bin" / "python"
    commands: list[list[str | Path]] = [["list", "--env", python], ["env", "register", python]]
    for argv in commands:
        code, out, err = daemon.cli(*argv)
        assert code == 1
        assert err.splitlines()[1] == f"hint: pass the venv's directory instead: {venv}"

    sdist = tmp_path / "demo-1.0.tar.gz"
    sdist.write_bytes(b"not looked at")
    code, out, err = daemon.cli("install", sdist, "--env", venv)
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == f"error: {sdist} is a source distribution (sdist): nwcache installs wheels"
    assert lines[1].startswith("hint: build a wheel first, e.g. 'pip wheel --no-deps -w dist/ SOURCE'")

    code, out, err = daemon.cli("install", wheels, "--env", venv)
    assert code == 1
    assert err.splitlines() == [
        f"error: {wheels}: is a directory, not an archive",
        f"hint: pass the wheels in it: nwcache install {wheels}/*.whl --env {venv}",
    ]

    code, out, err = daemon.cli("install", old, new, "--env", venv)
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == (
        f"error: {old.name} and {new.name} are two versions of demo: one install takes one of each distribution"
    )
    assert lines[1].startswith("hint: install the one you want")
    assert "ARCHITECTURE" not in err

    code, out, err = daemon.cli("env", "list", "--json")
    assert json.loads(out) == []  # none of them registered the venv


def test_stats_lists_environments_by_path(daemon: Daemon, tmp_path: Path) -> None:
    daemon.start()
    paths = [bare_venv(tmp_path / name) for name in ("c", "a", "b", "d")]
    for venv in paths:
        code, _, err = daemon.cli("env", "register", venv)
        assert code == 0, err
    code, out, err = daemon.cli("stats", "--json")
    assert [e["path"] for e in json.loads(out)["envs"]] == sorted(str(p) for p in paths)
    code, out, err = daemon.cli("stats")
    listed = [line.split(":")[0].strip() for line in out.splitlines() if line.startswith("  ")]
    assert listed == sorted(str(p) for p in paths)


def _install_while_killed(
    daemon: Daemon, crash_at: str, wheel: Path, venv: Path, wait: str
) -> subprocess.Popen[str]:
    """Restart the daemon set to SIGKILL itself at `crash_at`, start an install
    (a client process waiting up to `wait` seconds for a daemon to come back),
    and return the client once the daemon is dead."""
    daemon.stop()
    daemon.env["NWCACHE_CRASH_AT"] = crash_at
    daemon.start()
    process = daemon.process
    assert process is not None
    client = subprocess.Popen(
        [sys.executable, "-m", "nwcache", "install", str(wheel), "--env", str(venv)],
        env={**daemon.env, "NWCACHE_WAIT": wait},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.wait(timeout=120) == -signal.SIGKILL
    del daemon.env["NWCACHE_CRASH_AT"]
    return client


def test_a_lost_answer_is_asked_for(daemon: Daemon, tmp_path: Path) -> None:
    """The daemon killed during an install: with no daemon coming back the
    client says how to check; with one, it asks by request id and tells
    what happened (landed, or not)."""
    venv = bare_venv(tmp_path / "venv")
    daemon.start()
    code, _, err = daemon.cli("env", "register", venv)
    assert code == 0, err

    # Killed after the commit, no daemon within 1 s: exit 3 and how to check.
    client = _install_while_killed(daemon, "flip-committed", demo_wheel(tmp_path / "w", "1.0"), venv, "1")
    out, err = client.communicate(timeout=120)
    assert client.returncode == 3, err
    lines = err.splitlines()
    assert lines[0].startswith("nwcache: the daemon stopped answering during 'install'; waiting up to 1 s")
    assert lines[1] == "error: the daemon stopped during 'install' and did not come back within 1 s"
    request_id = re.fullmatch(r".*a generation with request '([0-9a-f]{16})'", lines[2])
    assert request_id is not None, lines[2]
    assert lines[2].startswith(
        f"hint: once it runs again ('nwcache daemon', or systemd restarts it), 'nwcache history --env {venv} --json'"
    )
    assert "upgrad" not in err
    daemon.start()
    code, out, err = daemon.cli("history", "--env", venv, "--json")
    assert [g["request"] for g in json.loads(out)] == [None, request_id.group(1)]  # it had landed

    # Killed before the commit, restarted while the client waits: it did not land.
    client = _install_while_killed(
        daemon, "generation-written", demo_wheel(tmp_path / "w", "2.0"), venv, "120"
    )
    daemon.start()
    out, err = client.communicate(timeout=180)
    assert client.returncode == 1, err
    assert err.splitlines()[1:] == [
        f"error: the daemon stopped before 'install' took effect: no generation records it; {venv} is at generation 2",
        "hint: run the command again",
    ]
    assert imported_version(venv) == "1.0"

    # Killed after the commit, restarted while the client waits: it landed.
    client = _install_while_killed(daemon, "flip-committed", demo_wheel(tmp_path / "w", "2.0"), venv, "120")
    daemon.start()
    out, err = client.communicate(timeout=180)
    assert client.returncode == 0, err
    assert out == "generation 3: install demo==2.0\n"
    assert "the connection was lost, but 'install' completed" in err.splitlines()[1]
    assert imported_version(venv) == "2.0"


def test_outcome_of_a_request_whose_client_went_away(daemon: Daemon, tmp_path: Path) -> None:
    """A client that hangs up: the daemon finishes the install and keeps its
    answer, which "outcome" gives by request id; a failed one gives its error."""
    import socket
    import time

    from nwcache.client.remote import dumps, request

    daemon.start()
    venv = bare_venv(tmp_path / "venv")

    def send_and_hang_up(args: dict[str, object], request_id: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(daemon.socket))
            message = {"protocol": 1, "op": "install", "args": args, "request": request_id}
            sock.sendall(dumps(message).encode() + b"\n")

    def outcome(request_id: str, wait: bool = True) -> dict[str, object]:
        """Its outcome, polled (while the daemon has not read the request yet
        or still works on it) when `wait`."""
        deadline = time.monotonic() + 120
        while True:
            answers = list(
                request(
                    str(daemon.socket), "outcome", {"request": request_id, "env": str(venv), "op": "install"}
                )
            )
            result = answers[-1]["result"]
            if not wait or result["state"] not in ("running", "unknown") or time.monotonic() > deadline:
                return dict(result)
            time.sleep(0.05)  # polling for the install to finish, bounded by the deadline

    wheel = demo_wheel(tmp_path / "w", "1.0")
    send_and_hang_up({"env": str(venv), "archives": [str(wheel)]}, "a" * 16)
    done = outcome("a" * 16)
    assert done["state"] == "done", done
    assert done["result"]["action"] == "install demo==1.0"  # type: ignore[index]
    send_and_hang_up(
        {"env": str(venv), "archives": [str(tmp_path / "missing-1.0-py3-none-any.whl")]}, "b" * 16
    )
    failed = outcome("b" * 16)
    assert failed["state"] == "failed", failed
    assert failed["error"]["kind"] == "ArchiveError"  # type: ignore[index]
    assert outcome("c" * 16, wait=False) == {"state": "unknown", "current": 2}


def big_wheel(folder: Path, version: str) -> Path:
    """demo-VERSION with 1000 small distinct files (inline in the index) and
    1 MB of random bytes (a body file): room taken in both."""
    files = [generate.F(f"demo/m{i}.py", f"X = {version!r}, {i}\n".encode() * 8) for i in range(1000)]
    files.append(generate.F("demo/big.bin", os.urandom(1 << 20)))
    spec = generate.Spec(dist_info=f"demo-{version}.dist-info", files=files)
    wheel = folder / f"demo-{version}-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    wheel.write_bytes(generate.v2(spec))
    return wheel


def fill(disk: Path) -> None:
    """Write to the last block of the file system holding `disk`."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            try:
                os.write(fd, bytes(1 << 16))
            except OSError as exc:
                stopped = exc.errno
                break
    finally:
        os.close(fd)
    assert stopped == errno.ENOSPC
    assert os.statvfs(disk).f_bavail == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs")
def test_a_full_disk_can_be_freed(daemon: Daemon, tmp_path: Path) -> None:
    """NWCACHE_HOME on a small tmpfs filled to the last block, its index
    compacted first (no free pages: every commit must grow the file, the
    worst case): an install fails saying what to do, and uninstall, gc and
    unregister still run."""
    import lmdb

    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(disk)], check=True)
    try:
        daemon.home = disk / "home"
        daemon.env["NWCACHE_HOME"] = str(daemon.home)
        venv = bare_venv(tmp_path / "venv")  # on another file system
        daemon.start()
        for version in ("1.0", "2.0", "3.0"):
            code, _, err = daemon.cli("install", big_wheel(tmp_path / "w", version), "--env", venv)
            assert code == 0, err
        reserve = daemon.home / "reserve"
        assert reserve.stat().st_blocks * 512 >= 8 << 20
        daemon.stop()
        index = daemon.home / "index"
        with lmdb.open(str(index), max_dbs=8, readonly=True, lock=False) as env:
            (disk / "compact").mkdir()
            env.copy(str(disk / "compact"), compact=True)
        os.replace(disk / "compact" / "data.mdb", index / "data.mdb")
        daemon.start()
        fill(disk)

        code, out, err = daemon.cli("install", big_wheel(tmp_path / "w", "4.0"), "--env", venv, "--json")
        assert code == 1
        assert err.splitlines()[0] == f"error: the disk holding NWCACHE_HOME ({daemon.home}) is full"
        assert json.loads(out)["error"]["kind"] == "NoSpace"
        assert "'nwcache gc --keep 1' (it runs on a full disk)" in err
        code, _, err = daemon.cli("uninstall", "demo", "--env", venv)
        assert code == 0, err
        code, out, err = daemon.cli("gc", "--keep", "1", "--json")
        assert code == 0, err
        assert json.loads(out)["bytes_freed"] > 3 << 20
        fill(disk)  # full again: gc and unregister still run
        code, out, err = daemon.cli("gc", "--keep", "1")
        assert code == 0, err
        code, _, err = daemon.cli("env", "unregister", venv)
        assert code == 0, err
        assert not (venv / "lib").joinpath(*os.listdir(venv / "lib"), "site-packages").is_symlink()
        code, out, err = daemon.cli("fsck")
        assert (code, out) == (0, "fsck: the store is consistent\n"), err
    finally:
        daemon.stop()
        subprocess.run(["umount", str(disk)], check=True)


def test_a_stopped_daemon_is_obvious(daemon: Daemon, tmp_path: Path) -> None:
    """A registered venv whose view is down says so in one line naming
    nwcache and how to start it: after SIGTERM, and after SIGKILL (the kernel
    drops the view of a dead daemon: daemon/mount.py's watcher)."""

    daemon.start()
    venv = bare_venv(tmp_path / "venv")
    code, _, err = daemon.cli("install", demo_wheel(tmp_path / "w", "1.0"), "--env", venv)
    assert code == 0, err
    # The venv's whole directory lives in the view; beneath it, the daemon
    # left a stub for each command that says what is wrong.
    notice = f"error: {venv}/bin/python is served by the nwcache daemon, which is not running"

    def first_line() -> str:
        done = subprocess.run(
            [venv / "bin" / "python", "-c", "import demo"], capture_output=True, text=True, check=False
        )
        return done.stderr.splitlines()[0] if done.stderr else ""

    assert first_line() == ""
    assert daemon.stop() == 0
    assert first_line() == notice
    daemon.start()
    assert first_line() == ""
    assert imported_version(venv) == "1.0"
    kill_and_wait_unmounted(daemon)
    assert first_line() == notice
    daemon.start()
    assert imported_version(venv) == "1.0"
    code, _, err = daemon.cli("env", "unregister", venv)
    assert code == 0, err
    daemon.stop()
    assert list((daemon.home / "view").iterdir()) == []  # its notice went with it


def test_a_restart_serves_each_venv_its_own_tree(daemon: Daemon, tmp_path: Path) -> None:
    """Start-up builds the tree of each content once and shares it between
    venvs holding the same packages; venvs that differ keep their own."""
    daemon.start()
    venvs = {name: bare_venv(tmp_path / name) for name in ("a", "b", "c")}
    for name, version in (("a", "1.0"), ("b", "1.0"), ("c", "2.0")):
        code, _, err = daemon.cli("install", demo_wheel(tmp_path / "w", version), "--env", venvs[name])
        assert code == 0, err
    daemon.stop()
    daemon.start()
    assert {name: imported_version(v) for name, v in venvs.items()} == {"a": "1.0", "b": "1.0", "c": "2.0"}
    site = {name: next(v.glob("lib/python*/site-packages")) for name, v in venvs.items()}
    inode = {name: os.stat(s / "demo" / "__init__.py").st_ino for name, s in site.items()}
    assert inode["a"] == inode["b"] != inode["c"]


# A venv importing in a loop, one interpreter after another, each reporting
# on one line: its version, or the first line of what it printed instead (the
# last one of a traceback).
_IMPORT_LOOP = """
import subprocess, sys
python, stop = sys.argv[1], sys.argv[2]
import os
while not os.path.exists(stop):
    try:
        done = subprocess.run([python, "-c", "import demo; print(demo.VERSION)"], capture_output=True, text=True)
    except OSError as exc:  # the interpreter itself is in the view: in the moment it dies, ENOTCONN
        print(exc.strerror, flush=True)
        continue
    said = done.stderr.strip().splitlines() or ["(nothing)"]
    line = done.stdout.strip() or (said[-1] if said[0].startswith("Traceback") else said[0])
    print(line, flush=True)
"""


def test_the_daemon_killed_and_restarted_while_a_venv_imports(daemon: Daemon, tmp_path: Path) -> None:
    """Interpreters started while the daemon is down say so in the notice's
    one line (or, in the moment it dies, fail to find the module); every one
    started after the restart imports the installed version again."""

    daemon.start()
    venv = bare_venv(tmp_path / "venv")
    code, _, err = daemon.cli("install", demo_wheel(tmp_path / "w", "1.0"), "--env", venv)
    assert code == 0, err
    stop = tmp_path / "stop"
    loop = subprocess.Popen(
        [sys.executable, "-c", _IMPORT_LOOP, str(venv / "bin" / "python"), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert loop.stdout is not None
    try:
        assert loop.stdout.readline().strip() == "1.0"  # importing through the view
        kill_and_wait_unmounted(daemon)
        notice = loop.stdout.readline().strip()
        while notice == "1.0":  # interpreters that finished before the view went
            notice = loop.stdout.readline().strip()
        daemon.start()
        lines = [notice]
        while (line := loop.stdout.readline().strip()) != "1.0":
            lines.append(line)
            assert len(lines) < 10_000, lines[-3:]
    finally:
        stop.touch()
        loop.wait(60)
        loop.stdout.close()
    down = f"error: {venv}/bin/python is served by the nwcache daemon, which is not running"
    for line in lines:
        # While the daemon is down: the stub's line. In the moment it dies,
        # before the view is unmounted, the interpreter or the module cannot
        # be read; a restarted daemon makes lookups wait until it serves the venv.
        assert line.startswith(down) or "No module named 'demo'" in line or "not connected" in line, lines
    assert any(line.startswith(down) for line in lines), lines
    assert imported_version(venv) == "1.0"
    assert daemon.cli("fsck")[0] == 0
