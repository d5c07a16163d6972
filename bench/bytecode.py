"""Shared bytecode against venvs with their own __pycache__ (a benchmark, not a test).

    python -m bench.bytecode [--out docs/BENCH-BYTECODE.md] [--cache DIR] [--runs 7]

In one run, on numpy, pandas and scipy with the dependencies pandas imports
(local wheel files from PyPI, dependencies off):

- compile cost: `pip install` (which compiles) against `pip install
  --no-compile`; `uv pip install --compile-bytecode` against plain `uv pip
  install` (warm uv cache, hardlinks); `nwcache install` into a new venv with
  an empty store (the daemon compiles, at most one worker per core) and the
  same wheels into a second venv of the same interpreter;
- imports: `import numpy`, `import pandas`, `import scipy.stats`, first (the
  first run after the install) and warm (median of --runs), in the pip venv
  (its own __pycache__, written by pip), in a registered venv served by the
  view with the shared pycs, and in a registered venv of a daemon with
  bytecode off, where Python compiles on first import and writes its pycs
  into the venv's layer ("lazy").

Every child runs with PIP_CONFIG_FILE=/dev/null and no PIP_* index variable,
uv with UV_NO_CONFIG=1; PYTHONDONTWRITEBYTECODE is removed for the installs
and imports (pip must compile, and lazy Python must write its pycs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import DEFAULT_CACHE, ROOT, cpu_model, fetch_wheel, load_average, memory_total, pip_version
from bench.install import UV, Daemon, new_venv, pip_install, timed, tool_env, uv_install

DEFAULT_OUT = ROOT / "docs" / "BENCH-BYTECODE.md"
WHEELS = (
    ("numpy", "2.1.3"),
    ("pandas", "2.2.3"),
    ("scipy", "1.14.1"),
    ("python-dateutil", "2.9.0.post0"),
    ("pytz", "2024.2"),
    ("tzdata", "2024.2"),
    ("six", "1.17.0"),
)
IMPORTS = ("numpy", "pandas", "scipy.stats")
MiB = 1024 * 1024


def child_env(scratch: Path, name: str, bytecode: str) -> dict[str, str]:
    env = tool_env(scratch)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["NWCACHE_HOME"] = str(scratch / f"home-{name}")
    env["NWCACHE_SOCKET"] = str(scratch / f"run-{name}" / "daemon.sock")
    env["NWCACHE_BYTECODE"] = bytecode
    return env


def nwcache(env: dict[str, str], *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "nwcache", *argv], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def import_time(venv: Path, module: str, env: dict[str, str]) -> float:
    return timed([str(venv / "bin" / "python"), "-c", f"import {module}"], env)


def du(path: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bytecode", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    started = time.monotonic()
    load_start = load_average()
    args.cache.mkdir(parents=True, exist_ok=True)
    base_env = tool_env(Path(tempfile.gettempdir()))
    wheels = [fetch_wheel(name, version, args.cache, base_env)[0] for name, version in WHEELS]
    uv_version = subprocess.run([str(UV), "--version"], capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="bench-bytecode-", dir=ROOT / "bench") as scratch_name:
        scratch = Path(scratch_name)
        shared_env = child_env(scratch, "shared", "0")
        lazy_env = child_env(scratch, "lazy", "off")
        plain = child_env(scratch, "plain", "off")
        install: dict[str, float] = {}

        pip_venv = new_venv(scratch / "pip", plain)
        install["pip install (compiles)"] = timed(pip_install(pip_venv, wheels), plain)
        install["pip install --no-compile"] = timed(
            [*pip_install(new_venv(scratch / "pip-nc", plain), wheels), "--no-compile"], plain
        )
        timed(uv_install(new_venv(scratch / "uv-fill", plain), wheels), plain)  # fills uv's cache
        install["uv pip install --compile-bytecode (warm cache)"] = timed(
            [*uv_install(new_venv(scratch / "uv-c", plain), wheels), "--compile-bytecode"], plain
        )
        install["uv pip install (warm cache, no compile)"] = timed(
            uv_install(new_venv(scratch / "uv", plain), wheels), plain
        )

        here = [sys.executable, "-m", "nwcache"]  # this checkout, as `nwcache()` below runs it
        shared_daemon, lazy_daemon = Daemon(shared_env, here), Daemon(lazy_env, here)
        shared_daemon.start()
        lazy_daemon.start()
        try:
            shared = new_venv(scratch / "shared", shared_env)
            command = ["install", *map(str, wheels), "--env", str(shared)]
            begin = time.perf_counter()
            nwcache(shared_env, *command)
            install["nwcache install, empty store (compiles)"] = time.perf_counter() - begin
            stats = json.loads(nwcache(shared_env, "stats", "--json"))
            compiled = stats["compiled"]
            second = new_venv(scratch / "shared-2", shared_env)
            begin = time.perf_counter()
            nwcache(shared_env, "install", *map(str, wheels), "--env", str(second))
            install["nwcache install, second venv (nothing to compile)"] = time.perf_counter() - begin
            after = json.loads(nwcache(shared_env, "stats", "--json"))
            lazy = new_venv(scratch / "lazy", lazy_env)
            nwcache(lazy_env, "install", *map(str, wheels), "--env", str(lazy))

            rows: list[tuple[str, float, float, float]] = []
            for module in IMPORTS:
                first = [import_time(v, module, plain) for v in (pip_venv, shared, lazy)]
                warm = [
                    statistics.median(import_time(v, module, plain) for _ in range(args.runs))
                    for v in (pip_venv, shared, lazy)
                ]
                rows.append((f"first `import {module}`", first[0], first[1], first[2]))
                rows.append((f"warm `import {module}` (median of {args.runs})", warm[0], warm[1], warm[2]))
            pip_pycs = du(pip_venv, "*.pyc")
        finally:
            shared_daemon.stop()
            lazy_daemon.stop()

    ratios = [row[2] / row[1] for row in rows]
    warm_ratios = [row[2] / row[1] for row in rows if row[0].startswith("warm")]
    report = [
        "# Bytecode benchmark",
        "",
        f"Generated by `make bench-bytecode` (`python -m bench.bytecode`) on {dt.date.today().isoformat()}, "
        f"{time.monotonic() - started:.0f} s. Not a test: wheels from PyPI downloaded when it runs "
        f"({', '.join(f'{n} {v}' for n, v in WHEELS)}).",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {memory_total()} RAM, kernel {platform.release()}; "
        f"load average {load_start} at the start, {load_average()} at the end. Python {platform.python_version()}, "
        f"{uv_version.strip()}, pip {pip_version(plain)}. pip with PIP_CONFIG_FILE=/dev/null and no PIP_* index "
        "variables, uv with UV_NO_CONFIG=1 (cache on the same file system); PYTHONDONTWRITEBYTECODE removed for "
        "every install and import. Venvs made beforehand with `python -m venv --without-pip`; times are wall "
        "time of the whole command, process start included; the daemons were running already.",
        "",
        "## Compile cost",
        "",
        "| install of the 7 wheels | time |",
        "| --- | ---: |",
        *[f"| {label} | {seconds:.2f} s |" for label, seconds in install.items()],
        "",
        f"The daemon compiled {compiled['sources']:,} sources ({compiled['failed']} did not compile) in "
        f"{compiled['workers']} worker processes, {compiled['seconds']:.1f} s of worker wall time; the second "
        f"venv compiled {after['compiled']['sources'] - compiled['sources']} more and added "
        f"{after['bytecode_blobs'] - stats['bytecode_blobs']} pyc blobs. The store holds "
        f"{after['bytecode_bytes'] / MiB:.1f} MiB of pycs once; the pip venv holds {pip_pycs / MiB:.1f} MiB of "
        "its own, as does every other pip venv.",
        "",
        "## Imports",
        "",
        "| import | pip venv (own `__pycache__`) | nwcache (shared pycs) | nwcache / pip | lazy (Python compiles) |",
        "| --- | ---: | ---: | ---: | ---: |",
        *[
            f"| {label} | {p * 1000:.0f} ms | {s * 1000:.0f} ms | {s / p:.2f}x | {lz * 1000:.0f} ms |"
            for label, p, s, lz in rows
        ],
        "",
        f"Target: within 1.10x of the pip venv: {'met' if max(ratios) <= 1.10 else 'NOT met'} "
        f"(warm {min(warm_ratios):.2f}x to {max(warm_ratios):.2f}x, all rows up to {max(ratios):.2f}x).",
    ]
    args.out.write_text("\n".join(report) + "\n")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
