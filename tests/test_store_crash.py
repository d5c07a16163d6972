"""Crash safety: a child process ingests and installs (or uninstalls and
collects garbage) and is killed with SIGKILL, at every write phase the store
names and at random moments. After each kill the store reopens (its start-up
sweep runs), fsck is clean, and the environment is exactly at its old or its
new generation."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nwcache.daemon.schema import FileRef
from nwcache.daemon.store import Store
from tests.helpers import new_venv
from tests.vectors.generate import FILENAME

VECTORS = Path(__file__).parent / "vectors"
INSTALL_POINTS = [
    "bodies-published",
    "bodies-durable",
    "package-commit",
    "package-committed",
    "generation-written",
    "env-flipped",
    "flip-committed",
]
GC_POINTS = ["gc-commit", "gc-committed"]
KILLS = 50  # processes killed, at named phases and at random moments
MAX_RUNS = 150
CHILD = """
import sys
from nwcache.daemon.store import Store
home, venv, action, archive = sys.argv[1:5]
store = Store(home)
print("ready", flush=True)
if action == "install":
    store.install(venv, [archive])
else:
    store.uninstall(venv, ["crashy"])
    store.gc(keep=1)
print("done", flush=True)
"""


def build_wheel(path: Path) -> Path:
    """A classic wheel with enough files, large and small, for a kill to land
    in the middle of writing bodies."""
    rng = random.Random(7)
    files = {f"crashy/mod{i}.py": f"VALUE = {i}\n".encode() * (1 + i % 7) for i in range(300)}
    files.update({f"crashy/data/blob{i}.bin": rng.randbytes(40_000 + i) for i in range(60)})
    files["crashy-1.0.dist-info/METADATA"] = b"Metadata-Version: 2.1\nName: crashy\nVersion: 1.0\n"
    files["crashy-1.0.dist-info/WHEEL"] = b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    import base64

    rows = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    files["crashy-1.0.dist-info/RECORD"] = (
        "\n".join([*rows, "crashy-1.0.dist-info/RECORD,,"]) + "\n"
    ).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def child(
    home: Path, venv: Path, action: str, archive: Path, crash_at: str | None = None
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("NWCACHE_CRASH_AT", None)
    if crash_at:
        env["NWCACHE_CRASH_AT"] = crash_at
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home), str(venv), action, str(archive)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", (line, proc.stderr.read() if proc.stderr else "")


def run_to_end(home: Path, venv: Path, action: str, archive: Path) -> float:
    """Run the child uninterrupted; returns how long its work took after start-up."""
    proc = child(home, venv, action, archive)
    wait_ready(proc)
    started = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out == "done\n"
    return time.monotonic() - started


def state(home: Path, venv: Path) -> tuple[int, dict[str, FileRef]]:
    with Store(home) as store:  # reopening runs the start-up sweep
        problems = store.fsck()
        assert problems == [], problems
        return store.get_env(venv).current, store.tree(venv)


@pytest.mark.slow
def test_sigkill_at_every_phase_and_at_random(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    new_venv(venv)
    archive = build_wheel(tmp_path / "crashy-1.0-py3-none-any.whl")
    pristine = tmp_path / "pristine"
    with Store(pristine) as store:
        store.register(venv)
        store.install(venv, [VECTORS / "ok-v2-minimal" / FILENAME])
    old = state(pristine, venv)
    # The outcomes of an uninterrupted install, and of uninstall + gc after it.
    reference = tmp_path / "reference"
    shutil.copytree(pristine, reference)
    durations = {"install": run_to_end(reference, venv, "install", archive)}
    new = state(reference, venv)
    assert new[0] == old[0] + 1
    assert "crashy/mod1.py" in new[1]
    installed = tmp_path / "installed"
    shutil.copytree(reference, installed)
    durations["uninstall"] = run_to_end(reference, venv, "uninstall", archive)
    after_gc = state(reference, venv)

    rng = random.Random(20261121)
    named: list[tuple[str, str | None]] = [("install", p) for p in INSTALL_POINTS]
    named += [("uninstall", p) for p in GC_POINTS]

    def plan() -> Iterator[tuple[str, str | None, float | None]]:
        """Every named phase, then random moments until KILLS processes died."""
        for action, point in named:
            yield action, point, None
        for _ in range(MAX_RUNS - len(named)):
            if outcomes["killed"] >= KILLS:
                return
            action = rng.choice(["install", "install", "uninstall"])
            yield action, None, rng.uniform(0.0, durations[action])

    outcomes: dict[str, int] = {"old": 0, "new": 0, "finished": 0, "killed": 0}
    for action, point, delay in plan():
        home = tmp_path / "home"
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(pristine if action == "install" else installed, home)
        before, after = (old, new) if action == "install" else (new, after_gc)
        proc = child(home, venv, action, archive, crash_at=point)
        try:
            wait_ready(proc)
            if delay is not None:
                try:
                    proc.wait(timeout=delay)  # the random moment of the kill
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        if point is not None:
            assert code == -signal.SIGKILL, f"{point} was never reached"
        outcomes["killed" if code == -signal.SIGKILL else "finished"] += 1
        got = state(home, venv)
        if got == before:
            outcomes["old"] += 1
        else:
            assert got == after, (
                f"{action} killed at {point or delay}: neither the old nor the new generation"
            )
            outcomes["new"] += 1
    print(f"outcomes: {outcomes}, durations: {durations}")
    assert outcomes["killed"] >= KILLS, outcomes
    assert outcomes["old"] > 0, outcomes
    assert outcomes["new"] > 0, outcomes
