"""The real CLI against a real daemon process: two venvs, real wheels (1.0 and
2.0), a console script, imports through the view, uninstall, rollback, a
restart, gc and fsck; the daemon's refusals and readiness notification."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from nwcache.archive import convert
from nwcache.client.cli import main as nwcache
from nwcache.daemon.linking import is_mount_point
from tests.conftest import clean_env, make_venv
from tests.daemon_process import READY_TIMEOUT, Daemon
from tests.helpers import new_venv, site_of

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def test_end_to_end(daemon: Daemon, tmp_path: Path, built_wheels: dict[str, Path]) -> None:
    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify))
        listener.settimeout(READY_TIMEOUT)
        daemon.env["NWCACHE_BYTECODE"] = "0"  # the product as it ships (tests turn it off elsewhere)
        daemon.start(notify=notify)
        assert b"READY=1" in listener.recv(4096)
    assert (daemon.socket.parent.stat().st_mode & 0o777) == 0o700

    a = make_venv(tmp_path / "a").parent.parent
    b = make_venv(tmp_path / "b").parent.parent
    v2 = tmp_path / "v2"
    convert(built_wheels["ext"], v2 / built_wheels["ext"].name, to=2)
    code, out, err = daemon.cli("install", built_wheels["pure"], v2 / built_wheels["ext"].name, "--env", a)
    assert code == 0, err
    assert "generation" in out
    code, out, err = daemon.cli("install", built_wheels["pure"], built_wheels["ext"], "--env", b, "--json")
    assert code == 0, err
    assert json.loads(out)["action"].startswith("install nwdemo-pure==0.1.0")
    for venv in (a, b):
        script = subprocess.run([venv / "bin" / "nwdemo-pure"], capture_output=True, text=True, check=False)
        assert script.returncode == 0, script.stderr
        assert "0.1.0" in script.stdout
        assert (venv / "bin" / "nwdemo-pure-script").is_file()
        done = subprocess.run([venv / "bin" / "python", "-c", "import nwdemo_ext, nwdemo_pure"], check=False)
        assert done.returncode == 0
    code, out, _ = daemon.cli("list", "--env", a, "--json")
    assert {p["name"] for p in json.loads(out)} >= {"nwdemo-pure", "nwdemo-ext", "pip"}
    # Bytecode compiles in the background once the installs have returned.
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        code, out, _ = daemon.cli("stats", "--json")
        stats = json.loads(out)
        if not stats["bytecode_pending"]:
            break
        assert time.monotonic() < deadline, f"bytecode still pending: {stats['bytecode_pending']}"
        time.sleep(0.2)  # polling the daemon, bounded by the deadline
    code, out, _ = daemon.cli("stats")
    assert "bytecode pending" not in out
    assert stats["dedup_ratio"] > 1.5
    assert len(stats["envs"]) == 2
    assert stats["bytecode_blobs"] > 0

    code, out, err = daemon.cli("uninstall", "nwdemo-pure", "--env", a)
    assert code == 0, err
    assert not (a / "bin" / "nwdemo-pure").exists()  # its scripts went with it
    assert subprocess.run([a / "bin" / "python", "-c", "import nwdemo_pure"], check=False).returncode != 0
    code, out, err = daemon.cli("rollback", "--env", a)
    assert code == 0, err
    assert (a / "bin" / "nwdemo-pure").is_file()
    code, out, _ = daemon.cli("history", "--env", a, "--json")
    history = json.loads(out)
    current = [g for g in history if g["current"]]
    assert len(current) == 1
    assert current[0]["action"].startswith("install nwdemo-pure")
    assert history[-1]["action"] == "uninstall nwdemo-pure"

    assert daemon.stop() == 0
    assert not is_mount_point(daemon.home / "view")
    code, _, err = daemon.cli("list", "--env", a)
    assert code == 3
    assert err.startswith("error: no nwcache daemon")
    daemon.start()
    assert subprocess.run([a / "bin" / "nwdemo-pure"], capture_output=True, check=False).returncode == 0
    code, out, err = daemon.cli("gc", "--keep", "1")
    assert code == 0, err
    code, out, err = daemon.cli("fsck")
    assert code == 0, err
    assert "consistent" in out
    code, out, err = daemon.cli("env", "list", "--json")
    assert {e["path"] for e in json.loads(out)} == {str(a), str(b)}


def test_refusals(daemon: Daemon, tmp_path: Path) -> None:
    daemon.start()
    # A second daemon on the same home: one line, exit 1, the first unharmed.
    second = subprocess.run(
        [sys.executable, "-m", "nwcache", "daemon"],
        env={**daemon.env, "NWCACHE_SOCKET": str(tmp_path / "other" / "s.sock")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "another process has the store" in errors[0]
    assert daemon.answers()
    # Not a venv; a missing archive; a usage error.
    plain = tmp_path / "plain"
    plain.mkdir()
    code, _, err = daemon.cli("env", "register", plain)
    assert code == 1
    assert "no pyvenv.cfg" in err
    code, _, err = daemon.cli("install", tmp_path / "missing.whl", "--env", plain)
    assert code == 1
    assert "no such file" in err
    assert nwcache(["install", "--env"]) == 2


def test_no_daemon_is_one_line(tmp_path: Path) -> None:
    env = clean_env({"NWCACHE_SOCKET": str(tmp_path / "none.sock")})
    done = subprocess.run(
        [sys.executable, "-m", "nwcache", "env", "list"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 3
    assert done.stderr.splitlines()[0].startswith("error: no nwcache daemon at")
    assert done.stderr.splitlines()[1].startswith("hint: start it")


def test_client_imports_nothing_heavy(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from nwcache.client.cli import main\n"
        "main(['stats'])\n"
        "heavy = sorted(m for m in ('trio', 'lmdb', 'pyfuse3', 'zstandard', 'nwcache.archive', 'nwcache.daemon') "
        "if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    env = clean_env({"NWCACHE_SOCKET": str(tmp_path / "none.sock")})
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_many_clients_at_once_and_env_commands(
    daemon: Daemon, tmp_path: Path, built_wheels: dict[str, Path]
) -> None:
    daemon.start()
    venvs = []
    for index in range(4):
        venv = tmp_path / f"v{index}"
        new_venv(venv)
        venvs.append(venv)
    clients = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nwcache",
                "install",
                str(built_wheels["pure"]),
                "--env",
                str(venv),
                "--json",
            ],
            env=daemon.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for venv in venvs
    ]
    for client in clients:
        out, err = client.communicate(timeout=300)
        assert client.returncode == 0, err
        assert json.loads(out)["number"] == 2
    code, out, err = daemon.cli("env", "show", venvs[0], "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["path"] == str(venvs[0])
    assert [p["name"] for p in shown["current"]["packages"]] == ["nwdemo-pure"]
    code, out, err = daemon.cli("env", "unregister", venvs[0])
    assert code == 0, err
    site = next(venvs[0].glob("lib/python*/site-packages"))
    assert site.is_dir()
    assert not site.is_symlink()
    assert (site / "nwdemo_pure" / "core.py").is_file()
    code, _, err = daemon.cli("list", "--env", venvs[0])
    assert code == 1
    assert "is not a registered environment" in err


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    from nwcache.client.service import render_unit, template

    unit = tmp_path / "nwcache.service"
    unit.write_text(render_unit(template()))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--user", str(unit)],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"ExecStart={sys.executable} -m nwcache daemon" in unit.read_text()
    assert "Type=notify" in unit.read_text()


def test_headers_data_and_hostile_script_names(daemon: Daemon, tmp_path: Path) -> None:
    from tests.vectors import generate

    daemon.start()
    venv = tmp_path / "venv"
    new_venv(venv)
    spec = generate.Spec(
        dist_info="demo-1.0.dist-info",
        files=[
            generate.F("demo/__init__.py", b"X = 1\n"),
            generate.F("demo-1.0.data/headers/demo.h", b"#define DEMO 1\n"),
            generate.F("demo-1.0.data/data/share/demo/readme.txt", b"shared data\n"),
            generate.F("demo-1.0.data/scripts/demo-tool", b"#!python\nprint('tool')\n", True),
        ],
    )
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    wheel.write_bytes(generate.v2(spec))
    code, _, err = daemon.cli("install", wheel, "--env", venv)
    assert code == 0, err
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    header = venv / "include" / "site" / f"python{version}" / "demo" / "demo.h"
    data = venv / "share" / "demo" / "readme.txt"
    tool = venv / "bin" / "demo-tool"
    assert header.read_bytes() == b"#define DEMO 1\n"
    assert data.read_bytes() == b"shared data\n"
    assert tool.read_bytes().startswith(f"#!{venv / 'bin' / 'python'}\n".encode())
    assert subprocess.run([tool], capture_output=True, text=True, check=True).stdout == "tool\n"
    code, _, err = daemon.cli("uninstall", "demo", "--env", venv)
    assert code == 0, err
    assert not header.exists()
    assert not data.exists()
    assert not tool.exists()
    # A wheel whose script would replace the venv's interpreter: refused, nothing changed.
    python_before = (venv / "bin" / "python").resolve().read_bytes()
    hostile = generate.Spec(
        dist_info="evil-1.0.dist-info",
        files=[generate.F("evil-1.0.data/scripts/python", b"#!/bin/sh\necho owned\n", True)],
    )
    evil = tmp_path / "evil-1.0-py3-none-any.whl"
    evil.write_bytes(generate.v2(hostile))
    code, out, err = daemon.cli("install", evil, "--env", venv, "--json")
    assert code == 1
    assert "would overwrite the environment's interpreter" in err
    assert (venv / "bin" / "python").resolve().read_bytes() == python_before
    code, out, _ = daemon.cli("history", "--env", venv, "--json")
    assert json.loads(out)[-1]["action"] == "uninstall demo"


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd"), reason="needs root to make a second user"
)
def test_other_uids_are_refused(daemon: Daemon, request: pytest.FixtureRequest) -> None:
    user = "nwcache-other"
    if subprocess.run(["id", user], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", user], check=True)
    # The socket lives outside pytest's 0700 temporary tree, so that opening
    # its own directory is enough to let the other user reach it.
    outside = Path(tempfile.mkdtemp(prefix="nwcache-uid-test-"))
    request.addfinalizer(lambda: shutil.rmtree(outside, ignore_errors=True))
    daemon.socket = outside / "run" / "daemon.sock"
    daemon.env["NWCACHE_SOCKET"] = str(daemon.socket)
    daemon.start()
    # The other user's client: the protocol spoken with the standard library
    # only (this checkout and its venv live under /root, which it cannot read).
    probe = (
        "import json, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except PermissionError:\n"
        "    print('cannot-connect'); sys.exit(0)\n"
        "s.sendall(json.dumps({'protocol': 1, 'op': 'env.list', 'args': {}}).encode() + b'\\n')\n"
        "print(json.loads(s.makefile().readline())['kind'])\n"
    )
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("needs a system python3 the other user can run")

    def as_other() -> str:
        done = subprocess.run(
            ["runuser", "-u", user, "--", python, "-c", probe, str(daemon.socket)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    # The socket's directory is 0700: the other user cannot even reach it.
    assert as_other() == "cannot-connect"
    # Opened up by hand, the daemon itself still refuses the peer's uid.
    for path, mode in ((outside, 0o755), (daemon.socket.parent, 0o755), (daemon.socket, 0o777)):
        os.chmod(path, mode)
    assert as_other() == "PermissionDenied"
    assert daemon.answers()
    assert daemon.cli("env", "list")[0] == 0


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_refuses_to_start_without_fuse(tmp_path: Path) -> None:
    """In a mount namespace whose /dev has no fuse device: one line, exit 1,
    nothing mounted."""
    daemon = Daemon(tmp_path)
    command = f"mount -t tmpfs none /dev && exec {sys.executable} -m nwcache daemon"
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: /dev/fuse does not exist: FUSE is not available here"]
    assert not is_mount_point(daemon.home / "view")


@pytest.mark.skipif(not shutil.which("script"), reason="needs script(1) for a terminal")
def test_progress_on_a_terminal(daemon: Daemon, tmp_path: Path, built_wheels: dict[str, Path]) -> None:
    daemon.start()
    venv = tmp_path / "venv"
    new_venv(venv)
    command = f"{sys.executable} -m nwcache install {built_wheels['pure']} --env {venv}"
    done = subprocess.run(
        ["script", "-q", "-e", "-c", command, "/dev/null"],
        env={**daemon.env, "TERM": "xterm", "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    assert "generation 2: install nwdemo-pure==0.1.0" in done.stdout
    assert "\x1b[" in done.stdout  # the bar drew (and erased) itself on the terminal


def test_fsck_exits_1_on_damage(daemon: Daemon, tmp_path: Path, built_wheels: dict[str, Path]) -> None:
    """fsck lists what it found and exits 1 (README's exit codes), with or
    without --json; a consistent store exits 0."""
    venv = tmp_path / "venv"
    new_venv(venv)
    daemon.start()
    code, _, err = daemon.cli("install", built_wheels["ext"], "--env", venv)
    assert code == 0, err
    assert daemon.cli("fsck")[0] == 0
    body = next(p for p in sorted((daemon.home / "blobs").rglob("*")) if p.is_file())
    body.chmod(0o644)
    body.write_bytes(b"damaged")
    code, out, err = daemon.cli("fsck")
    assert code == 1, (out, err)
    assert body.name[:12] in out or body.parent.name in out, out
    code, out, _ = daemon.cli("fsck", "--json")
    assert code == 1
    assert json.loads(out)["problems"]


def test_a_refused_install_into_a_new_venv_changes_nothing(daemon: Daemon, tmp_path: Path) -> None:
    """`nwcache install BAD.whl --env NEWVENV`: the archive is refused (a
    file's bytes do not match RECORD), and the venv it registered on the way
    is a plain, unregistered venv again, holding what it held."""
    venv = tmp_path / "venv"
    new_venv(venv)
    (site_of(venv) / "mine.py").write_text("MINE = 1\n")
    before = sorted(
        (str(p.relative_to(venv)), p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
        for p in venv.rglob("*")
    )
    bad = tmp_path / "bad-1.0-py3-none-any.whl"
    record = (
        "bad/__init__.py,sha256="
        + "A" * 43
        + ",2\nbad-1.0.dist-info/METADATA,,\nbad-1.0.dist-info/RECORD,,\n"
    )
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("bad/__init__.py", "x\n")
        zf.writestr("bad-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: bad\nVersion: 1.0\n")
        zf.writestr(
            "bad-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr("bad-1.0.dist-info/RECORD", record)
    daemon.start()
    code, _, err = daemon.cli("install", bad, "--env", venv)
    assert code == 1, err
    assert err.startswith("error:"), err
    assert not venv.is_symlink()
    code, out, err = daemon.cli("env", "list", "--json")
    assert code == 0, err
    assert json.loads(out) == []
    after = sorted(
        (str(p.relative_to(venv)), p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
        for p in venv.rglob("*")
    )
    assert after == before
    assert subprocess.run([venv / "bin" / "python", "-c", "import mine"], check=False).returncode == 0
