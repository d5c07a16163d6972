"""`make demo`: the product as it stands, offline, on wheels built here.

1. Builds two wheels from this repository: nwcache itself (pure Python) and
   tests/projects/sharedlib (a compiled shared library shipped three times
   under its versioned names, as wheels do today).
2. Converts both to Wheel 2.0, shows `nwcache inspect`, verifies them, shows
   that pip refuses a 2.0 archive with its own message, converts back and
   checks every file byte for byte.
3. Starts an isolated store and FUSE view (the daemon's service, on a thread
   of this process: the `nwcache daemon` command comes with issue 5),
   registers two fresh virtual environments, installs the 2.0 archive into one
   and the classic wheel into the other, imports the package in both through
   the view (site-packages is now a symlink into it), shows that the shared
   library is one inode in both, prints what the store keeps against what the
   environments hold, stops the view cleanly and runs fsck.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from nwcache.client.cli import main as nwcache
from nwcache.daemon.runner import ServiceThread
from nwcache.daemon.store import Store

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


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


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
            "the store and the view: two fresh venvs, the 2.0 archive in one, the classic wheel in the other"
        )
        home = work / "home"
        venvs = [work / "venv0", work / "venv1"]
        with ServiceThread(home, home / "view") as running:
            service = running.service
            assert service is not None
            for venv, archive in zip(venvs, [v2[1], wheels[1]], strict=True):
                subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
                env = running.call(service.register, venv)
                gen = running.call(service.install, venv, [archive])
                site = venv / env.site_packages
                print(
                    f"{venv.name}: Python {env.version}, generation {gen.number}: {gen.action} ({archive.name})"
                )
                print(f"  site-packages -> {os.readlink(site)}")
                imported = subprocess.run(
                    [str(venv / "bin" / "python"), "-c", "import nwdemo_sharedlib as m; print(m.__file__)"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                print(f"  import nwdemo_sharedlib: {imported.stdout.strip()}")
            libs = [
                next((v / service.store.get_env(v).site_packages).glob("nwdemo_sharedlib/libnwfoo.so.1.2.3"))
                for v in venvs
            ]
            inodes = {os.stat(lib).st_ino for lib in libs}
            assert len(inodes) == 1, inodes
            print(
                f"libnwfoo.so.1.2.3 in both venvs: inode {inodes.pop()} (one page cache), nlink {os.stat(libs[0]).st_nlink}"
            )
            stats = service.store.stats()
            print(
                f"logical bytes in both site-packages: {stats['logical_bytes']:,}; stored once: "
                f"{stats['stored_bytes']:,} in {stats['blobs']} blobs (dedup {stats['logical_bytes'] / stats['stored_bytes']:.2f}x)"
            )
        print("view stopped and unmounted")
        with Store(home) as store:
            problems = store.fsck()
            print("fsck: clean" if not problems else f"fsck: {problems}")
            assert not problems
    print("\ndemo finished")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
