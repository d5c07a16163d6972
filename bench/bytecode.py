"""Shared bytecode against venvs with their own __pycache__ (a benchmark, not a test).

    python -m bench.bytecode [--out docs/BENCH-BYTECODE.md] [--cache DIR] [--runs 7]

In one run, on numpy, pandas and scipy with the dependencies pandas imports
(local wheel files from PyPI, dependencies off):

- compile cost: `pip install` (which compiles) against `pip install
  --no-compile`; `uv pip install --compile-bytecode` against plain `uv pip
  install` (warm uv cache, hardlinks); `nwcache install` into a new venv with
  an empty store (the daemon compiles, at most one worker per core) and the
  same wheels into a second venv of the same interpreter;
- where the time goes: the FUSE requests one warm import makes (the view's
  own counters); the median time of an open and close of a pyc, and of a
  directory listing, on the pip venv's disk, through the view, and through
  the smallest pyfuse3 filesystem (bench/floor_fs.py: constant answers, a
  round trip for every request); the same warm imports with
  the importer and the daemon on one CPU; and the time the import system
  spends opening and reading pycs, listing directories, loading extension
  modules and stat-ing, timed inside the importing process;
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
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_CACHE, ROOT, cpu_model, fetch_wheel, load_average, memory_total, pip_version
from bench.install import UV, Daemon, new_venv, pip_install, timed, tool_env, uv_install
from nwcache.daemon.linking import is_mount_point
from nwcache.daemon.mount import clear_stale_mount

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
LOOP = """
import os, sys, time
what, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
samples = []
for _ in range(count):
    start = time.perf_counter_ns()
    if what == "open":
        os.close(os.open(path, os.O_RDONLY))
    else:
        os.listdir(path)
    samples.append(time.perf_counter_ns() - start)
samples.sort()
print(samples[len(samples) // 2])
"""
# Times what the import system does with files during one import, by
# wrapping the names importlib's path finder and loaders call (CPython 3.9+).
ACCOUNT = """
import json, posix, sys, time
from importlib import _bootstrap_external as external

spent = {"pyc": 0.0, "listdir": 0.0, "extension": 0.0, "stat": 0.0}
calls = dict.fromkeys(spent, 0)


def timed(kind, fn):
    def run(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[kind] += time.perf_counter() - start
            calls[kind] += 1
    return run


class _Read:
    def __init__(self, data):
        self.data = data
    def read(self):
        return self.data
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return False


real_open_code = external._io.open_code


def open_code(path):  # open, read whole, close: what get_data does with it
    with real_open_code(path) as fh:
        return _Read(fh.read())


io_module = type(sys)("_io_timed")
io_module.__dict__.update(external._io.__dict__)
io_module.open_code = timed("pyc", open_code)
external._io = io_module
os_module = type(sys)("_os_timed")
os_module.__dict__.update(posix.__dict__)
os_module.listdir = timed("listdir", posix.listdir)
os_module.stat = timed("stat", posix.stat)
external._os = os_module
external.ExtensionFileLoader.create_module = timed("extension", external.ExtensionFileLoader.create_module)
start = time.perf_counter()
__import__(sys.argv[1])
spent["import"] = time.perf_counter() - start
print(json.dumps({"spent": spent, "calls": calls}))
"""
ACCOUNTED = (
    ("pyc", "opening and reading pycs"),
    ("listdir", "listing directories"),
    ("extension", "loading extension modules"),
    ("stat", "stat"),
)
OPEN_CLOSES = 5000
LISTINGS = 1000
LISTED = Path("numpy") / "_core"  # a package directory an import lists


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


def import_time(venv: Path, module: str, env: dict[str, str], cpu: int | None = None) -> float:
    on_cpu = [] if cpu is None else ["taskset", "-c", str(cpu)]
    return timed([*on_cpu, str(venv / "bin" / "python"), "-c", f"import {module}"], env)


def warm_medians(
    module: str, venvs: Sequence[Path], env: dict[str, str], runs: int, cpu: int | None = None
) -> list[float]:
    """Median import time per venv, the venvs taking turns run by run so that
    a drift of the machine weighs on each alike."""
    times: list[list[float]] = [[] for _ in venvs]
    for _ in range(runs):
        for own, venv in zip(times, venvs, strict=True):
            own.append(import_time(venv, module, env, cpu))
    return [statistics.median(own) for own in times]


def accounted(venv: Path, module: str, env: dict[str, str], runs: int) -> dict[str, tuple[float, int]]:
    """Median seconds (and calls) inside each kind of file work of one warm
    import, and of the whole import, in `venv`."""
    samples: list[dict[str, Any]] = []
    for _ in range(runs):
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c", ACCOUNT, module],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        samples.append(json.loads(done.stdout))
    return {
        kind: (statistics.median(s["spent"][kind] for s in samples), samples[0]["calls"].get(kind, 1))
        for kind in (*(k for k, _ in ACCOUNTED), "import")
    }


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` onto `cpus` (threads made later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            pass  # a worker thread that just ended


def loop_us(what: str, path: Path, count: int, env: dict[str, str]) -> float:
    """Median microseconds of one open and close ("open") or one listing
    ("list") of `path`, after as many to warm up."""
    argv = [sys.executable, "-c", LOOP, what, str(path), str(count)]
    subprocess.run(argv, env=env, capture_output=True, check=True)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return int(done.stdout) / 1000


def floor_us(scratch: Path, env: dict[str, str], entries: int) -> tuple[float, float]:
    """The same loops on the smallest pyfuse3 filesystem (bench/floor_fs.py),
    its directory holding `entries` files: (open and close, listing)."""
    mountpoint = scratch / "floor"
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.floor_fs", str(mountpoint), str(entries)],
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not is_mount_point(mountpoint):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("bench.floor_fs did not mount")
            time.sleep(0.05)  # polling for the mount, bounded by the deadline above
        return (
            loop_us("open", mountpoint / "floor", OPEN_CLOSES, env),
            loop_us("list", mountpoint / "dir", LISTINGS, env),
        )
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            clear_stale_mount(mountpoint)


def requests_of(env: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = json.loads(nwcache(env, "stats", "--json"))["view"]["requests"]
    return counts


def du(path: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())


def gap_notes(
    rows: list[tuple[str, float, float, float]],
    requests: list[tuple[str, dict[str, int]]],
    latency: dict[str, float],
    listing: dict[str, float],
    pinned: list[tuple[str, float, float]],
    accounts: list[tuple[str, dict[str, tuple[float, int]], dict[str, tuple[float, int]]]],
    runs: int,
) -> list[str]:
    """Set the warm gap against what its requests cost, apart and on one CPU."""
    per_request = latency["the view (nwcache)"] / 2
    floor = latency["the smallest pyfuse3 filesystem"] / 2
    warm = {
        label.split("`")[1].removeprefix("import "): (p, s)
        for label, p, s, _ in rows
        if label.startswith("warm")
    }
    lines = []
    for module, delta in requests:
        pip_s, nw_s = warm[module]
        count = sum(delta.values())
        lines.append(
            f"- `import {module}`: {(nw_s - pip_s) * 1000:.0f} ms slower than the pip venv; its {count} requests "
            f"at {per_request:.0f} µs each (the open and close loop above) come to "
            f"{count * per_request / 1000:.0f} ms ({count * floor / 1000:.0f} ms at the pyfuse3 floor of "
            f"{floor:.0f} µs)."
        )
    apart = [warm[module][1] / warm[module][0] for module, _, _ in pinned]
    together = [nw / pip for _, pip, nw in pinned]
    lines += [
        "",
        "The same warm imports with the importer and the daemon both on CPU 0 (`taskset`, median of the same "
        "number of runs; the pip venv's importer on CPU 0 too):",
        "",
        "| warm import, one CPU | pip venv | nwcache | nwcache / pip |",
        "| --- | ---: | ---: | ---: |",
        *[f"| `import {m}` | {p * 1000:.0f} ms | {n * 1000:.0f} ms | {n / p:.2f}x |" for m, p, n in pinned],
        "",
    ]
    shares = [
        sum(delta.values()) * per_request / 1e6 / (warm[module][1] - warm[module][0])
        for module, delta in requests
        if warm[module][1] > warm[module][0]
    ]
    lines += [
        f"Time spent inside the import system's file work during one warm import, timed in the importing "
        f"process where importlib calls it (median of {runs} runs; calls in brackets):",
        "",
        "| import | work | pip venv | nwcache | difference |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    explained: list[float] = []
    for module, pip_account, nw_account in accounts:
        for kind, label in ACCOUNTED:
            p, calls = pip_account[kind]
            n, _ = nw_account[kind]
            lines.append(
                f"| `{module}` | {label} ({calls}) | {p * 1000:.1f} ms | {n * 1000:.1f} ms | {(n - p) * 1000:+.1f} ms |"
            )
        p, n = pip_account["import"][0], nw_account["import"][0]
        extra = sum(nw_account[k][0] - pip_account[k][0] for k, _ in ACCOUNTED)
        lines.append(
            f"| `{module}` | the whole import | {p * 1000:.1f} ms | {n * 1000:.1f} ms | {(n - p) * 1000:+.1f} ms |"
        )
        if n > p:
            explained.append(extra / (n - p))
    lines += [
        "",
        f"On one CPU the view is {min(together):.2f}x to {max(together):.2f}x of the pip venv; on two, "
        f"{min(apart):.2f}x to {max(apart):.2f}x. An open and close of a pyc takes "
        f"{latency['the view (nwcache)']:.1f} µs on the view against "
        f"{latency['the smallest pyfuse3 filesystem']:.0f} µs on the smallest pyfuse3 filesystem, which answers "
        "every open with a round trip: in kernel-cached mode (the project's pyfuse3 patch, docs/VIEW.md) the kernel "
        "opens and lists the view's files itself and the shared pycs are symlinks into the store, so a warm "
        "import makes (almost) no request. "
        + (
            f"Priced at the rate of a tight loop of opens, the requests account for {min(shares):.0%} to "
            f"{max(shares):.0%} of the warm gap; timed inside the import, the file work above accounts for "
            f"{min(explained):.0%} to {max(explained):.0%} of it (with gaps of a few milliseconds these shares "
            "are within the spread between runs)."
            if shares and explained
            else "No warm import is slower than the pip venv's."
        ),
    ]
    return lines


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
            # The install returns once served; bytecode compiles after it, in
            # the background: this row is the install and that compile.
            deadline = time.monotonic() + 600
            while json.loads(nwcache(shared_env, "stats", "--json"))["bytecode_pending"]:
                if time.monotonic() > deadline:
                    raise RuntimeError("bytecode still pending after 600 s")
                time.sleep(0.1)
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
                warm = warm_medians(module, (pip_venv, shared, lazy), plain, args.runs)
                rows.append((f"first `import {module}`", first[0], first[1], first[2]))
                rows.append((f"warm `import {module}` (median of {args.runs})", warm[0], warm[1], warm[2]))
            pip_pycs = du(pip_venv, "*.pyc")

            requests: list[tuple[str, dict[str, int]]] = []
            for module in IMPORTS:
                before = requests_of(shared_env)
                import_time(shared, module, plain)
                after_import = requests_of(shared_env)
                delta = {op: n - before.get(op, 0) for op, n in after_import.items() if n > before.get(op, 0)}
                requests.append((module, delta))
            accounts = [
                (
                    module,
                    accounted(pip_venv, module, plain, args.runs),
                    accounted(shared, module, plain, args.runs),
                )
                for module in IMPORTS
            ]
            # The same warm imports with the importer and the daemon on one
            # CPU: what a request costs without a wake-up on another CPU.
            everywhere = os.sched_getaffinity(0)
            assert shared_daemon.process is not None
            pin(shared_daemon.process.pid, {0})
            try:
                pinned: list[tuple[str, float, float]] = []
                for module in IMPORTS:
                    pip_s, shared_s = warm_medians(module, (pip_venv, shared), plain, args.runs, cpu=0)
                    pinned.append((module, pip_s, shared_s))
            finally:
                pin(shared_daemon.process.pid, everywhere)
            pyc = Path("numpy") / "__pycache__" / f"__init__.{sys.implementation.cache_tag}.pyc"
            site = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
            entries = len(os.listdir(pip_venv / site / LISTED))
            floor_open, floor_list = floor_us(scratch, plain, entries)
            latency = {
                "the pip venv (ext4)": loop_us("open", pip_venv / site / pyc, OPEN_CLOSES, plain),
                "the view (nwcache)": loop_us("open", shared / site / pyc, OPEN_CLOSES, plain),
                "the smallest pyfuse3 filesystem": floor_open,
            }
            listing = {
                "the pip venv (ext4)": loop_us("list", pip_venv / site / LISTED, LISTINGS, plain),
                "the view (nwcache)": loop_us("list", shared / site / LISTED, LISTINGS, plain),
                "the smallest pyfuse3 filesystem": floor_list,
            }
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
        "",
        "## Where the time goes",
        "",
        "FUSE requests the view answered during one warm import (the daemon's counters, `nwcache stats --json`):",
        "",
        "| import | requests | by operation |",
        "| --- | ---: | --- |",
        *[
            f"| `{module}` | {sum(delta.values())} | "
            f"{', '.join(f'{op} {n}' for op, n in sorted(delta.items(), key=lambda item: -item[1]))} |"
            for module, delta in requests
        ],
        "",
        f"Median time of one `open` and `close` of a pyc ({OPEN_CLOSES:,} in a row, after as many to warm up); "
        "through FUSE that is two requests, open and release:",
        "",
        "| file on | open + close |",
        "| --- | ---: |",
        *[f"| {label} | {us:.1f} µs |" for label, us in latency.items()],
        "",
        f"Median time of one `os.listdir` of a directory of {entries} entries (`{LISTED}` of the pip venv and "
        f"of the view; a directory of as many files on the smallest pyfuse3 filesystem), {LISTINGS:,} in a row "
        "after as many to warm up; through FUSE that is five requests (opendir, readdir twice, releasedir, and "
        "a getattr because a listing invalidates the directory's atime), with every entry's attributes in the "
        "readdir reply:",
        "",
        "| directory on | listing |",
        "| --- | ---: |",
        *[f"| {label} | {us:.1f} µs |" for label, us in listing.items()],
        "",
        *gap_notes(rows, requests, latency, listing, pinned, accounts, args.runs),
    ]
    args.out.write_text("\n".join(report) + "\n")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
