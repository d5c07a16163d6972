"""The shared blob tier on loopback (a benchmark, not a test; it downloads the
wheels from PyPI once into bench/.cache/wheels).

    python -m bench.remote [--out docs/BENCH-REMOTE.md] [--runs 3] [--homes 8]

Debian's docker-registry on 127.0.0.1 (tests/oci_registry.py). Machine A
installs pandas and its dependencies from the wheel files and pushes them.
Then, from a fresh NWCACHE_HOME (its daemon started before the clock runs)
and a new venv, the time to the first `import pandas`, install included:

- remote: `nwcache install NAME==VERSION...` from the registry, bodies
  fetched at their first read (bytecode on, as by default);
- wheels: `nwcache install *.whl` from the local wheel files;
- uv cold: `uv pip install --offline --no-deps` of the same files with an
  empty cache;

interleaved in each run, medians of --runs; and the bytes each remote home
fetched. Then --homes fresh homes install the same environment from the
registry one after the other, and all at once.

nwcache is this checkout's development venv (.venv/bin/nwcache).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    DEFAULT_CACHE,
    ROOT,
    cpu_model,
    fetch_wheel,
    load_average,
    memory_total,
    pip_environment,
)
from bench.install import Daemon, new_venv, timed, tool_env, uv_install
from tests.oci_registry import OCIRegistry

DEFAULT_OUT = ROOT / "docs" / "BENCH-REMOTE.md"
NWCACHE = ROOT / ".venv" / "bin" / "nwcache"
UV = ROOT / ".tools" / "bin" / "uv"
PANDAS = (
    ("numpy", "2.1.3"),
    ("pandas", "2.2.3"),
    ("python-dateutil", "2.9.0.post0"),
    ("pytz", "2024.2"),
    ("six", "1.17.0"),
    ("tzdata", "2024.2"),
)
IMPORT = "import pandas"


def home_env(base: dict[str, str], root: Path) -> dict[str, str]:
    env = dict(base)
    env["NWCACHE_HOME"] = str(root / "home")
    env["NWCACHE_SOCKET"] = str(root / "run" / "daemon.sock")
    env["UV_CACHE_DIR"] = str(root / "uv-cache")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # Python writes bytecode, as a user's does
    return env


def nwcache(env: dict[str, str], *argv: str | Path) -> Any:
    done = subprocess.run(
        [str(NWCACHE), *map(str, argv), "--json"], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"nwcache {' '.join(map(str, argv[:3]))} failed: {done.stdout[-400:]} {done.stderr[-400:]}"
        )
    return json.loads(done.stdout)


def first_import(venv: Path, env: dict[str, str]) -> float:
    return timed([str(venv / "bin" / "python"), "-c", IMPORT], env)


class Home:
    """A machine: a home, a daemon, a venv, the remote configured."""

    def __init__(self, root: Path, base: dict[str, str], registry: OCIRegistry | None) -> None:
        root.mkdir(parents=True)
        self.root = root
        self.env = home_env(base, root)
        self.venv = new_venv(root / "venv", self.env)
        self.daemon = Daemon(self.env, [str(NWCACHE)])
        self.daemon.start()
        if registry is not None:
            nwcache(self.env, "remote", "add", "bench", registry.url, "--repository", "bench/nwcache")

    def stop(self) -> None:
        self.daemon.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def remote_round(root: Path, base: dict[str, str], registry: OCIRegistry) -> dict[str, float]:
    home = Home(root, base, registry)
    try:
        pins = [f"{n}=={v}" for n, v in PANDAS]
        start = time.perf_counter()
        install = timed([str(NWCACHE), "install", *pins, "--env", str(home.venv)], home.env)
        imported = first_import(home.venv, home.env)
        total = time.perf_counter() - start
        stats = nwcache(home.env, "stats")["remote"]
        return {
            "install": install,
            "import": imported,
            "total": total,
            "at install MB": stats["at_install"]["bytes"] / 1e6,
            "at import MB": stats["bytes"] / 1e6,
        }
    finally:
        home.stop()


def wheels_round(root: Path, base: dict[str, str], wheels: list[Path]) -> dict[str, float]:
    home = Home(root, base, None)
    try:
        start = time.perf_counter()
        install = timed([str(NWCACHE), "install", *map(str, wheels), "--env", str(home.venv)], home.env)
        imported = first_import(home.venv, home.env)
        return {"install": install, "import": imported, "total": time.perf_counter() - start}
    finally:
        home.stop()


def uv_round(root: Path, base: dict[str, str], wheels: list[Path]) -> dict[str, float]:
    root.mkdir(parents=True)
    env = home_env(base, root)
    venv = new_venv(root / "venv", env)
    try:
        start = time.perf_counter()
        install = timed(uv_install(venv, wheels), env)
        imported = first_import(venv, env)
        return {"install": install, "import": imported, "total": time.perf_counter() - start}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def many_homes(
    scratch: Path, base: dict[str, str], registry: OCIRegistry, count: int, at_once: bool
) -> float:
    """Wall time for `count` fresh homes to install and import pandas from the registry."""
    homes = [Home(scratch / f"{'once' if at_once else 'seq'}-{i}", base, registry) for i in range(count)]
    pins = [f"{n}=={v}" for n, v in PANDAS]
    errors: list[BaseException] = []

    def one(home: Home) -> None:
        try:
            timed([str(NWCACHE), "install", *pins, "--env", str(home.venv)], home.env)
            first_import(home.venv, home.env)
        except BaseException as exc:
            errors.append(exc)

    try:
        start = time.perf_counter()
        if at_once:
            threads = [threading.Thread(target=one, args=(h,)) for h in homes]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            for home in homes:
                one(home)
        elapsed = time.perf_counter() - start
    finally:
        for home in homes:
            home.stop()
    if errors:
        raise errors[0]
    return elapsed


def median(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.remote", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--homes", type=int, default=8)
    args = parser.parse_args(argv)
    wheels = [fetch_wheel(n, v, args.cache, pip_environment())[0] for n, v in PANDAS]
    loads = [load_average()]
    results: dict[str, list[dict[str, float]]] = {"remote": [], "wheels": [], "uv cold": []}
    with tempfile.TemporaryDirectory(prefix="bench-remote-", dir=ROOT / "bench") as name:
        scratch = Path(name)
        base = tool_env(scratch)
        registry = OCIRegistry(scratch / "registry")
        registry.start()
        try:
            pusher = Home(scratch / "pusher", base, registry)
            try:
                nwcache(pusher.env, "install", *wheels, "--env", pusher.venv)
                began = time.perf_counter()
                pushed = nwcache(pusher.env, "push", "--env", pusher.venv)
                push_seconds = time.perf_counter() - began
                began = time.perf_counter()
                nwcache(pusher.env, "push", "--env", pusher.venv)
                repush_seconds = time.perf_counter() - began
            finally:
                pusher.stop()
            for run in range(args.runs):
                print(f"run {run + 1}/{args.runs} (load {load_average()})", flush=True)
                results["remote"].append(remote_round(scratch / f"remote-{run}", base, registry))
                results["wheels"].append(wheels_round(scratch / f"wheels-{run}", base, wheels))
                results["uv cold"].append(uv_round(scratch / f"uv-{run}", base, wheels))
                loads.append(load_average())
            print(f"{args.homes} homes one after the other", flush=True)
            sequential = many_homes(scratch, base, registry, args.homes, at_once=False)
            loads.append(load_average())
            print(f"{args.homes} homes at once", flush=True)
            at_once = many_homes(scratch, base, registry, args.homes, at_once=True)
            loads.append(load_average())
        finally:
            registry.stop()
    rows = []
    for tool, runs in results.items():
        rows.append(
            f"| {tool} | {median([r['install'] for r in runs]):.2f} | {median([r['import'] for r in runs]):.2f} "
            f"| {median([r['total'] for r in runs]):.2f} |"
        )
    remote = results["remote"]
    wheel_bytes = sum(w.stat().st_size for w in wheels) / 1e6
    lines = [
        "# The shared blob tier on loopback (bench/remote.py)",
        "",
        f"Measured {dt.date.today()} by `python -m bench.remote --runs {args.runs} --homes {args.homes}`: "
        f"{cpu_model()}, {memory_total()}; load average {' -> '.join(loads)} (other developers shared the machine). "
        "Debian's docker-registry 2.8 on 127.0.0.1, file-system storage; nwcache from the checkout's venv.",
        "",
        f"pandas and its dependencies ({', '.join(f'{n} {v}' for n, v in PANDAS)}): "
        f"{wheel_bytes:.1f} MB of wheels. Pushed once in {push_seconds:.2f} s "
        f"({pushed['uploaded']} blobs, {pushed['bytes'] / 1e6:.1f} MB uploaded); pushed again in {repush_seconds:.2f} s "
        "(nothing uploaded).",
        "",
        "From a fresh home (daemon running) and a new venv to the end of the first `import pandas`, "
        f"seconds, medians of {args.runs} interleaved runs:",
        "",
        "| from | install | first import | total |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        f"Bytes a remote home fetched: {median([r['at install MB'] for r in remote]):.1f} MB at install "
        "(configs, packs of the small files, the `.dist-info`/`.data` files), "
        f"{median([r['at import MB'] for r in remote]):.1f} MB at the first import and by the background compiler "
        f"(the larger bodies read), against {wheel_bytes:.1f} MB of compressed wheels.",
        "",
        f"{args.homes} fresh homes installing and importing the same environment from the registry: "
        f"{sequential:.1f} s one after the other ({sequential / args.homes:.2f} s each), "
        f"{at_once:.1f} s all at once (on {cpu_model().split(',')[0]}, 2 cores shared).",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
