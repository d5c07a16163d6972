"""SIGKILL of a real daemon process at random moments during install,
uninstall, gc and while the view is being read; after each kill the daemon
restarts, `nwcache fsck` is clean, every environment is at a whole generation
(its site-packages, read through the view, and its bin/ are exactly what one
of its two possible generations holds) and the view serves it (the venv's
own python imports it, or fails to when it is absent).

`python -m tests.faults --runs 120` (`make faults`) is the full run reported
in docs/RELIABILITY.md; tests/test_faults.py runs a few of the same kills.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.daemon_process import Daemon, request
from tests.helpers import PROJECTS, PROJECTS_DIR, clean_env, new_venv, pip_wheel_command, site_of

OPS = ("install", "read", "uninstall", "gc")
PACKAGES = {"crashy", "nwdemo-pure"}  # what "present" means in an environment
IMPORTS = "import crashy.mod7, nwdemo_pure.core"
ENVS = 4
# Reads the venv's site-packages (through the view) in a loop until killed;
# says "reading" once the first pass went through.
READER = r"""
import os, sys
site = sys.argv[1]
first = True
while True:
    for dirpath, _dirs, files in os.walk(site):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                fh.read()
    if first:
        print("reading", flush=True)
        first = False
"""


class FaultDaemon(Daemon):
    """The daemon of tests/test_daemon.py, plus SIGKILL and requests spoken
    directly over the socket."""

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(60)
        self.process = None

    def restart(self) -> float:
        """Start after a kill; seconds until the socket answered (polled every 50 ms)."""
        started = time.monotonic()
        self.start()
        return time.monotonic() - started

    def fd_count(self) -> int:
        assert self.process is not None
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))


def snapshot(venv: Path) -> dict[str, str]:
    """Every file of site-packages (through the view) and of bin/ (scripts
    nwcache wrote), by content. Bytecode is not part of a generation."""
    found: dict[str, str] = {}
    for top, label in ((site_of(venv), "site"), (venv / "bin", "bin")):
        for dirpath, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                full = Path(dirpath) / name
                if label == "bin" and (name.startswith("python") or full.is_symlink()):
                    continue  # the venv's own interpreter links
                rel = f"{label}/{full.relative_to(top)}"
                found[rel] = hashlib.sha256(full.read_bytes()).hexdigest()
    return found


def imports(venv: Path) -> bool:
    done = subprocess.run(
        [venv / "bin" / "python", "-c", IMPORTS],
        env=clean_env({"PYTHONDONTWRITEBYTECODE": "1"}),
        capture_output=True,
        timeout=120,
        check=False,
    )
    return done.returncode == 0


def build_wheel(
    path: Path, name: str = "crashy", *, small: int = 500, large: int = 60, seed: int = 7
) -> Path:
    """A classic wheel `path` of `name` 1.0 with many small modules and some
    incompressible bodies, so that a kill lands in the middle of the work:
    ingest writes bodies, uninstall rebuilds a large tree, gc deletes bodies."""
    rng = random.Random(seed)
    files = {f"{name}/mod{i}.py": f"VALUE = {i}  # {seed}\n".encode() * (1 + i % 7) for i in range(small)}
    files.update({f"{name}/data/blob{i}.bin": rng.randbytes(40_000 + i) for i in range(large)})
    dist_info = f"{name}-1.0.dist-info"
    files[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode()
    files[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    rows = [
        f"{member},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for member, data in files.items()
    ]
    files[f"{dist_info}/RECORD"] = ("\n".join([*rows, f"{dist_info}/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in files.items():
            zf.writestr(member, data)
    return path


def build_pure_wheel(out: Path) -> Path:
    directory, _ = PROJECTS["pure"]
    source = out / "src"
    shutil.copytree(PROJECTS_DIR / directory, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    for script in (source / "scripts").glob("*"):
        script.chmod(0o755)
    subprocess.run(pip_wheel_command(source, out), env=clean_env(), cwd=out, capture_output=True, check=True)
    return next(out.glob("nwdemo_pure-*.whl"))


@dataclass
class Env:
    path: Path
    present: bool = False
    states: dict[bool, dict[str, str]] = field(default_factory=dict)  # present -> snapshot


@dataclass
class Run:
    op: str
    delay: float
    inside: bool  # the kill came before the operation answered
    outcome: str  # "before" or "after" (for gc and read: "unchanged")
    restart: float


@dataclass
class Faults:
    """One daemon, `env_count` venvs that are either without or with PACKAGES."""

    root: Path
    wheels: list[Path]
    rng: random.Random
    env_count: int = ENVS
    daemon: FaultDaemon = field(init=False)
    envs: list[Env] = field(default_factory=list)
    durations: dict[str, list[float]] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    scraps: int = 0

    def __post_init__(self) -> None:
        self.daemon = FaultDaemon(self.root)

    def timed(self, op: str, **args: Any) -> Any:
        started = time.monotonic()
        result = self.daemon.call(op, **args)
        elapsed = time.monotonic() - started
        self.durations.setdefault(op, []).append(elapsed)
        return result

    def set_present(self, env: Env, present: bool) -> None:
        if env.present == present:
            return
        if present:
            self.timed("install", env=str(env.path), archives=[str(w) for w in self.wheels])
        else:
            self.timed("uninstall", env=str(env.path), names=sorted(PACKAGES))
        env.present = present

    def setup(self) -> None:
        """Register the venvs and learn what each looks like without and with
        PACKAGES (uninterrupted operations); how long each operation takes."""
        self.daemon.start()
        for index in range(self.env_count):
            env = Env(new_venv(self.root / f"venv{index}"))
            self.daemon.call("env.register", env=str(env.path))
            env.states[False] = snapshot(env.path)
            self.set_present(env, True)
            env.states[True] = snapshot(env.path)
            assert env.states[True] != env.states[False]
            self.envs.append(env)
        self.set_present(self.envs[0], False)
        assert snapshot(self.envs[0].path) == self.envs[0].states[False]
        self.give_gc_work(self.envs[0])
        self.timed("gc", keep=1)

    def give_gc_work(self, env: Env) -> None:
        """Install and uninstall a wheel of new content, so that the next gc
        has a package and its bodies to delete."""
        self.scraps += 1
        scrap = build_wheel(self.root / "scrap-1.0-py3-none-any.whl", "scrap", small=300, seed=self.scraps)
        self.daemon.call("install", env=str(env.path), archives=[str(scrap)])
        self.daemon.call("uninstall", env=str(env.path), names=["scrap"])
        scrap.unlink()

    def check(self) -> str:
        """After a restart: fsck clean, every environment whole and served.
        Updates what each environment holds; returns "before"/"after" for the
        environment the last operation changed (via self.changing)."""
        done = subprocess.run(
            [sys.executable, "-m", "nwcache", "fsck", "--json"],
            env=self.daemon.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"fsck exited {done.returncode}: {done.stdout}{done.stderr}"
        for env in self.envs:
            names = {p["name"] for p in self.daemon.call("list", env=str(env.path))}
            assert names in (set(), PACKAGES), f"{env.path} holds {names}: not a whole generation"
            present = names == PACKAGES
            assert Path(env.path).is_symlink(), f"{env.path} is no longer served by the view"
            got = snapshot(env.path)
            if got != env.states[present]:
                diff = sorted(set(got.items()) ^ set(env.states[present].items()))
                raise AssertionError(
                    f"{env.path} (present={present}) differs from its generation: {diff[:8]}"
                )
            assert imports(env.path) == present, f"{env.path}: the view does not serve its generation"
            env.present = present
        return "unchanged"

    def kill_during(self, op: str, env: Env) -> Run:
        """Start `op`, SIGKILL the daemon at a random moment within its usual
        duration, restart, check."""
        readers: list[subprocess.Popen[str]] = []
        answered = threading.Event()
        client: threading.Thread | None = None
        before = env.present
        if op == "read":
            self.set_present(env, True)
            before = True
            for _ in range(2):
                reader = subprocess.Popen(
                    [env.path / "bin" / "python", "-c", READER, str(site_of(env.path))],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    env=clean_env({"PYTHONDONTWRITEBYTECODE": "1"}),
                )
                readers.append(reader)
            for reader in readers:
                assert reader.stdout is not None
                assert reader.stdout.readline() == "reading\n"
            delay = self.rng.uniform(0.0, 0.5)
        else:
            if op == "install":
                self.set_present(env, False)
                args: dict[str, Any] = {"env": str(env.path), "archives": [str(w) for w in self.wheels]}
            elif op == "uninstall":
                self.set_present(env, True)
                args = {"env": str(env.path), "names": sorted(PACKAGES)}
            else:
                self.give_gc_work(env)
                args = {"keep": 1}
            before = env.present
            delay = self.rng.uniform(0.0, statistics.median(self.durations[op]))

            def talk() -> None:
                try:
                    for message in request(self.daemon.socket, op, args, timeout=300):
                        if message.get("event") == "result":
                            answered.set()
                except Exception:
                    pass  # the daemon died under us: expected

            client = threading.Thread(target=talk)
            client.start()
        try:
            time.sleep(delay)  # the random moment of the kill (not a synchronisation)
            inside = not answered.is_set() and all(r.poll() is None for r in readers)
            self.daemon.kill()
        finally:
            for reader in readers:
                reader.kill()
                reader.communicate()
            if client is not None:
                client.join(60)
        restart = self.daemon.restart()
        self.check()
        if op in ("install", "uninstall"):
            after = op == "install"
            outcome = "after" if env.present == after else "before"
            if env.present != before:
                assert env.present == after
            if answered.is_set():
                assert outcome == "after", f"{op} answered, but the restarted daemon lost it"
        else:
            assert env.present == before
            outcome = "unchanged"
        return Run(op, delay, inside, outcome, restart)

    def run(self, count: int) -> list[Run]:
        self.setup()
        for index in range(count):
            op = OPS[index % len(OPS)]
            env = self.envs[(index // len(OPS)) % len(self.envs)]
            self.runs.append(self.kill_during(op, env))
        return self.runs

    def close(self) -> None:
        self.daemon.stop()


@dataclass
class Summary:
    runs: int
    inside: int
    per_op: dict[str, dict[str, int]]
    restart_median: float
    restart_max: float
    durations: dict[str, float]  # median of the uninterrupted runs


def summarise(faults: Faults) -> Summary:
    per_op: dict[str, dict[str, int]] = {}
    for run in faults.runs:
        counts = per_op.setdefault(run.op, {"runs": 0, "inside": 0, "before": 0, "after": 0, "unchanged": 0})
        counts["runs"] += 1
        counts["inside"] += run.inside
        counts[run.outcome] += 1
    restarts = [r.restart for r in faults.runs]
    return Summary(
        runs=len(faults.runs),
        inside=sum(r.inside for r in faults.runs),
        per_op=per_op,
        restart_median=statistics.median(restarts),
        restart_max=max(restarts),
        durations={k: round(statistics.median(v), 3) for k, v in faults.durations.items()},
    )


def descriptors(daemon: FaultDaemon) -> list[str]:
    """The daemon's open descriptors, apart from blob bodies the view keeps
    open for the kernel (a cache, bounded by view.KEPT_OPEN) and the bodies
    of layer files that still exist (in kernel-cached mode a layer file's
    descriptor lives as long as the kernel knows its inode: docs/VIEW.md).
    A removed layer file's body still open is counted: that would be a leak."""
    assert daemon.process is not None
    fd_dir = Path(f"/proc/{daemon.process.pid}/fd")
    layer_body = re.compile(re.escape(str(daemon.home)) + r"/(overlay|roots)/[0-9a-f]+/files/[0-9]+")
    found = []
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except FileNotFoundError:
            continue
        if target.startswith(str(daemon.home / "blobs") + "/") or layer_body.fullmatch(target):
            continue
        found.append(target)
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=120, help="kills, spread evenly over the four operations")
    parser.add_argument("--seed", type=int, default=20261130)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="nwcache-faults-"))
    try:
        wheels = [build_wheel(root / "crashy-1.0-py3-none-any.whl"), build_pure_wheel(root / "pure")]
        faults = Faults(root, wheels, random.Random(args.seed))
        started = time.monotonic()
        try:
            faults.run(args.runs)
        finally:
            faults.close()
        summary = summarise(faults)
        print(json.dumps({**summary.__dict__, "seconds": round(time.monotonic() - started)}, indent=2))
        print(f"uptime: {os.getloadavg()}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
