"""What the benchmarks share: the pip environment they download with, the
wheel cache, and a description of the machine for their reports."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / "bench" / ".cache" / "wheels"
PYTHON_VERSION = "3.11"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
PIP_UNSET = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX")
MB = 1_000_000


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
