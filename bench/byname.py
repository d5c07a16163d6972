"""Install by name against uv and pip (a benchmark, not a test; it downloads
from PyPI).

    python -m bench.byname [--out docs/BENCH-BYNAME.md] [--runs 3] [--venvs 10]

nwcache runs as a user installs it (bench/install.py's install_nwcache: a
wheel of this checkout in a venv of its own, byte-compiled), with a real
daemon on a temporary NWCACHE_HOME. Every tool resolves from PyPI
(`--index-url https://pypi.org/simple`), with no configuration (uv:
UV_NO_CONFIG=1, pip: PIP_CONFIG_FILE=/dev/null), PYTHONDONTWRITEBYTECODE=1.

- `install pandas scikit-learn` into a new venv, resolution included:
  cold (empty store, empty uv and pip caches) and warm (everything stored
  and cached), online and with --offline (nwcache and uv), nwcache also
  with its install-time bytecode off, the tools interleaved in each run,
  medians of --runs;
- `sync` of a lock of about 50 packages (uv pip compile of LOCK_REQUIREMENTS
  for this interpreter) into --venvs fresh venvs one after the other, warm
  (one sync into a venv of its own first), against `uv pip sync`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import install as base
from bench.common import PYPI_INDEX, ROOT, cpu_model, load_average, memory_total

DEFAULT_OUT = ROOT / "docs" / "BENCH-BYNAME.md"
REQUESTED = ["pandas", "scikit-learn"]
LOCK_REQUIREMENTS = [
    "pandas",
    "scikit-learn",
    "matplotlib",
    "requests",
    "jinja2",
    "sqlalchemy",
    "pydantic",
    "httpx",
    "rich",
    "click",
    "pytest",
    "pyyaml",
    "flask",
    "boto3",
]


def reset(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.byname", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--venvs", type=int, default=10)
    args = parser.parse_args(argv)
    load_start = load_average()
    scratch = Path(tempfile.mkdtemp(prefix="bench-byname-", dir=ROOT / "bench"))
    daemon: base.Daemon | None = None
    try:
        base.NWCACHE = base.install_nwcache(scratch)
        env = base.tool_env(scratch)
        env["PIP_CACHE_DIR"] = str(scratch / "pip-cache")
        env["XDG_CACHE_HOME"] = str(scratch / "xdg-cache")
        uv = str(base.UV)
        home, uv_cache, pip_cache = (
            Path(env["NWCACHE_HOME"]),
            Path(env["UV_CACHE_DIR"]),
            Path(env["PIP_CACHE_DIR"]),
        )
        counter = iter(range(10**6))

        def venv(tool: str) -> Path:
            return base.new_venv(scratch / "venvs" / f"{tool}-{next(counter)}", env)

        def nwcache(target: Path) -> list[str]:
            return [str(base.NWCACHE), "install", *REQUESTED, "--index-url", PYPI_INDEX, "--env", str(target)]

        def uv_cmd(target: Path) -> list[str]:
            return [
                uv,
                "pip",
                "install",
                "-q",
                "--index-url",
                PYPI_INDEX,
                "--python",
                str(target / "bin" / "python"),
                *REQUESTED,
            ]

        def pip_cmd(target: Path) -> list[str]:
            return [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(target / "bin" / "python"),
                "install",
                "-q",
                "--index-url",
                PYPI_INDEX,
                *REQUESTED,
            ]

        tools = {"nwcache": nwcache, "uv": uv_cmd, "pip": pip_cmd, "nwcache, bytecode off": nwcache}
        cold: dict[str, list[float]] = {t: [] for t in tools}
        warm: dict[str, list[float]] = {t: [] for t in tools}
        offline: dict[str, list[float]] = {t: [] for t in ("nwcache", "uv")}
        # nwcache with its kept resolution bypassed: uv resolves again, as in uv's own warm run.
        refresh: dict[str, list[float]] = {t: [] for t in ("nwcache", "uv")}
        for run in range(args.runs):
            for tool, command in tools.items():
                # Cold: nothing stored, nothing cached (the daemon restarts on an empty home).
                if daemon is not None:
                    daemon.stop()
                    daemon = None
                for path in (home, uv_cache, pip_cache, Path(env["XDG_CACHE_HOME"])):
                    reset(path)
                daemon_env = {**env, "NWCACHE_BYTECODE": "off" if "bytecode off" in tool else "0"}
                daemon = base.Daemon(daemon_env)
                daemon.start()
                target = venv(tool)
                cold[tool].append(base.timed(command(target), env))
                print(f"run {run + 1}: cold {tool} {cold[tool][-1]:.2f} s", file=sys.stderr)
                target = venv(tool)
                warm[tool].append(base.timed(command(target), env))
                print(f"run {run + 1}: warm {tool} {warm[tool][-1]:.2f} s", file=sys.stderr)
                if tool in refresh:
                    target = venv(tool)
                    argv = command(target) + (["--refresh"] if tool == "nwcache" else [])
                    refresh[tool].append(base.timed(argv, env))
                    print(f"run {run + 1}: warm --refresh {tool} {refresh[tool][-1]:.2f} s", file=sys.stderr)
                if tool in offline:  # resolved from the tools' caches, no request to the index
                    target = venv(tool)
                    offline[tool].append(base.timed([*command(target), "--offline"], env))
                    print(f"run {run + 1}: offline {tool} {offline[tool][-1]:.2f} s", file=sys.stderr)
        versions = subprocess.run(
            [uv, "pip", "list", "--python", str(target / "bin" / "python"), "--format", "freeze"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()

        # The lock, and sync into fresh venvs (warm: one sync of each tool first).
        locks = scratch / "lock"
        locks.mkdir()
        (locks / "requirements.in").write_text("\n".join(LOCK_REQUIREMENTS) + "\n")
        for out in ("pylock.toml", "requirements.txt"):
            subprocess.run(
                [
                    uv,
                    "pip",
                    "compile",
                    "-q",
                    str(locks / "requirements.in"),
                    "--index-url",
                    PYPI_INDEX,
                    "--python",
                    sys.executable,
                    "-o",
                    str(locks / out),
                ],
                env=env,
                check=True,
            )
        packages = sum(1 for line in (locks / "requirements.txt").read_text().splitlines() if "==" in line)
        sync_tools = {
            "nwcache": lambda t: [str(base.NWCACHE), "sync", str(locks / "pylock.toml"), "--env", str(t)],
            "uv": lambda t: (
                [
                    uv,
                    "pip",
                    "sync",
                    "-q",
                    "--index-url",
                    PYPI_INDEX,
                    "--python",
                    str(t / "bin" / "python"),
                    str(locks / "requirements.txt"),
                ]
            ),
        }
        for command in sync_tools.values():
            base.timed(command(venv("prime")), env)
        sync_total: dict[str, list[float]] = {t: [] for t in sync_tools}
        for _ in range(2):
            for tool, command in sync_tools.items():
                targets = [venv(tool) for _ in range(args.venvs)]
                start = time.perf_counter()
                for target in targets:
                    base.timed(command(target), env)
                sync_total[tool].append(time.perf_counter() - start)
                print(f"sync {tool} x{args.venvs}: {sync_total[tool][-1]:.2f} s", file=sys.stderr)
    finally:
        if daemon is not None:
            daemon.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    def med(values: list[float]) -> float:
        return statistics.median(values)

    def row(label: str, figures: dict[str, list[float]]) -> str:
        uv_time = med(figures["uv"])
        cells = [f"{med(figures[t]):.2f} s" for t in figures] + ["-"] * (4 - len(figures))
        return f"| {label} | " + " | ".join(cells) + f" | {med(figures['nwcache']) / uv_time:.2f}x |"

    lines = [
        "# Install by name: nwcache against uv and pip",
        "",
        f"`python -m bench.byname --runs {args.runs} --venvs {args.venvs}` (`make bench-byname`), "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Each figure is the median of {args.runs} runs, the tools "
        "interleaved in every run; every command resolves from PyPI (network), the client's start and, for "
        "nwcache, registering the new venv included.",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores, {memory_total()} RAM, shared with other developers",
        f"- Load average (1, 5, 15 min): {load_start} at the start, {load_average()} at the end",
        f"- Python {sys.version.split()[0]}; uv {subprocess.run([uv, '--version'], capture_output=True, text=True, check=False).stdout.split()[1]}",
        f"- Installed by `install {' '.join(REQUESTED)}`: {', '.join(versions)}",
        "",
        "## `install pandas scikit-learn` into a new venv",
        "",
        "| case | nwcache | uv pip install | pip install | nwcache, NWCACHE_BYTECODE=off | nwcache / uv |",
        "| --- | --- | --- | --- | --- | --- |",
        row("cold: empty store and caches", cold),
        row("warm: everything stored and cached", warm),
        row("warm, nwcache `--refresh` (uv resolves again; uv as in the row above)", refresh),
        row("warm and `--offline` (resolved from uv's cache)", offline),
        "",
        "Resolution is uv's in both tools: online, uv sends a revalidation request for every project "
        "page and wheel metadata it uses (the index here sends no Cache-Control); the `--offline` row "
        "shows each tool without those requests.",
        "",
        "Targets (issue 15): warm at most 0.5x of uv, cold at most 1.0x. nwcache's daemon compiles every "
        "new source once per interpreter into its store, in the background after the install returns "
        "(docs/BYTECODE.md; uv and pip compile nothing here, PYTHONDONTWRITEBYTECODE=1); the last column "
        "is the same install with it off. "
        + f"Warm: {med(warm['nwcache']) / med(warm['uv']):.2f}x "
        + ("(met)" if med(warm["nwcache"]) <= 0.5 * med(warm["uv"]) else "(not met)")
        + f"; cold: {med(cold['nwcache']) / med(cold['uv']):.2f}x "
        + ("(met)." if med(cold["nwcache"]) <= med(cold["uv"]) else "(not met)."),
        "",
        f"## `sync` of a {packages}-package lock into {args.venvs} fresh venvs, one after the other (warm)",
        "",
        "| | nwcache sync (pylock.toml) | uv pip sync (requirements.txt) | nwcache / uv |",
        "| --- | --- | --- | --- |",
        f"| {args.venvs} venvs | {med(sync_total['nwcache']):.2f} s | {med(sync_total['uv']):.2f} s | "
        f"{med(sync_total['nwcache']) / med(sync_total['uv']):.2f}x |",
        "",
        f"Lock: `uv pip compile` of {', '.join(LOCK_REQUIREMENTS)} for this interpreter; medians of 2 rounds.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
