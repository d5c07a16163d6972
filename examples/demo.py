"""`make demo`: the product as it stands, offline, on wheels built here.

1. Builds two wheels from this repository: nwcache itself (pure Python) and
   tests/projects/sharedlib (a compiled shared library shipped three times
   under its versioned names, as wheels do today).
2. Converts both to Wheel 2.0, shows `nwcache inspect`, verifies them, shows
   that pip refuses a 2.0 archive with its own message, converts back and
   checks every file byte for byte.
3. Starts an isolated `nwcache daemon` (its own NWCACHE_HOME and
   NWCACHE_SOCKET), installs the 2.0 archive into one fresh venv and the
   classic wheel into another with `nwcache install` (which registers them),
   imports the package in both through the view (site-packages is now a
   symlink into it) from the pyc the daemon compiled once at install, shows
   that the shared library is one inode in both, installs by name from a
   package index it serves on 127.0.0.1 (uv resolves, the daemon downloads,
   a second venv downloads nothing), prints `nwcache stats`, stops the daemon with SIGTERM (exit 0, view
   unmounted) and runs fsck on the store.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from nwcache.client.cli import main as nwcache
from nwcache.client.remote import request
from nwcache.daemon.store import Store
from nwcache.protocol import answers

ROOT = Path(__file__).resolve().parent.parent


def clean_env() -> dict[str, str]:
    """No global pip configuration (this machine's adds local indexes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1", SOURCE_DATE_EPOCH="1700000000")
    return env


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def build(project: Path, out: Path) -> Path:
    source = out.parent / "src" / project.name
    shutil.copytree(
        project,
        source,
        ignore=shutil.ignore_patterns(
            "build", "*.egg-info", "__pycache__", ".venv", ".tools", "bench", "tests"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        env=clean_env(),
    )
    return max(out.glob("*.whl"), key=lambda p: p.stat().st_mtime)


def wait_for_bytecode(timeout: float = 120.0) -> None:
    """Poll `nwcache stats` until no environment has bytecode still to
    compile (the daemon compiles it in the background after an install)."""
    deadline = time.monotonic() + timeout
    while True:
        *_, last = request(os.environ["NWCACHE_SOCKET"], "stats", {})
        if not last["result"].get("bytecode_pending"):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"bytecode was still being compiled after {timeout} s: {last['result']}")
        time.sleep(0.1)


def wait_for_socket(path: Path, daemon: subprocess.Popen[str], timeout: float = 60.0) -> None:
    """Poll until the daemon accepts connections (or fail loudly)."""
    deadline = time.monotonic() + timeout
    while not answers(path):
        if daemon.poll() is not None:
            raise SystemExit(
                f"the daemon exited with {daemon.returncode}: {daemon.stderr.read() if daemon.stderr else ''}"
            )
        if time.monotonic() > deadline:
            raise SystemExit(f"the daemon did not answer within {timeout} s")
        time.sleep(0.05)


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def install_by_name(work: Path) -> None:
    """Install by name from a package index the demo serves on 127.0.0.1
    (tests/index_server.py: wheels built from tests/projects/index/): uv
    resolves for the venv's interpreter, the daemon downloads and verifies;
    a second venv downloads nothing."""
    from tests.index_server import build_index_wheels, standard_index

    step("install by name from a local package index (uv resolves, the daemon downloads and verifies)")
    for key in [k for k in os.environ if k.startswith("UV_")]:
        del os.environ[key]
    os.environ.update(UV_NO_CONFIG="1", UV_CACHE_DIR=str(work / "uv-cache"), PIP_CONFIG_FILE=os.devnull)
    wheels = build_index_wheels(work / "index")
    with standard_index(wheels).serve() as index:
        print(f"index: {index.simple} ({len(wheels)} wheels; nwidx-lib 3.0 yanked)")
        for name in ("venv2", "venv3"):
            venv = work / name
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
            line = ["install", "nwidx-app[fast]", "--env", str(venv), "--index-url", index.simple]
            print(f"$ nwcache install nwidx-app[fast] --env {name} --index-url {index.simple}")
            assert nwcache(line) == 0
        ran = subprocess.run(
            [str(work / "venv3" / "bin" / "nwidx-app")], capture_output=True, text=True, check=True
        )
        print(f"$ venv3/bin/nwidx-app\n{ran.stdout.strip()}")
        print(
            f"nwidx_lib-2.0 fetched from the index: {index.downloads('nwidx_lib-2.0-py3-none-any.whl')} time(s)"
        )
        print("$ nwcache install nwidx-app[fast] --env venv3 (again)")
        assert (
            nwcache(["install", "nwidx-app[fast]", "--env", str(work / "venv3"), "--index-url", index.simple])
            == 0
        )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="nwcache-demo-") as scratch:
        work = Path(scratch)
        step("building wheels from this repository (offline)")
        wheels = [
            build(ROOT, work / "wheels"),
            build(ROOT / "tests" / "projects" / "sharedlib", work / "wheels"),
        ]
        for wheel in wheels:
            print(f"built {wheel.name}: {wheel.stat().st_size:,} bytes")

        step("nwcache convert --to 2 (level 19, window log 23)")
        assert nwcache(["convert", *map(str, wheels), "-o", str(work / "v2")]) == 0
        v2 = [work / "v2" / w.name for w in wheels]

        step(f"nwcache inspect {v2[1].name}")
        assert nwcache(["inspect", str(v2[1])]) == 0

        step("nwcache verify (every file against RECORD, the zstd frame, the content digest)")
        for path in v2:
            assert nwcache(["verify", str(path)]) == 0

        step("pip install of a 2.0 archive: pip refuses with its own message")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-deps",
                "--no-index",
                "--target",
                str(work / "target"),
                str(v2[1]),
            ],
            capture_output=True,
            text=True,
            env=clean_env(),
            check=False,
        )
        print(f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1]}")
        assert done.returncode != 0

        step("nwcache convert --to 1, then compare every file with the original")
        assert nwcache(["convert", *map(str, v2), "-o", str(work / "v1"), "--to", "1"]) == 0
        for original in wheels:
            same = members(original) == members(work / "v1" / original.name)
            print(f"{original.name}: {'every file identical' if same else 'DIFFERENT'}")
            assert same

        step(
            "nwcache daemon (its own NWCACHE_HOME and NWCACHE_SOCKET); 2.0 into one fresh venv, classic into another"
        )
        home = work / "home"
        os.environ["NWCACHE_HOME"] = str(home)
        os.environ["NWCACHE_SOCKET"] = str(work / "run" / "daemon.sock")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "nwcache", "daemon"], stderr=subprocess.PIPE, text=True
        )
        try:
            wait_for_socket(Path(os.environ["NWCACHE_SOCKET"]), daemon)
            print(f"daemon pid {daemon.pid} serving {home / 'view'}")
            venvs = [work / "venv0", work / "venv1"]
            for venv, archive in zip(venvs, [v2[1], wheels[1]], strict=True):
                subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
                print(f"$ nwcache install {archive.name} --env {venv.name}")
                assert nwcache(["install", str(archive), "--env", str(venv)]) == 0
                print(f"  {venv.name} -> {os.readlink(venv)}  (the view serves the whole venv)")
                wait_for_bytecode()
                print("  bytecode compiled in the background (nwcache stats shows what is pending)")
                imported = subprocess.run(
                    [
                        str(venv / "bin" / "python"),
                        "-v",
                        "-c",
                        "import nwdemo_sharedlib as m; print(m.__file__)",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                print(f"  import nwdemo_sharedlib: {imported.stdout.strip()}")
                # Python -v names the pyc it loads: the one the daemon compiled after the install.
                cached = [
                    line
                    for line in imported.stderr.splitlines()
                    if "nwdemo_sharedlib" in line and "matches" in line
                ]
                assert cached, imported.stderr[-2000:]
                print(f"  loaded from the shared pyc: {'/'.join(cached[0].split()[1].rsplit('/', 3)[-3:])}")
            libs = [
                next(v.glob("lib/python*/site-packages/nwdemo_sharedlib/libnwfoo.so.1.2.3")) for v in venvs
            ]
            inodes = {os.stat(lib).st_ino for lib in libs}
            assert len(inodes) == 1, inodes
            print(f"libnwfoo.so.1.2.3 in both venvs: inode {inodes.pop()} (one page cache)")
            install_by_name(work)
            print("$ nwcache stats")
            assert nwcache(["stats"]) == 0
        finally:
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(60)
        print(f"daemon stopped by SIGTERM: exit {code}")
        assert code == 0, daemon.stderr.read() if daemon.stderr else ""
        with Store(home) as store:
            problems = store.fsck()
            print("fsck: clean" if not problems else f"fsck: {problems}")
            assert not problems
    print("\ndemo finished")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
