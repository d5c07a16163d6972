"""pjdfstest against a registered venv's site-packages, in each view mode.

    python -m tests.pjdfstest --source DIR [--mode kernel-cached|handles|both] [--out FILE]

`make pjdfstest PJDFSTEST=DIR` runs it. DIR is a checkout of pjdfstest (the
POSIX file system test suite); it is built here (autoreconf, configure, make:
the Debian packages autoconf, automake and gcc) and run with `prove -v -r` as
root inside site-packages, with a daemon of this checkout serving the view
(NWCACHE_HOME in a temporary directory). The source is not fetched: this
project's machines reach package registries only, and pjdfstest is in none.

Each failed subtest is put down to a cause, so that what the view refuses by
design (docs/VIEW.md, "Deliberately unsupported") stands apart from the rest:
other users (the mount is not allow_other), chown, special files (mknod,
mkfifo, sockets), hard links, the steps that follow such a refusal in the same
test file, and "other". docs/VIEW.md quotes the summary.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nwcache.daemon.view import HANDLES, KERNEL_CACHED
from nwcache.protocol import answers
from tests.helpers import new_venv

CAUSES = ("other users", "chown", "special files", "hard links", "follows a refusal", "other")


def build(source: Path, scratch: Path) -> Path:
    tree = scratch / "pjdfstest"
    shutil.copytree(source, tree, ignore=shutil.ignore_patterns(".git"))
    for step in (["autoreconf", "-ifs"], ["./configure", "-q"], ["make", "-s"]):
        subprocess.run(step, cwd=tree, check=True, capture_output=True)
    return tree


def cause(line: str, refused: bool) -> str:
    if re.search(r"-[ug] [1-9]", line):
        return "other users"
    if "chown" in line:
        return "chown"
    if re.search(r"'(mkfifo|mknod|bind|connect)\b", line):
        return "special files"
    if re.search(r"'link ", line):
        return "hard links"
    return "follows a refusal" if refused else "other"


def classify(log: str) -> tuple[dict[str, collections.Counter[str]], list[str]]:
    """Per test file, failed subtests by cause; and the 'other' lines."""
    files: dict[str, collections.Counter[str]] = {}
    others: list[str] = []
    current = None
    refused = False
    for line in log.splitlines():
        start = re.match(r"^\S*/tests/(\S+\.t) \.+", line)
        if start:
            current, refused = start.group(1), False
            files[current] = collections.Counter()
            continue
        if current is None or not line.startswith("not ok"):
            continue
        found = cause(line, refused)
        refused = refused or found != "other"
        files[current][found] += 1
        if found == "other":
            others.append(f"{current}: {line}")
    return files, others


def run_mode(mode: str, tests: Path, scratch: Path) -> str:
    home = scratch / f"home-{mode}"
    env = {
        **os.environ,
        "NWCACHE_HOME": str(home),
        "NWCACHE_SOCKET": str(scratch / f"run-{mode}" / "daemon.sock"),
        "NWCACHE_VIEW_MODE": mode,
        "NWCACHE_BYTECODE": "off",
    }
    venv = scratch / f"venv-{mode}"
    new_venv(venv)
    daemon = subprocess.Popen([sys.executable, "-m", "nwcache", "daemon"], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not answers(Path(env["NWCACHE_SOCKET"])):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"error: the daemon did not start ({mode})")
            time.sleep(0.1)  # polling for the daemon, bounded by the deadline
        subprocess.run([sys.executable, "-m", "nwcache", "env", "register", str(venv)], env=env, check=True)
        site = next(venv.glob("lib/python3*/site-packages"))
        done = subprocess.run(
            ["prove", "-v", "-r", str(tests)],
            cwd=site,
            capture_output=True,
            text=True,
            check=False,
            timeout=3000,
        )
        return done.stdout + done.stderr
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.pjdfstest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="a checkout of pjdfstest")
    parser.add_argument("--mode", choices=(KERNEL_CACHED, HANDLES, "both"), default="both")
    parser.add_argument("--out", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit(
            "error: pjdfstest runs as root\nhint: run it as root (it creates files as other users)"
        )
    modes = (KERNEL_CACHED, HANDLES) if args.mode == "both" else (args.mode,)
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pjdfstest-") as scratch_name:
        scratch = Path(scratch_name)
        tree = build(args.source.resolve(), scratch)
        for mode in modes:
            files, others = classify(run_mode(mode, tree / "tests", scratch))
            clean = sum(1 for counts in files.values() if not counts)
            totals: collections.Counter[str] = collections.Counter()
            for counts in files.values():
                totals.update(counts)
            lines.append(f"{mode}: {clean} of {len(files)} test files pass")
            lines.append("  failed subtests by cause: " + ", ".join(f"{c} {totals[c]}" for c in CAUSES))
            lines += [f"  {line}" for line in others]
    print("\n".join(lines))
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
