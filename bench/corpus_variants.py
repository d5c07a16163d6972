"""The variants bench.corpus compares, and the child process that packs or
unpacks one archive in one variant, timed, with its memory bounded and
measured.

    python -m bench.corpus_variants REQUEST_JSON   (bench.corpus runs it, one process per step)

Each step runs in a process of its own so that its peak resident memory
(VmHWM, reset with /proc/self/clear_refs once the imports are done) belongs to
that step alone, and so that RLIMIT_AS can bound it: a step that needs more
address space than the bound fails, is reported, and the run goes on.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time
import traceback
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, cast

import zstandard

from bench.common import ROOT, check_record, extract_and_verify, warm, wheel_record_name
from nwcache.archive import (
    DEFAULT_LEVEL,
    DEFAULT_WINDOW_LOG,
    Archive,
    FileInfo,
    LinkMode,
    unpack,
    write_v1,
    write_v2,
)
from nwcache.archive.sources import DEFAULT_MAX_WINDOW_LOG
from nwcache.archive.writers import JOB_SIZE, atomic_output, by_path, default_timestamp
from nwcache.archive.zipfmt import CHUNK, ZipWriter

# APPNOTE.TXT 4.4.5 assigns method 93 to Zstandard. Python 3.11's zipfile and
# nwcache's reader refuse it: the container is measured here, never shipped.
ZIP_ZSTD_METHOD = 93
DEFLATE_MAX_LEVEL = 9
SWEEP_LEVELS = (3, 10)
LARGE_WINDOW_LOG = DEFAULT_MAX_WINDOW_LOG
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_RESULT_MARK = "RESULT "


class Container(StrEnum):
    PUBLISHED = "published"  # the wheel file as downloaded, not packed again
    ZIP_DEFLATE = "zip-deflate"  # a classic wheel written by write_v1
    ZIP_ZSTD = "zip-zstd"  # a zip whose members are each one zstd frame (benchmark only)
    V2 = "v2"  # Wheel 2.0 written by write_v2


class TarOrder(StrEnum):
    PATH = "path"
    EXTENSION = "extension"


@dataclass(frozen=True)
class Variant:
    key: str
    label: str  # short, for tables and charts
    description: str
    container: Container
    level: int = DEFAULT_LEVEL  # deflate level for ZIP_DEFLATE, zstd level otherwise
    window_log: int = DEFAULT_WINDOW_LOG
    content_links: bool = True
    tar_order: TarOrder = TarOrder.PATH

    @property
    def packs(self) -> bool:
        return self.container is not Container.PUBLISHED


PUBLISHED = Variant(
    "published",
    "1.0 as published",
    "the wheel as downloaded from PyPI (deflate at whatever level its build tool chose)",
    Container.PUBLISHED,
)
V2_DEFAULT = Variant(
    f"v2-l{DEFAULT_LEVEL}",
    f"2.0 level {DEFAULT_LEVEL} (default)",
    f"Wheel 2.0 as nwcache writes it by default: zstd level {DEFAULT_LEVEL}, window log {DEFAULT_WINDOW_LOG},"
    " content links on, tar ordered by path",
    Container.V2,
)
VARIANTS: tuple[Variant, ...] = (
    PUBLISHED,
    Variant(
        f"deflate-{DEFLATE_MAX_LEVEL}",
        f"1.0 deflate {DEFLATE_MAX_LEVEL}",
        f"the same classic wheel written again by `write_v1` with every member deflated at level {DEFLATE_MAX_LEVEL}",
        Container.ZIP_DEFLATE,
        level=DEFLATE_MAX_LEVEL,
    ),
    Variant(
        f"zip-zstd-l{DEFAULT_LEVEL}",
        f"zip, zstd per member (level {DEFAULT_LEVEL})",
        f"a zip whose members are each one zstd frame at level {DEFAULT_LEVEL} (zip method {ZIP_ZSTD_METHOD});"
        " a benchmark-only container, not a format nwcache ships or reads",
        Container.ZIP_ZSTD,
    ),
    *(
        Variant(
            f"v2-l{level}",
            f"2.0 level {level}",
            f"Wheel 2.0 at zstd level {level}, otherwise the defaults",
            Container.V2,
            level=level,
        )
        for level in SWEEP_LEVELS
    ),
    V2_DEFAULT,
    Variant(
        f"v2-w{LARGE_WINDOW_LOG}",
        f"2.0 window log {LARGE_WINDOW_LOG}",
        f"Wheel 2.0 at level {DEFAULT_LEVEL} with window log {LARGE_WINDOW_LOG} instead of {DEFAULT_WINDOW_LOG}",
        Container.V2,
        window_log=LARGE_WINDOW_LOG,
    ),
    Variant(
        "v2-no-links",
        "2.0 content links off",
        f"Wheel 2.0 at level {DEFAULT_LEVEL}, every duplicate file stored again instead of as a content link",
        Container.V2,
        content_links=False,
    ),
    Variant(
        "v2-by-extension",
        "2.0 tar by extension",
        f"Wheel 2.0 at level {DEFAULT_LEVEL}, tar members ordered by file extension, then path,"
        " so that similar files share the compressor's window",
        Container.V2,
        tar_order=TarOrder.EXTENSION,
    ),
)
BY_KEY: dict[str, Variant] = {v.key: v for v in VARIANTS}


@dataclass(frozen=True)
class Comparison:
    """Two variants that differ in one idea; `candidate` is judged against
    `reference`."""

    candidate: str
    reference: str
    idea: str


COMPARISONS: tuple[Comparison, ...] = (
    Comparison(V2_DEFAULT.key, PUBLISHED.key, "Wheel 2.0 (default) against the wheel as published"),
    Comparison(f"deflate-{DEFLATE_MAX_LEVEL}", PUBLISHED.key, f"deflate at level {DEFLATE_MAX_LEVEL}"),
    Comparison(f"zip-zstd-l{DEFAULT_LEVEL}", PUBLISHED.key, "zstd instead of deflate, member by member"),
    Comparison(
        V2_DEFAULT.key,
        f"zip-zstd-l{DEFAULT_LEVEL}",
        "one zstd stream over a tar instead of one frame per member",
    ),
    *(Comparison(f"v2-l{level}", V2_DEFAULT.key, f"zstd level {level}") for level in SWEEP_LEVELS),
    Comparison(f"v2-w{LARGE_WINDOW_LOG}", V2_DEFAULT.key, f"window log {LARGE_WINDOW_LOG}"),
    Comparison("v2-no-links", V2_DEFAULT.key, "content links off"),
    Comparison("v2-by-extension", V2_DEFAULT.key, "tar ordered by extension"),
)


def by_extension(info: FileInfo) -> tuple[str, bytes]:
    """Groups similar files (all .py, all .so) for the compressor's window."""
    name = info.path.rsplit("/", 1)[-1]
    return (name.rsplit(".", 1)[-1] if "." in name else ""), info.path.encode()


# -- packing and unpacking ----------------------------------------------------------


@dataclass(frozen=True)
class Packed:
    size: int
    content_links: int


def pack(variant: Variant, src: Path, dest: Path) -> Packed:
    """Write the classic wheel `src` as `variant` to `dest`, every file
    verified against RECORD on the way."""
    with Archive.open(src) as archive:
        if archive.format != 1:
            raise RuntimeError(f"{src.name} is format {archive.format}; the corpus takes classic wheels")
        if variant.container is Container.ZIP_DEFLATE:
            written = write_v1(archive.iter_files(), dest, level=variant.level)
            return Packed(written.size, written.content_links)
        if variant.container is Container.ZIP_ZSTD:
            return Packed(write_zip_zstd(archive, dest, variant.level), 0)
        if variant.container is Container.V2:
            order = by_extension if variant.tar_order is TarOrder.EXTENSION else by_path
            written = write_v2(
                archive,
                dest,
                level=variant.level,
                window_log=variant.window_log,
                content_links=variant.content_links,
                order=order,
            )
            return Packed(written.size, written.content_links)
    raise ValueError(f"{variant.key} is not packed")


def write_zip_zstd(archive: Archive, dest: Path, level: int) -> int:
    """A zip with each member one zstd frame (content size in the frame, no
    frame checksum: zip's CRC-32 covers it), members in the wheel's order."""
    # libzstd picks its parameters from the level and each member's size.
    # Workers only for members larger than a job: their bytes do not depend
    # on the worker count, and small members skip the thread pool.
    single = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    threaded = zstandard.ZstdCompressor(
        level=level, write_content_size=True, write_checksum=False, threads=max(1, os.cpu_count() or 1)
    )
    with atomic_output(dest) as fh:
        writer = ZipWriter(fh, timestamp=default_timestamp())
        for data in archive.iter_files():
            if data.link_to is not None:
                writer.add_copy(data.path, of=data.link_to.path, mode=data.info.mode)
                continue
            size = data.info.size
            compressor = threaded if size > JOB_SIZE else single
            writer.add_stream(
                data.path,
                data.chunks(),
                size_bound=size,
                mode=data.info.mode,
                method=ZIP_ZSTD_METHOD,
                compressor=compressor.compressobj(size=size),
            )
        writer.close()
        return fh.tell()


class _Slice:
    """The next `length` bytes of `fh`, as a stream that ends there (so the
    decoder sees one member's frame and nothing after it)."""

    def __init__(self, fh: BinaryIO, length: int) -> None:
        self.fh = fh
        self.remaining = length

    def read(self, size: int = -1) -> bytes:
        size = self.remaining if size < 0 else min(size, self.remaining)
        data = self.fh.read(size)
        self.remaining -= len(data)
        return data


def extract_zip_zstd(path: Path, dest: Path) -> None:
    """What zipfile's extractall does, for zstd members: each member decoded
    to its file with its CRC-32 and size checked (zipfile reads the central
    directory; the member data is found from its local header)."""
    decompressor = zstandard.ZstdDecompressor()
    root = dest.resolve()
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            if info.is_dir():
                continue
            target = (root / info.filename).resolve()
            if not target.is_relative_to(root):
                raise RuntimeError(f"{info.filename}: outside the destination")
            fh.seek(info.header_offset)
            signature, _, _, method, _, _, _, _, _, name_len, extra_len = _LOCAL_HEADER.unpack(
                fh.read(_LOCAL_HEADER.size)
            )
            if signature != _LOCAL_SIGNATURE or method != ZIP_ZSTD_METHOD:
                raise RuntimeError(f"{info.filename}: not a zstd member (method {method})")
            fh.seek(name_len + extra_len, os.SEEK_CUR)
            target.parent.mkdir(parents=True, exist_ok=True)
            crc = size = 0
            with (
                open(target, "wb") as out,
                decompressor.stream_reader(
                    cast(BinaryIO, _Slice(fh, info.compress_size)), read_size=CHUNK
                ) as reader,
            ):
                while chunk := reader.read(CHUNK):
                    crc = zlib.crc32(chunk, crc)
                    size += len(chunk)
                    out.write(chunk)
            if size != info.file_size or crc != info.CRC:
                raise RuntimeError(f"{info.filename}: size or CRC-32 differs from the central directory")


def unpack_and_verify(variant: Variant, path: Path, dest: Path) -> None:
    """Unpack `path` (written as `variant`) into `dest`, every file checked
    against RECORD: zipfile + sha256 for the zips, `unpack` for 2.0."""
    if variant.container in (Container.PUBLISHED, Container.ZIP_DEFLATE):
        extract_and_verify(path, dest)
    elif variant.container is Container.ZIP_ZSTD:
        extract_zip_zstd(path, dest)
        with zipfile.ZipFile(path) as zf:
            record = wheel_record_name(zf.namelist())
        check_record(dest, (dest / record).read_bytes())
    else:
        with Archive.open(path, max_window_log=max(variant.window_log, DEFAULT_MAX_WINDOW_LOG)) as archive:
            if archive.window_log != variant.window_log:
                raise RuntimeError(f"window log {archive.window_log}, expected {variant.window_log}")
            unpack(archive, dest, links=LinkMode.COPY)


# -- one step in a child process ----------------------------------------------------


@dataclass(frozen=True)
class StepRequest:
    step: str  # "pack" or "unpack"
    variant: str
    archive: str  # pack: the classic wheel; unpack: the archive of the variant
    dest: str  # pack: the file to write; unpack: a scratch directory for the rounds
    repeat: int
    memory_limit: int  # bytes of address space (RLIMIT_AS)


@dataclass(frozen=True)
class StepResult:
    seconds: float  # pack: wall time; unpack: the best round
    cpu_seconds: float  # every thread of the process, same span (pack), or the best round's (unpack)
    peak_rss: int  # VmHWM during the step, bytes
    base_rss: int  # VmRSS just before the step: the interpreter and its imports
    size: int  # the archive's size
    content_links: int
    rounds: list[float]  # wall time of every round
    peak_vm: int  # VmPeak at the end: the most address space the process ever had (what RLIMIT_AS bounds)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} is not in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current resident size


def run_step(request: StepRequest) -> StepResult:
    variant = BY_KEY[request.variant]
    archive, dest = Path(request.archive), Path(request.dest)
    warm([archive])
    if request.step == "pack":
        os.sync()
        _reset_peak()
        base = _status_bytes("VmRSS")
        start, cpu = time.perf_counter(), time.process_time()
        packed = pack(variant, archive, dest)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        peak = _status_bytes("VmHWM")
        if packed.size != dest.stat().st_size:
            raise RuntimeError(f"the writer reported {packed.size} bytes, the file has {dest.stat().st_size}")
        return StepResult(
            seconds,
            cpu_seconds,
            peak,
            base,
            packed.size,
            packed.content_links,
            [seconds],
            _status_bytes("VmPeak"),
        )
    if request.step != "unpack":
        raise ValueError(f"unknown step {request.step!r}")
    best = best_cpu = float("inf")
    rounds: list[float] = []
    _reset_peak()
    base = _status_bytes("VmRSS")
    for round_ in range(request.repeat):
        target = dest / f"round-{round_}"
        os.sync()
        start, cpu = time.perf_counter(), time.process_time()
        unpack_and_verify(variant, archive, target)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        rounds.append(seconds)
        if seconds < best:
            best, best_cpu = seconds, cpu_seconds
        shutil.rmtree(target)
    return StepResult(
        best,
        best_cpu,
        _status_bytes("VmHWM"),
        base,
        archive.stat().st_size,
        0,
        rounds,
        _status_bytes("VmPeak"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        print("usage: python -m bench.corpus_variants REQUEST_JSON", file=sys.stderr)
        return 2
    request = StepRequest(**json.loads(args[0]))
    resource.setrlimit(resource.RLIMIT_AS, (request.memory_limit, request.memory_limit))
    try:
        result = run_step(request)
    except BaseException as exc:
        traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
        return 1
    print(_RESULT_MARK + json.dumps(asdict(result)), flush=True)
    return 0


class StepFailed(Exception):
    pass


def measure_step(request: StepRequest, timeout: float) -> StepResult:
    """Run `request` in a child process (see the module's docstring)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.corpus_variants", json.dumps(asdict(request))],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise StepFailed(f"no result within {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exited {proc.returncode} without a message"]
        raise StepFailed(lines[-1].removeprefix("error: "))
    marked = [line for line in proc.stdout.splitlines() if line.startswith(_RESULT_MARK)]
    if not marked:
        raise StepFailed("the step printed no result")
    return StepResult(**json.loads(marked[-1].removeprefix(_RESULT_MARK)))


if __name__ == "__main__":
    sys.exit(main())
