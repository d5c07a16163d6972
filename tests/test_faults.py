"""Faults of a real daemon process: SIGKILL at random moments (a few of the
kills `make faults` makes by the hundred, see tests/faults.py), a start-up
over a dead mount that fails even lstat, the store's disk filling up during
ingest, and clients that go away in the middle of an install."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nwcache.daemon.linking import is_mount_point
from nwcache.daemon.mount import clear_stale_mount
from nwcache.protocol import PROTOCOL, encode
from tests.conftest import clean_env
from tests.faults import FaultDaemon, Faults, build_wheel, descriptors, snapshot, summarise
from tests.helpers import new_venv

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
SETTLE_TIMEOUT = 120.0


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[FaultDaemon]:
    made = FaultDaemon(tmp_path)
    try:
        yield made
    finally:
        made.stop()
        assert not is_mount_point(made.home / "view")


@pytest.mark.slow
def test_sigkill_at_random_moments(tmp_path: Path, built_wheels: dict[str, Path]) -> None:
    """One kill in each of install, view reads, uninstall and gc, two venvs."""
    wheels = [build_wheel(tmp_path / "crashy-1.0-py3-none-any.whl"), built_wheels["pure"]]
    faults = Faults(tmp_path / "faults", wheels, random.Random(20261130), env_count=2)
    (tmp_path / "faults").mkdir()
    try:
        faults.run(4)
    finally:
        faults.close()
    summary = summarise(faults)
    assert {op: counts["runs"] for op, counts in summary.per_op.items()} == {
        "install": 1,
        "read": 1,
        "uninstall": 1,
        "gc": 1,
    }
    assert summary.inside >= 1, summary  # at least some kills landed inside an operation


def test_scripts_catch_up_after_a_kill_between_flip_and_writing_them(
    daemon: FaultDaemon, tmp_path: Path, built_wheels: dict[str, Path]
) -> None:
    venv = new_venv(tmp_path / "venv")
    daemon.env["NWCACHE_CRASH_AT"] = "outside-pending"
    daemon.env["NWCACHE_WAIT"] = "0"  # the client does not wait for a daemon to come back
    daemon.start()
    code, _, err = daemon.cli("install", built_wheels["pure"], "--env", venv)
    assert code == 3  # the daemon died under it
    assert "error: the daemon stopped during 'install' and did not come back within 0 s" in err.splitlines()
    assert daemon.process is not None
    assert daemon.process.wait(60) == -signal.SIGKILL
    daemon.process = None
    assert not (venv / "bin" / "nwdemo-pure").exists()  # flipped, scripts not written yet
    del daemon.env["NWCACHE_CRASH_AT"]
    daemon.start()
    assert [p["name"] for p in daemon.call("list", env=str(venv))] == ["nwdemo-pure"]
    script = subprocess.run([venv / "bin" / "nwdemo-pure"], capture_output=True, text=True, check=False)
    assert script.returncode == 0, script.stderr
    assert (venv / "bin" / "nwdemo-pure-script").is_file()
    assert "brought to generation 2" in daemon.log.read_text()


_DEAD_MOUNT = r"""
import os, signal, sys
import pyfuse3
pyfuse3.init(pyfuse3.Operations(), sys.argv[1], {"fsname=nwcache", "subtype=nwcache"})
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_start_clears_a_mount_that_fails_even_lstat(daemon: FaultDaemon) -> None:
    """A daemon killed before the kernel ever asked it anything leaves a
    mount whose lstat fails with ENOTCONN (no attributes cached)."""
    view = daemon.home / "view"
    view.mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-c", _DEAD_MOUNT, str(view)], capture_output=True, timeout=60, check=False
    )
    try:
        assert done.returncode == -signal.SIGKILL, done.stderr
        with pytest.raises(OSError, match="not connected"):
            os.lstat(view)
        daemon.start()
        assert daemon.call("env.list") == []
        assert os.lstat(view).st_ino == 1  # the daemon's own view is mounted there now
    finally:
        if daemon.process is None:
            clear_stale_mount(view)


def big_wheel(path: Path, megabytes: int) -> Path:
    """A classic wheel holding `megabytes` of incompressible data (stored)."""
    rng = random.Random(3)
    files = {f"bulky/part{i}.bin": rng.randbytes(1 << 20) for i in range(megabytes)}
    files["bulky/__init__.py"] = b""
    files["bulky-1.0.dist-info/METADATA"] = b"Metadata-Version: 2.1\nName: bulky\nVersion: 1.0\n"
    files["bulky-1.0.dist-info/WHEEL"] = b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    rows = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    files["bulky-1.0.dist-info/RECORD"] = ("\n".join([*rows, "bulky-1.0.dist-info/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount a tmpfs")
def test_disk_full_during_ingest(tmp_path: Path, built_wheels: dict[str, Path]) -> None:
    home = tmp_path / "small"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "nwcache-test", str(home)], check=True)
    daemon = FaultDaemon(tmp_path)
    daemon.home = home
    daemon.env["NWCACHE_HOME"] = str(home)
    try:
        daemon.start()
        venv = new_venv(tmp_path / "venv")
        code, _, err = daemon.cli("install", built_wheels["pure"], "--env", venv)
        assert code == 0, err
        before = (daemon.call("history", env=str(venv)), snapshot(venv))
        pid = daemon.call("ping")["pid"]
        wheel = big_wheel(tmp_path / "bulky-1.0-py3-none-any.whl", 60)
        code, out, err = daemon.cli("install", wheel, "--env", venv)
        assert code == 1, (out, err)
        lines = err.splitlines()
        assert lines == [
            f"error: the disk holding NWCACHE_HOME ({home}) is full",
            "hint: nothing was changed; make room with 'nwcache gc --keep 1' (it runs on a full disk), "
            "'nwcache uninstall NAME --env VENV' or 'nwcache env unregister VENV' first if every generation "
            "is needed, or move NWCACHE_HOME to a larger disk",
        ]
        assert daemon.call("ping")["pid"] == pid  # still the same daemon
        assert (daemon.call("history", env=str(venv)), snapshot(venv)) == before
        assert list((home / "tmp").iterdir()) == []
        assert daemon.call("fsck")["problems"] == []
        code, _, err = daemon.cli("install", built_wheels["ext"], "--env", venv)
        assert code == 0, err
        assert {p["name"] for p in daemon.call("list", env=str(venv))} == {"nwdemo-pure", "nwdemo-ext"}
    finally:
        daemon.stop()
        subprocess.run(["umount", str(home)], check=False)
        if os.path.ismount(home):
            subprocess.run(["umount", "-l", str(home)], check=True)


def install_request(venv: Path, wheels: list[Path]) -> bytes:
    return encode(
        {
            "protocol": PROTOCOL,
            "op": "install",
            "args": {"env": str(venv), "archives": [str(w) for w in wheels]},
        }
    )


def test_clients_that_go_away_mid_install(
    daemon: FaultDaemon, tmp_path: Path, built_wheels: dict[str, Path]
) -> None:
    wheels = [build_wheel(tmp_path / "crashy-1.0-py3-none-any.whl"), built_wheels["pure"]]
    names = ["crashy", "nwdemo-pure"]
    daemon.start()
    venv = new_venv(tmp_path / "venv")
    daemon.call("env.register", env=str(venv))
    absent = snapshot(venv)
    daemon.call("install", env=str(venv), archives=[str(w) for w in wheels])
    present = snapshot(venv)
    daemon.call("uninstall", env=str(venv), names=names)
    baseline = descriptors(daemon)

    def installs_done() -> int:
        return daemon.log.read_text().count(" install done in ")

    def wait_for(what: str, condition: Callable[[], bool], state: Callable[[], object] = lambda: "") -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what} {state()}"
            time.sleep(0.02)  # polling the daemon's log and /proc, bounded by the deadline

    def close_at_once() -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(daemon.socket))

    def close_after_request() -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(daemon.socket))
            sock.sendall(install_request(venv, wheels))

    def reset_after_request() -> None:
        """Close with the daemon's first progress line unread: its next send
        on the connection fails (EPIPE, or ECONNRESET on a read)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(daemon.socket))
            sock.sendall(install_request(venv, wheels))
            sock.settimeout(SETTLE_TIMEOUT)
            assert sock.recv(1, socket.MSG_PEEK)

    def kill_the_client() -> None:
        """SIGKILL the real CLI once the daemon is reading its archive."""
        done = installs_done()
        client = subprocess.Popen(
            [sys.executable, "-m", "nwcache", "install", *map(str, wheels), "--env", str(venv)],
            env=daemon.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(
                "the daemon to open the archive",
                lambda: str(wheels[0]) in descriptors(daemon) or installs_done() > done,
            )
        finally:
            client.kill()
            client.wait(60)

    outcomes = {}
    for way, sends in (
        (close_at_once, False),
        (close_after_request, True),
        (reset_after_request, True),
        (kill_the_client, True),
    ):
        done = installs_done()
        way()
        if sends:  # the daemon had the whole request: the install completes without its client
            wait_for(f"the install of {way.__name__}", lambda: installs_done() > done)  # noqa: B023
        wait_for(
            f"{way.__name__}'s descriptors to close",
            lambda: descriptors(daemon) == baseline,
            lambda: (
                f"(open, not at the start: {sorted(set(descriptors(daemon)) - set(baseline))}; "
                f"closed: {sorted(set(baseline) - set(descriptors(daemon)))})"
            ),
        )
        held = {p["name"] for p in daemon.call("list", env=str(venv))}
        assert held in (set(), set(names)), f"{way.__name__}: {held} is not a whole generation"
        assert snapshot(venv) == (present if held else absent), way.__name__
        assert daemon.call("fsck")["problems"] == []
        outcomes[way.__name__] = "installed" if held else "absent"
        if held:
            daemon.call("uninstall", env=str(venv), names=names)
    assert outcomes == {
        "close_at_once": "absent",
        "close_after_request": "installed",
        "reset_after_request": "installed",
        "kill_the_client": "installed",
    }
    # Python still runs from the venv: the view serves whatever the last generation holds.
    ran = subprocess.run(
        [venv / "bin" / "python", "-c", "import sys"], env=clean_env(), capture_output=True, check=False
    )
    assert ran.returncode == 0
    assert venv.is_symlink()
