"""The view's two modes side by side against a pip venv (a benchmark, not a test).

    python -m bench.viewmodes [--out docs/BENCH-VIEWMODES.md] [--cache DIR] [--runs 11]

One run, interleaved: a pip venv (pip install, which writes its own
__pycache__) and two daemons of this checkout, one serving kernel-cached
(`NWCACHE_VIEW_MODE=kernel-cached`: no OPEN/OPENDIR round trips, the project's
pyfuse3 patch) and one serving with handles (what an unpatched pyfuse3 gives),
each with a registered venv holding the same wheels (numpy, pandas, scipy and
what pandas imports; the daemons compile the pycs at install, the default):

- the first `import numpy`, `import pandas`, `import scipy.stats` right after
  the install, then warm imports (median of --runs, the three venvs taking
  turns run by run);
- FUSE requests per warm import (the daemon's counters) and the daemon's CPU
  time per warm import (/proc/PID/stat, user + system);
- open+close of a pyc and a listing of numpy/_core (median of a tight loop);
- open+read of every file of a 10,000-file tree, warm;
- `uv pip install` of numpy inside a fresh venv, plain and registered (writes
  through the view's copy-on-write layer).

Children run with PIP_CONFIG_FILE=/dev/null, no PIP_* index variable, uv with
UV_NO_CONFIG=1; PYTHONDONTWRITEBYTECODE is removed for installs and imports.
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

from bench.bytecode import IMPORTS, LISTED, LISTINGS, OPEN_CLOSES, WHEELS, child_env, loop_us, requests_of
from bench.common import DEFAULT_CACHE, ROOT, cpu_model, fetch_wheel, load_average, memory_total
from bench.install import UV, Daemon, new_venv, timed
from bench.view import _READ_ALL, TREE_FILES, inner, make_tree_wheel, site_of
from nwcache.daemon.view import HANDLES, KERNEL_CACHED

DEFAULT_OUT = ROOT / "docs" / "BENCH-VIEWMODES.md"
MODES = (KERNEL_CACHED, HANDLES)
NATIVE = "pip venv"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nwcache(env: dict[str, str], *argv: str) -> None:
    subprocess.run([sys.executable, "-m", "nwcache", *argv], env=env, capture_output=True, check=True)


def import_seconds(venv: Path, module: str, env: dict[str, str]) -> float:
    return timed([str(venv / "bin" / "python"), "-c", f"import {module}"], env)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.viewmodes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args(argv)
    started = time.monotonic()
    load_before = load_average()
    args.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-viewmodes-", dir=ROOT / "bench") as scratch_name:
        scratch = Path(scratch_name)
        envs = {mode: {**child_env(scratch, mode, "0"), "NWCACHE_VIEW_MODE": mode} for mode in MODES}
        plain = child_env(scratch, "plain", "0")
        wheels = [fetch_wheel(name, version, args.cache, plain)[0] for name, version in WHEELS]
        tree_out = scratch / "tree-wheel"
        tree_out.mkdir()
        files = {f"smalltree/d{i % 100:02d}/f{i:05d}.dat": 1024 + (i * 37) % 7168 for i in range(TREE_FILES)}
        tree_src = make_tree_wheel(scratch / "tree-src", "smalltree", files, tree_out)
        tree_wheel = next(tree_out.glob("*.whl"))

        venvs: dict[str, Path] = {NATIVE: scratch / "native"}
        subprocess.run([sys.executable, "-m", "venv", str(venvs[NATIVE])], check=True, capture_output=True)
        subprocess.run(
            [str(venvs[NATIVE] / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
            + [str(w) for w in wheels],
            check=True,
            env=plain,
        )
        shutil.copytree(
            tree_src / "smalltree", site_of(venvs[NATIVE]) / "smalltree"
        )  # pip takes no 2.0 wheel
        daemons = {mode: Daemon(envs[mode], [sys.executable, "-m", "nwcache"]) for mode in MODES}
        first: dict[str, dict[str, float]] = {name: {} for name in (NATIVE, *MODES)}
        try:
            for mode in MODES:
                daemons[mode].start()
                venvs[mode] = scratch / f"venv-{mode}"
                subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venvs[mode])], check=True)
                nwcache(envs[mode], "install", *map(str, [*wheels, tree_wheel]), "--env", str(venvs[mode]))
            order = (NATIVE, *MODES)
            for module in IMPORTS:  # first imports: the native venv's pages are as pip left them
                for name in order:
                    first[name][module] = import_seconds(venvs[name], module, envs.get(name, plain))
            warm: dict[tuple[str, str], list[float]] = {}
            requests: dict[tuple[str, str], int] = {}
            cpu: dict[tuple[str, str], float] = {}
            for module in IMPORTS:
                for mode in MODES:  # one counted import per mode (warm)
                    import_seconds(venvs[mode], module, envs[mode])
                    before = requests_of(envs[mode])
                    import_seconds(venvs[mode], module, envs[mode])
                    after = requests_of(envs[mode])
                    requests[(mode, module)] = sum(after[op] - before.get(op, 0) for op in after)
                spent = dict.fromkeys(MODES, 0.0)
                for _ in range(args.runs):
                    for name in order:
                        process = daemons[name].process if name in daemons else None
                        before_cpu = cpu_seconds(process.pid) if process is not None else 0.0
                        seconds = import_seconds(venvs[name], module, envs.get(name, plain))
                        if process is not None:
                            spent[name] += cpu_seconds(process.pid) - before_cpu
                        warm.setdefault((name, module), []).append(seconds)
                for mode in MODES:
                    cpu[(mode, module)] = spent[mode] / args.runs
            pyc = next((site_of(venvs[NATIVE]) / "numpy" / "__pycache__").glob("__init__.*.pyc")).relative_to(
                site_of(venvs[NATIVE])
            )
            latency: dict[str, tuple[float, float]] = {}
            trees: dict[str, list[float]] = {}
            for name in order:
                site = site_of(venvs[name])
                latency[name] = (
                    loop_us("open", site / pyc, OPEN_CLOSES, plain),
                    loop_us("list", site / LISTED, LISTINGS, plain),
                )
            python = venvs[NATIVE] / "bin" / "python"
            for name in order:
                inner(python, _READ_ALL, site_of(venvs[name]) / "smalltree")  # warm it
            for _ in range(5):
                for name in order:
                    seconds, _total = inner(python, _READ_ALL, site_of(venvs[name]) / "smalltree")
                    trees.setdefault(name, []).append(seconds)
            # Writing through the view: uv installing numpy inside a fresh venv
            # (its cache warmed first), plain against registered, taking turns.
            uv_env = {**plain, "UV_LINK_MODE": "copy"}
            numpy_wheel = next(w for w in wheels if w.name.startswith("numpy-"))

            def uv_into(venv: Path, env: dict[str, str]) -> float:
                return timed(
                    [
                        str(UV),
                        "pip",
                        "install",
                        "-q",
                        "--offline",
                        "--no-deps",
                        "--python",
                        str(venv / "bin" / "python"),
                        str(numpy_wheel),
                    ],
                    env,
                )

            uv_into(new_venv(scratch / "uv-warm", plain), uv_env)
            writes: dict[str, list[float]] = {}
            for run in range(3):
                for name in order:
                    venv = new_venv(scratch / f"uv-{name}-{run}", plain)
                    if name in daemons:
                        nwcache(envs[name], "env", "register", str(venv))
                    writes.setdefault(name, []).append(uv_into(venv, {**envs.get(name, plain), **uv_env}))
        finally:
            for daemon in daemons.values():
                daemon.stop()

    med = {key: statistics.median(values) for key, values in warm.items()}
    lines = [
        "# The view's two modes against a pip venv",
        "",
        f"Generated by `python -m bench.viewmodes --runs {args.runs}` on {dt.date.today().isoformat()}"
        f" ({time.monotonic() - started:.0f} s).",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} CPUs, {memory_total()}, {platform.platform()}.",
        f"- Load average before / after: {load_before} / {load_average()}.",
        "- Environment: PIP_CONFIG_FILE=/dev/null, no PIP_* index variable, UV_NO_CONFIG=1,"
        " PYTHONDONTWRITEBYTECODE removed for installs and imports.",
        f"- Wheels: {', '.join(f'{n} {v}' for n, v in WHEELS)}; the pip venv compiled its own pycs,"
        " the daemons compiled the shared ones at install.",
        f"- `{KERNEL_CACHED}`: the project's pyfuse3 patch, no OPEN/RELEASE/OPENDIR/RELEASEDIR round trips;"
        f" `{HANDLES}`: what an unpatched pyfuse3 gives.",
        "",
        f"## Warm imports (median of {args.runs}, the three venvs taking turns)",
        "",
        f"| import | {NATIVE} | {KERNEL_CACHED} | ratio | {HANDLES} | ratio |"
        " requests kernel-cached / handles | daemon CPU per import kernel-cached / handles |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for module in IMPORTS:
        base = med[(NATIVE, module)]
        cells = [f"`import {module}`", f"{base * 1000:.0f} ms"]
        for mode in MODES:
            cells += [f"{med[(mode, module)] * 1000:.0f} ms", f"{med[(mode, module)] / base:.2f}x"]
        cells.append(f"{requests[(KERNEL_CACHED, module)]:,} / {requests[(HANDLES, module)]:,}")
        cells.append(f"{cpu[(KERNEL_CACHED, module)] * 1000:.1f} / {cpu[(HANDLES, module)] * 1000:.1f} ms")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Requests: every request the view's handlers answered during one warm import. Python's"
        " `io.open` also asks `isatty` of every file it opens, an ioctl that FUSE always forwards"
        " and libfuse answers without the handlers (not counted here): the shared pycs are symlinks"
        " into the store (docs/BYTECODE.md), so an import opens no file of the view that way; the"
        " 10,000-file tree below pays one such round trip per file.",
        "",
        "## First import right after the install",
        "",
        f"| import | {NATIVE} | {KERNEL_CACHED} | ratio | {HANDLES} | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for module in IMPORTS:
        base = first[NATIVE][module]
        cells = [f"`import {module}`", f"{base * 1000:.0f} ms"]
        for mode in MODES:
            cells += [f"{first[mode][module] * 1000:.0f} ms", f"{first[mode][module] / base:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Single operations and a tree of small files (warm)",
        "",
        f"| | {NATIVE} (ext4) | {KERNEL_CACHED} | {HANDLES} |",
        "| --- | ---: | ---: | ---: |",
        "| open+close of a pyc | " + " | ".join(f"{latency[n][0]:.1f} µs" for n in (NATIVE, *MODES)) + " |",
        f"| listing `{LISTED}` | " + " | ".join(f"{latency[n][1]:.1f} µs" for n in (NATIVE, *MODES)) + " |",
        f"| open+read {TREE_FILES:,} files (median of 5) | "
        + " | ".join(
            f"{statistics.median(trees[n]):.2f} s"
            + (
                ""
                if n == NATIVE
                else f" ({statistics.median(trees[NATIVE]) / statistics.median(trees[n]):.0%})"
            )
            for n in (NATIVE, *MODES)
        )
        + " |",
        "",
        "Percentages: the view's throughput as a share of the native disk's.",
        "",
        "## Writing through the view: `uv pip install numpy` inside the venv (median of 3)",
        "",
        f"| | plain venv | {KERNEL_CACHED} | ratio | {HANDLES} | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        "| `uv pip install --offline --no-deps numpy` (warm uv cache, copy) | "
        + f"{statistics.median(writes[NATIVE]):.2f} s | "
        + " | ".join(
            f"{statistics.median(writes[m]):.2f} s | "
            f"{statistics.median(writes[m]) / statistics.median(writes[NATIVE]):.2f}x"
            for m in MODES
        )
        + " |",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
