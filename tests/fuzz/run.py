"""Run the fuzzer: N worker processes, each execution bounded in time, every
finding saved with its input and traceback, a JSON summary at the end.

    python -m tests.fuzz --executions 1000000 --workers 2 --seed 1 --out /tmp/fuzz
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import queue
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing.queues import Queue as ProcessQueue
from pathlib import Path
from types import FrameType

from .model import build
from .mutate import generate
from .target import CLI_COMMANDS, execute, make_env

REPORT_EVERY = 2.0  # seconds between a worker's progress reports


class Hang(BaseException):
    """An execution outlived its time limit (raised by SIGALRM)."""


@dataclass
class Tally:
    executions: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)  # signature -> count
    hangs: int = 0
    build_errors: Counter[str] = field(default_factory=Counter)
    cli_runs: int = 0

    def merge(self, other: Tally) -> None:
        self.executions += other.executions
        self.cli_runs += other.cli_runs
        self.verdicts.update(other.verdicts)
        self.findings.update(other.findings)
        self.hangs += other.hangs
        self.build_errors.update(other.build_errors)


@dataclass
class Summary:
    seed: int
    workers: int
    executions: int
    seconds: float
    exec_per_second: float
    accepted: int
    cli_runs: int
    findings: dict[str, int]
    hangs: int
    build_errors: dict[str, int]
    verdicts: dict[str, int]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def signature(exc: BaseException) -> str:
    """Exception type and the innermost frame of nwcache code it came from."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [
        f
        for f in frames
        if "/nwcache/" in f.filename or "/archive/" in f.filename or "/daemon/" in f.filename
    ]
    where = ours[-1] if ours else frames[-1] if frames else None
    place = f"{Path(where.filename).name}:{where.lineno}" if where else "?"
    return f"{type(exc).__name__}@{place}"


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang()


def work(
    worker: int,
    seed: int,
    executions: int,
    deadline: float,
    timeout: float,
    out: Path,
    report: ProcessQueue[Tally] | None,
    cli_every: int = 0,
) -> Tally:
    """One worker's loop; reports partial tallies to `report` (or returns the
    whole). About one input in `cli_every` (0: none) also goes through the
    real command line."""
    rng = random.Random(f"{seed}:{worker}")
    # Apart from `rng`, so that a seed gives the same inputs with or without the CLI runs.
    cli_rng = random.Random(f"{seed}:{worker}:cli")
    scratch = Path(
        tempfile.mkdtemp(
            prefix=f"nwcache-fuzz-{worker}-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
        )
    )
    env = make_env(scratch / "venv")
    total, partial = Tally(), Tally()
    last = time.monotonic()
    parent = os.getppid()
    # In-process (the test suite), give back the alarm pytest-timeout may use.
    previous_handler = signal.signal(signal.SIGALRM, _on_alarm)
    previous_timer = signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()
    try:
        done = 0  # executions; an input the builder fails on is counted apart and replaced
        while done < executions:
            if time.monotonic() > deadline:
                break
            model = generate(rng)
            try:
                data = build(model)
            except Exception as exc:  # the fuzzer's own builders: counted, never a finding
                partial.build_errors[signature(exc)] += 1
                continue
            archive = scratch / "in" / model.wheel_filename()
            archive.parent.mkdir(exist_ok=True)
            archive.write_bytes(data)
            partial.executions += 1
            done += 1
            cli = cli_rng.choice(CLI_COMMANDS) if cli_every and cli_rng.randrange(cli_every) == 0 else None
            if cli is not None:
                partial.cli_runs += 1
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                partial.verdicts[execute(archive, env, scratch / "out", cli).verdict] += 1
            except Hang:
                partial.hangs += 1
                _save(out, "hang", archive, "timed out")
            except Exception as exc:
                sig = signature(exc)
                if partial.findings[sig] == 0 and total.findings[sig] == 0:
                    _save(out, sig, archive, traceback.format_exc())
                partial.findings[sig] += 1
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                archive.unlink(missing_ok=True)
            now = time.monotonic()
            if report is not None and now - last > REPORT_EVERY:
                report.put(partial)
                total.merge(partial)
                partial, last = Tally(), now
                if os.getppid() != parent:  # the runner died: stop rather than run on as an orphan
                    break
    finally:
        signal.signal(signal.SIGALRM, previous_handler)
        left = previous_timer[0] - (time.monotonic() - started)
        signal.setitimer(signal.ITIMER_REAL, max(left, 0.001) if previous_timer[0] else 0)
        shutil.rmtree(scratch, ignore_errors=True)
    total.merge(partial)
    if report is not None:
        report.put(partial)
    return total


def _save(out: Path, sig: str, archive: Path, text: str) -> None:
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
    where = out / "findings" / f"{sig.replace('/', '_')}-{digest}"
    where.mkdir(parents=True, exist_ok=True)
    (where / archive.name).write_bytes(archive.read_bytes())
    (where / "traceback.txt").write_text(text)


def _worker_main(
    worker: int,
    seed: int,
    executions: int,
    deadline: float,
    timeout: float,
    out: Path,
    memory: int,
    report: ProcessQueue[Tally],
    cli_every: int,
) -> None:
    os.nice(0)
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    work(worker, seed, executions, deadline, timeout, out, report, cli_every)
    report.put(Tally(executions=-1))  # done


def fuzz(
    *,
    executions: int,
    seconds: float | None = None,
    seed: int = 1,
    workers: int = 1,
    timeout: float = 10.0,
    out: Path,
    memory_mib: int = 4096,
    progress: bool = False,
    cli_every: int = 0,
) -> Summary:
    """Run `executions` inputs (or until `seconds` pass) over `workers`
    processes; workers=0 runs in this process (the test suite's short run)."""
    load_before = os.getloadavg()
    started = time.monotonic()
    deadline = started + seconds if seconds is not None else float("inf")
    tally = Tally()
    if workers == 0:
        tally = work(0, seed, executions, deadline, timeout, out, None, cli_every)
    else:
        context = multiprocessing.get_context("spawn")
        report: ProcessQueue[Tally] = context.Queue()
        shares = [executions // workers + (i < executions % workers) for i in range(workers)]
        processes = [
            context.Process(
                target=_worker_main,
                args=(i, seed, shares[i], deadline, timeout, out, memory_mib << 20, report, cli_every),
            )
            for i in range(workers)
        ]
        for process in processes:
            process.start()
        running, shown = workers, time.monotonic()
        while running:
            try:
                part = report.get(timeout=5)
            except queue.Empty:
                if not any(p.is_alive() for p in processes):
                    raise RuntimeError("fuzz workers died without reporting") from None
                continue
            if part.executions == -1:
                running -= 1
                continue
            tally.merge(part)
            if progress and time.monotonic() - shown > 30:
                shown = time.monotonic()
                rate = tally.executions / (shown - started)
                print(
                    f"{tally.executions} executions, {rate:.0f}/s, {sum(tally.findings.values())} findings,"
                    f" {tally.hangs} hangs, load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
        for process in processes:
            process.join()
            if process.exitcode != 0:
                tally.findings[f"worker-exit-{process.exitcode}"] += 1
    elapsed = time.monotonic() - started
    return Summary(
        seed=seed,
        workers=workers,
        executions=tally.executions,
        seconds=round(elapsed, 1),
        exec_per_second=round(tally.executions / elapsed, 1),
        accepted=tally.verdicts["accepted"],
        cli_runs=tally.cli_runs,
        findings=dict(tally.findings),
        hangs=tally.hangs,
        build_errors=dict(tally.build_errors),
        verdicts=dict(tally.verdicts.most_common()),
        load_before=load_before,
        load_after=os.getloadavg(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=None, help="stop earlier after this long")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one execution may take")
    parser.add_argument("--memory-mib", type=int, default=4096, help="address space limit per worker")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "nwcache-fuzz")
    parser.add_argument(
        "--cli-every",
        type=int,
        default=50,
        metavar="N",
        help="run about one input in N through the real command line too (0: never)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = fuzz(
        executions=args.executions,
        seconds=args.seconds,
        seed=args.seed,
        workers=args.workers,
        timeout=args.timeout,
        out=args.out,
        memory_mib=args.memory_mib,
        progress=True,
        cli_every=args.cli_every,
    )
    text = json.dumps(asdict(summary), indent=2)
    (args.out / "summary.json").write_text(text + "\n")
    print(text)
    print(f"findings and summary.json in {args.out}")
    return 1 if summary.findings or summary.hangs else 0


if __name__ == "__main__":
    sys.exit(main())
