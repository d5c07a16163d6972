"""`nwcache install` against uv and pip (a benchmark, not a test).

    python -m bench.install [--out docs/BENCH-INSTALL.md] [--cache DIR] [--runs 3] [--venvs 20]

nwcache runs as a user installs it: a wheel of this checkout (`uv build`),
installed with its locked dependencies and byte-compiled
(`uv pip install --compile-bytecode`) into a venv of its own; the daemon and
the client both run from there. In one run, with that real `nwcache daemon` on
a temporary NWCACHE_HOME beside the checkout, uv's cache in a temporary
directory on the same file system, every tool installing local wheel files
with dependencies off:

- warm: numpy, already in the store / the uv cache, into a new venv (the
  venvs are made beforehand; for nwcache the time includes the client's
  start, registering the venv and the install; uv runs `--offline
  --link-mode hardlink`; pip `install --no-deps`), median of --runs;
- cold: pandas, numpy and pyarrow into a new venv with an empty store / an
  empty uv cache, and pip;
- the warm install's parts: the client's start alone (`nwcache install` of a
  missing file: it exits before connecting) and the daemon's part (the same
  register + install requests sent from this process), medians of --runs;
- disk: --venvs venvs each holding the same six wheels, counted by one `du`
  over the venvs and the store or cache (hard links once).

pip runs with PIP_CONFIG_FILE=/dev/null and no PIP_* index variables, uv with
UV_NO_CONFIG=1 and no UV_INDEX*; PYTHONDONTWRITEBYTECODE=1 for every tool
(pip compiles nothing, and neither do the others).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import (
    DEFAULT_CACHE,
    ROOT,
    cpu_model,
    fetch_wheel,
    load_average,
    memory_total,
    pip_environment,
    pip_version,
)
from nwcache.client import remote
from nwcache.client.protocol import answers

DEFAULT_OUT = ROOT / "docs" / "BENCH-INSTALL.md"
UV = ROOT / ".tools" / "bin" / "uv"
WHEELS = (
    ("numpy", "2.1.3"),
    ("pandas", "2.2.3"),
    ("pyarrow", "18.1.0"),
    ("python-dateutil", "2.9.0.post0"),
    ("pytz", "2024.2"),
    ("six", "1.17.0"),
)
MiB = 1024 * 1024


def tool_env(scratch: Path) -> dict[str, str]:
    env = pip_environment()
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env = {
        k: v
        for k, v in env.items()
        if not k.startswith("UV_INDEX") and k not in ("UV_EXTRA_INDEX_URL", "UV_FIND_LINKS")
    }
    env["UV_NO_CONFIG"] = "1"
    env["UV_CACHE_DIR"] = str(scratch / "uv-cache")
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env["NWCACHE_HOME"] = str(scratch / "nwcache-home")
    env["NWCACHE_SOCKET"] = str(scratch / "run" / "daemon.sock")
    return env


def new_venv(path: Path, env: dict[str, str]) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, env=env)
    return path


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])}... failed ({done.returncode}): {done.stderr.strip()[-500:]}"
        )
    return elapsed


def install_nwcache(scratch: Path) -> Path:
    """A wheel of this checkout and the locked dependencies, byte-compiled, in
    a venv of its own (uv's usual cache, not the one measured); returns its
    `nwcache` console script."""
    env = {k: v for k, v in pip_environment().items() if k not in ("UV_CACHE_DIR", "VIRTUAL_ENV")}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    # The project's [tool.uv] settings are for its development install only.
    env["UV_NO_CONFIG"] = "1"
    dist = scratch / "nwcache-dist"
    before = {*ROOT.glob("*.egg-info"), *ROOT.glob("build")}
    try:
        subprocess.run(
            [str(UV), "build", "--wheel", "--out-dir", str(dist), str(ROOT)],
            env=env,
            check=True,
            capture_output=True,
        )
    finally:
        for made in {
            *ROOT.glob("*.egg-info"),
            *ROOT.glob("build"),
        } - before:  # setuptools builds in the checkout
            shutil.rmtree(made, ignore_errors=True)
    wheel = next(dist.glob("nwcache-*.whl"))
    requirements = scratch / "nwcache-requirements.txt"
    subprocess.run(
        [
            str(UV),
            "export",
            "--frozen",
            "--no-dev",
            "--no-hashes",
            "--no-emit-project",
            "-o",
            str(requirements),
        ],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    venv = scratch / "nwcache-venv"
    subprocess.run(
        [str(UV), "venv", "-q", "--python", sys.executable, str(venv)], env=env, cwd=scratch, check=True
    )
    subprocess.run(
        [
            str(UV),
            "pip",
            "install",
            "-q",
            "--compile-bytecode",
            "--python",
            str(venv / "bin" / "python"),
            "-r",
            str(requirements),
            str(wheel),
        ],
        env=env,
        cwd=scratch,
        check=True,
    )
    return venv / "bin" / "nwcache"


NWCACHE = Path("nwcache")  # set by main() to the console script install_nwcache() made


def nwcache_install(venv: Path, wheels: list[Path]) -> list[str]:
    return [str(NWCACHE), "install", *map(str, wheels), "--env", str(venv)]


def uv_install(venv: Path, wheels: list[Path], *, cache: bool = True) -> list[str]:
    argv = [
        str(UV),
        "pip",
        "install",
        "--offline",
        "--no-deps",
        "--link-mode",
        "hardlink",
        "--python",
        str(venv / "bin" / "python"),
    ]
    if not cache:
        argv.append("--no-cache")
    return [*argv, *map(str, wheels)]


def pip_install(venv: Path, wheels: list[Path]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(venv / "bin" / "python"),
        "install",
        "--no-deps",
        "--no-index",
        "-q",
        *map(str, wheels),
    ]


def du(paths: list[Path]) -> int:
    done = subprocess.run(
        ["du", "-x", "-s", "-B1", "-c", *map(str, paths)], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip().splitlines()[-1].split()[0])


class Daemon:
    def __init__(self, env: dict[str, str], command: list[str] | None = None) -> None:
        self.env = env
        self.command = command  # default: the nwcache that main() installed
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [*(self.command or [str(NWCACHE)]), "daemon"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        path = Path(self.env["NWCACHE_SOCKET"])
        deadline = time.monotonic() + 60
        while not answers(path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the daemon did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
            self.process = None


def daemon_part(socket: str, venv: Path, wheels: list[Path]) -> float:
    """The daemon's side of `nwcache install`: registering the venv and the
    install, as the client asks for them, timed from this process."""
    start = time.perf_counter()
    for op, args in (
        ("env.register", {"env": str(venv)}),
        ("install", {"env": str(venv), "archives": [str(w) for w in wheels]}),
    ):
        last = list(remote.request(socket, op, args))[-1]
        if last.get("event") != "result":
            raise RuntimeError(f"{op} failed: {last}")
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    global NWCACHE
    parser = argparse.ArgumentParser(prog="python -m bench.install", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--venvs", type=int, default=20)
    args = parser.parse_args(argv)
    started = time.monotonic()
    load_at_start = load_average()
    args.cache.mkdir(parents=True, exist_ok=True)
    wheels = {name: fetch_wheel(name, version, args.cache, pip_environment())[0] for name, version in WHEELS}
    uv_version = subprocess.run(
        [str(UV), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    rows: list[tuple[str, float, float, float]] = []
    disk: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-install-", dir=ROOT / "bench") as scratch_name:
        scratch = Path(scratch_name)
        NWCACHE = install_nwcache(scratch)
        env = tool_env(scratch)
        daemon = Daemon(env)
        daemon.start()
        try:
            cold_set = [wheels["pandas"], wheels["numpy"], wheels["pyarrow"]]
            cold = (
                timed(nwcache_install(new_venv(scratch / "cold-nw", env), cold_set), env),
                timed(uv_install(new_venv(scratch / "cold-uv", env), cold_set), env),
                timed(pip_install(new_venv(scratch / "cold-pip", env), cold_set), env),
            )
            # uv's cache is warm now (the cold run filled it), the store too.
            warm: dict[str, list[float]] = {"nwcache": [], "uv": [], "pip": []}
            parts: dict[str, list[float]] = {"client": [], "daemon": []}
            numpy = [wheels["numpy"]]
            missing = scratch / "missing.whl"
            # One round of everything per run, so that every figure sees the same load.
            for run in range(args.runs):
                warm["nwcache"].append(
                    timed(nwcache_install(new_venv(scratch / f"w-nw{run}", env), numpy), env)
                )
                warm["uv"].append(timed(uv_install(new_venv(scratch / f"w-uv{run}", env), numpy), env))
                warm["pip"].append(timed(pip_install(new_venv(scratch / f"w-pip{run}", env), numpy), env))
                venv = new_venv(scratch / f"w-part{run}", env)
                start = time.perf_counter()
                done = subprocess.run(
                    nwcache_install(venv, [missing]), env=env, capture_output=True, check=False
                )
                parts["client"].append(time.perf_counter() - start)
                if done.returncode != 1:
                    raise RuntimeError(f"nwcache install of a missing file exited with {done.returncode}")
                parts["daemon"].append(daemon_part(env["NWCACHE_SOCKET"], venv, numpy))
            medians = [statistics.median(warm[k]) for k in ("nwcache", "uv", "pip")]
            rows.append(
                ("numpy, already stored/cached, into a new venv (median)", medians[0], medians[1], medians[2])
            )
            rows.append(("pandas + numpy + pyarrow, empty store/cache, new venv", *cold))
            six = list(wheels.values())
            groups: dict[str, list[Path]] = {"nwcache": [], "uv": [], "pip": []}
            for index in range(args.venvs):
                for tool, command in (("nwcache", nwcache_install), ("uv", uv_install), ("pip", pip_install)):
                    venv = new_venv(scratch / "many" / tool / f"v{index:02d}", env)
                    timed(command(venv, six), env)
                    groups[tool].append(venv)
            fresh = new_venv(scratch / "empty", env)
            empty = du([fresh])
            disk["nwcache"] = du([*groups["nwcache"], Path(env["NWCACHE_HOME"])])
            disk["uv"] = du([*groups["uv"], Path(env["UV_CACHE_DIR"])])
            disk["pip"] = du(groups["pip"])
            disk["empty venv"] = empty
        finally:
            daemon.stop()
    report = [
        "# Install benchmark",
        "",
        f"Generated by `make bench-install` (`python -m bench.install`) on {dt.date.today().isoformat()}, "
        f"{time.monotonic() - started:.0f} s. Not a test: wheels from PyPI downloaded when it runs.",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {memory_total()} RAM; load average at the start {load_at_start}, at the end {load_average()}. "
        f"Python {platform.python_version()}, {uv_version}, pip {pip_version(pip_environment())}, kernel {platform.release()}. "
        "pip with PIP_CONFIG_FILE=/dev/null and no PIP_* index variables; uv with UV_NO_CONFIG=1, its cache on the "
        "same file system; PYTHONDONTWRITEBYTECODE=1 for all (pip and uv compile no bytecode; nwcache's daemon "
        "compiles each new source once per interpreter into its store, docs/BYTECODE.md, which the cold row "
        "includes); dependencies off; local "
        "wheel files. Venvs are created beforehand (`python -m venv --without-pip`); every time is wall time of the "
        "command, process start included (for nwcache: the client, registering the venv, the install; the daemon "
        "was already running). nwcache runs as a user installs it: a wheel of this checkout (`uv build`) with its "
        "locked dependencies, byte-compiled (`uv pip install --compile-bytecode`), in a venv of its own; the daemon "
        "and the client run from there.",
        "",
        "| install | nwcache | uv | pip | nwcache / uv |",
        "| --- | ---: | ---: | ---: | ---: |",
        *[
            f"| {label} | {n * 1000:.0f} ms | {u * 1000:.0f} ms | {p * 1000:.0f} ms | {n / u:.2f}x |"
            for label, n, u, p in rows
        ],
        "",
        f"Target (numpy into a new venv): nwcache at most half of uv's time: "
        f"{'met' if rows[0][1] <= rows[0][2] / 2 else 'NOT met'} ({rows[0][1] / rows[0][2]:.2f}x).",
        "",
        f"Where nwcache's warm install goes (medians of {args.runs}, same run): the client's start alone "
        f"(`nwcache install` of a missing file, which exits before connecting) "
        f"{statistics.median(parts['client']) * 1000:.0f} ms; the daemon's part (registering a new venv and "
        f"installing numpy into it, requested from the benchmark's process) "
        f"{statistics.median(parts['daemon']) * 1000:.0f} ms.",
        "",
        f"## Disk: {args.venvs} venvs with the same six wheels ({', '.join(n for n, _ in WHEELS)})",
        "",
        "One `du -x -s -B1 -c` over the venvs and the tool's store or cache (hard links counted once; -x: not into the view, whose files are the blobs again).",
        "",
        "| tool | bytes | per venv |",
        "| --- | ---: | ---: |",
        *[
            f"| {tool} | {disk[tool] / MiB:.1f} MiB | {disk[tool] / args.venvs / MiB:.2f} MiB |"
            for tool in ("nwcache", "uv", "pip")
        ],
        "",
        f"An empty venv takes {disk['empty venv'] / MiB:.2f} MiB by itself; nwcache's figure includes its whole "
        "NWCACHE_HOME (index, blobs, copy-on-write layers).",
    ]
    args.out.write_text("\n".join(report) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
