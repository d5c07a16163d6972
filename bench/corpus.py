"""Every variant of the Wheel 2.0 idea on a corpus of popular wheels (a benchmark, not a test).

    python -m bench.corpus [--top N | --wheels FILE...] [--results DIR] [--summary FILE]

Downloads the first N wheels of the pinned list below with `pip download`
(kept in a cache between runs), or takes the local wheel files given with
--wheels, and writes each of them in every variant of bench.corpus_variants:
the wheel as published, deflate level 9, a zip of zstd members, Wheel 2.0 at
levels 3, 10 and 19, window log 27, content links off, tar ordered by
extension. For each wheel and variant it measures the size, the pack time, the
unpack+verify time (best of --repeat rounds) and the peak resident memory of
packing and of unpacking, each step in a child process whose address space is
bounded; from sizes and unpack times it computes the download speed below
which (or above which) a variant is the faster install, as the format
discussion did. A failed wheel or step is reported and the run goes on; the
exit status is 1 when anything failed, after everything is written.

Writes, under --results (default bench/results/corpus/): report.md, the PNG
charts and results.json; and --summary (default docs/BENCH-CORPUS.md) with the
charts and a copy of the report in a `corpus/` folder beside it. Every figure
in them comes from the run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

import matplotlib

from bench import corpus_charts
from bench.common import (
    DEFAULT_CACHE,
    MB,
    MIB,
    ROOT,
    TOPDIR_NOTE,
    Failure,
    PipContext,
    archive_source,
    cpu_model,
    describe,
    fetch_wheels,
    load_average,
    machine_lines,
    mark_topdir,
    mb,
    pip_context,
    pip_environment,
    pip_environment_section,
    rate,
    ratio,
)
from bench.corpus_variants import (
    BY_KEY,
    COMPARISONS,
    PUBLISHED,
    VARIANTS,
    Container,
    StepFailed,
    StepRequest,
    StepResult,
    Variant,
    measure_step,
)
from nwcache.archive import Archive

DEFAULT_RESULTS = ROOT / "bench" / "results" / "corpus"
DEFAULT_SUMMARY = ROOT / "docs" / "BENCH-CORPUS.md"
DEFAULT_MEMORY_LIMIT_MIB = 4096
DEFAULT_STEP_TIMEOUT = 3600.0

# Popular wheels, pinned so that runs stay comparable, roughly in the order of
# their PyPI downloads; `--top N` takes the first N. Compiled wheels, whose
# bytes dominate what installers download, are kept even where smaller pure
# helpers download more often. cp311 manylinux x86_64 or pure.
WHEELS: tuple[str, ...] = (
    "boto3==1.35.80",
    "botocore==1.35.80",
    "urllib3==2.2.3",
    "setuptools==75.6.0",
    "requests==2.32.3",
    "certifi==2024.8.30",
    "idna==3.10",
    "charset-normalizer==3.4.0",
    "typing-extensions==4.12.2",
    "numpy==2.1.3",
    "PyYAML==6.0.2",
    "pip==24.3.1",
    "cryptography==44.0.0",
    "protobuf==5.29.1",
    "pydantic-core==2.27.1",
    "google-api-core==2.24.0",
    "cffi==1.17.1",
    "pandas==2.2.3",
    "grpcio==1.68.1",
    "MarkupSafe==3.0.2",
    "psutil==6.1.0",
    "SQLAlchemy==2.0.36",
    "aiohttp==3.11.10",
    "pyarrow==18.1.0",
    "regex==2024.11.6",
    "lxml==5.3.0",
    "pillow==11.0.0",
    "scipy==1.14.1",
    "matplotlib==3.9.3",
    "scikit-learn==1.5.2",
)

DISCUSSION = (
    'the discuss.python.org thread "Making the wheel format more flexible (for better compression/speed)",'
    " where the break-even was computed for two algorithms A (smaller, slower to decompress) and B: A is"
    " faster when the download speed is below (size of B - size of A) / (decompress time of A - decompress"
    " time of B), times 8 bits per byte"
)


class Chart(StrEnum):
    SIZES = "sizes.png"
    RATIOS = "ratios.png"
    INSTALL = "install.png"
    TIMES = "times.png"
    MEMORY = "memory.png"


CHART_TITLES: dict[Chart, str] = {
    Chart.SIZES: "Total size per variant",
    Chart.INSTALL: "Install time against download speed",
    Chart.TIMES: "Pack and unpack+verify time",
    Chart.MEMORY: "Peak memory of pack and unpack+verify",
    Chart.RATIOS: "Size per wheel against the wheel as published",
}


# -- measuring ----------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One wheel written in one variant."""

    size: int
    content_links: int
    pack: StepResult | None  # None: not packed (the wheel as published)
    unpack: StepResult


@dataclass
class WheelRun:
    label: str  # "name version"
    filename: str
    files: int
    installed: int
    duplicates: int  # payload files whose content an earlier file already has
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    repeat: int
    memory_limit: int  # bytes
    step_timeout: float
    keep: Path | None  # keep the written archives here


def inspect_wheel(path: Path) -> WheelRun:
    """Open and validate the classic wheel (no payload read)."""
    with Archive.open(path) as archive:
        if archive.format != 1:
            raise RuntimeError(f"format {archive.format}; the corpus takes classic wheels")
        prefix = archive.dist_info + "/"
        seen: set[tuple[str, int]] = set()
        duplicates = 0
        for info in archive.files:
            if info.path.startswith(prefix):
                continue
            duplicates += info.link_key in seen
            seen.add(info.link_key)
        return WheelRun(
            f"{archive.name} {archive.version}",
            path.name,
            len(archive.files),
            archive.installed_size,
            duplicates,
        )


def measure_wheel(
    run: WheelRun,
    src: Path,
    variants: Sequence[Variant],
    scratch: Path,
    settings: Settings,
    failures: list[Failure],
) -> None:
    """Every variant of `src`: pack (unless published), then unpack+verify,
    each in a child process. A failed step is added to `failures`."""
    for variant in variants:
        out_dir = (settings.keep or scratch / "archives") / variant.key
        out_dir.mkdir(parents=True, exist_ok=True)
        archive = out_dir / src.name if variant.packs else src
        stage = "pack"
        try:
            pack = None
            if variant.packs:
                pack = measure_step(
                    StepRequest("pack", variant.key, str(src), str(archive), 1, settings.memory_limit),
                    settings.step_timeout,
                )
            stage = "unpack+verify"
            rounds = Path(tempfile.mkdtemp(prefix="unpack-", dir=scratch))
            mark_topdir(rounds)  # each round's tree starts in a fresh block group (TOPDIR_NOTE)
            try:
                unpacked = measure_step(
                    StepRequest(
                        "unpack",
                        variant.key,
                        str(archive),
                        str(rounds),
                        settings.repeat,
                        settings.memory_limit,
                    ),
                    settings.step_timeout,
                )
            finally:
                shutil.rmtree(rounds, ignore_errors=True)
        except (StepFailed, OSError) as exc:
            failures.append(Failure(run.label, f"{variant.label}: {stage}", describe(exc)))
            print(f"    {variant.key}: {stage} FAILED {describe(exc)}", flush=True)
            continue
        finally:
            if variant.packs and settings.keep is None:
                archive.unlink(missing_ok=True)
        run.cells[variant.key] = Cell(unpacked.size, pack.content_links if pack else 0, pack, unpacked)
        packed = f"pack {pack.seconds:.2f} s {pack.peak_rss / MIB:.0f} MiB, " if pack else ""
        print(
            f"    {variant.key}: {mb(unpacked.size)} MB, {packed}unpack+verify {unpacked.seconds:.3f} s"
            f" {unpacked.peak_rss / MIB:.0f} MiB",
            flush=True,
        )


# -- the figures ----------------------------------------------------------------------


class Verdict(StrEnum):
    ALWAYS = "always"  # the candidate is the faster install at every download speed
    BELOW = "below"  # ... at speeds below the break-even
    ABOVE = "above"  # ... at speeds above the break-even
    NEVER = "never"  # ... at no speed


@dataclass(frozen=True)
class BreakEven:
    verdict: Verdict
    speed: float | None = None  # bytes per second, for BELOW and ABOVE


def break_even(size: float, seconds: float, reference_size: float, reference_seconds: float) -> BreakEven:
    """When is the candidate (size, unpack seconds) the faster install than
    the reference? Install time = size / speed + unpack time, so the
    candidate wins when (reference_size - size) / speed > seconds -
    reference_seconds: the discussion's computation (see DISCUSSION)."""
    saved = reference_size - size  # bytes the candidate saves on the download
    extra = seconds - reference_seconds  # seconds it adds to unpacking
    if (saved > 0 and extra <= 0) or (saved == 0 and extra < 0):
        return BreakEven(Verdict.ALWAYS)
    if saved > 0:
        return BreakEven(Verdict.BELOW, saved / extra)
    if saved < 0 and extra < 0:
        return BreakEven(Verdict.ABOVE, saved / extra)
    return BreakEven(Verdict.NEVER)


def mbit(speed: float) -> str:
    return f"{speed * 8 / MB:,.1f} Mbit/s"


def break_even_text(b: BreakEven) -> str:
    if b.verdict is Verdict.ALWAYS:
        return "at every speed"
    if b.verdict is Verdict.NEVER:
        return "at no speed"
    assert b.speed is not None
    return f"{b.verdict.value} {mbit(b.speed)}"


def break_even_short(b: BreakEven) -> str:
    if b.verdict is Verdict.ALWAYS:
        return "all"
    if b.verdict is Verdict.NEVER:
        return "none"
    assert b.speed is not None
    return f"{'<' if b.verdict is Verdict.BELOW else '>'} {b.speed * 8 / MB:,.1f}"


@dataclass(frozen=True)
class Totals:
    """One variant over the wheels measured in every variant."""

    variant: Variant
    wheels: int
    installed: int
    size: int
    pack_s: float | None
    pack_cpu_s: float | None
    unpack_s: float  # the sum of each wheel's best round
    unpack_median_s: float  # the sum of each wheel's median round
    pack_peak: tuple[int, str] | None  # (bytes, wheel) of the largest peak
    unpack_peak: tuple[int, str]
    content_links: int


def totals_of(variant: Variant, runs: Sequence[WheelRun]) -> Totals:
    cells = [(r, r.cells[variant.key]) for r in runs]
    packs = [(r, c.pack) for r, c in cells if c.pack is not None]
    pack_peak = max(((p.peak_rss, r.label) for r, p in packs), default=None)
    return Totals(
        variant=variant,
        wheels=len(runs),
        installed=sum(r.installed for r in runs),
        size=sum(c.size for _, c in cells),
        pack_s=sum(p.seconds for _, p in packs) if packs else None,
        pack_cpu_s=sum(p.cpu_seconds for _, p in packs) if packs else None,
        unpack_s=sum(c.unpack.seconds for _, c in cells),
        unpack_median_s=sum(statistics.median(c.unpack.rounds) for _, c in cells),
        pack_peak=pack_peak,
        unpack_peak=max(((c.unpack.peak_rss, r.label) for r, c in cells), default=(0, "-")),
        content_links=sum(c.content_links for _, c in cells),
    )


def largest_address_space(runs: Sequence[WheelRun]) -> tuple[int, str] | None:
    """The largest VmPeak of any step, with the wheel, variant and step."""
    steps = [
        (step.peak_vm, f"{run.label}, {BY_KEY[key].label}, {name}")
        for run in runs
        for key, cell in run.cells.items()
        for name, step in (("pack", cell.pack), ("unpack+verify", cell.unpack))
        if step is not None
    ]
    return max(steps, default=None)


def mib(n: float) -> str:
    return f"{n / MIB:,.0f}"


def seconds_text(s: float | None, digits: int = 2) -> str:
    return "-" if s is None else f"{s:,.{digits}f}"


def change(new: float, old: float) -> str:
    return f"{(new - old) / old:+.2%}" if old else "n/a"


# -- the report -----------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    started: dt.datetime
    duration_s: float
    download_s: float
    downloaded: int
    wheels: int  # asked for
    command: str
    source: str  # nwcache.archive's
    load_start: str
    load_highest: float  # the highest 1-minute load average seen between steps
    cache: Path | None  # None: local files (--wheels)
    scratch: Path
    settings: Settings
    pip: PipContext | None
    topdir: bool  # the rounds' directories are marked chattr +T


def complete_runs(runs: Sequence[WheelRun], variants: Sequence[Variant]) -> list[WheelRun]:
    return [r for r in runs if all(v.key in r.cells for v in variants)]


def table(header: Sequence[str], align: str, rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table; `align` has one letter per column: l or r."""
    out = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |",
    ]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return out


def totals_rows(totals: Sequence[Totals], reference: Totals | None) -> list[list[str]]:
    rows = []
    for t in totals:
        faster = "-"
        if reference is not None and t.variant.key != reference.variant.key:
            faster = break_even_text(break_even(t.size, t.unpack_s, reference.size, reference.unpack_s))
        rows.append(
            [
                t.variant.label,
                mb(t.size),
                ratio(t.size, reference.size) if reference else "-",
                seconds_text(t.pack_s, 1),
                rate(t.installed, t.pack_s) if t.pack_s else "-",
                f"{t.unpack_s:,.2f} ({t.unpack_median_s:,.2f})",
                rate(t.installed, t.unpack_s),
                f"{mib(t.pack_peak[0])} ({t.pack_peak[1]})" if t.pack_peak else "-",
                f"{mib(t.unpack_peak[0])} ({t.unpack_peak[1]})",
                faster,
            ]
        )
    return rows


TOTALS_HEADER = (
    "variant",
    "size MB",
    "size / 1.0",
    "pack s",
    "pack MB/s",
    "unpack+verify s, best (median)",
    "unpack MB/s",
    "pack peak MiB (wheel)",
    "unpack peak MiB (wheel)",
    "faster install than 1.0 as published",
)


def comparison_rows(totals: dict[str, Totals]) -> list[list[str]]:
    rows = []
    for c in COMPARISONS:
        if c.candidate not in totals or c.reference not in totals:
            continue
        new, old = totals[c.candidate], totals[c.reference]
        verdict = break_even_text(break_even(new.size, new.unpack_s, old.size, old.unpack_s))
        spread = max(new.unpack_median_s - new.unpack_s, old.unpack_median_s - old.unpack_s)
        if abs(new.unpack_s - old.unpack_s) <= spread:
            verdict += "; but the time difference is within the rounds' spread"
        rows.append(
            [
                c.idea,
                new.variant.label,
                old.variant.label,
                f"{mb(new.size)} / {mb(old.size)}",
                change(new.size, old.size),
                change(new.unpack_s, old.unpack_s),
                change(new.pack_s, old.pack_s) if new.pack_s and old.pack_s else "-",
                verdict,
            ]
        )
    return rows


COMPARISON_HEADER = (
    "idea",
    "variant",
    "against",
    "MB",
    "size",
    "unpack+verify time",
    "pack time",
    "the variant is the faster install",
)


def per_wheel_table(
    runs: Sequence[WheelRun], variants: Sequence[Variant], value: Callable[[WheelRun, Cell], str]
) -> list[str]:
    rows = [
        [r.label] + [value(r, r.cells[v.key]) if v.key in r.cells else "failed" for v in variants]
        for r in runs
    ]
    return table(["wheel", *(v.label for v in variants)], "l" + "r" * len(variants), rows)


def wheel_break_even(reference: str) -> Callable[[WheelRun, Cell], str]:
    def value(run: WheelRun, cell: Cell) -> str:
        base = run.cells.get(reference)
        if base is None:
            return "-"
        if base is cell:
            return "(reference)"
        return break_even_short(break_even(cell.size, cell.unpack.seconds, base.size, base.unpack.seconds))

    return value


def run_lines(info: RunInfo, runs: Sequence[WheelRun], complete: Sequence[WheelRun]) -> list[str]:
    limit = info.settings.memory_limit
    lines = [
        f"- Date: {info.started.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- Command: `{info.command}`",
        f"- Run time: {info.duration_s / 60:.1f} min in all, of which {info.download_s:.0f} s getting wheels"
        + (
            f" ({info.downloaded} downloaded, {info.wheels - info.downloaded} from the cache)"
            if info.cache is not None
            else " (local files given with --wheels)"
        ),
        f"- Wheels: {info.wheels} asked for, {len(runs)} opened, {len(complete)} measured in every variant"
        f" ({sum(r.files for r in complete):,} files, {mb(sum(r.installed for r in complete))} MB installed)",
    ]
    lines += machine_lines(
        load_start=info.load_start,
        pip=info.pip or PipContext("not used", (), (), None),
        source=info.source,
        scratch=info.scratch,
        cache=info.cache,
    )
    lines += [
        f"- Highest 1-minute load average seen between steps: {info.load_highest:.2f}"
        f" ({os.cpu_count()} cores; other work on the machine slows every variant alike, not the sizes)",
        f"- zlib {zlib.ZLIB_RUNTIME_VERSION}, matplotlib {matplotlib.__version__}",
        f"- Each pack and unpack+verify step: one child process, address space bounded to {mib(limit)} MiB"
        f" (RLIMIT_AS), {info.settings.step_timeout:.0f} s at most; unpack+verify: best of {info.settings.repeat}"
        " rounds; pack: one round",
    ]
    return lines


def method_lines(info: RunInfo) -> list[str]:
    return [
        "- Pack: each variant is written from the published wheel, whose every file is verified against RECORD"
        " on the way; the time is the step's wall time (reading and inflating the published wheel included),"
        " after `os.sync()`, with the source read once beforehand so that no step pays for the disk. zstd runs"
        f" {os.cpu_count()} worker threads where the writer uses them (2.0 payloads; zstd members larger than a job).",
        "- Unpack+verify: into a fresh directory on the scratch file system, after `os.sync()`, the archive read"
        " once beforehand. The zips (as published, deflate 9) are extracted with `zipfile.ZipFile.extractall`"
        " (CRC-32) and then every file's sha256 is checked against RECORD; the zstd-member zip is extracted member by"
        " member the same way (CRC-32 and size per member, since Python 3.11's zipfile cannot decode zstd"
        " members) and then checked against RECORD alike; 2.0 is `Archive.open` + `unpack(..., links=copy)`, which"
        " checks every file's size and hash against RECORD and the zstd checksums.",
        f"- {TOPDIR_NOTE}"
        if info.topdir
        else "- The scratch file system has no `chattr +T` flag: the rounds unpack beside each other.",
        "- Memory: peak resident memory (VmHWM from /proc/self/status) of the child process during the step"
        " alone: it is reset through /proc/self/clear_refs once the interpreter and its imports are loaded, so"
        " each figure includes their resident pages (the `at rest` figure below) plus what the step added. The"
        " address-space bound (RLIMIT_AS) makes a step that needs more fail, be reported, and the run go on.",
        f"- Break-even download speed, following {DISCUSSION}: installing = downloading (size / speed) + unpacking"
        " and verifying; a variant that saves S bytes on the download and costs T more seconds to unpack+verify"
        " is the faster install below S / T bytes per second (times 8 for bit/s), at every speed when it is"
        " both smaller and no slower to unpack, and only above |S| / |T| when it is larger but faster to unpack.",
        "- Noise: the machine is shared, so beside each total of best rounds stands the total of median rounds;"
        " a comparison whose unpack+verify difference is smaller than the gap between median and best on either"
        " side says so, and its break-even is not to be trusted.",
        "- MB = 10^6 bytes; MiB = 2^20 bytes; Mbit/s = 10^6 bits per second; MB/s are installed"
        " (uncompressed) bytes per second.",
    ]


def variant_rows(variants: Sequence[Variant]) -> list[list[str]]:
    unpack_by = {
        Container.PUBLISHED: "zipfile + RECORD check",
        Container.ZIP_DEFLATE: "zipfile + RECORD check",
        Container.ZIP_ZSTD: "member by member + RECORD check",
        Container.V2: "`unpack`",
    }
    return [[f"`{v.key}`", v.label, v.description, unpack_by[v.container]] for v in variants]


def render_report(
    runs: Sequence[WheelRun],
    variants: Sequence[Variant],
    failures: Sequence[Failure],
    info: RunInfo,
    charts: Sequence[Chart],
) -> str:
    complete = complete_runs(runs, variants)
    totals = [totals_of(v, complete) for v in variants]
    by_key = {t.variant.key: t for t in totals}
    reference = by_key.get(PUBLISHED.key)
    base = [c.pack.base_rss for r in complete for c in r.cells.values() if c.pack] + [
        c.unpack.base_rss for r in complete for c in r.cells.values()
    ]
    lines = [
        "# Corpus benchmark: every variant of the Wheel 2.0 idea",
        "",
        "Generated by `bench/corpus.py` (`make bench-corpus`); every figure below comes from the run recorded"
        " here. Rerun to refresh it.",
        "",
        "## Run",
        "",
        *run_lines(info, runs, complete),
        "",
    ]
    if info.pip is not None:
        lines += pip_environment_section(info.pip)
    lines += ["## Variants", ""]
    lines += table(["key", "variant", "what it is", "unpack+verify"], "llll", variant_rows(variants))
    lines += [
        "",
        "The zstd-member zip is a benchmark-only container: it measures zstd without the single stream, and is"
        " not a format nwcache writes for use or reads.",
        "",
        "## Method",
        "",
        *method_lines(info),
    ]
    if base:
        lines.append(
            f"- At rest (after imports, before the step), the child processes held {mib(min(base))} to"
            f" {mib(max(base))} MiB resident."
        )
    widest = largest_address_space(runs)
    if widest:
        lines.append(
            f"- The most address space any step's process had (VmPeak): {mib(widest[0])} MiB ({widest[1]}),"
            f" against the bound of {mib(info.settings.memory_limit)} MiB."
        )
    lines += ["", "## Totals", ""]
    if failures:
        lines += [f"The totals cover the {len(complete)} wheels measured in every variant; see Failures.", ""]
    lines += table(TOTALS_HEADER, "lrrrrrrrrl", totals_rows(totals, reference))
    links = [t for t in totals if t.variant.container is Container.V2]
    duplicates = sum(r.duplicates for r in complete)
    lines += [
        "",
        f"Payload files whose content an earlier file already has: {duplicates:,}; content links written by the"
        f" 2.0 variants: {', '.join(f'{t.variant.label} {t.content_links:,}' for t in links) or 'none'}.",
        "",
        "## One idea at a time",
        "",
        "Each row changes one thing against another variant over the same wheels; negative changes are"
        " savings. The last column applies the break-even computation to the two variants.",
        "",
    ]
    lines += table(COMPARISON_HEADER, "lllrrrrl", comparison_rows(by_key))
    lines += ["", "## Charts", ""]
    for chart in charts:
        lines += [f"![{CHART_TITLES[chart]}]({chart.value})", ""]
    lines += ["## Per wheel", ""]
    sections: list[tuple[str, Callable[[WheelRun, Cell], str]]] = [
        ("Size, MB", lambda r, c: mb(c.size)),
        (
            "Size as a share of the wheel as published",
            lambda r, c: ratio(c.size, r.cells[PUBLISHED.key].size) if PUBLISHED.key in r.cells else "-",
        ),
        ("Pack time, s", lambda r, c: seconds_text(c.pack.seconds if c.pack else None)),
        ("Unpack+verify time, s (best round)", lambda r, c: f"{c.unpack.seconds:.3f}"),
        ("Pack peak resident memory, MiB", lambda r, c: mib(c.pack.peak_rss) if c.pack else "-"),
        ("Unpack+verify peak resident memory, MiB", lambda r, c: mib(c.unpack.peak_rss)),
        (
            "Faster install than the wheel as published: at all speeds, below (<) or above (>) so many Mbit/s, or none",
            wheel_break_even(PUBLISHED.key),
        ),
    ]
    for title, value in sections:
        lines += [f"### {title}", ""]
        lines += per_wheel_table(runs, variants, value)
        lines.append("")
    lines += [
        "Wheels: "
        + ", ".join(f"`{r.filename}` ({r.files:,} files, {mb(r.installed)} MB installed)" for r in runs),
        "",
        "## Failures",
        "",
    ]
    if not failures:
        lines.append("None: every wheel was fetched, opened, packed in every variant, unpacked and verified.")
    else:
        lines += table(["wheel", "stage", "error"], "lll", [[f.wheel, f.stage, f.error] for f in failures])
    lines.append("")
    return "\n".join(lines)


def render_summary(
    runs: Sequence[WheelRun],
    variants: Sequence[Variant],
    failures: Sequence[Failure],
    info: RunInfo,
    charts: Sequence[Chart],
    folder: str,
) -> str:
    complete = complete_runs(runs, variants)
    totals = [totals_of(v, complete) for v in variants]
    by_key = {t.variant.key: t for t in totals}
    reference = by_key.get(PUBLISHED.key)
    lines = [
        "# Corpus benchmark (summary)",
        "",
        "Generated by `make bench-corpus` (`python -m bench.corpus`) from the run of"
        f" {info.started.strftime('%Y-%m-%d %H:%M %Z')}; do not edit by hand. The full report, with the"
        f" machine, the method, per-wheel tables and failures: [{folder}/report.md]({folder}/report.md).",
        "",
        f"{len(complete)} wheels measured in every variant ({mb(sum(r.installed for r in complete))} MB installed,"
        f" {sum(r.files for r in complete):,} files) of {info.wheels} asked for; {len(failures)} failure(s)."
        f" {info.duration_s / 60:.0f} min on {os.cpu_count()} cores of {cpu_model()}"
        f" (load average {info.load_start} at the start, highest 1-minute value {info.load_highest:.2f});"
        f" each step bounded to {mib(info.settings.memory_limit)} MiB of address space"
        + (
            f" (the most any used: {mib(widest[0])} MiB, {widest[1]})"
            if (widest := largest_address_space(runs))
            else ""
        )
        + ". Break-even speeds follow"
        " the format discussion: download (size / speed) plus unpack+verify.",
        "",
    ]
    lines += table(TOTALS_HEADER, "lrrrrrrrrl", totals_rows(totals, reference))
    lines += ["", "One idea at a time:", ""]
    lines += table(COMPARISON_HEADER, "lllrrrrl", comparison_rows(by_key))
    lines.append("")
    for chart in charts:
        lines += [f"![{CHART_TITLES[chart]}]({folder}/{chart.value})", ""]
    return "\n".join(lines)


def draw_charts(
    folder: Path, runs: Sequence[WheelRun], variants: Sequence[Variant], memory_limit: int
) -> list[Chart]:
    complete = complete_runs(runs, variants)
    if not complete:
        return []
    totals = [totals_of(v, complete) for v in variants]
    labels = [v.label for v in variants]
    reference = next((i for i, v in enumerate(variants) if v.key == PUBLISHED.key), 0)
    sizes = [t.size for t in totals]
    unpack_s = [t.unpack_s for t in totals]
    corpus_charts.size_chart(folder / Chart.SIZES.value, labels, sizes, reference, len(complete))
    corpus_charts.ratio_heatmap(
        folder / Chart.RATIOS.value,
        [r.label for r in complete],
        labels,
        [[r.cells[v.key].size / r.cells[variants[reference].key].size for v in variants] for r in complete],
    )
    speeds = [
        b.speed
        for t in totals
        if (b := break_even(t.size, t.unpack_s, sizes[reference], unpack_s[reference])).speed is not None
    ]
    corpus_charts.install_chart(folder / Chart.INSTALL.value, labels, sizes, unpack_s, reference, speeds)
    corpus_charts.time_chart(
        folder / Chart.TIMES.value, labels, [t.pack_s for t in totals], unpack_s, totals[0].installed
    )
    base = min(c.unpack.base_rss for r in complete for c in r.cells.values())
    corpus_charts.memory_chart(
        folder / Chart.MEMORY.value,
        labels,
        [t.pack_peak[0] if t.pack_peak else None for t in totals],
        [t.unpack_peak[0] for t in totals],
        base,
        memory_limit,
    )
    return [Chart.SIZES, Chart.INSTALL, Chart.TIMES, Chart.MEMORY, Chart.RATIOS]


def results_json(
    runs: Sequence[WheelRun], variants: Sequence[Variant], failures: Sequence[Failure], info: RunInfo
) -> str:
    return json.dumps(
        {
            "started": info.started.isoformat(),
            "duration_s": info.duration_s,
            "command": info.command,
            "variants": [asdict(v) for v in variants],
            "wheels": [asdict(r) for r in runs],
            "failures": [asdict(f) for f in failures],
        },
        indent=1,
        default=str,
    )


# -- the run --------------------------------------------------------------------------


def parse_variants(text: str) -> list[Variant]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"unknown variants {unknown}; known: {', '.join(BY_KEY)}")
    return [v for v in VARIANTS if v.key in keys]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.corpus", description=(__doc__ or "").split("\n\n")[0]
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--top",
        type=int,
        default=len(WHEELS),
        help=f"the first N wheels of the pinned list (default: all {len(WHEELS)})",
    )
    which.add_argument(
        "--wheels", type=Path, nargs="+", metavar="FILE", help="local wheel files instead of the list"
    )
    parser.add_argument(
        "--results", type=Path, default=DEFAULT_RESULTS, help="report, charts, JSON (default: %(default)s)"
    )
    parser.add_argument(
        "--summary",
        type=Path,
        default=DEFAULT_SUMMARY,
        help="short Markdown summary; its charts and the report go to a corpus/ folder beside it (default: %(default)s)",
    )
    parser.add_argument("--no-summary", action="store_true", help="write no summary")
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="wheel cache (default: %(default)s)"
    )
    parser.add_argument(
        "--variants",
        type=parse_variants,
        default=list(VARIANTS),
        help=f"comma-separated variant keys (default: all: {','.join(BY_KEY)})",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="unpack+verify rounds, best counts (default: 3)"
    )
    parser.add_argument(
        "--memory-limit",
        type=int,
        default=DEFAULT_MEMORY_LIMIT_MIB,
        metavar="MIB",
        help="address space of each step's process (default: %(default)s)",
    )
    parser.add_argument(
        "--step-timeout", type=float, default=DEFAULT_STEP_TIMEOUT, help="seconds (default: %(default)s)"
    )
    parser.add_argument(
        "--keep-archives", type=Path, metavar="DIR", help="keep every written archive under DIR/VARIANT/"
    )
    parser.add_argument(
        "--scratch", type=Path, default=Path(tempfile.gettempdir()), help="temporary directories here"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.top <= len(WHEELS):
        parser.error(f"--top must be within 1..{len(WHEELS)}: the pinned list has {len(WHEELS)} wheels")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    source = archive_source()
    load_start = load_average()
    variants: list[Variant] = args.variants
    settings = Settings(args.repeat, args.memory_limit * MIB, args.step_timeout, args.keep_archives)
    failures: list[Failure] = []
    pip: PipContext | None = None
    cache: Path | None = None
    if args.wheels:
        sources = [(p.name, "", p.resolve()) for p in args.wheels]
        downloaded, asked = 0, len(args.wheels)
    else:
        env = pip_environment()
        pip, cache = pip_context(env), args.cache.resolve()
        pinned = [(spec.partition("==")[0], spec.partition("==")[2]) for spec in WHEELS[: args.top]]
        sources, downloaded = fetch_wheels(pinned, cache, env, failures)
        asked = args.top
    download_s = time.perf_counter() - clock
    print(f"bench.corpus: {len(sources)} wheels, variants: {', '.join(v.key for v in variants)}", flush=True)

    runs: list[WheelRun] = []
    load_highest = os.getloadavg()[0]
    args.scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nwcache-corpus-", dir=args.scratch) as tmp:
        topdir = mark_topdir(Path(tmp))
        for i, (name, version, path) in enumerate(sources, 1):
            label = f"{name} {version}".strip()
            t0 = time.perf_counter()
            try:
                run = inspect_wheel(path)
            except Exception as exc:
                failures.append(Failure(label, "open", describe(exc)))
                print(f"[{i}/{len(sources)}] {label}: FAILED to open: {describe(exc)}", flush=True)
                continue
            print(
                f"[{i}/{len(sources)}] {run.label}: {run.files} files, {mb(run.installed)} MB installed",
                flush=True,
            )
            measure_wheel(run, path, variants, Path(tmp), settings, failures)
            runs.append(run)
            load_highest = max(load_highest, os.getloadavg()[0])
            print(
                f"  {time.perf_counter() - t0:.0f} s, {(time.perf_counter() - clock) / 60:.1f} min in all",
                flush=True,
            )

    info = RunInfo(
        started=started,
        duration_s=time.perf_counter() - clock,
        download_s=download_s,
        downloaded=downloaded,
        wheels=asked,
        command=shlex.join(["python", "-m", "bench.corpus", *(sys.argv[1:] if argv is None else argv)]),
        source=source,
        load_start=load_start,
        load_highest=load_highest,
        cache=cache,
        scratch=args.scratch.resolve(),
        settings=settings,
        pip=pip,
        topdir=topdir,
    )
    results: Path = args.results
    results.mkdir(parents=True, exist_ok=True)
    for stale in Chart:
        (results / stale.value).unlink(missing_ok=True)
    charts = draw_charts(results, runs, variants, settings.memory_limit)
    (results / "report.md").write_text(render_report(runs, variants, failures, info, charts))
    (results / "results.json").write_text(results_json(runs, variants, failures, info))
    print(f"wrote {results}/report.md, results.json and {len(charts)} charts")
    if not args.no_summary:
        summary: Path = args.summary
        folder = summary.parent / "corpus"
        folder.mkdir(parents=True, exist_ok=True)
        for name in ["report.md", "results.json", *(c.value for c in Chart)]:
            (folder / name).unlink(missing_ok=True)
            if (results / name).exists():
                shutil.copyfile(results / name, folder / name)
        summary.write_text(render_summary(runs, variants, failures, info, charts, folder.name))
        print(f"wrote {summary} and {folder}/")
    for f in failures:
        print(f"FAILED {f.wheel} ({f.stage}): {f.error}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
