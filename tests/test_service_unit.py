"""`nwcache service install|status|uninstall` against a real systemd user manager.

These machines boot without systemd, so the test starts a private
`systemd --user` of its own: its own HOME, XDG_RUNTIME_DIR and
XDG_CONFIG_HOME under the test's temporary directory, in a cgroup of its own
(a manager started in the root cgroup would move every process of the machine
into its init.scope). systemd only runs as a manager when /run/systemd/system
exists; the test creates that directory when it is missing and removes it
afterwards. Everything it starts (the manager, the daemon, the mount, the
cgroups) is taken down again, also when it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from nwcache.daemon.linking import is_mount_point
from nwcache.daemon.mount import clear_stale_mount
from nwcache.protocol import answers
from tests.conftest import clean_env
from tests.daemon_process import run_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: /run/systemd/system and a cgroup of its own"),
]
TIMEOUT = 60.0
UNIT = "nwcache.service"
MANAGER_MARKER = Path("/run/systemd/system")


def systemd_binary() -> str | None:
    for candidate in ("/usr/lib/systemd/systemd", "/lib/systemd/systemd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def cgroup_hierarchies() -> list[Path]:
    """The directories of this process's cgroup in the hierarchies systemd
    manages: the named v1 `name=systemd` one and the unified (v2) one."""
    mounts: dict[str, Path] = {}
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            fstype, _source, options = right.split()[:3]
            point = Path(left.split()[4])
            if fstype == "cgroup2":
                mounts["unified"] = point
            elif fstype == "cgroup" and "name=systemd" in options.split(","):
                mounts["name=systemd"] = point
    found = []
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            number, controllers, path = line.rstrip("\n").split(":", 2)
            key = "unified" if number == "0" and controllers == "" else controllers
            if key in mounts:
                found.append(mounts[key] / path.lstrip("/"))
    return found


def poll(what: str, check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)  # polling, bounded by the deadline above


class UserManager:
    """A private `systemd --user` and the nwcache paths its unit will use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtime = root / "run"
        self.home = root / "home"
        self.nwcache_home = root / "nwcache"
        self.socket = self.runtime / "nwcache" / "daemon.sock"
        self.view = self.nwcache_home / "view"
        self.env = clean_env(
            {
                "HOME": str(self.home),
                "XDG_RUNTIME_DIR": str(self.runtime),
                "XDG_CONFIG_HOME": str(root / "config"),
                "NWCACHE_HOME": str(self.nwcache_home),
                "NWCACHE_SOCKET": str(self.socket),
            }
        )
        for name in ("DBUS_SESSION_BUS_ADDRESS", "NOTIFY_SOCKET", "INVOCATION_ID", "MANAGERPID"):
            self.env.pop(name, None)
        self.unit_path = root / "config" / "systemd" / "user" / UNIT
        self.process: subprocess.Popen[bytes] | None = None
        self.cgroups: list[Path] = []
        self.made_marker = False

    def start(self, binary: str) -> None:
        self.home.mkdir()
        self.runtime.mkdir(mode=0o700)
        if not MANAGER_MARKER.exists():
            MANAGER_MARKER.mkdir(parents=True)
            self.made_marker = True
        for hierarchy in cgroup_hierarchies():
            group = hierarchy / f"nwcache-test-{os.getpid()}"
            try:
                group.mkdir()
            except OSError as exc:
                pytest.skip(f"cannot make a cgroup for a private systemd --user at {group}: {exc}")
            self.cgroups.append(group)
        # The shell joins the new cgroups, then becomes the manager.
        join = "".join(f'echo $$ > "{group}/cgroup.procs" && ' for group in self.cgroups)
        with open(self.root / "manager.log", "wb") as log:
            self.process = subprocess.Popen(
                ["sh", "-c", f'{join}exec "$0" --user', binary],
                env=self.env,
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def running() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"systemd --user exited: {(self.root / 'manager.log').read_text()}")
            state = self.systemctl("is-system-running").stdout.strip()
            return state in ("running", "degraded")

        poll("the private systemd --user to run", running)

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["systemctl", "--user", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def show(self, prop: str) -> str:
        return self.systemctl("show", "-p", prop, "--value", UNIT).stdout.strip()

    def properties(self, *names: str) -> dict[str, str]:
        """Several properties of the unit read in one call, so they agree."""
        out = self.systemctl("show", "-p", ",".join(names), UNIT).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def state(self) -> str:
        return self.systemctl("is-active", UNIT).stdout.strip()

    def status(self) -> str:
        return self.systemctl("status", "--no-pager", "-l", UNIT).stdout

    def nwcache(self, *argv: str | Path) -> tuple[int, str, str]:
        return run_cli(self.env, *argv)

    def stop(self) -> None:
        """The manager down (it stops the unit on the way), then whatever is
        left: processes in its cgroups, the mount, the cgroups, the marker."""
        try:
            if self.process is not None and self.process.poll() is None:
                self.systemctl("exit")
                try:
                    self.process.wait(TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            for group in self.cgroups:
                for pid in self._pids(group):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            clear_stale_mount(self.view)
        finally:
            try:
                for group in self.cgroups:
                    poll(f"{group} to empty", partial(self._empty, group), timeout=10)
                    # Deepest first: a cgroup goes only once its children have.
                    for directory in [*sorted(group.rglob("*"), key=lambda p: -len(p.parts)), group]:
                        if directory.is_dir():
                            directory.rmdir()
            finally:
                if self.made_marker:
                    MANAGER_MARKER.rmdir()

    @classmethod
    def _empty(cls, group: Path) -> bool:
        return not cls._pids(group)

    @staticmethod
    def _pids(group: Path) -> list[int]:
        pids = []
        for procs in group.rglob("cgroup.procs"):
            pids += [int(pid) for pid in procs.read_text().split()]
        return pids


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[UserManager]:
    binary = systemd_binary()
    if binary is None or shutil.which("systemctl") is None:
        pytest.skip("needs systemd (apt-get install systemd; `make test` installs it)")
    made = UserManager(tmp_path)
    try:
        made.start(binary)
        yield made
    finally:
        made.stop()
    assert not is_mount_point(made.view)


def view_serves(manager: UserManager) -> bool:
    """Mounted and answering: a stat through the mount and a socket connection."""
    if not is_mount_point(manager.view):
        return False
    try:
        os.stat(manager.view)
    except OSError:  # ENOTCONN: the mount of a killed daemon
        return False
    return answers(manager.socket)


def test_service_under_a_real_user_manager(manager: UserManager, built_wheels: dict[str, Path]) -> None:
    code, out, err = manager.nwcache("service", "install")
    assert code == 0, f"{err}\n{manager.status()}"
    assert str(manager.unit_path) in out
    unit = manager.unit_path.read_text()
    assert f"ExecStart={sys.executable} -m nwcache daemon" in unit
    assert f"Environment=NWCACHE_HOME={manager.nwcache_home}" in unit
    assert manager.systemctl("is-enabled", UNIT).stdout.strip() == "enabled"
    # `enable --now` returned once the start job finished: for Type=notify that
    # is READY=1, sent after the view is mounted and the socket listens. The
    # status text came with READY=1, so systemd did read the notification.
    assert manager.show("Type") == "notify"
    assert manager.state() == "active"
    assert manager.show("StatusText").startswith("serving ")
    assert view_serves(manager), manager.status()
    code, out, _ = manager.nwcache("service", "status")
    assert code == 0
    assert out.startswith(f"{UNIT}: active")

    # A real install and an import through the view.
    venv = manager.root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    code, out, err = manager.nwcache("install", built_wheels["pure"], "--env", venv, "--json")
    assert code == 0, err
    assert json.loads(out)["action"].startswith("install nwdemo-pure==0.1.0")
    imported = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            "import nwdemo_pure, os; print(os.path.realpath(nwdemo_pure.__file__))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.startswith(str(manager.view) + "/")
    assert subprocess.run([venv / "bin" / "nwdemo-pure"], capture_output=True, check=False).returncode == 0

    # SIGKILL the main process: Restart=on-failure brings it back, the new
    # daemon clears the dead mount, and the unit is active only once it serves.
    first = int(manager.show("MainPID"))
    assert first > 0
    os.kill(first, signal.SIGKILL)
    seen: list[str] = []

    def restarted() -> bool:
        # One snapshot: is-active and MainPID read by two calls can straddle
        # systemd noticing the death (active, then MainPID already 0).
        unit = manager.properties("ActiveState", "SubState", "MainPID")
        state = f"{unit['ActiveState']}/{unit['SubState']}"
        if not seen or seen[-1] != state:
            seen.append(state)
        if unit["ActiveState"] != "active" or int(unit["MainPID"]) in (0, first):
            return False  # down, restarting, or the death not yet noticed
        # Active under a new main process means READY=1 came: the view serves.
        assert view_serves(manager), f"active before serving (states {seen})\n{manager.status()}"
        return True

    poll("systemd to restart the daemon", restarted)
    assert int(manager.show("NRestarts")) >= 1
    assert subprocess.run([venv / "bin" / "nwdemo-pure"], capture_output=True, check=False).returncode == 0
    code, out, err = manager.nwcache("install", built_wheels["ext"], "--env", venv)
    assert code == 0, err
    subprocess.run([venv / "bin" / "python", "-c", "import nwdemo_ext, nwdemo_pure"], check=True)
    code, out, err = manager.nwcache("fsck")
    assert code == 0, err
    assert "consistent" in out

    # Uninstall: stopped (the view unmounted on SIGTERM), disabled, removed.
    code, out, err = manager.nwcache("service", "uninstall")
    assert code == 0, err
    assert manager.state() in ("inactive", "unknown")
    assert not is_mount_point(manager.view)
    assert not answers(manager.socket)
    assert not manager.unit_path.exists()
    code, out, _ = manager.nwcache("service", "status")
    assert code == 3
    assert "not installed" in out
