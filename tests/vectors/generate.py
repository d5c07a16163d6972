"""Regenerate the Wheel 2.0 test vectors: `python -m tests.vectors.generate [DIR]`.

Each vector is a directory holding `demo-1.0-py3-none-any.whl`; manifest.json
says whether a reader must accept it (with its content digest, file count and
content links) or refuse it (with the rule from docs/FORMAT.md section 9).

Archives are built here in memory with small, explicit code rather than with
nwcache's writers, so that each hostile variant can break exactly one rule and
so that the valid ones cross-check the library's reader. Output is fully
deterministic: the test suite regenerates them and compares bytes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import stat
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import zstandard

from nwcache.archive import tarfmt
from nwcache.archive.digest import DigestItem, content_digest
from nwcache.archive.wheelinfo import V2Header, to_v2
from nwcache.archive.zipfmt import DEFLATED, STORED, ZipWriter

HERE = Path(__file__).parent
FILENAME = "demo-1.0-py3-none-any.whl"
DIST_INFO = "demo-1.0.dist-info"
PAYLOAD = "demo-1.0.payload.tar.zst"
EPOCH = 315532800
METADATA = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
WHEEL = b"Wheel-Version: 1.0\nGenerator: nwcache-vectors\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


@dataclass(frozen=True)
class F:
    path: str
    data: bytes
    executable: bool = False


BASE = [F("demo/__init__.py", b""), F("demo/core.py", b"def answer():\n    return 42\n")]
LIBRARY = bytes(range(256)) * 16 + b"\x7fELF-not-really"
LINKED = [
    F("demo/__init__.py", b""),
    F("demo/sub/__init__.py", b""),
    F("demo/lib/libfoo.so.1.2.3", LIBRARY, True),
    F("demo/lib/libfoo.so.1", LIBRARY, True),
    F("demo/lib/libfoo.so", LIBRARY, True),
    F("demo-1.0.data/scripts/demo-tool", b"#!python\nprint('tool')\n", True),
]
PAX = [
    F("demo/__init__.py", b""),
    F("demo/" + "deeply_nested_directory/" * 5 + "module_with_a_long_name.py", b"x = 1\n"),
    F("demo/donn\u00e9es/\u00fcn\u00efcode_\u6587\u5b57.py", "y = '\u00e9'\n".encode()),
]


def b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def record_row(path: str, data: bytes) -> str:
    return f"{path},sha256={b64(hashlib.sha256(data).digest())},{len(data)}"


@dataclass
class Spec:
    """One archive to build; every field is a knob a hostile vector turns."""

    files: list[F] = field(default_factory=lambda: list(BASE))
    wheel: bytes = WHEEL
    record: bytes | None = None  # default: computed from files + dist-info
    extra_record_rows: list[str] = field(default_factory=list)
    # v2 knobs
    tar: bytes | None = None  # default: canonical tar of the stored files
    tar_extra: bytes = b""  # members inserted before the end-of-archive marker
    frame_window_log: int = 23
    declared_window_log: int = 23
    declared_size_delta: int = 0
    digest_override: str | None = None
    executables_override: tuple[str, ...] | None = None
    payload_suffix: bytes = b""
    payload_method: int = STORED
    frame_checksum: bool = True
    compression_field: str = "zstd"
    extra_members: list[tuple[str, bytes, int]] = field(default_factory=list)  # (name, data, unix mode)
    omit_payload: bool = False
    dist_info: str = DIST_INFO

    def dist_info_files(self) -> list[F]:
        return [F(f"{self.dist_info}/METADATA", METADATA), F(f"{self.dist_info}/WHEEL", self.wheel)]

    def record_bytes(self) -> bytes:
        if self.record is not None:
            return self.record
        rows = [record_row(f.path, f.data) for f in [*self.files, *self.dist_info_files()]]
        rows += self.extra_record_rows
        rows.append(f"{self.dist_info}/RECORD,,")
        return ("\n".join(rows) + "\n").encode()

    def executables(self) -> tuple[str, ...]:
        if self.executables_override is not None:
            return self.executables_override
        return tuple(sorted((f.path for f in self.files if f.executable), key=str.encode))

    def digest(self) -> str:
        """What RECORD and the declared modes say (docs/FORMAT.md section 7)."""
        record = self.record_bytes()
        executable = set(self.executables())
        items = [DigestItem(f"{self.dist_info}/RECORD", False, hashlib.sha256(record).digest(), len(record))]
        for line in record.decode().splitlines():
            path, hash_value, size = line.split(",")
            if hash_value:
                digest = base64.urlsafe_b64decode(hash_value.removeprefix("sha256=") + "==")
                items.append(DigestItem(path, path in executable, digest, int(size)))
        return content_digest(items)


def zip_archive(members: list[tuple[str, bytes, int, int]]) -> bytes:
    """(name, data, unix mode incl. file type bits, method) -> zip bytes."""
    out = io.BytesIO()
    writer = ZipWriter(out, timestamp=EPOCH)
    for name, data, mode, method in members:
        writer.names.discard(name)  # duplicate names are a vector of their own
        writer.add_bytes(name, data, mode=mode & 0o777, method=method)
        writer.members[-1].mode = mode  # keep file type bits (symlink vectors)
    writer.close()
    return out.getvalue()


def classic(spec: Spec) -> bytes:
    members = [(f.path, f.data, 0o755 if f.executable else 0o644, DEFLATED) for f in spec.files]
    members += [(f.path, f.data, 0o644, DEFLATED) for f in spec.dist_info_files()]
    members += [(name, data, mode, DEFLATED) for name, data, mode in spec.extra_members]
    members.append((f"{spec.dist_info}/RECORD", spec.record_bytes(), 0o644, DEFLATED))
    return zip_archive(members)


def canonical_tar(files: list[F], extra: bytes = b"") -> bytes:
    out = bytearray()
    seen: set[bytes] = set()
    for f in sorted(files, key=lambda f: f.path.encode()):
        key = hashlib.sha256(f.data).digest() + len(f.data).to_bytes(8, "big")
        if key in seen:
            continue  # a content link
        seen.add(key)
        out += tarfmt.member_header(f.path, len(f.data), 0o755 if f.executable else 0o644, EPOCH)
        out += f.data + tarfmt.padding(len(f.data))
    return bytes(out) + extra + tarfmt.END_OF_ARCHIVE


def compress(data: bytes, window_log: int, checksum: bool = True) -> bytes:
    params = zstandard.ZstdCompressionParameters.from_level(
        19, window_log=window_log, write_content_size=1, write_checksum=int(checksum), source_size=len(data)
    )
    return zstandard.ZstdCompressor(compression_params=params).compress(data)


def v2(spec: Spec) -> bytes:
    tar = spec.tar if spec.tar is not None else canonical_tar(spec.files, spec.tar_extra)
    frame = compress(tar, spec.frame_window_log, spec.frame_checksum)
    header = V2Header(
        "1.0",
        spec.declared_window_log,
        len(tar) + spec.declared_size_delta,
        spec.digest_override or spec.digest(),
        spec.executables(),
    )
    wheel = to_v2(spec.wheel, header).replace(
        b"Payload-Compression: zstd", f"Payload-Compression: {spec.compression_field}".encode()
    )
    members: list[tuple[str, bytes, int, int]] = []
    if not spec.omit_payload:
        payload = spec.dist_info.removesuffix(".dist-info") + ".payload.tar.zst"
        members.append((payload, frame + spec.payload_suffix, 0o644, spec.payload_method))
    members += [(name, data, mode, DEFLATED) for name, data, mode in spec.extra_members]
    members.append((f"{spec.dist_info}/METADATA", METADATA, 0o644, DEFLATED))
    members.append((f"{spec.dist_info}/WHEEL", wheel, 0o644, DEFLATED))
    members.append((f"{spec.dist_info}/RECORD", spec.record_bytes(), 0o644, DEFLATED))
    return zip_archive(members)


# -- byte-level surgery for container-level vectors ---------------------------


def _local_offsets(data: bytes) -> list[int]:
    return [i for i in range(len(data) - 3) if data[i : i + 4] == b"PK\x03\x04"]


def with_gap(data: bytes) -> bytes:
    """Insert 16 bytes before the second member and fix every offset after."""
    second = _local_offsets(data)[1]
    gap = b"hidden-payload!!"
    out = bytearray(data[:second] + gap + data[second:])
    shift_offsets(out, after=second, by=len(gap))
    return bytes(out)


def shift_offsets(out: bytearray, *, after: int, by: int) -> None:
    eocd = len(out) - 22
    count, _cd_size, cd_offset = struct.unpack_from("<HLL", out, eocd + 10)
    cd_offset += by
    struct.pack_into("<L", out, eocd + 16, cd_offset)
    pos = cd_offset
    for _ in range(count):
        name_len, extra_len, comment_len = struct.unpack_from("<3H", out, pos + 28)
        (offset,) = struct.unpack_from("<L", out, pos + 42)
        if offset >= after:
            struct.pack_into("<L", out, pos + 42, offset + by)
        pos += 46 + name_len + extra_len + comment_len


def with_overlap(spec: Spec) -> bytes:
    """A stored member whose data contains a complete second member that the
    central directory also lists: two names share bytes."""
    inner = zip_archive([("demo/core.py", spec.files[1].data, 0o644, STORED)])
    inner_local = inner[: inner.index(b"PK\x01\x02")]
    outer = zip_archive([("demo/__init__.py", inner_local, 0o644, STORED)])
    # Central directory entries of both, with the inner one's offset inside the outer's data.
    inner_cd = inner[inner.index(b"PK\x01\x02") : len(inner) - 22]
    outer_cd_at = outer.index(b"PK\x01\x02")
    outer_cd = outer[outer_cd_at : len(outer) - 22]
    data_start = 30 + len(b"demo/__init__.py")
    inner_cd = inner_cd[:42] + struct.pack("<L", data_start) + inner_cd[46:]
    body = outer[:outer_cd_at]
    cd = outer_cd + inner_cd
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 2, 2, len(cd), len(body), 0)
    return body + cd + eocd


def with_local_size_lie(data: bytes) -> bytes:
    """The first member's local header declares another compressed size."""
    out = bytearray(data)
    (csize,) = struct.unpack_from("<L", out, 18)
    struct.pack_into("<L", out, 18, csize + 1)
    return bytes(out)


def with_bad_crc(data: bytes, member_index: int) -> bytes:
    out = bytearray(data)
    local = _local_offsets(data)[member_index]
    (crc,) = struct.unpack_from("<L", out, local + 14)
    struct.pack_into("<L", out, local + 14, crc ^ 1)
    cd = data.index(b"PK\x01\x02")
    for _ in range(member_index):
        name_len, extra_len, comment_len = struct.unpack_from("<3H", out, cd + 28)
        cd += 46 + name_len + extra_len + comment_len
    struct.pack_into("<L", out, cd + 16, crc ^ 1)
    return bytes(out)


def frame_size_lie(spec: Spec) -> bytes:
    """A frame whose header declares 512 bytes less than it decodes to, with
    Payload-Size agreeing with the header."""
    tar = canonical_tar(spec.files)
    params = zstandard.ZstdCompressionParameters.from_level(
        3, window_log=23, write_content_size=1, write_checksum=1
    )
    frame = bytearray(zstandard.ZstdCompressor(compression_params=params).compress(tar))
    size = zstandard.get_frame_parameters(bytes(frame[:18])).content_size
    descriptor = frame[4]
    fcs_bytes = {0: 1, 1: 2, 2: 4, 3: 8}[descriptor >> 6]
    at = 4 + 1 + (0 if descriptor & 0x20 else 1)
    new = size - 512 - (256 if fcs_bytes == 2 else 0)
    frame[at : at + fcs_bytes] = new.to_bytes(fcs_bytes, "little")
    # Rebuild the archive around the edited frame.
    header = V2Header("1.0", 23, new, spec.digest(), ())
    members = [
        (PAYLOAD, bytes(frame), 0o644, STORED),
        (f"{DIST_INFO}/METADATA", METADATA, 0o644, DEFLATED),
        (f"{DIST_INFO}/WHEEL", to_v2(WHEEL, header), 0o644, DEFLATED),
        (f"{DIST_INFO}/RECORD", spec.record_bytes(), 0o644, DEFLATED),
    ]
    return zip_archive(members)


def tar_entry(path: str, typeflag: bytes, data: bytes = b"", linkname: bytes = b"") -> bytes:
    header = bytearray(tarfmt.member_header(path, len(data), 0o644, EPOCH))
    header[156:157] = typeflag
    header[157 : 157 + len(linkname)] = linkname
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + data + tarfmt.padding(len(data))


def bad_checksum_tar(files: list[F]) -> bytes:
    tar = bytearray(canonical_tar(files))
    tar[148:154] = b"000001"
    return bytes(tar)


# -- the vectors ----------------------------------------------------------------

Builder = Callable[[], bytes]
MODIFIED = [F("demo/__init__.py", b""), F("demo/core.py", b"def answer():\n    return 43\n")]
# A content-linked duplicate leaves room under the Payload-Size bound for one
# more small tar member, so that hostile tar members reach the rule they test.
ROOMY = [*BASE, F("demo/copy.py", BASE[1].data)]
BIG_ZEROS = [F("demo/__init__.py", b""), F("demo/zeros.bin", b"\0" * (9 << 20))]


def with_zip64_end(data: bytes, *, count_delta: int = 0) -> bytes:
    """Zip64 end records (record and locator) inserted before the end record,
    which keeps its real values, as CPython's zipfile writes them when a
    count or offset passes its ZIP64_LIMIT but still fits the classic fields.
    `count_delta` makes the zip64 record disagree with the end record."""
    eocd = data[-22:]
    _, _, _, _, count, cd_size, cd_offset, _ = struct.unpack("<4s4H2LH", eocd)
    z64_at = cd_offset + cd_size
    z64 = struct.pack(
        "<4sQ2H2L4Q",
        b"PK\x06\x06",
        44,
        45,
        45,
        0,
        0,
        count + count_delta,
        count + count_delta,
        cd_size,
        cd_offset,
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, z64_at, 1)
    return data[:z64_at] + z64 + locator + eocd


DIRECTORY_ROWS = ["demo/,,", "demo/sub/,,"]


def _spec(**changes: object) -> Spec:
    return replace(Spec(), **changes)  # type: ignore[arg-type]


VALID: dict[str, tuple[str, Builder, Spec]] = {
    "ok-classic-minimal": (
        "A classic 1.0 wheel; same digest as ok-v2-minimal",
        lambda: classic(Spec()),
        Spec(),
    ),
    "ok-v2-minimal": ("The smallest 2.0 archive: two files, one empty", lambda: v2(Spec()), Spec()),
    "ok-v2-content-links": (
        "Three identical shared libraries and two empty __init__.py: stored once each, three content links",
        lambda: v2(_spec(files=LINKED)),
        _spec(files=LINKED),
    ),
    "ok-v2-pax-paths": (
        "Paths over 100 bytes and non-ASCII paths, carried by pax headers",
        lambda: v2(_spec(files=PAX)),
        _spec(files=PAX),
    ),
    "ok-v2-crlf-wheel": (
        "A classic WHEEL with CRLF line endings: the 2.0 fields use them too",
        lambda: v2(_spec(wheel=WHEEL.replace(b"\n", b"\r\n"))),
        _spec(wheel=WHEEL.replace(b"\n", b"\r\n")),
    ),
    "ok-classic-zip64-end": (
        "Zip64 end records before an end record that keeps the real count, size and offset (CPython's zipfile)",
        lambda: with_zip64_end(classic(Spec())),
        Spec(),
    ),
    "ok-classic-record-directories": (
        "RECORD rows for directories ('demo/,,'), with zip directory entries: ignored, as pip and installer do",
        lambda: classic(
            _spec(
                extra_record_rows=DIRECTORY_ROWS,
                extra_members=[(row[:-2], b"", 0o755) for row in DIRECTORY_ROWS],
            )
        ),
        _spec(extra_record_rows=DIRECTORY_ROWS),
    ),
    "ok-v2-record-directories": (
        "The 2.0 form of ok-classic-record-directories: RECORD kept byte for byte, the rows still ignored",
        lambda: v2(_spec(extra_record_rows=DIRECTORY_ROWS)),
        _spec(extra_record_rows=DIRECTORY_ROWS),
    ),
}

REJECT: dict[str, tuple[str, str, Builder]] = {
    # container
    "zip-trailing-data": (
        "zip-trailing-data",
        "Bytes after the end of central directory",
        lambda: v2(Spec()) + b"JUNK",
    ),
    "zip-truncated": (
        "zip-truncated",
        "The first 60% of a valid archive",
        lambda: v2(Spec())[: len(v2(Spec())) * 6 // 10],
    ),
    "zip-gap": (
        "zip-gap",
        "16 unaccounted bytes hidden between two members",
        lambda: with_gap(classic(Spec())),
    ),
    "zip-overlap": (
        "zip-overlap",
        "A member whose bytes lie inside another member's data",
        lambda: with_overlap(Spec()),
    ),
    "zip-inconsistent": (
        "zip-inconsistent",
        "A local header whose sizes contradict the central directory",
        lambda: with_local_size_lie(classic(Spec())),
    ),
    "zip-crc": (
        "zip-crc",
        "A member whose CRC-32 does not match its bytes",
        lambda: with_bad_crc(classic(Spec()), 1),
    ),
    "zip-duplicate-name": (
        "duplicate-name",
        "Two zip members with the same name",
        lambda: classic(_spec(extra_members=[("demo/core.py", b"evil\n", 0o644)])),
    ),
    "zip64-end-disagrees": (
        "zip-structure",
        "A zip64 end record counting one member more than the end record's real count",
        lambda: with_zip64_end(classic(Spec()), count_delta=1),
    ),
    "zip-symlink": (
        "zip-symlink",
        "A zip member marked as a symlink",
        lambda: classic(_spec(extra_members=[("demo/link", b"/etc/passwd", stat.S_IFLNK | 0o777)])),
    ),
    # paths
    "path-traversal": (
        "path-traversal",
        "A zip member named ../evil.py",
        lambda: classic(_spec(files=[*BASE, F("../evil.py", b"x")])),
    ),
    "path-traversal-tar": (
        "path-traversal",
        "A payload member named demo/../../evil.py",
        lambda: v2(
            _spec(
                files=ROOMY,
                tar_extra=tarfmt.member_header("demo/../../evil.py", 1, 0o644, EPOCH)
                + b"x"
                + tarfmt.padding(1),
            )
        ),
    ),
    "path-absolute": (
        "path-absolute",
        "A member with an absolute path",
        lambda: classic(_spec(files=[*BASE, F("/tmp/evil.py", b"x")])),
    ),
    "path-backslash": (
        "path-backslash",
        "A member name with a backslash",
        lambda: classic(_spec(files=[*BASE, F("demo\\evil.py", b"x")])),
    ),
    "path-drive": (
        "path-drive",
        "A member name with a drive letter",
        lambda: classic(_spec(files=[*BASE, F("C:/evil.py", b"x")])),
    ),
    "path-control-char": (
        "path-control-char",
        "A member name with a control character",
        lambda: classic(_spec(files=[*BASE, F("demo/ev\x07il.py", b"x")])),
    ),
    "case-collision": (
        "case-collision",
        "demo/Core.py next to demo/core.py",
        lambda: v2(_spec(files=[*BASE, F("demo/Core.py", b"x = 2\n")])),
    ),
    "file-dir-conflict": (
        "file-dir-conflict",
        "demo/core.py is a file and a directory",
        lambda: v2(_spec(files=[*BASE, F("demo/core.py/x.py", b"x")])),
    ),
    # RECORD
    "record-hash": (
        "record-hash",
        "A classic member whose content does not match RECORD",
        lambda: classic(_spec(files=MODIFIED, record=Spec().record_bytes())),
    ),
    "record-hash-payload": (
        "record-hash",
        "A payload file whose content does not match RECORD",
        lambda: v2(_spec(tar=canonical_tar(MODIFIED))),
    ),
    "record-size": (
        "record-size",
        "RECORD lists a wrong size",
        lambda: classic(_spec(record=Spec().record_bytes().replace(b",28\n", b",29\n"))),
    ),
    "record-unlisted": (
        "record-unlisted",
        "A zip member RECORD does not list",
        lambda: classic(_spec(extra_members=[("demo/extra.py", b"x", 0o644)])),
    ),
    "record-unlisted-payload": (
        "record-unlisted",
        "A payload member RECORD does not list",
        lambda: v2(
            _spec(
                files=ROOMY,
                tar_extra=tarfmt.member_header("demo/extra.py", 1, 0o644, EPOCH) + b"x" + tarfmt.padding(1),
            )
        ),
    ),
    "record-missing-file": (
        "record-missing-file",
        "RECORD lists a file that is neither in the payload nor a content link",
        lambda: v2(_spec(extra_record_rows=[record_row("demo/ghost.py", b"boo\n")])),
    ),
    "record-hash-algorithm": (
        "record-hash-algorithm",
        "RECORD uses md5",
        lambda: classic(_spec(record=b"demo/__init__.py,md5=1B2M2Y8AsgTpgAmY7PhCfg,0\n")),
    ),
    "record-missing-hash": (
        "record-missing-hash",
        "A RECORD row without a hash",
        lambda: classic(_spec(record=b"demo/__init__.py,,0\n")),
    ),
    # tar subset
    "tar-symlink": (
        "tar-symlink",
        "A symlink entry in the payload",
        lambda: v2(_spec(files=ROOMY, tar_extra=tar_entry("demo/link", b"2", linkname=b"/etc/passwd"))),
    ),
    "tar-hardlink": (
        "tar-hardlink",
        "A hardlink entry in the payload",
        lambda: v2(_spec(files=ROOMY, tar_extra=tar_entry("demo/hard", b"1", linkname=b"demo/core.py"))),
    ),
    "tar-directory": (
        "tar-directory",
        "A directory entry in the payload",
        lambda: v2(_spec(files=ROOMY, tar_extra=tar_entry("demo/dir", b"5"))),
    ),
    "tar-checksum": (
        "tar-checksum",
        "A tar header with a wrong checksum",
        lambda: v2(_spec(tar=bad_checksum_tar(BASE))),
    ),
    "tar-duplicate-name": (
        "duplicate-name",
        "The same path stored twice in the payload",
        lambda: v2(
            _spec(
                files=ROOMY,
                tar_extra=tarfmt.member_header("demo/copy.py", 28, 0o644, EPOCH)
                + BASE[1].data
                + tarfmt.padding(28),
            )
        ),
    ),
    "payload-dist-info": (
        "payload-dist-info",
        "A .dist-info file inside the payload",
        lambda: v2(
            _spec(
                files=ROOMY,
                tar_extra=tarfmt.member_header(f"{DIST_INFO}/METADATA", len(METADATA), 0o644, EPOCH)
                + METADATA
                + tarfmt.padding(len(METADATA)),
            )
        ),
    ),
    "payload-mode": (
        "payload-mode",
        "A payload file executable in the tar but not in the Executable list",
        lambda: v2(_spec(files=[BASE[0], F("demo/core.py", BASE[1].data, True)], executables_override=())),
    ),
    # the payload frame
    "window-log-exceeded": (
        "window-log-exceeded",
        "Declares window log 23, but the frame needs a 32 MiB window (9 MiB of zeros, window log 25)",
        lambda: v2(_spec(files=BIG_ZEROS, frame_window_log=25)),
    ),
    "window-log-limit": (
        "window-log-limit",
        "Declares window log 30, above the default reader limit of 27",
        lambda: v2(_spec(declared_window_log=30)),
    ),
    "payload-size-mismatch": (
        "payload-size",
        "Payload-Size differs from the frame's content size",
        lambda: v2(_spec(declared_size_delta=-512)),
    ),
    "payload-size-bound": (
        "payload-size",
        "Payload-Size larger than RECORD allows",
        lambda: v2(_spec(declared_size_delta=1 << 20)),
    ),
    "payload-decodes-past-size": (
        "payload-size",
        "The frame decodes to more than its header and Payload-Size declare",
        lambda: frame_size_lie(Spec()),
    ),
    "payload-trailing-data": (
        "payload-trailing-data",
        "Bytes after the zstd frame inside the payload member",
        lambda: v2(_spec(payload_suffix=b"\0" * 8)),
    ),
    "payload-two-frames": (
        "payload-trailing-data",
        "A second zstd frame after the first",
        lambda: v2(_spec(payload_suffix=compress(b"more", 10))),
    ),
    "payload-no-checksum": (
        "payload-frame",
        "A frame without a content checksum",
        lambda: v2(_spec(frame_checksum=False)),
    ),
    "payload-deflated": (
        "payload-stored",
        "The payload member is deflated by zip",
        lambda: v2(_spec(payload_method=DEFLATED)),
    ),
    "payload-missing": (
        "payload-missing",
        "A 2.0 archive without a payload member",
        lambda: v2(_spec(omit_payload=True)),
    ),
    "payload-compression": (
        "payload-compression",
        "Payload-Compression: xz",
        lambda: v2(_spec(compression_field="xz")),
    ),
    "member-outside-dist-info": (
        "member-outside-dist-info",
        "A 2.0 archive with a zip member outside .dist-info",
        lambda: v2(_spec(extra_members=[("evil.py", b"x", 0o644)])),
    ),
    "content-digest": (
        "content-digest",
        "Content-Digest does not match RECORD",
        lambda: v2(_spec(digest_override="sha256:" + "0" * 64)),
    ),
    "wheel-version": (
        "wheel-version",
        "Wheel-Version: 3.0",
        lambda: classic(_spec(wheel=WHEEL.replace(b"1.0", b"3.0", 1))),
    ),
    "dist-info-name": (
        "dist-info-name",
        "A .dist-info directory that does not match the file name",
        lambda: v2(_spec(dist_info="other-1.0.dist-info")),
    ),
}


def build_all() -> tuple[dict[str, bytes], list[dict[str, object]]]:
    archives: dict[str, bytes] = {}
    manifest: list[dict[str, object]] = []
    for name, (description, build, spec) in VALID.items():
        archives[name] = build()
        files = len(spec.files) + 3
        links = len(spec.files) - len({(hashlib.sha256(f.data).digest(), len(f.data)) for f in spec.files})
        manifest.append(
            {
                "name": name,
                "expect": "accept",
                "description": description,
                "content_digest": spec.digest(),
                "files": files,
                "content_links": links if name.startswith("ok-v2") else 0,
            }
        )
    for name, (rule, description, build) in REJECT.items():
        archives[name] = build()
        manifest.append({"name": name, "expect": "reject", "rule": rule, "description": description})
    return archives, manifest


def write(root: Path) -> None:
    archives, manifest = build_all()
    for name, data in archives.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / FILENAME).write_bytes(data)
    (root / "manifest.json").write_text(
        json.dumps({"archive": FILENAME, "vectors": manifest}, indent=2, ensure_ascii=False) + "\n"
    )


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
