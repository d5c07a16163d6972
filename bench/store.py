"""The store on real wheels from PyPI (a benchmark, not a test).

    python -m bench.store [--out docs/BENCH-STORE.md] [--cache DIR]

Measures, in one run, on a temporary NWCACHE_HOME on the same file system as
the checkout:

- ingest throughput in MB/s of installed bytes: cold (empty store), classic
  and 2.0 archives; warm, with the package already stored; with every blob
  stored but the package unknown (no payload byte is read); and a rebuilt
  wheel (one file differs: the payload is read, one blob is written);
- the latency of installing an already-ingested package into a new venv
  (register included separately);
- index plus blob bytes on disk per installed file, for several inline
  thresholds (INLINE_MAX), with the ingest time at each.

pip runs with the environment bench.format describes (no global pip
configuration); wheels are shared with bench.format's cache.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lmdb
import zstandard

from bench.common import (
    DEFAULT_CACHE,
    MB,
    ROOT,
    cpu_model,
    fetch_wheel,
    load_average,
    memory_total,
    pip_environment,
)
from nwcache.archive import Archive, convert
from nwcache.daemon import schema
from nwcache.daemon.store import Store

DEFAULT_OUT = ROOT / "docs" / "BENCH-STORE.md"
WHEELS = (
    ("numpy", "2.1.3"),
    ("pandas", "2.2.3"),
    ("pyarrow", "18.1.0"),
    ("scipy", "1.14.1"),
    ("requests", "2.32.3"),
)
THRESHOLDS = (0, 512, 2000, 4000, 16384)


@dataclass
class IngestRow:
    name: str
    installed: int
    files: int
    cold_classic: float
    cold_v2: float
    warm_package: float
    warm_blobs: float
    rebuilt: float


def du(path: Path) -> int:
    """Bytes of disk blocks under `path` (what the file system really spends)."""
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_blocks * 512
    return total


def drop_package(store: Store, package_id: bytes) -> None:
    """Forget a package but keep its blobs: the 'every blob stored' case."""
    with store.env.begin(write=True) as txn:
        txn.delete(package_id, db=store.db["packages"])
    # The store keeps decoded package records; only GC deletes packages in
    # the product, and it tells the cache too.
    store._forget_packages([package_id])


def rebuilt(classic: Path, out: Path) -> Path:
    """The same wheel with one changed file (its WHEEL Generator line), as a
    rebuild with another tool version would give."""
    import base64
    import csv
    import hashlib
    import io
    import zipfile

    with zipfile.ZipFile(classic) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        names = src.namelist()
        wheel_name = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
        wheel = src.read(wheel_name).replace(b"Generator: ", b"Generator: rebuilt ", 1)
        if b"Generator: rebuilt" not in wheel:
            wheel += b"Generator: rebuilt\n"
        digest = base64.urlsafe_b64encode(hashlib.sha256(wheel).digest()).rstrip(b"=").decode()
        rows = list(csv.reader(io.StringIO(src.read(record_name).decode())))
        for row in rows:
            if row and row[0] == wheel_name:
                row[1:] = [f"sha256={digest}", str(len(wheel))]
        record = io.StringIO()
        csv.writer(record, lineterminator="\n").writerows(rows)
        for name in names:
            data = (
                wheel
                if name == wheel_name
                else record.getvalue().encode()
                if name == record_name
                else src.read(name)
            )
            dst.writestr(name, data)
    return out


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def new_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return path


def measure(
    wheels: list[Path], scratch: Path
) -> tuple[list[IngestRow], dict[str, float], list[dict[str, float]]]:
    rows: list[IngestRow] = []
    v2s = {w: convert(w, scratch / "v2" / w.name, level=10).path for w in wheels}
    for wheel in wheels:
        with Archive.open(wheel) as archive:
            installed, files, name = archive.installed_size, len(archive.files), archive.name
        home = scratch / f"home-{name}"
        with Store(home) as store:
            cold_classic = timed(store.ingest, wheel)
            warm_package = timed(store.ingest, v2s[wheel])
            pkg = store.ingest(wheel)
            drop_package(store, pkg.id)
            warm_blobs = timed(store.ingest, wheel)
            (scratch / "rebuilt").mkdir(exist_ok=True)
            rebuilt_time = timed(store.ingest, rebuilt(wheel, scratch / "rebuilt" / wheel.name))
        shutil.rmtree(home)
        with Store(home) as store:
            cold_v2 = timed(store.ingest, v2s[wheel])
        shutil.rmtree(home)
        rows.append(
            IngestRow(name, installed, files, cold_classic, cold_v2, warm_package, warm_blobs, rebuilt_time)
        )
        print(
            f"{name}: {installed / MB:.0f} MB installed, cold {installed / cold_classic / MB:.0f} MB/s",
            flush=True,
        )
    # Install latency into new environments, everything already ingested.
    latency: dict[str, float] = {}
    home = scratch / "home-install"
    with Store(home) as store:
        for wheel in wheels:
            store.ingest(wheel)
        for i, wheel in enumerate(wheels):
            venv = new_venv(scratch / f"venv{i}")
            latency[f"register {wheel.name.split('-')[0]}"] = timed(store.register, venv)
            latency[wheel.name.split("-")[0]] = timed(store.install, venv, [wheel])
        assert store.fsck() == []
    shutil.rmtree(home)
    # Disk per installed file at several inline thresholds.
    footprint: list[dict[str, float]] = []
    saved = schema.INLINE_MAX
    try:
        for threshold in THRESHOLDS:
            schema.INLINE_MAX = threshold
            home = scratch / f"home-inline-{threshold}"
            with Store(home) as store:
                start = time.perf_counter()
                for wheel in wheels:
                    store.ingest(wheel)
                seconds = time.perf_counter() - start
                stats = store.stats()
                with store.env.begin() as txn:
                    files = sum(len(p.files) for p in store.packages())
                    inline = sum(
                        1 for _, v in txn.cursor(db=store.db["blobs"]) if schema.decode_blob(v)[1] is not None
                    )
                blob_count = stats["blobs"]
            index = du(home / "index")
            bodies = du(home / "blobs")
            footprint.append(
                {
                    "threshold": threshold,
                    "files": files,
                    "blobs": blob_count,
                    "inline": inline,
                    "stored_bytes": stats["stored_bytes"],
                    "index": index,
                    "bodies": bodies,
                    "seconds": seconds,
                }
            )
            print(
                f"INLINE_MAX={threshold}: index {index / MB:.1f} MB, bodies {bodies / MB:.1f} MB", flush=True
            )
            shutil.rmtree(home)
    finally:
        schema.INLINE_MAX = saved
    return rows, latency, footprint


def render(
    rows: list[IngestRow], latency: dict[str, float], footprint: list[dict[str, float]], started: float
) -> str:
    out = [
        "# Store benchmark",
        "",
        f"Generated by `make bench-store` (`python -m bench.store`) on {dt.date.today().isoformat()}, "
        f"{time.monotonic() - started:.0f} s. Not a test: real wheels from PyPI, downloaded when it runs.",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {memory_total()} RAM; load average at the end {load_average()}. "
        f"Python {platform.python_version()}, zstandard {zstandard.__version__} (libzstd "
        f"{'.'.join(map(str, zstandard.ZSTD_VERSION))}), py-lmdb {lmdb.__version__} (LMDB {'.'.join(map(str, lmdb.version()))}). "
        "NWCACHE_HOME on the checkout's file system. pip ran with PIP_CONFIG_FILE=/dev/null and no PIP_* index or "
        "find-links variables; PYTHONDONTWRITEBYTECODE=1.",
        "",
        "## Ingest",
        "",
        "MB/s of installed bytes (the sum of RECORD sizes). Cold: an empty store. Package stored: the 2.0 form of a "
        "wheel already ingested as classic (same content digest). Blobs stored: the package record removed, every "
        "blob kept (no payload byte is read). Rebuilt: the same wheel with one changed file (WHEEL), so the payload "
        "is read and verified but one blob is written. 2.0 archives here are level 10.",
        "",
        "| wheel | installed | files | cold classic | cold 2.0 | package stored | blobs stored | rebuilt |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        out.append(
            f"| {r.name} | {r.installed / MB:.1f} MB | {r.files} | {r.installed / r.cold_classic / MB:.0f} MB/s | "
            f"{r.installed / r.cold_v2 / MB:.0f} MB/s | {r.warm_package * 1000:.1f} ms | {r.warm_blobs * 1000:.0f} ms | "
            f"{r.installed / r.rebuilt / MB:.0f} MB/s |"
        )
    total = sum(r.installed for r in rows)
    out += [
        f"| total | {total / MB:.1f} MB | {sum(r.files for r in rows)} | "
        f"{total / sum(r.cold_classic for r in rows) / MB:.0f} MB/s | {total / sum(r.cold_v2 for r in rows) / MB:.0f} MB/s | | | "
        f"{total / sum(r.rebuilt for r in rows) / MB:.0f} MB/s |",
        "",
        "## Installing an already-ingested package into a new environment",
        "",
        "`Store.install` (tag check, generated RECORD/INSTALLER/REQUESTED/scripts, conflict check, generation flip), "
        "in-process; the registration of the fresh venv (`--without-pip`, probing its interpreter) is listed apart.",
        "",
        "| step | time |",
        "| --- | ---: |",
    ]
    out += [f"| {k} | {v * 1000:.0f} ms |" for k, v in latency.items()]
    out += [
        "",
        "## Disk per installed file against the inline threshold",
        "",
        "All wheels above ingested into one store at each INLINE_MAX (bodies up to it live in LMDB). Bytes are disk "
        "blocks (`st_blocks`).",
        "",
        "| INLINE_MAX | blobs | inline | index | bodies | bytes per file | ingest time |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for f in footprint:
        per_file = (f["index"] + f["bodies"]) / f["files"]
        out.append(
            f"| {int(f['threshold'])} | {int(f['blobs'])} | {int(f['inline'])} | {f['index'] / MB:.1f} MB | "
            f"{f['bodies'] / MB:.1f} MB | {per_file:.0f} | {f['seconds']:.1f} s |"
        )
    stored = footprint[0]["stored_bytes"] / footprint[0]["files"]
    out += ["", f"Content itself averages {stored:.0f} bytes per file (unique blobs over files)."]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    started = time.monotonic()
    env = pip_environment()
    args.cache.mkdir(parents=True, exist_ok=True)
    wheels = [fetch_wheel(name, version, args.cache, env)[0] for name, version in WHEELS]
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=ROOT / "bench") as scratch:
        rows, latency, footprint = measure(wheels, Path(scratch))
    args.out.write_text(render(rows, latency, footprint, started))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
