"""The daemon's memory over many install/uninstall cycles (not a test): one
real daemon process, one venv, a wheel of 560 files installed and uninstalled
CYCLES times over the socket, the daemon's VmRSS read from /proc every STEP
cycles. A daemon that keeps something per operation grows with the cycles;
one that does not levels off after the first few.

    python -m bench.rss [--cycles 1000] [--step 100] [--distinct] [--source DIR]

--distinct installs another wheel (200 modules of other content) every
cycle, and runs gc (keeping one generation) every STEP cycles: what the
daemon remembers per file it ever served shows then, where the same wheel
again and again would reuse it.

--source runs the daemon from another checkout's sources (PYTHONPATH), so
that two versions are measured with the same harness and dependencies.
Offline; the daemon runs as shipped (bytecode compiled in the background).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from tests.daemon_process import Daemon
from tests.faults import build_wheel
from tests.helpers import new_venv


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--step", type=int, default=100)
    parser.add_argument("--distinct", action="store_true", help="another wheel every cycle, gc every step")
    parser.add_argument("--source", type=Path, help="a checkout whose daemon to run (default: this one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nwcache-rss-") as scratch:
        root = Path(scratch)
        wheel = build_wheel(root / "crashy-1.0-py3-none-any.whl")
        daemon = Daemon(root)
        daemon.env.pop("NWCACHE_BYTECODE", None)  # as shipped
        if args.source is not None:
            daemon.env["PYTHONPATH"] = str(args.source.resolve())
        daemon.start()
        try:
            assert daemon.process is not None
            pid = daemon.process.pid
            venv = new_venv(root / "venv")
            daemon.call("env.register", env=str(venv))
            samples: list[tuple[int, int]] = [(0, rss_kib(pid))]
            times: list[float] = []
            for cycle in range(1, args.cycles + 1):
                if args.distinct:
                    wheel.unlink()
                    build_wheel(wheel, small=200, large=0, seed=cycle)
                started = time.monotonic()
                daemon.call("install", env=str(venv), archives=[str(wheel)])
                daemon.call("uninstall", env=str(venv), names=["crashy"])
                times.append(time.monotonic() - started)
                if cycle % args.step == 0:
                    if args.distinct:
                        daemon.call("gc", keep=1)
                    samples.append((cycle, rss_kib(pid)))
                    print(f"cycle {cycle}: VmRSS {samples[-1][1] / 1024:.1f} MiB", flush=True)
        finally:
            daemon.stop()
    first = samples[1][1] if len(samples) > 1 else samples[0][1]
    print(
        f"daemon {'from ' + str(args.source) if args.source else 'of this checkout'}: "
        f"VmRSS after registering {samples[0][1] / 1024:.1f} MiB, after {samples[1][0]} cycles "
        f"{first / 1024:.1f} MiB, after {samples[-1][0]} {samples[-1][1] / 1024:.1f} MiB "
        f"(+{(samples[-1][1] - first) / 1024:.1f} MiB); a cycle took {statistics.median(times) * 1000:.0f} ms "
        f"(median); load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
