"""What an x86-64 branch-conversion (BCJ) filter over ELF members would gain a
Wheel 2.0 payload (a measurement, not a format nwcache writes or reads).

    python -m bench.corpus_bcj [--level 19] WHEEL...

For each classic wheel: the payload tar exactly as `write_v2` builds it (files
verified against RECORD, each content stored once, path order), and the same
tar with every ELF x86-64 member's bytes passed through the BCJ x86 encoder of
pybcj (size-preserving, reset per member); both compressed with the writer's
parameters (level, window log 23, pinned job size, one worker per core).
Prints the two sizes, the ELF share, and the time the BCJ decoder and the
zstd decoder take over the same bytes.

Needs pybcj (`pip install pybcj`), which nwcache does not depend on. Python's
lzma module has the same filter (FILTER_X86) but only in a chain that ends
with LZMA1/LZMA2 (a chain of FILTER_X86 alone raises LZMAError), so it cannot
serve as a filter in front of zstd.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zstandard

from nwcache.archive import DEFAULT_LEVEL, DEFAULT_WINDOW_LOG, Archive, tarfmt
from nwcache.archive.writers import JOB_SIZE

ELF_X86_64 = b"\x7fELF\x02\x01"  # 64-bit, little-endian
_E_MACHINE_X86_64 = b"\x3e\x00"  # e_machine at offset 18


def is_x86_64_elf(content: bytes) -> bool:
    return content[:6] == ELF_X86_64 and content[18:20] == _E_MACHINE_X86_64


def payload_tars(wheel: Path) -> tuple[bytes, bytes, int, list[bytes]]:
    """(plain tar, tar with BCJ-filtered ELF members, ELF bytes, filtered ELF contents)."""
    bcj: Any = importlib.import_module("bcj")
    plain, filtered = bytearray(), bytearray()
    elf_bytes = 0
    encoded: list[bytes] = []
    with Archive.open(wheel) as archive:
        if archive.format != 1:
            raise SystemExit(f"{wheel}: a classic wheel is needed")
        prefix = archive.dist_info + "/"
        seen: set[tuple[str, int]] = set()
        files = {}
        for data in archive.iter_files():
            content = b"".join(data.chunks()) if data.link_to is None else b""
            if not data.path.startswith(prefix) and data.link_to is None:
                files[data.path] = (data.info, content)
        for path in sorted(files, key=str.encode):
            info, content = files[path]
            if info.link_key in seen:
                continue
            seen.add(info.link_key)
            header = tarfmt.member_header(path, info.size, info.mode, 315532800)
            pad = tarfmt.padding(info.size)
            plain += header + content + pad
            if is_x86_64_elf(content):
                encoder = bcj.BCJEncoder()
                changed = encoder.encode(content) + encoder.flush()
                assert len(changed) == len(content)
                elf_bytes += len(content)
                encoded.append(changed)
                content = changed
            filtered += header + content + pad
    plain += tarfmt.END_OF_ARCHIVE
    filtered += tarfmt.END_OF_ARCHIVE
    return bytes(plain), bytes(filtered), elf_bytes, encoded


def compress(tar: bytes, level: int) -> bytes:
    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        source_size=len(tar),
        window_log=DEFAULT_WINDOW_LOG,
        write_content_size=1,
        write_checksum=1,
        threads=max(1, os.cpu_count() or 1),
        job_size=JOB_SIZE,
    )
    return zstandard.ZstdCompressor(compression_params=params).compress(tar)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.corpus_bcj", description=__doc__.split("\n\n")[0])
    parser.add_argument("wheels", type=Path, nargs="+")
    parser.add_argument("--level", type=int, default=DEFAULT_LEVEL)
    args = parser.parse_args(argv)
    try:
        bcj: Any = importlib.import_module("bcj")
    except ImportError:
        print("error: pybcj is not installed (pip install pybcj)", file=sys.stderr)
        return 2
    print(
        f"pybcj {bcj.__version__}, zstd level {args.level}, window log {DEFAULT_WINDOW_LOG}, load {os.getloadavg()}"
    )
    print(
        "| wheel | payload MB | ELF x86-64 MB | zstd MB | BCJ + zstd MB | change | BCJ decode MB/s | zstd decode MB/s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    totals = [0, 0, 0, 0]
    for wheel in args.wheels:
        plain, filtered, elf, encoded = payload_tars(wheel)
        a, b = compress(plain, args.level), compress(filtered, args.level)
        start = time.perf_counter()
        for content in encoded:
            decoder = bcj.BCJDecoder(len(content))
            decoder.decode(content)
        bcj_s = time.perf_counter() - start
        start = time.perf_counter()
        zstandard.ZstdDecompressor().decompress(b)
        zstd_s = time.perf_counter() - start
        totals = [totals[0] + len(plain), totals[1] + elf, totals[2] + len(a), totals[3] + len(b)]
        print(
            f"| {wheel.name.split('-')[0]} {wheel.name.split('-')[1]} | {len(plain) / 1e6:.2f} | {elf / 1e6:.2f}"
            f" | {len(a) / 1e6:.3f} | {len(b) / 1e6:.3f} | {(len(b) - len(a)) / len(a):+.2%}"
            f" | {elf / 1e6 / bcj_s if bcj_s else 0:,.0f} | {len(plain) / 1e6 / zstd_s:,.0f} |",
            flush=True,
        )
    print(
        f"| total | {totals[0] / 1e6:.2f} | {totals[1] / 1e6:.2f} | {totals[2] / 1e6:.3f} | {totals[3] / 1e6:.3f}"
        f" | {(totals[3] - totals[2]) / totals[2]:+.2%} | | |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
