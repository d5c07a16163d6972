"""Load (not a test): 4 clients installing and uninstalling, each in its own
venv, through the real CLI, while 16 processes import modules and read files
through the view of 4 other venvs; one real daemon process.

It counts client commands and reads, and errors of either; the daemon's
descriptors (apart from blob bodies the view keeps open as a cache) before
and after the load; its RSS after a warm-up and at the end; the latency of a
read (open, read to the end, close of one file through the venv's
site-packages) at p50, p99, p99.9 and max; and the machine's load average.

Offline: the wheels are built from tests/projects/ and generated at run time.

    python -m bench.load [--seconds 600] [--report docs/BENCH-LOAD.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.common import cpu_model, memory_total
from tests.faults import FaultDaemon, build_pure_wheel, build_wheel, descriptors
from tests.helpers import clean_env, new_venv, site_of

CLIENTS = 4
READERS = 16
READER_ENVS = 4
GC_EVERY = 5  # rounds of install, list, uninstall, history; then gc
# One reader: until its deadline, open and read one random file of the venv's
# site-packages (timed), and every 20th time import a random module afresh;
# then one JSON line: reads, imports, errors, latencies (seconds). The short
# pause paces it like a process doing some work between reads.
READER = r"""
import importlib, json, os, random, sys, time
site, deadline, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(site) for f in fs if "__pycache__" not in d)
modules = sorted(
    os.path.relpath(p, site)[:-3].replace(os.sep, ".")
    for p in files
    if p.endswith(".py") and ".dist-info" not in p and not p.endswith("__init__.py")
)
latencies, imports, errors = [], 0, []
while time.time() < deadline:
    path = rng.choice(files)
    started = time.perf_counter()
    try:
        with open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
        latencies.append(time.perf_counter() - started)
    except OSError as exc:
        errors.append(f"{path}: {exc}")
    if len(latencies) % 20 == 0:
        name = rng.choice(modules)
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        try:
            importlib.import_module(name)
            imports += 1
        except Exception as exc:
            errors.append(f"import {name}: {exc!r}")
    time.sleep(0.02)
print(json.dumps({"reads": len(latencies), "imports": imports, "errors": errors[:20], "error_count": len(errors), "latencies": latencies}))
"""


def rss_kib(pid: int, kind: str = "VmRSS") -> int:
    """Resident memory in KiB: VmRSS in all, RssAnon the process's own heap,
    RssFile mapped files (the LMDB index is one)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {kind} for {pid}")


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass
class LoadResult:
    seconds: float
    clients: int
    readers: int
    commands: int = 0
    command_errors: list[str] = field(default_factory=list)
    reads: int = 0
    imports: int = 0
    read_errors: list[str] = field(default_factory=list)
    fds_start: int = 0
    fds_end: int = 0
    fds_leaked: list[str] = field(default_factory=list)
    rss_before_kib: int = 0
    rss_start_kib: int = 0
    rss_end_kib: int = 0
    anon_start_kib: int = 0
    anon_end_kib: int = 0
    file_start_kib: int = 0
    file_end_kib: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)  # 1-minute load average, sampled every 5 s

    @property
    def errors(self) -> int:
        return len(self.command_errors) + len(self.read_errors)

    @property
    def rss_growth(self) -> float:
        return (self.rss_end_kib - self.rss_start_kib) / self.rss_start_kib


def run_load(root: Path, wheels: list[Path], seconds: float, warmup: float) -> LoadResult:
    """Run the load for `seconds` (the first `warmup` of them before RSS is
    first taken) against a daemon of its own under `root`."""
    result = LoadResult(seconds, CLIENTS, READERS)
    daemon = FaultDaemon(root)
    daemon.start()
    try:
        assert daemon.process is not None
        pid = daemon.process.pid
        reader_envs = []
        for index in range(READER_ENVS):
            venv = new_venv(root / f"read{index}")
            daemon.call("install", env=str(venv), archives=[str(w) for w in wheels])
            reader_envs.append(venv)
        client_envs = [new_venv(root / f"client{index}") for index in range(CLIENTS)]
        for venv in client_envs:
            daemon.call("env.register", env=str(venv))
        start_fds = descriptors(daemon)
        result.fds_start = len(start_fds)
        result.rss_before_kib = rss_kib(pid)
        deadline = time.time() + seconds
        readers = [
            subprocess.Popen(
                [
                    str(reader_envs[i % READER_ENVS] / "bin" / "python"),
                    "-c",
                    READER,
                    str(site_of(reader_envs[i % READER_ENVS])),
                    str(deadline),
                    str(i),
                ],
                env=clean_env({"PYTHONDONTWRITEBYTECODE": "1"}),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(READERS)
        ]
        lock = threading.Lock()
        names = ["crashy", "nwdemo-pure", *(f"extra{i}" for i in range(len(wheels) - 2))]

        def client(venv: Path) -> None:
            commands = [
                ["install", *map(str, wheels), "--env", str(venv)],
                ["list", "--env", str(venv)],
                ["uninstall", *names, "--env", str(venv)],
                ["history", "--env", str(venv)],
            ]
            cycle = GC_EVERY * len(commands) + 1
            step = 0
            while time.time() < deadline:
                # Every fifth round also collects garbage (keeping 5 generations per
                # venv, the default), as a user would: without it every install
                # and uninstall adds a generation for good, and `history` grows.
                argv = (
                    ["gc", "--keep", "5"]
                    if step % cycle == cycle - 1
                    else commands[step % cycle % len(commands)]
                )
                done = subprocess.run(
                    [sys.executable, "-m", "nwcache", *argv],
                    env=daemon.env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=False,
                )
                with lock:
                    result.commands += 1
                    if done.returncode != 0:
                        result.command_errors.append(f"{argv[0]} {venv.name}: {done.stderr.strip()}")
                step += 1

        threads = [threading.Thread(target=client, args=(venv,)) for venv in client_envs]
        for thread in threads:
            thread.start()
        warm_until = time.time() + warmup
        while time.time() < deadline:
            result.load.append(os.getloadavg()[0])
            if not result.rss_start_kib and time.time() >= warm_until:
                result.rss_start_kib = rss_kib(pid)
                result.anon_start_kib = rss_kib(pid, "RssAnon")
                result.file_start_kib = rss_kib(pid, "RssFile")
            time.sleep(min(5.0, max(0.0, deadline - time.time())))  # sampling period, not synchronisation
        for thread in threads:
            thread.join(600)
        latencies: list[float] = []
        for reader in readers:
            out, err = reader.communicate(timeout=600)
            if reader.returncode != 0:
                result.read_errors.append(f"reader exited with {reader.returncode}: {err.strip()[-500:]}")
                continue
            answer = json.loads(out)
            result.reads += answer["reads"]
            result.imports += answer["imports"]
            result.read_errors += answer["errors"][: answer["error_count"]]
            latencies += answer["latencies"]
        result.rss_end_kib = rss_kib(pid)
        result.anon_end_kib = rss_kib(pid, "RssAnon")
        result.file_end_kib = rss_kib(pid, "RssFile")
        # Every connection closed and every operation done: what remains open now was open before.
        end_fds = descriptors(daemon)
        result.fds_end = len(end_fds)
        result.fds_leaked = sorted(set(end_fds) - set(start_fds))
        latencies.sort()
        if latencies:
            result.latency_ms = {
                "p50": percentile(latencies, 0.50) * 1e3,
                "p99": percentile(latencies, 0.99) * 1e3,
                "p99.9": percentile(latencies, 0.999) * 1e3,
                "max": latencies[-1] * 1e3,
            }
        problems = daemon.call("fsck")["problems"]
        result.command_errors += [f"fsck: {p}" for p in problems]
    finally:
        daemon.stop()
    return result


def build_wheels(root: Path, pure: Path | None = None) -> list[Path]:
    """What every client installs: the pure demo project (built unless
    given), a wheel of 500 modules and 60 bodies, and two small ones."""
    wheels = [build_wheel(root / "crashy-1.0-py3-none-any.whl"), pure or build_pure_wheel(root / "pure")]
    for index in range(2):
        name = f"extra{index}"
        wheels.append(build_wheel(root / f"{name}-1.0-py3-none-any.whl", name, small=60, large=4, seed=index))
    return wheels


def report(result: LoadResult, started: str) -> str:
    load = result.load or [0.0]
    lat = result.latency_ms
    return "\n".join(
        [
            "# Load: clients installing while processes read through the view",
            "",
            '`make bench-load` (bench/load.py; `BENCH_ARGS="--seconds N"`). Not a test: tests/test_load.py runs',
            "the same for 15 seconds and asserts the same invariants.",
            "",
            f"- Run: {started}, {result.seconds:.0f} s",
            f"- Machine: {cpu_model()}, {os.cpu_count()} cores, {memory_total()} RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}",
            f"- Load average (1 min) during the run, sampled every 5 s: min {min(load):.1f}, "
            f"median {statistics.median(load):.1f}, max {max(load):.1f} (other work shared the 2 cores)",
            "",
            "What ran: one daemon; 4 clients, each in its own venv, looping `nwcache install` (4 wheels built",
            "offline: tests/projects/purepkg, a generated wheel of 500 modules and 60 incompressible 40 KB",
            "files, two small generated ones), `list`, `uninstall` (all four), `history`, and after every fifth",
            "round `gc --keep 5`, each command a new CLI process;",
            "16 reader processes, 4 per venv in 4 other venvs holding the same wheels, each opening and reading",
            "a random file through the venv's site-packages (the view) every ~20 ms, and importing a random",
            "module afresh every 20th read.",
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| client commands | {result.commands:,} |",
            f"| reads (imports) | {result.reads:,} ({result.imports:,}) |",
            f"| errors (commands, reads and imports, fsck after) | {result.errors} |",
            f"| daemon descriptors, not counting cached blob bodies: before, after | {result.fds_start} → {result.fds_end} |",
            f"| daemon RSS: before the load, after {result.seconds / 10:.0f} s warm-up, at the end | "
            f"{result.rss_before_kib / 1024:.1f} MiB, {result.rss_start_kib / 1024:.1f} MiB, "
            f"{result.rss_end_kib / 1024:.1f} MiB ({result.rss_growth:+.1%} after warm-up) |",
            f"| read latency p50 / p99 / p99.9 / max | {lat['p50']:.2f} / {lat['p99']:.1f} / {lat['p99.9']:.1f} / "
            f"{lat['max']:.1f} ms |",
            f"| of the RSS, the daemon's own memory (RssAnon) after warm-up, at the end | "
            f"{result.anon_start_kib / 1024:.1f} MiB, {result.anon_end_kib / 1024:.1f} MiB |",
            f"| of the RSS, mapped files (RssFile: the LMDB index, libraries) after warm-up, at the end | "
            f"{result.file_start_kib / 1024:.1f} MiB, {result.file_end_kib / 1024:.1f} MiB |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--report", type=Path, help="write the markdown report here")
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    root = Path(tempfile.mkdtemp(prefix="nwcache-load-"))
    try:
        wheels = build_wheels(root)
        result = run_load(root, wheels, args.seconds, warmup=args.seconds / 10)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary = {k: v for k, v in asdict(result).items() if k != "load"}
    summary["load_min_median_max"] = [min(result.load), statistics.median(result.load), max(result.load)]
    summary["rss_growth"] = result.rss_growth
    print(json.dumps(summary, indent=2))
    if args.report is not None:
        args.report.write_text(report(result, started))
    return 0 if result.errors == 0 and not result.fds_leaked and result.rss_growth < 0.10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
