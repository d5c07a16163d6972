"""Memory stays bounded with a 200 MB file: convert to 2.0, verify, unpack and
convert back, each step in its own subprocess so that each peak is that
step's alone.

Each step reports getrusage(RUSAGE_SELF).ru_maxrss and /proc/self/status
VmHWM. On Linux ru_maxrss survives execve: a child forked (or vforked) from
this pytest process starts with pytest's own peak, so it reads high when the
suite has grown. VmHWM belongs to the process image started by exec, so the
bound is checked on it; both are reported."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from nwcache.archive import Archive

from .conftest import run

BIG_SIZE = 200 * 1024 * 1024
CHUNK = 1 << 20
# Measured (VmHWM, 2 CPUs): 22 MiB after imports; convert-to-2 77 (level 3,
# zstd jobs pinned to 8 MiB), verify 36, unpack 43, convert-to-1 37 and a store
# ingest 39 MiB. 120 MiB leaves a margin and stays well below the file size.
MAX_RSS = 120 * 1024 * 1024
NAME = "bigpkg"
DIST_INFO = f"{NAME}-1.0.dist-info"
FILENAME = f"{NAME}-1.0-py3-none-any.whl"
BIG_PATH = f"{NAME}/blob.bin"
# 16 symbols from random bytes: 4 bits of entropy per byte, so compressible
# about 2:1 but with no long repeats for the compressor to exploit.
_SIXTEEN = bytes(b"abcdefghijklmnop"[i % 16] for i in range(256))

STEP = r"""
import json, resource, sys, time
from pathlib import Path

step, src, dest = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
from nwcache.archive import Archive, LinkMode, convert, unpack

with open("/proc/self/status") as status:
    before_hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
start = time.monotonic()
digest = None
if step == "convert-to-2":
    digest = convert(src, dest, to=2, level=3).content_digest
elif step == "verify":
    with Archive.open(src) as archive:
        for data in archive.iter_files():
            if data.link_to is None:
                for _ in data.chunks():
                    pass
        digest = archive.verified_digest
elif step == "unpack":
    with Archive.open(src) as archive:
        unpack(archive, dest, links=LinkMode.HARDLINK)
elif step == "convert-to-1":
    digest = convert(src, dest, to=1).content_digest
elif step == "ingest":
    from nwcache.daemon.store import Store
    with Store(dest) as store:
        digest = store.ingest(src).digest
        assert store.fsck() == []
else:
    raise SystemExit(f"unknown step {step}")
with open("/proc/self/status") as status:
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({
    "step": step,
    "seconds": round(time.monotonic() - start, 2),
    "after_import_kib": before_hwm,
    "peak_kib": hwm,
    "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "digest": digest,
}))
"""


def record_row(path: str, digest: bytes, size: int) -> str:
    encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return f"{path},sha256={encoded},{size}\n"


def write_big_wheel(dest: Path) -> str:
    """A classic wheel whose one big member is written in 1 MiB chunks (stored),
    never held in memory whole; returns that member's sha256 hex."""
    rng = random.Random(20240611)
    big_hash = hashlib.sha256()
    rows: list[str] = []
    with zipfile.ZipFile(dest, "w") as zf:
        info = zipfile.ZipInfo(BIG_PATH, date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o100644 << 16
        info.compress_type = zipfile.ZIP_STORED
        with zf.open(info, "w", force_zip64=True) as out:
            for _ in range(BIG_SIZE // CHUNK):
                chunk = rng.randbytes(CHUNK).translate(_SIXTEEN)
                big_hash.update(chunk)
                out.write(chunk)
        rows.append(record_row(BIG_PATH, big_hash.digest(), BIG_SIZE))
        small = {
            f"{NAME}/__init__.py": b'"""A package with one big file."""\n',
            f"{DIST_INFO}/METADATA": b"Metadata-Version: 2.1\nName: bigpkg\nVersion: 1.0\n",
            f"{DIST_INFO}/WHEEL": b"Wheel-Version: 1.0\nGenerator: nwcache-tests\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n",
        }
        for path, content in small.items():
            zf.writestr(path, content, compress_type=zipfile.ZIP_DEFLATED)
            rows.append(record_row(path, hashlib.sha256(content).digest(), len(content)))
        rows.append(f"{DIST_INFO}/RECORD,,\n")
        zf.writestr(f"{DIST_INFO}/RECORD", "".join(rows), compress_type=zipfile.ZIP_DEFLATED)
    return big_hash.hexdigest()


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            hasher.update(block)
    return hasher.hexdigest()


def member_sha256(wheel: Path, name: str) -> str:
    hasher = hashlib.sha256()
    with zipfile.ZipFile(wheel) as zf, zf.open(name) as fh:
        while block := fh.read(CHUNK):
            hasher.update(block)
    return hasher.hexdigest()


def kib(report: dict[str, object], key: str) -> float:
    """A KiB figure of a step's report, in MiB."""
    return int(str(report[key])) / 1024


def measure(step: str, src: Path, dest: Path) -> dict[str, object]:
    result = run([sys.executable, "-c", STEP, step, src, dest])
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["step"] == step
    return report


@pytest.mark.slow
def test_a_200_mb_file_keeps_memory_bounded() -> None:
    reports: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="nwcache-memory-") as tmp_dir:
        tmp = Path(tmp_dir)
        classic = tmp / "in" / FILENAME
        classic.parent.mkdir()
        big_sha = write_big_wheel(classic)
        with Archive.open(classic) as archive:
            expected_digest = archive.metadata_digest()
        assert expected_digest is not None

        v2 = tmp / "v2" / FILENAME
        reports.append(measure("convert-to-2", classic, v2))
        assert v2.stat().st_size < classic.stat().st_size * 0.7  # it did compress
        classic.unlink()  # disk: keep at most ~two copies around

        reports.append(measure("verify", v2, tmp / "unused"))

        unpacked = tmp / "unpacked"
        reports.append(measure("unpack", v2, unpacked))
        assert (unpacked / BIG_PATH).stat().st_size == BIG_SIZE
        assert file_sha256(unpacked / BIG_PATH) == big_sha
        shutil.rmtree(unpacked)

        back = tmp / "back" / FILENAME
        reports.append(measure("convert-to-1", v2, back))
        assert member_sha256(back, BIG_PATH) == big_sha

        # The store: ingesting the 200 MB file streams it into one blob body.
        reports.append(measure("ingest", v2, tmp / "home"))
        body = next((tmp / "home" / "blobs").glob(f"*/{big_sha}"))
        assert file_sha256(body) == big_sha

    summary = "\n".join(
        f"{report['step']:>13}: peak RSS (VmHWM) {kib(report, 'peak_kib'):6.1f} MiB, "
        f"after imports {kib(report, 'after_import_kib'):5.1f} MiB, "
        f"ru_maxrss {kib(report, 'ru_maxrss_kib'):6.1f} MiB, {report['seconds']} s"
        for report in reports
    )
    print("\n" + summary)
    for report in reports:
        if report["digest"] is not None:
            assert report["digest"] == expected_digest, report
    over = [str(r["step"]) for r in reports if int(str(r["peak_kib"])) * 1024 >= MAX_RSS]
    assert not over, (
        f"peak RSS of {', '.join(over)} reached {MAX_RSS >> 20} MiB "
        f"with a {BIG_SIZE >> 20} MiB file:\n{summary}"
    )
    assert not Path(tmp_dir).exists()
