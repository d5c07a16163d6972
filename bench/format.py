"""Wheel 2.0 against classic wheels, on real wheels from PyPI (a benchmark, not a test).

    python -m bench.format [--out docs/BENCH-FORMAT.md] [--levels 3,10,19] [--cache DIR]

Downloads the pinned wheels below into a cache directory (kept between runs),
then for each wheel: converts it to 2.0 at the default level and window
(timed), unpacks the 2.0 archive with `unpack` (which verifies every file
against RECORD) and extracts the classic wheel with `zipfile`, best of three
each, into fresh directories on the same filesystem, checks that both trees
hold the same bytes, and writes it again with the sweep settings (other zstd
levels, stored .dist-info members, a larger window). Every figure in the
Markdown report comes from the run. A wheel that fails is reported and the run
goes on; the exit status is 1 when any wheel failed, after writing the report.

pip runs with its own environment: PIP_CONFIG_FILE=/dev/null and no
PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS or PIP_NO_INDEX, and PyPI
named with --index-url, so the machine's pip configuration (extra local
indexes, find-links) does not choose the files; PYTHONDONTWRITEBYTECODE is set
explicitly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import filecmp
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

from bench.common import (
    DEFAULT_CACHE,
    ROOT,
    TOPDIR_NOTE,
    Failure,
    PipContext,
    archive_source,
    describe,
    extract_and_verify,
    fetch_wheels,
    load_average,
    machine_lines,
    mark_topdir,
    mb,
    pct,
    pip_context,
    pip_environment,
    pip_environment_section,
    rate,
    ratio,
    speedup,
    warm,
)
from nwcache.archive import (
    DEFAULT_LEVEL,
    DEFAULT_WINDOW_LOG,
    Archive,
    LinkMode,
    convert,
    unpack,
    write_v2,
)

DEFAULT_OUT = ROOT / "docs" / "BENCH-FORMAT.md"

# The corpus: exact versions, so that runs stay comparable.
WHEELS: tuple[tuple[str, str], ...] = (
    ("numpy", "2.1.3"),
    ("pandas", "2.2.3"),
    ("scipy", "1.14.1"),
    ("pyarrow", "18.1.0"),
    ("cryptography", "44.0.0"),
    ("grpcio", "1.68.1"),
    ("setuptools", "75.6.0"),
    ("pip", "24.3.1"),
    ("requests", "2.32.3"),
    ("urllib3", "2.2.3"),
    ("boto3", "1.35.80"),
    ("botocore", "1.35.80"),
    ("pydantic-core", "2.27.1"),
    ("lxml", "5.3.0"),
    ("pillow", "11.0.0"),
    ("matplotlib", "3.9.3"),
    ("psutil", "6.1.0"),
    ("charset-normalizer", "3.4.0"),
    ("aiohttp", "3.11.10"),
    ("PyYAML", "6.0.2"),
    ("SQLAlchemy", "2.0.36"),
    ("regex", "2024.11.6"),
    ("MarkupSafe", "3.0.2"),
    ("protobuf", "5.29.1"),
    ("google-api-core", "2.24.0"),
)

# Wheels for the window-log-27 row. Level 19 packs at 1-2 MB/s here, so a second
# level-19 pass over the whole corpus (about 500 MB installed) would nearly double
# the run. The subset keeps wheels whose payload exceeds the 8 MiB window of log
# 23, where a larger window can matter (compiled libraries, test trees, JSON
# data, fonts), with scipy for the largest, plus two small ones; pyarrow, the
# other 130 MB one, is left out for time. --full-sweep runs it on every wheel.
WINDOW_SUBSET: frozenset[str] = frozenset(
    canonicalize_name(n)
    for n in ("numpy", "pandas", "scipy", "botocore", "matplotlib", "grpcio", "requests", "PyYAML")
)


SIZE_TARGET = 0.55  # 2.0 total size at most this share of 1.0
SPEED_TARGET = 2.0  # unpack+verify at least this many times faster than zipfile extract
LARGE_WINDOW_LOG = 27
DEFLATED, STORED = 8, 0


# -- the corpus -------------------------------------------------------------------


# -- measurements -----------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One way of writing a 2.0 archive."""

    key: str
    label: str
    level: int
    window_log: int
    metadata_method: int
    subset: frozenset[str] | None = None  # canonical names; None: every wheel
    baseline: str = "default"  # the key of the setting this one is compared with

    def applies_to(self, name: str) -> bool:
        return self.subset is None or canonicalize_name(name) in self.subset


DEFAULT_SETTING = Setting(
    "default",
    f"level {DEFAULT_LEVEL}, window log {DEFAULT_WINDOW_LOG}, .dist-info deflated (default)",
    DEFAULT_LEVEL,
    DEFAULT_WINDOW_LOG,
    DEFLATED,
)


def setting_label(level: int, window_log: int, metadata_method: int) -> str:
    meta = "deflated" if metadata_method == DEFLATED else "stored"
    return f"level {level}, window log {window_log}, .dist-info {meta}"


@dataclass(frozen=True)
class Point:
    size: int
    payload: int
    pack_s: float
    pack_cpu_s: float


@dataclass
class WheelResult:
    name: str
    version: str
    filename: str
    files: int
    installed: int
    dist_info_installed: int
    v1_size: int
    v1_dist_info: int  # compressed bytes of the .dist-info members
    v2_size: int
    v2_payload: int
    v2_dist_info: int
    links: int
    pack_s: float
    pack_cpu_s: float
    extract_s: float
    extract_verify_s: float  # zipfile extract + every file against RECORD
    unpack_s: float
    sweep: dict[str, Point] = field(default_factory=dict)


def dist_info_bytes(path: Path) -> int:
    """Compressed bytes of the .dist-info members of a zip (data only)."""
    with zipfile.ZipFile(path) as zf:
        return sum(
            info.compress_size
            for info in zf.infolist()
            if info.filename.split("/", 1)[0].endswith(".dist-info")
        )


def tree_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def compare_trees(expected: Path, actual: Path) -> str | None:
    """None when both trees hold the same files with the same bytes."""
    want, got = tree_files(expected), tree_files(actual)
    if want != got:
        missing, extra = sorted(want - got), sorted(got - want)
        return f"file sets differ: missing {missing[:3]}, extra {extra[:3]}"
    _, mismatch, errors = filecmp.cmpfiles(expected, actual, sorted(want), shallow=False)
    if mismatch or errors:
        return f"contents differ: {sorted(mismatch + errors)[:3]}"
    return None


def pack(src: Path, dest: Path, setting: Setting) -> tuple[Point, int]:
    """Write `src` as 2.0 with `setting`, timed; returns the point and the
    number of content links."""
    if dest.exists():
        dest.unlink()
    os.sync()
    start, cpu = time.perf_counter(), time.process_time()
    if setting == DEFAULT_SETTING:
        result = convert(src, dest, to=2, level=setting.level, window_log=setting.window_log)
    else:
        with Archive.open(src) as archive:
            result = write_v2(
                archive,
                dest,
                level=setting.level,
                window_log=setting.window_log,
                content_links=True,
                metadata_method=setting.metadata_method,
            )
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    with Archive.open(dest) as check:
        if check.format != 2 or check.window_log != setting.window_log or check.payload is None:
            raise RuntimeError(f"wrote format {check.format}, window log {check.window_log}")
        payload = check.payload.compressed_size
    if result.size != dest.stat().st_size:
        raise RuntimeError(
            f"WriteResult.size {result.size} differs from the file's {dest.stat().st_size} bytes"
        )
    return Point(result.size, payload, wall, cpu), result.content_links


def time_extractions(
    v1: Path, v2: Path, scratch: Path, repeat: int
) -> tuple[float, float, float, str | None]:
    """Best-of-`repeat` wall times of zipfile's extractall of `v1`, of the
    same followed by checking every file against RECORD, and of opening and
    unpacking `v2`, each into a fresh directory under `scratch`; the trees of
    the first round are compared byte for byte."""
    warm([v1, v2])
    best_zip, best_zip_verified, best_v2 = math.inf, math.inf, math.inf
    difference: str | None = None
    for round_ in range(repeat):
        base = Path(tempfile.mkdtemp(prefix="round-", dir=scratch))
        mark_topdir(base)  # the trees made in it start in fresh block groups (TOPDIR_NOTE)
        try:
            zip_dest, verified_dest, v2_dest = base / "zip", base / "zip-verified", base / "v2"
            os.sync()
            start = time.perf_counter()
            with zipfile.ZipFile(v1) as zf:
                zf.extractall(zip_dest)
            best_zip = min(best_zip, time.perf_counter() - start)
            os.sync()
            start = time.perf_counter()
            extract_and_verify(v1, verified_dest)
            best_zip_verified = min(best_zip_verified, time.perf_counter() - start)
            os.sync()
            start = time.perf_counter()
            with Archive.open(v2) as archive:
                unpack(archive, v2_dest, links=LinkMode.COPY)
            best_v2 = min(best_v2, time.perf_counter() - start)
            if round_ == 0:
                difference = compare_trees(zip_dest, v2_dest)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    return best_zip, best_zip_verified, best_v2, difference


def measure(
    name: str,
    version: str,
    src: Path,
    settings: Sequence[Setting],
    scratch: Path,
    repeat: int,
    failures: list[Failure],
) -> WheelResult:
    label = f"{name} {version}"
    with Archive.open(src) as archive:
        if archive.format != 1:
            raise RuntimeError(f"the downloaded wheel is format {archive.format}")
        prefix = archive.dist_info + "/"
        files = len(archive.files)
        installed = archive.installed_size
        dist_info_installed = sum(f.size for f in archive.files if f.path.startswith(prefix))
    out = scratch / "out"
    out.mkdir(exist_ok=True)
    v2 = out / src.name
    point, links = pack(src, v2, DEFAULT_SETTING)
    extract_s, extract_verify_s, unpack_s, difference = time_extractions(src, v2, scratch, repeat)
    if difference is not None:
        failures.append(Failure(label, "2.0 unpack differs from zipfile extract", difference))
    result = WheelResult(
        name=name,
        version=version,
        filename=src.name,
        files=files,
        installed=installed,
        dist_info_installed=dist_info_installed,
        v1_size=src.stat().st_size,
        v1_dist_info=dist_info_bytes(src),
        v2_size=point.size,
        v2_payload=point.payload,
        v2_dist_info=dist_info_bytes(v2),
        links=links,
        pack_s=point.pack_s,
        pack_cpu_s=point.pack_cpu_s,
        extract_s=extract_s,
        extract_verify_s=extract_verify_s,
        unpack_s=unpack_s,
    )
    result.sweep[DEFAULT_SETTING.key] = point
    v2.unlink()
    for setting in settings:
        if not setting.applies_to(name):
            continue
        dest = out / "sweep" / src.name
        try:
            result.sweep[setting.key], _ = pack(src, dest, setting)
        except Exception as exc:
            failures.append(Failure(label, f"pack with {setting.label}", describe(exc)))
            traceback.print_exc()
        finally:
            dest.unlink(missing_ok=True)
    return result


# -- the report -------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


@dataclass(frozen=True)
class RunInfo:
    started: dt.datetime
    duration_s: float
    download_s: float
    downloaded: int
    wheels: int
    command: str
    archive_source: str
    load_start: str
    cache: Path
    scratch: Path
    repeat: int
    pip: PipContext
    topdir: bool  # the rounds' directories are marked chattr +T


def render(
    results: list[WheelResult],
    failures: list[Failure],
    settings: Sequence[Setting],
    info: RunInfo,
) -> str:
    lines: list[str] = []
    add = lines.append
    total_v1 = sum(r.v1_size for r in results)
    total_v2 = sum(r.v2_size for r in results)
    total_installed = sum(r.installed for r in results)
    total_extract = sum(r.extract_s for r in results)
    total_extract_verify = sum(r.extract_verify_s for r in results)
    total_unpack = sum(r.unpack_s for r in results)
    total_pack = sum(r.pack_s for r in results)
    total_pack_cpu = sum(r.pack_cpu_s for r in results)
    size_ok = bool(results) and total_v2 <= SIZE_TARGET * total_v1
    speed_ok = bool(results) and total_extract >= SPEED_TARGET * total_unpack
    size_each = sum(r.v2_size <= SIZE_TARGET * r.v1_size for r in results)
    speed_each = sum(r.extract_s >= SPEED_TARGET * r.unpack_s for r in results)

    add("# Wheel 2.0 format benchmark")
    add("")
    add(
        "Generated by `bench/format.py` (`make bench-format`); every figure below comes from the run"
        " recorded here. Rerun to refresh it."
    )
    add("")
    add("## Run")
    add("")
    add(f"- Date: {info.started.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    add(f"- Command: `{info.command}`")
    add(
        f"- Run time: {info.duration_s / 60:.1f} min in all, of which {info.download_s:.0f} s downloading"
        f" ({info.downloaded} wheels fetched, {info.wheels - info.downloaded} from the cache)"
    )
    lines += machine_lines(
        load_start=info.load_start,
        pip=info.pip,
        source=info.archive_source,
        scratch=info.scratch,
        cache=info.cache,
    )
    add("")
    lines += pip_environment_section(info.pip)
    add("## Method")
    add("")
    add(
        f"- {TOPDIR_NOTE}"
        if info.topdir
        else "- The scratch file system has no `chattr +T` flag: the rounds unpack beside each other."
    )
    add(
        f"- 1.0: the wheel as published. 2.0: `convert(wheel, out, to=2)` at the default level {DEFAULT_LEVEL}"
        f" and window log {DEFAULT_WINDOW_LOG}, content links on, .dist-info members deflated; the pack time"
        " is its wall time (reading, inflating and verifying the 1.0 wheel included; the writer runs"
        f" {os.cpu_count()} zstd worker threads)."
    )
    add(
        "- Unpack: a fresh directory per round on the scratch filesystem; 1.0 is"
        " `zipfile.ZipFile(path).extractall(dir)` (CRC-32 checks only), 2.0 is `Archive.open` +"
        " `unpack(archive, dir, links=LinkMode.COPY)`, which checks every file's size and RECORD hash and the"
        " payload's checksums. For a like-for-like figure, 1.0 is also timed as zipfile extraction followed by"
        " the same check of every extracted file's sha256 and size against RECORD (what a verifying installer"
        " adds); the target itself is against plain zipfile extraction. Both archive files are read once"
        " beforehand so that neither pays for the disk,"
        f" `os.sync()` runs before every timed step, and the best of {info.repeat} rounds counts. The trees of"
        " the first round are compared byte for byte."
    )
    add(
        "- .dist-info share: of the installed bytes, and of the 2.0 archive (compressed bytes of its"
        " .dist-info members, which stay plain zip members)."
    )
    add("- MB = 10^6 bytes; speeds are installed (uncompressed) MB per second.")
    add("")
    add("## Targets")
    add("")
    add("| target | measured | result |")
    add("| --- | --- | --- |")
    add(
        f"| 2.0 total size at most {SIZE_TARGET:.0%} of 1.0 | {mb(total_v2)} MB / {mb(total_v1)} MB ="
        f" {pct(total_v2, total_v1)} ({size_each} of {len(results)} wheels within it on their own)"
        f" | {verdict(size_ok)} |"
    )
    add(
        f"| unpack+verify at least {SPEED_TARGET:g}x faster than zipfile extract | {total_extract:.2f} s /"
        f" {total_unpack:.2f} s = {speedup(total_extract, total_unpack)} ({speed_each} of {len(results)}"
        f" wheels within it on their own) | {verdict(speed_ok)} |"
    )
    add("")
    if failures:
        add(f"The totals cover the {len(results)} wheels that were measured; see Failures below.")
        add("")
    add("## Totals")
    add("")
    add(f"- Wheels measured: {len(results)} of {len(WHEELS)}, {sum(r.files for r in results):,} files")
    add(f"- Installed: {mb(total_installed)} MB")
    add(f"- 1.0: {mb(total_v1)} MB ({total_v1:,} bytes)")
    add(f"- 2.0: {mb(total_v2)} MB ({total_v2:,} bytes), {ratio(total_v2, total_v1)} of 1.0")
    add(
        f"- Pack 1.0 -> 2.0: {total_pack:.1f} s wall, {total_pack_cpu:.1f} s CPU,"
        f" {rate(total_installed, total_pack)} MB/s"
    )
    add(
        f"- zipfile extract of 1.0: {total_extract:.2f} s ({rate(total_installed, total_extract)} MB/s);"
        f" 2.0 unpack+verify: {total_unpack:.2f} s ({rate(total_installed, total_unpack)} MB/s);"
        f" {speedup(total_extract, total_unpack)} faster"
    )
    add(
        f"- With the same checks on both sides (zipfile extract, then every file's sha256 against RECORD):"
        f" {total_extract_verify:.2f} s ({rate(total_installed, total_extract_verify)} MB/s), so 2.0 unpack+verify is"
        f" {speedup(total_extract_verify, total_unpack)} faster"
    )
    add(f"- Content links: {sum(r.links for r in results):,}")
    add(
        f"- .dist-info share: {pct(sum(r.dist_info_installed for r in results), total_installed)} of the installed"
        f" bytes, {pct(sum(r.v1_dist_info for r in results), total_v1)} of 1.0,"
        f" {pct(sum(r.v2_dist_info for r in results), total_v2)} of 2.0"
    )
    add("")
    add("## Per wheel")
    add("")
    add(
        "| wheel | files | installed MB | 1.0 MB | 2.0 MB | 2.0/1.0 | pack s | zip extract s | zip extract + RECORD check s"
        " | 2.0 unpack s | speed-up | links | .dist-info % installed / 2.0 |"
    )
    add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        add(
            f"| {r.name} {r.version} | {r.files:,} | {mb(r.installed)} | {mb(r.v1_size)} | {mb(r.v2_size)}"
            f" | {ratio(r.v2_size, r.v1_size)} | {r.pack_s:.2f} | {r.extract_s:.3f} | {r.extract_verify_s:.3f} | {r.unpack_s:.3f}"
            f" | {speedup(r.extract_s, r.unpack_s)} | {r.links:,}"
            f" | {pct(r.dist_info_installed, r.installed)} / {pct(r.v2_dist_info, r.v2_size)} |"
        )
    add(
        f"| **total** | {sum(r.files for r in results):,} | {mb(total_installed)} | {mb(total_v1)} | {mb(total_v2)}"
        f" | {ratio(total_v2, total_v1)} | {total_pack:.2f} | {total_extract:.3f} | {total_extract_verify:.3f} | {total_unpack:.3f}"
        f" | {speedup(total_extract, total_unpack)} | {sum(r.links for r in results):,}"
        f" | {pct(sum(r.dist_info_installed for r in results), total_installed)}"
        f" / {pct(sum(r.v2_dist_info for r in results), total_v2)} |"
    )
    add("")
    add("Files: " + ", ".join(f"`{r.filename}`" for r in results))
    add("")
    add("## Settings sweep")
    add("")
    add(
        "Each row writes the wheels it covers with `write_v2` (content links on) and is compared with"
        " another setting over the same wheels, so rows on a subset compare like with like. Pack times are"
        " wall times including reading and verifying the 1.0 wheel."
    )
    add("")
    add(
        "| setting | wheels | 1.0 MB | 2.0 MB | 2.0/1.0 | compared with | that, same wheels MB | size change"
        " | pack s | pack MB/s |"
    )
    add("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    every = [DEFAULT_SETTING, *settings]
    labels = {s.key: s.label for s in every}
    for setting in every:
        covered = [r for r in results if setting.key in r.sweep and setting.baseline in r.sweep]
        if not covered:
            continue
        size = sum(r.sweep[setting.key].size for r in covered)
        base = sum(r.sweep[setting.baseline].size for r in covered)
        v1 = sum(r.v1_size for r in covered)
        seconds = sum(r.sweep[setting.key].pack_s for r in covered)
        installed = sum(r.installed for r in covered)
        scope = f"{len(covered)}" if setting.subset is None else f"{len(covered)} (subset)"
        compared = "-" if setting.baseline == setting.key else labels.get(setting.baseline, setting.baseline)
        change = f"{(size - base) / base:+.2%}" if base else "n/a"
        add(
            f"| {setting.label} | {scope} | {mb(v1)} | {mb(size)} | {ratio(size, v1)} | {compared} | {mb(base)}"
            f" | {change} | {seconds:.1f} | {rate(installed, seconds)} |"
        )
    add("")
    notes = sweep_notes(results, settings)
    for note in notes:
        add(f"- {note}")
    if notes:
        add("")
    add("## Failures")
    add("")
    if not failures:
        add("None: every wheel downloaded, converted, unpacked, verified and matched its zipfile extraction.")
    else:
        add("| wheel | stage | error |")
        add("| --- | --- | --- |")
        for f in failures:
            error = f.error.replace("|", "\\|")
            add(f"| {f.wheel} | {f.stage} | {error} |")
    add("")
    return "\n".join(lines)


def sweep_notes(results: list[WheelResult], settings: Sequence[Setting]) -> list[str]:
    notes: list[str] = []
    for setting in settings:
        if setting.subset is not None:
            names = sorted(r.name for r in results if setting.key in r.sweep)
            notes.append(f"{setting.label}: run on a subset to keep the run short: {', '.join(names)}.")
        if setting.metadata_method == STORED:
            both = [r for r in results if setting.key in r.sweep and setting.baseline in r.sweep]
            same_payload = all(
                r.sweep[setting.key].payload == r.sweep[setting.baseline].payload for r in both
            )
            stored = sum(r.sweep[setting.key].size - r.sweep[setting.key].payload for r in both)
            deflated = sum(r.sweep[setting.baseline].size - r.sweep[setting.baseline].payload for r in both)
            notes.append(
                f".dist-info stored vs deflated (level {setting.level}, {len(both)} wheels): everything but the"
                f" payload member takes {mb(stored)} MB stored and {mb(deflated)} MB deflated"
                f" ({stored - deflated:+,} bytes, {pct(stored - deflated, sum(r.v2_size for r in both))} of the"
                " default 2.0 size)"
                + (
                    "; the payload members came out the same size both ways, so the difference is the metadata"
                    " alone and does not depend on the level."
                    if same_payload
                    else "; the payload members differ in size between the two, which they should not."
                )
            )
    return notes


# -- the run ----------------------------------------------------------------------


def sweep_settings(levels: Sequence[int], full: bool) -> list[Setting]:
    settings = [
        Setting(
            f"level-{level}",
            setting_label(level, DEFAULT_WINDOW_LOG, DEFLATED),
            level,
            DEFAULT_WINDOW_LOG,
            DEFLATED,
        )
        for level in levels
        if level != DEFAULT_LEVEL
    ]
    # Stored vs deflated .dist-info members: the payload does not depend on
    # it, so the cheapest level of the sweep measures it (the report checks
    # that both payloads came out the same size).
    metadata_level = min(levels)
    settings.append(
        Setting(
            "metadata-stored",
            setting_label(metadata_level, DEFAULT_WINDOW_LOG, STORED),
            metadata_level,
            DEFAULT_WINDOW_LOG,
            STORED,
            baseline=f"level-{metadata_level}" if metadata_level != DEFAULT_LEVEL else "default",
        )
    )
    if DEFAULT_LEVEL in levels:
        settings.append(
            Setting(
                "window-27",
                setting_label(DEFAULT_LEVEL, LARGE_WINDOW_LOG, DEFLATED),
                DEFAULT_LEVEL,
                LARGE_WINDOW_LOG,
                DEFLATED,
                None if full else WINDOW_SUBSET,
            )
        )
    return settings


def parse_levels(text: str) -> list[int]:
    try:
        levels = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of levels: {text!r}") from None
    if not levels or not all(1 <= x <= 22 for x in levels):
        raise argparse.ArgumentTypeError("levels must be within 1..22")
    return levels


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.format", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="Markdown report (default: %(default)s)"
    )
    parser.add_argument(
        "--levels",
        type=parse_levels,
        default=[3, 10, DEFAULT_LEVEL],
        help="zstd levels of the sweep, comma-separated (default: 3,10,19); the per-wheel table is always at"
        f" level {DEFAULT_LEVEL}, and the window log {LARGE_WINDOW_LOG} row runs only when {DEFAULT_LEVEL} is listed",
    )
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="wheel cache (default: %(default)s)"
    )
    parser.add_argument("--only", default="", help="comma-separated project names: measure just these")
    parser.add_argument("--repeat", type=int, default=3, help="unpack rounds, best counts (default: 3)")
    parser.add_argument(
        "--full-sweep",
        action="store_true",
        help=f"window log {LARGE_WINDOW_LOG} on every wheel, not a subset",
    )
    parser.add_argument(
        "--scratch", type=Path, default=Path(tempfile.gettempdir()), help="temporary directories here"
    )
    args = parser.parse_args(argv)

    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    source = archive_source()
    load_start = load_average()
    env = pip_environment()
    only = {canonicalize_name(n) for n in args.only.split(",") if n.strip()}
    wheels = [(n, v) for n, v in WHEELS if not only or canonicalize_name(n) in only]
    if only and len(wheels) != len(only):
        parser.error(
            f"--only names not in the corpus: {sorted(only - {canonicalize_name(n) for n, _ in wheels})}"
        )
    settings = sweep_settings(args.levels, args.full_sweep)
    cache: Path = args.cache.resolve()
    print(
        f"bench.format: {len(wheels)} wheels, cache {cache}, sweep: {', '.join(s.label for s in settings)}",
        flush=True,
    )

    failures: list[Failure] = []
    sources, downloaded = fetch_wheels(wheels, cache, env, failures)
    download_s = time.perf_counter() - clock

    results: list[WheelResult] = []
    args.scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nwcache-bench-", dir=args.scratch) as tmp:
        scratch = Path(tmp)
        topdir = mark_topdir(scratch)
        for i, (name, version, path) in enumerate(sources, 1):
            t0 = time.perf_counter()
            try:
                r = measure(name, version, path, settings, scratch, args.repeat, failures)
            except Exception as exc:
                failures.append(Failure(f"{name} {version}", "convert or unpack", describe(exc)))
                traceback.print_exc()
                print(f"[{i}/{len(sources)}] {name} {version}: FAILED {describe(exc)}", flush=True)
                continue
            results.append(r)
            sweep = " ".join(
                f"{s.key}={mb(r.sweep[s.key].size)}MB/{r.sweep[s.key].pack_s:.1f}s"
                for s in settings
                if s.key in r.sweep
            )
            print(
                f"[{i}/{len(sources)}] {name} {version}: 1.0 {mb(r.v1_size)} MB -> 2.0 {mb(r.v2_size)} MB"
                f" ({ratio(r.v2_size, r.v1_size)}), pack {r.pack_s:.1f}s, unpack {r.unpack_s:.3f}s"
                f" vs zip {r.extract_s:.3f}s ({speedup(r.extract_s, r.unpack_s)}), {r.links} links; {sweep};"
                f" {time.perf_counter() - t0:.0f}s, {(time.perf_counter() - clock) / 60:.1f} min in all",
                flush=True,
            )

    info = RunInfo(
        started=started,
        duration_s=time.perf_counter() - clock,
        download_s=download_s,
        downloaded=downloaded,
        wheels=len(wheels),
        archive_source=source,
        load_start=load_start,
        command=shlex.join(["python", "-m", "bench.format", *(sys.argv[1:] if argv is None else argv)]),
        cache=cache,
        scratch=args.scratch.resolve(),
        repeat=args.repeat,
        pip=pip_context(env),
        topdir=topdir,
    )
    report = render(results, failures, settings, info)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(
        f"wrote {out} in {info.duration_s / 60:.1f} min; {len(results)} wheels measured, {len(failures)} failures"
    )
    for f in failures:
        print(f"FAILED {f.wheel} ({f.stage}): {f.error}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
