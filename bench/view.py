"""The FUSE view against the same files on the native disk (a benchmark, not a test).

    python -m bench.view [--out docs/BENCH-VIEW.md] [--cache DIR] [--envs 100] [--runs 7]

In one run, on a temporary NWCACHE_HOME beside the checkout, with the view
served by this process (daemon.runner.ServiceThread) and every measured
workload in a child process:

- `import numpy` and `import pandas`: the first import right after the install,
  then warm (median of --runs, alternating native and view), in a venv where
  pip installed the wheels (native) and in a registered venv where nwcache did
  (view);
- open+read of every file of a 10,000-file tree, cold (after dropping the
  kernel's caches; root only) and warm;
- sequential read of a 200 MB file, cold and warm;
- the serving process's RSS after registering --envs venvs holding numpy and
  pandas (and their dependencies).

pip runs with PIP_CONFIG_FILE=/dev/null and no PIP_* index variables; the
measured imports run with PYTHONDONTWRITEBYTECODE unset, so that both venvs
use bytecode (pip compiles it at install; nwcache's daemon compiles it at
install too, once per interpreter, and the view serves it: docs/BYTECODE.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pyfuse3

from bench.common import (
    DEFAULT_CACHE,
    MB,
    ROOT,
    cpu_model,
    fetch_wheel,
    load_average,
    memory_total,
    pip_environment,
)
from nwcache.archive.sources import TreeSource
from nwcache.archive.writers import write_v2
from nwcache.daemon.runner import ServiceThread

DEFAULT_OUT = ROOT / "docs" / "BENCH-VIEW.md"
WHEELS = (
    ("numpy", "2.1.3"),
    ("pandas", "2.2.3"),
    ("python-dateutil", "2.9.0.post0"),
    ("pytz", "2024.2"),
    ("tzdata", "2024.2"),
    ("six", "1.17.0"),
)
TREE_FILES = 10_000
BIG_FILE = 200 * MB

_READ_ALL = """
import os, sys, time
start = time.perf_counter()
total = 0
for dirpath, _, names in os.walk(sys.argv[1]):
    for name in names:
        with open(os.path.join(dirpath, name), "rb") as fh:
            total += len(fh.read())
print(time.perf_counter() - start, total)
"""
_READ_SEQ = """
import sys, time
start = time.perf_counter()
total = 0
with open(sys.argv[1], "rb", buffering=0) as fh:
    while block := fh.read(1 << 20):
        total += len(block)
print(time.perf_counter() - start, total)
"""


def child_env() -> dict[str, str]:
    env = pip_environment()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def drop_caches() -> bool:
    if os.geteuid() != 0:
        return False
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    return True


def wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=child_env(), capture_output=True)
    return time.perf_counter() - start


def inner(python: Path, script: str, target: Path) -> tuple[float, int]:
    done = subprocess.run(
        [str(python), "-c", script, str(target)], check=True, env=child_env(), capture_output=True, text=True
    )
    seconds, total = done.stdout.split()
    return float(seconds), int(total)


def site_of(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def make_tree_wheel(root: Path, name: str, files: dict[str, int], out: Path) -> Path:
    tree = root / name
    info = tree / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "WHEEL").write_text(
        "Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    for rel, size in files.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    wheel = out / f"{name}-1.0-py3-none-any.whl"
    write_v2(TreeSource(tree), wheel, level=3)
    return tree


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.view", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--envs", type=int, default=100)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    started = time.monotonic()
    env = pip_environment()
    args.cache.mkdir(parents=True, exist_ok=True)
    wheels = [fetch_wheel(name, version, args.cache, env)[0] for name, version in WHEELS]
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-view-", dir=ROOT / "bench") as scratch_name:
        scratch = Path(scratch_name)
        native = scratch / "native"
        subprocess.run([sys.executable, "-m", "venv", str(native)], check=True, capture_output=True)
        subprocess.run(
            [
                str(native / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--no-index",
                *map(str, wheels),
            ],
            check=True,
            env=env,
        )
        viewed = scratch / "viewed"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(viewed)], check=True)
        out = scratch / "wheels"
        out.mkdir()
        small = {f"smalltree/d{i % 100:02d}/f{i:05d}.dat": 1024 + (i * 37) % 7168 for i in range(TREE_FILES)}
        small_tree = make_tree_wheel(scratch / "src", "smalltree", small, out)
        big_tree = make_tree_wheel(scratch / "src", "bigfile", {"bigfile/data.bin": BIG_FILE}, out)
        shutil.copytree(small_tree / "smalltree", site_of(native) / "smalltree")
        shutil.copytree(big_tree / "bigfile", site_of(native) / "bigfile")
        with ServiceThread(scratch / "home", scratch / "home" / "view") as running:
            service = running.service
            assert service is not None
            running.call(service.register, viewed)
            t0 = time.perf_counter()
            running.call(service.install, viewed, wheels)
            install_seconds = time.perf_counter() - t0
            running.call(service.install, viewed, sorted(out.glob("*.whl")))
            py_native, py_view = native / "bin" / "python", viewed / "bin" / "python"
            for module in ("numpy", "pandas"):
                first_n = wall([str(py_native), "-c", f"import {module}"])
                first_v = wall([str(py_view), "-c", f"import {module}"])
                warm_n: list[float] = []
                warm_v: list[float] = []
                for _ in range(args.runs):
                    warm_n.append(wall([str(py_native), "-c", f"import {module}"]))
                    warm_v.append(wall([str(py_view), "-c", f"import {module}"]))
                n, v = statistics.median(warm_n), statistics.median(warm_v)
                rows.append(
                    (
                        f"first `import {module}` after install",
                        f"{first_n * 1000:.0f} ms",
                        f"{first_v * 1000:.0f} ms",
                        f"{first_v / first_n:.2f}x",
                    )
                )
                rows.append(
                    (
                        f"warm `import {module}` (median of {args.runs})",
                        f"{n * 1000:.0f} ms",
                        f"{v * 1000:.0f} ms",
                        f"{v / n:.2f}x",
                    )
                )
            for label, script, rel, unit in (
                (f"open+read {TREE_FILES} files", _READ_ALL, "smalltree", "s"),
                ("sequential read of 200 MB", _READ_SEQ, "bigfile/data.bin", "MB/s"),
            ):
                for state in ("cold", "warm"):
                    results: list[tuple[float, int]] = []
                    for python, site in ((py_native, site_of(native)), (py_view, site_of(viewed))):
                        if state == "cold" and not drop_caches():
                            break
                        if state == "warm":
                            inner(python, script, site / rel)  # a cold run may have evicted it
                        results.append(inner(python, script, site / rel))
                    if len(results) < 2:
                        notes.append(f"{label} {state}: skipped (dropping caches needs root)")
                        continue
                    (tn, bn), (tv, bv) = results
                    assert bn == bv, f"{label}: {bn} != {bv} bytes"
                    if unit == "MB/s":
                        rows.append(
                            (
                                f"{label}, {state}",
                                f"{bn / tn / MB:.0f} MB/s",
                                f"{bv / tv / MB:.0f} MB/s",
                                f"{tv / tn:.2f}x",
                            )
                        )
                    else:
                        rows.append(
                            (
                                f"{label}, {state}",
                                f"{tn * 1000:.0f} ms",
                                f"{tv * 1000:.0f} ms",
                                f"{tv / tn:.2f}x",
                            )
                        )
            before = rss_kib()
            venvs = scratch / "many"
            t0 = time.perf_counter()
            for index in range(args.envs):
                venv = venvs / f"v{index:03d}"
                subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
                running.call(service.install, venv, wheels)
            many_seconds = time.perf_counter() - t0
            after = rss_kib()
            view_stats = service.view.stats
            faults = view_stats.faults
            mode = service.view.mode
    report = [
        "# View benchmark",
        "",
        f"Generated by `make bench-view` (`python -m bench.view`) on {dt.date.today().isoformat()}, "
        f"{time.monotonic() - started:.0f} s. Not a test: numpy {WHEELS[0][1]} and pandas {WHEELS[1][1]} from PyPI, "
        "downloaded when it runs.",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {memory_total()} RAM; load average at the end {load_average()}. "
        f"Python {platform.python_version()}, pyfuse3 {pyfuse3.__version__}, kernel {platform.release()}; "
        f"the view in {mode} mode (NWCACHE_VIEW_MODE, docs/VIEW.md). "
        "pip ran with PIP_CONFIG_FILE=/dev/null and no PIP_* index variables; the measured children ran with "
        "PYTHONDONTWRITEBYTECODE unset (bytecode used in both venvs: pip compiled it; nwcache's daemon compiled "
        "it at install and the view serves the shared pycs). Cold = after `echo 3 > /proc/sys/vm/drop_caches`; warm = the second of two reads in a row.",
        "",
        "Native: a venv where pip installed the wheels, on the checkout's file system. View: a registered venv "
        "(site-packages a symlink into the view) where nwcache installed the same wheels; the serving daemon is "
        "this benchmark's process. Import times are wall time of `python -c 'import X'`, interpreter start "
        "included; read figures are timed inside the child.",
        "",
        "| measurement | native | view | view / native |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        f"Install of the six wheels into the registered venv (ingest included): {install_seconds:.1f} s.",
        "",
        f"Daemon RSS: {before / 1024:.0f} MiB before registering {args.envs} more venvs, {after / 1024:.0f} MiB "
        f"after each got numpy, pandas and their dependencies ({(after - before) / 1024 / args.envs * 1024:.0f} KiB "
        f"per environment; {many_seconds:.0f} s for creating, registering and installing them). Faults counted "
        f"by the view during the run: {faults}.",
    ]
    if notes:
        report += ["", *[f"- {n}" for n in notes]]
    args.out.write_text("\n".join(report) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
