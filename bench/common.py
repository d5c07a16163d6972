"""What the benchmarks share: the pip environment they download with, the
wheel cache, a description of the machine for their reports, the check of an
extracted wheel against its RECORD, and the number formats of the reports."""

from __future__ import annotations

import base64
import csv
import fcntl
import hashlib
import os
import platform
import shlex
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import zstandard
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

import nwcache.archive

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / "bench" / ".cache" / "wheels"
PYTHON_VERSION = "3.11"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
PIP_UNSET = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX")
# Named on the command line as well, so that no configuration can add or
# substitute an index.
PYPI_INDEX = "https://pypi.org/simple"
MB = 1_000_000
MIB = 1 << 20


def pip_environment() -> dict[str, str]:
    env = dict(os.environ)
    for name in PIP_UNSET:
        env.pop(name, None)
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def pip_version(env: dict[str, str]) -> str:
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "--version"], env=env, capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable ({exc})"
    words = proc.stdout.split()
    return words[1] if proc.returncode == 0 and len(words) > 1 else "unavailable"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding `path`, from /proc/self/mounts."""
    best, kind = "", "unknown"
    target = str(path.resolve())
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, parts[2]
    return kind


def cached_wheel(cache: Path, name: str, version: str) -> Path | None:
    want = canonicalize_name(name), Version(version)
    for path in sorted(cache.glob("*.whl")):
        try:
            found_name, found_version, _, _ = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            continue
        if (found_name, found_version) == want:
            return path
    return None


def download_command(name: str, version: str, cache: Path) -> list[str]:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--index-url",
        PYPI_INDEX,
        "--python-version",
        PYTHON_VERSION,
        *platforms,
        "--dest",
        str(cache),
        f"{name}=={version}",
    ]


def fetch_wheel(name: str, version: str, cache: Path, env: dict[str, str]) -> tuple[Path, bool]:
    """The cached wheel, downloading it first if needed; True when downloaded."""
    found = cached_wheel(cache, name, version)
    if found is not None:
        return found, False
    cache.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        download_command(name, version, cache), env=env, capture_output=True, text=True, timeout=1200
    )
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"pip download exited {proc.returncode}: {tail}")
    found = cached_wheel(cache, name, version)
    if found is None:
        raise RuntimeError("pip download succeeded but no matching wheel is in the cache")
    return found, True


def fetch_wheels(
    wheels: Iterable[tuple[str, str]], cache: Path, env: dict[str, str], failures: list[Failure]
) -> tuple[list[tuple[str, str, Path]], int]:
    """Each (name, version) from the cache or PyPI, printing progress; a
    wheel that cannot be had is added to `failures` and skipped. Returns
    (name, version, path) of the others and how many were downloaded."""
    sources: list[tuple[str, str, Path]] = []
    downloaded = 0
    for name, version in wheels:
        try:
            path, fetched = fetch_wheel(name, version, cache, env)
        except Exception as exc:
            failures.append(Failure(f"{name} {version}", "download", describe(exc)))
            print(f"  download {name}=={version}: FAILED {describe(exc)}", flush=True)
            continue
        downloaded += fetched
        sources.append((name, version, path))
        print(
            f"  {'downloaded' if fetched else 'cached'} {path.name} ({mb(path.stat().st_size)} MB)",
            flush=True,
        )
    return sources, downloaded


# -- what ran where ---------------------------------------------------------------


def archive_source() -> str:
    """Which nwcache.archive code ran: the git commit, whether its folder had
    uncommitted changes, and a digest of its sources as imported."""
    folder = Path(nwcache.archive.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    try:
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=60
        )
        status = subprocess.run(
            [*git, "status", "--porcelain", "--", str(folder)], capture_output=True, text=True, timeout=60
        )
        commit = head.stdout.strip() if head.returncode == 0 else "unknown"
        changed = len(status.stdout.splitlines()) if status.returncode == 0 else 0
    except (OSError, subprocess.SubprocessError):
        commit, changed = "unknown", 0
    where = folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder
    dirty = f", {changed} uncommitted change(s) in {where}/" if changed else ""
    return f"git {commit}{dirty}; sources sha256 {digest.hexdigest()[:16]}"


@dataclass(frozen=True)
class PipContext:
    """pip's version and what the caller's environment held, for the report."""

    version: str
    inherited: tuple[str, ...]  # PIP_* variables passed on unchanged
    unset_present: tuple[str, ...]  # PIP_UNSET variables the caller had set
    caller_bytecode: str | None  # the caller's PYTHONDONTWRITEBYTECODE


def pip_context(env: dict[str, str]) -> PipContext:
    return PipContext(
        version=pip_version(env),
        inherited=tuple(sorted(n for n in env if n.startswith("PIP_") and n != "PIP_CONFIG_FILE")),
        unset_present=tuple(n for n in PIP_UNSET if n in os.environ),
        caller_bytecode=os.environ.get("PYTHONDONTWRITEBYTECODE"),
    )


def machine_lines(
    *, load_start: str, pip: PipContext, source: str, scratch: Path, cache: Path | None
) -> list[str]:
    """The report bullets that say where and with what a benchmark ran."""
    zstd_version = ".".join(str(x) for x in zstandard.ZSTD_VERSION)
    return [
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores, {memory_total()} RAM, Linux {platform.release()}",
        f"- Load average (1, 5, 15 min): {load_start} at the start, {load_average()} at the end",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), {sys.executable}",
        f"- zstandard {zstandard.__version__} ({zstandard.backend} backend), libzstd {zstd_version}",
        f"- pip {pip.version}",
        f"- nwcache.archive: {source}",
        f"- Scratch directories: {scratch} ({filesystem_of(scratch)}); wheel cache: "
        + ("none (local wheel files)" if cache is None else f"{cache} ({filesystem_of(cache)})"),
    ]


def pip_environment_section(pip: PipContext) -> list[str]:
    """The report section on the environment pip downloads with."""
    unset = ", ".join(f"`{n}`" for n in PIP_UNSET)
    inherited = ", ".join(f"`{n}`" for n in pip.inherited) or "none"
    present = ", ".join(f"`{n}`" for n in pip.unset_present) or "none of them"
    caller = "unset" if pip.caller_bytecode is None else f"`{pip.caller_bytecode}`"
    return [
        "### pip environment",
        "",
        "This machine has a global pip configuration with extra local indexes and find-links, and its"
        " environment exports `PYTHONDONTWRITEBYTECODE=1`. The benchmark therefore runs pip with an"
        " explicit environment of its own, so that every wheel comes from PyPI as pinned:",
        "",
        "- `PIP_CONFIG_FILE=/dev/null` (no global, user or site configuration file is read)",
        f"- {unset} removed from pip's environment, and `--index-url {PYPI_INDEX}` on the command line,"
        " so PyPI is the only source",
        "- `PYTHONDONTWRITEBYTECODE=1` set explicitly",
        f"- other `PIP_*` variables passed on unchanged from the caller: {inherited}",
        f"- in the caller's environment of this run: {present} set (removed for pip); PYTHONDONTWRITEBYTECODE {caller}",
        "",
        "Download command, per wheel missing from the cache:",
        "",
        "```",
        shlex.join(["python", *download_command("NAME", "VERSION", Path("CACHE"))[1:]]),
        "```",
        "",
    ]


# -- measuring --------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    wheel: str
    stage: str
    error: str


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


# <linux/fs.h>: the inode flags ioctls and "top of directory hierarchy" (chattr +T).
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000
TOPDIR_NOTE = (
    "Each round unpacks into a directory made inside one marked as the top of a directory hierarchy"
    " (`chattr +T`), so that ext4's Orlov allocator starts each tree in a block group of its own. Without"
    " a journal (as on this machine), ext4 will not reuse an inode freed in the last 60 s (300 s while its"
    " inode table block is dirty) and looks at each such inode before passing it: in a block group that the"
    " previous round (or anyone's tests) just emptied, making an empty file took 0.2-0.3 ms against about"
    " 0.016 ms in a fresh group (one thread, load 5-7), the same for every method measured. A journaled ext4"
    " makes no such check."
)


def mark_topdir(path: Path) -> bool:
    """chattr +T on `path`: every directory made in it is placed by ext4's
    Orlov allocator (a fresh block group) instead of beside its parent. False
    where the file system has no such flag (the run goes on, and says so)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        flags = bytearray(8)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags)
        value = int.from_bytes(flags[:4], sys.byteorder) | _FS_TOPDIR_FL
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, value.to_bytes(4, sys.byteorder) + bytes(4))
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags)
        return bool(int.from_bytes(flags[:4], sys.byteorder) & _FS_TOPDIR_FL)
    except OSError:
        return False
    finally:
        os.close(fd)


def warm(paths: Iterable[Path]) -> None:
    """Read each file once, so that no measurement pays for the disk."""
    for path in paths:
        with open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass


def wheel_record_name(names: Iterable[str]) -> str:
    """The wheel's own RECORD, not one of a vendored package deeper down."""
    return next(n for n in names if n.endswith(".dist-info/RECORD") and n.count("/") == 1)


def extract_and_verify(v1: Path, dest: Path) -> None:
    """zipfile extraction followed by the check 2.0's unpack always makes:
    every extracted file's sha256 and size against RECORD (what a verifying
    installer adds to zipfile's CRC-32)."""
    with zipfile.ZipFile(v1) as zf:
        zf.extractall(dest)
        record = zf.read(wheel_record_name(zf.namelist()))
    check_record(dest, record)


def check_record(root: Path, record: bytes) -> None:
    """Every file RECORD hashes, under `root`, against its sha256 (what a
    verifying installer adds to zip's CRC-32)."""
    for row in csv.reader(record.decode().splitlines()):
        if len(row) != 3 or not row[1]:
            continue
        algorithm, _, expected = row[1].partition("=")
        hasher = hashlib.new(algorithm)
        with open(root / row[0], "rb") as fh:
            while block := fh.read(1 << 20):
                hasher.update(block)
        if base64.urlsafe_b64encode(hasher.digest()).rstrip(b"=").decode() != expected:
            raise RuntimeError(f"{row[0]} does not match RECORD")


# -- report formats ---------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / MB:,.2f}"


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "n/a"


def speedup(slow: float, fast: float) -> str:
    return f"{slow / fast:.2f}x" if fast else "n/a"


def rate(nbytes: float, seconds: float) -> str:
    return f"{nbytes / MB / seconds:.1f}" if seconds else "n/a"
