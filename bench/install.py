"""`nwcache install` against uv and pip, cold and warm (a benchmark, not a test).

    python -m bench.install [--out docs/BENCH-INSTALL.md] [--cache DIR] [--runs 3] [--venvs 0]

nwcache runs as a user installs it: a wheel of this checkout (`uv build`),
installed with its locked dependencies and byte-compiled
(`uv pip install --compile-bytecode`) into a venv of its own; the daemon and
the client both run from there, the daemon with its default settings
(bytecode on, compiled in the background once the install has returned).
Every tool installs local wheel files with dependencies off, into venvs made
beforehand; uv's cache and nwcache's store are on the same file system.

- cold: the data-science set (numpy, pandas, pyarrow, scipy, scikit-learn
  and their dependencies) and the small set (32 pure-Python wheels of the
  requests and jupyter families) into a new venv with an empty store / an
  empty uv cache: nwcache (a new daemon and store per run, its start not
  timed), uv (default: no bytecode), uv `--compile-bytecode`, pip (default:
  compiles). Interleaved: one round of every tool per run, --runs rounds,
  medians. After nwcache's install the bytecode compiling in the background
  is waited for before the next tool runs (its time is reported);
- first import right after each cold install: the set's top modules in the
  nwcache venv the moment `nwcache install` returned, against the pip venv
  (its pycs written by pip) and the uv venv (no pycs); Python free to write
  bytecode (PYTHONDONTWRITEBYTECODE unset);
- warm: a 33-wheel set (the two sets' data-science part, matplotlib,
  polars, requests, rich, jupyter-core and their dependencies) and numpy
  alone, already in the store / the uv cache, into a new venv: nwcache
  (client start, registering the venv, the install) against uv
  `--offline --link-mode hardlink`, interleaved, medians;
- disk (with --venvs N): N venvs each holding the same six wheels, by one `du`.

pip runs with PIP_CONFIG_FILE=/dev/null and no PIP_* index variables, uv with
UV_NO_CONFIG=1 and no UV_INDEX*. Install commands run with
PYTHONDONTWRITEBYTECODE=1 (as the machines export it; pip's own compile step
and uv's --compile-bytecode are not affected by it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from functools import partial
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
    pip_version,
)
from nwcache.client import remote
from nwcache.protocol import answers

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
DATA_SCIENCE = (
    *WHEELS,
    ("scipy", "1.14.1"),
    ("scikit-learn", "1.5.2"),
    ("tzdata", "2024.2"),
    ("joblib", "1.4.2"),
    ("threadpoolctl", "3.5.0"),
)
SMALL = (
    ("requests", "2.32.3"),
    ("urllib3", "2.2.3"),
    ("idna", "3.10"),
    ("certifi", "2024.8.30"),
    ("charset-normalizer", "3.4.0"),
    ("jupyter-core", "5.7.2"),
    ("jupyter-client", "8.6.3"),
    ("traitlets", "5.14.3"),
    ("platformdirs", "4.3.6"),
    ("nbformat", "5.10.4"),
    ("fastjsonschema", "2.20.0"),
    ("jsonschema", "4.23.0"),
    ("attrs", "24.2.0"),
    ("referencing", "0.35.1"),
    ("jsonschema-specifications", "2024.10.1"),
    ("ipython", "8.29.0"),
    ("decorator", "5.1.1"),
    ("jedi", "0.19.2"),
    ("parso", "0.8.4"),
    ("matplotlib-inline", "0.1.7"),
    ("pexpect", "4.9.0"),
    ("ptyprocess", "0.7.0"),
    ("prompt-toolkit", "3.0.48"),
    ("wcwidth", "0.2.13"),
    ("pygments", "2.18.0"),
    ("stack-data", "0.6.3"),
    ("asttokens", "2.4.1"),
    ("executing", "2.1.0"),
    ("pure-eval", "0.2.3"),
    ("comm", "0.2.2"),
    ("six", "1.17.0"),
    ("typing-extensions", "4.12.2"),
)
WARM_33 = (
    *DATA_SCIENCE,
    *SMALL[:5],
    ("matplotlib", "3.9.2"),
    ("contourpy", "1.3.1"),
    ("cycler", "0.12.1"),
    ("fonttools", "4.55.0"),
    ("kiwisolver", "1.4.7"),
    ("pillow", "11.0.0"),
    ("pyparsing", "3.2.0"),
    ("packaging", "24.2"),
    ("polars", "1.14.0"),
    ("rich", "13.9.4"),
    ("markdown-it-py", "3.0.0"),
    ("mdurl", "0.1.2"),
    ("pygments", "2.18.0"),
    ("jupyter-core", "5.7.2"),
    ("traitlets", "5.14.3"),
    ("platformdirs", "4.3.6"),
    ("typing-extensions", "4.12.2"),
)
# What "first import" imports after each cold install.
IMPORTS = {
    "data science": "import numpy, pandas, pyarrow, scipy.linalg, sklearn.linear_model",
    "small": "import requests, IPython, jupyter_core, traitlets, pygments.lexers",
}
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


def uv_install(venv: Path, wheels: list[Path], *, cache: bool = True, compile: bool = False) -> list[str]:
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
    if compile:
        argv.append("--compile-bytecode")
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


def wheel_files(wheel: Path) -> int:
    """The files a wheel installs (its archive members, directories left out)."""
    with zipfile.ZipFile(wheel) as archive:
        return sum(1 for name in archive.namelist() if not name.endswith("/"))


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


def import_env(env: dict[str, str]) -> dict[str, str]:
    """Python free to write bytecode, as a user's would be."""
    return {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}


def first_import(venv: Path, statement: str, env: dict[str, str]) -> float:
    return timed([str(venv / "bin" / "python"), "-c", statement], import_env(env))


def bytecode_pending(env: dict[str, str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(NWCACHE), "stats", "--json"], env=env, capture_output=True, text=True, check=True
    )
    pending: list[dict[str, Any]] = json.loads(done.stdout)["bytecode_pending"]
    return pending


def wait_compiled(env: dict[str, str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while bytecode_pending(env):
        if time.monotonic() > deadline:
            raise RuntimeError(f"bytecode still pending after {timeout} s")
        time.sleep(0.1)


def cold_round(
    tool: str, wheels: list[Path], statement: str, scratch: Path, base: dict[str, str], tag: str
) -> dict[str, float]:
    """One cold install by `tool` into a new venv with an empty store or
    cache, then the first import there (and, for nwcache, how long its
    background compile took after the install returned)."""
    root = scratch / f"cold-{tag}-{tool}"
    root.mkdir()
    env = dict(base)
    env["UV_CACHE_DIR"] = str(root / "uv-cache")
    env["NWCACHE_HOME"] = str(root / "nwcache-home")
    env["NWCACHE_SOCKET"] = str(root / "run" / "daemon.sock")
    venv = new_venv(root / "venv", env)
    out: dict[str, float] = {}
    if tool == "nwcache":
        daemon = Daemon(env)
        daemon.start()
        try:
            out["install"] = timed(nwcache_install(venv, wheels), env)
            returned = time.perf_counter()
            out["import"] = first_import(venv, statement, env)
            out["import again"] = first_import(venv, statement, env)
            out["pending again"] = float(sum(int(e.get("sources") or 0) for e in bytecode_pending(env)))
            wait_compiled(env)
            out["compiled"] = time.perf_counter() - returned
            out["import compiled"] = first_import(venv, statement, env)
        finally:
            daemon.stop()
    else:
        command = {
            "uv": uv_install(venv, wheels),
            "uv --compile-bytecode": uv_install(venv, wheels, compile=True),
            "pip": pip_install(venv, wheels),
        }[tool]
        out["install"] = timed(command, env)
        out["import"] = first_import(venv, statement, env)
    shutil.rmtree(root, ignore_errors=True)
    return out


COLD_TOOLS = ("nwcache", "uv", "uv --compile-bytecode", "pip")


def main(argv: Sequence[str] | None = None) -> int:
    global NWCACHE
    parser = argparse.ArgumentParser(prog="python -m bench.install", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--venvs", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    load_at_start = load_average()
    args.cache.mkdir(parents=True, exist_ok=True)
    names = dict.fromkeys([*DATA_SCIENCE, *SMALL, *WARM_33])
    wheels = {name: fetch_wheel(name, version, args.cache, pip_environment())[0] for name, version in names}
    sets = {
        "data science": [wheels[n] for n, _ in DATA_SCIENCE],
        "small": [wheels[n] for n, _ in SMALL],
    }
    warm_set = [wheels[n] for n, _ in dict.fromkeys(WARM_33)]
    uv_version = subprocess.run(
        [str(UV), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    cold: dict[str, dict[str, dict[str, list[float]]]] = {
        label: {tool: {} for tool in COLD_TOOLS} for label in sets
    }
    warm: dict[str, list[float]] = {"nwcache 33": [], "uv 33": [], "nwcache numpy": [], "uv numpy": []}
    parts: dict[str, list[float]] = {"client": [], "daemon 33": [], "daemon numpy": []}
    loads: list[str] = []
    disk: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-install-", dir=ROOT / "bench") as scratch_name:
        scratch = Path(scratch_name)
        NWCACHE = install_nwcache(scratch)
        env = tool_env(scratch)
        # Cold: one round of every tool per run, so that every figure sees the same load.
        for run in range(args.runs):
            loads.append(load_average())
            for label, chosen in sets.items():
                for tool in COLD_TOOLS:
                    tag = f"{label.replace(' ', '-')}-{run}"
                    got = cold_round(tool, chosen, IMPORTS[label], scratch, env, tag)
                    for key, value in got.items():
                        cold[label][tool].setdefault(key, []).append(value)
                    print(f"cold {label} {tool} run {run}: {got}", flush=True)
        # Warm: the store and uv's cache filled once, then new venvs.
        daemon = Daemon(env)
        daemon.start()
        try:
            timed(nwcache_install(new_venv(scratch / "fill-nw", env), warm_set), env)
            wait_compiled(env)
            timed(uv_install(new_venv(scratch / "fill-uv", env), warm_set), env)
            numpy = [wheels["numpy"]]
            missing = scratch / "missing.whl"
            for run in range(args.runs):
                loads.append(load_average())
                for key, command in (
                    ("nwcache 33", partial(nwcache_install, wheels=warm_set)),
                    ("uv 33", partial(uv_install, wheels=warm_set)),
                    ("nwcache numpy", partial(nwcache_install, wheels=numpy)),
                    ("uv numpy", partial(uv_install, wheels=numpy)),
                ):
                    venv = new_venv(scratch / f"w-{key.replace(' ', '-')}-{run}", env)
                    warm[key].append(timed(command(venv), env))
                start = time.perf_counter()
                done = subprocess.run(
                    nwcache_install(new_venv(scratch / f"w-client{run}", env), [missing]),
                    env=env,
                    capture_output=True,
                    check=False,
                )
                parts["client"].append(time.perf_counter() - start)
                if done.returncode != 1:
                    raise RuntimeError(f"nwcache install of a missing file exited with {done.returncode}")
                for key, chosen in (("daemon 33", warm_set), ("daemon numpy", numpy)):
                    venv = new_venv(scratch / f"w-part-{key.split()[1]}{run}", env)
                    parts[key].append(daemon_part(env["NWCACHE_SOCKET"], venv, chosen))
                print(f"warm run {run}: { {k: v[-1] for k, v in warm.items()} }", flush=True)
            if args.venvs:
                six = [wheels[n] for n, _ in WHEELS]
                groups: dict[str, list[Path]] = {"nwcache": [], "uv": [], "pip": []}
                for index in range(args.venvs):
                    for tool, many in (
                        ("nwcache", nwcache_install),
                        ("uv", uv_install),
                        ("pip", pip_install),
                    ):
                        venv = new_venv(scratch / "many" / tool / f"v{index:02d}", env)
                        timed(many(venv, six), env)
                        groups[tool].append(venv)
                disk["empty venv"] = du([new_venv(scratch / "empty", env)])
                disk["nwcache"] = du([*groups["nwcache"], Path(env["NWCACHE_HOME"])])
                disk["uv"] = du([*groups["uv"], Path(env["UV_CACHE_DIR"])])
                disk["pip"] = du(groups["pip"])
        finally:
            daemon.stop()

    def med(values: list[float]) -> float:
        return statistics.median(values)

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:,.0f} ms"

    def verdict(ratio: float, target: float) -> str:
        return f"{ratio:.2f}x, {'met' if ratio <= target else 'NOT met'}"

    cold_rows = []
    import_rows = []
    targets = []
    for label in sets:
        m = {tool: med(cold[label][tool]["install"]) for tool in COLD_TOOLS}
        count = len(sets[label])
        cold_rows.append(
            f"| {label} ({count} wheels) | {ms(m['nwcache'])} | {ms(m['uv'])} | {ms(m['uv --compile-bytecode'])} "
            f"| {ms(m['pip'])} | {m['nwcache'] / m['uv']:.2f}x | {m['nwcache'] / m['uv --compile-bytecode']:.2f}x |"
        )
        nw = cold[label]["nwcache"]
        imports = {tool: med(cold[label][tool]["import"]) for tool in COLD_TOOLS}
        import_rows.append(
            f"| {label}: `{IMPORTS[label]}` | {ms(imports['nwcache'])} | {ms(med(nw['import again']))} "
            f"({med(nw['pending again']):,.0f}) | {ms(med(nw['import compiled']))} "
            f"| {ms(imports['pip'])} | {ms(imports['uv'])} | {imports['nwcache'] / imports['pip']:.2f}x "
            f"| {ms(med(nw['compiled']))} |"
        )
        targets += [
            f"- {label}, cold, nwcache / uv (default) at most 1.0x (stretch 0.8x): "
            f"{verdict(m['nwcache'] / m['uv'], 1.0)}",
            f"- {label}, cold, nwcache / uv --compile-bytecode at most 0.6x: "
            f"{verdict(m['nwcache'] / m['uv --compile-bytecode'], 0.6)}",
            f"- {label}, first import right after the cold install, nwcache / pip at most 1.2x: "
            f"{verdict(imports['nwcache'] / imports['pip'], 1.2)}",
        ]
    w = {key: med(values) for key, values in warm.items()}
    files_33 = sum(wheel_files(p) for p in warm_set)
    files_numpy = wheel_files(wheels["numpy"])
    targets += [
        f"- warm, 33 wheels into a new venv, nwcache / uv at most 0.5x: {verdict(w['nwcache 33'] / w['uv 33'], 0.5)}",
        f"- warm, numpy into a new venv, nwcache / uv at most 0.5x: "
        f"{verdict(w['nwcache numpy'] / w['uv numpy'], 0.5)}",
    ]
    report = [
        "# Install benchmark",
        "",
        f"Generated by `make bench-install` (`python -m bench.install --runs {args.runs}`) on "
        f"{dt.date.today().isoformat()}, {time.monotonic() - started:.0f} s. Not a test: wheels from PyPI "
        "downloaded when it runs.",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {memory_total()} RAM; load average at the start "
        f"{load_at_start}, at the start of each round {'; '.join(loads)}, at the end {load_average()} (the "
        f"machine is shared: other programs ran at the same time). Python {platform.python_version()}, "
        f"{uv_version}, pip {pip_version(pip_environment())}, kernel {platform.release()}. "
        "pip with PIP_CONFIG_FILE=/dev/null and no PIP_* index variables; uv with UV_NO_CONFIG=1, its cache on the "
        "same file system; install commands with PYTHONDONTWRITEBYTECODE=1; dependencies off; local wheel files. "
        "Venvs are created beforehand (`python -m venv --without-pip`); every time is wall time of the command, "
        "process start included (for nwcache: the client, registering the venv, the install, which returns once "
        "the generation is served, every file verified; the daemon was already running). nwcache runs as a user "
        "installs it: a wheel of this checkout (`uv build`) with its locked dependencies, byte-compiled, in a "
        "venv of its own; the daemon with its defaults (bytecode compiled in the background after the install "
        f"returns, docs/BYTECODE.md). Medians of {args.runs} interleaved rounds.",
        "",
        "## Cold: empty store / empty cache, new venv",
        "",
        "| set | nwcache | uv | uv --compile-bytecode | pip | nwcache / uv | nwcache / uv --compile-bytecode |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *cold_rows,
        "",
        "pip compiles bytecode (its default); uv by default does not. nwcache's daemon compiles after the install "
        "returned, at nice 19 with one worker process per core but one, one compile per source and interpreter shared by every later venv; the benchmark "
        "waits for it to finish before the next tool runs.",
        "",
        "## First import right after the cold install",
        "",
        "`python -c <statement>` in the venv, PYTHONDONTWRITEBYTECODE unset. nwcache: the moment `nwcache install` "
        "returned (bytecode compiling in the background; a pyc Python asks for before the background compiler "
        "reached it is compiled at once by the daemon, docs/BYTECODE.md), the same statement again at once (in "
        "brackets: sources still to compile in the background when it ended), and again once the background "
        "compile is done. pip: its pycs written at install (native). uv: no pycs (Python compiles and writes them).",
        "",
        "| set: statement | nwcache, at once | nwcache, again at once (left) | nwcache, compiled | pip | uv "
        "| nwcache at once / pip | background compile took |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *import_rows,
        "",
        "## Warm: already stored / cached, new venv",
        "",
        "| install | nwcache | uv --offline --link-mode hardlink | nwcache / uv |",
        "| --- | ---: | ---: | ---: |",
        f"| {len(warm_set)} wheels (data science, matplotlib, polars, requests, rich, jupyter-core and dependencies) "
        f"| {ms(w['nwcache 33'])} | {ms(w['uv 33'])} | {w['nwcache 33'] / w['uv 33']:.2f}x |",
        f"| numpy | {ms(w['nwcache numpy'])} | {ms(w['uv numpy'])} | {w['nwcache numpy'] / w['uv numpy']:.2f}x |",
        "",
        f"Files installed: {files_33:,} for the {len(warm_set)} wheels, {files_numpy:,} for numpy; the daemon's "
        f"part per 1,000 files: {med(parts['daemon 33']) * 1000 / files_33 * 1000:.1f} ms and "
        f"{med(parts['daemon numpy']) * 1000 / files_numpy * 1000:.1f} ms.",
        "",
        f"Where nwcache's warm install goes (medians): the client's start alone (`nwcache install` of a missing "
        f"file, which exits before connecting) {ms(med(parts['client']))}; the daemon's part (registering a new venv "
        f"and installing, requested from the benchmark's process) {ms(med(parts['daemon 33']))} for the "
        f"{len(warm_set)} wheels, {ms(med(parts['daemon numpy']))} for numpy alone.",
        "",
        "## Targets (issue 16)",
        "",
        *targets,
    ]
    if disk:
        report += [
            "",
            f"## Disk: {args.venvs} venvs with the same six wheels ({', '.join(n for n, _ in WHEELS)})",
            "",
            "One `du -x -s -B1 -c` over the venvs and the tool's store or cache (hard links counted once; -x: not "
            "into the view, whose files are the blobs again).",
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
