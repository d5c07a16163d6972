"""Surgery on finished zip files: a field of one member changed in its local
header and its central directory entry alike, so that exactly one rule
breaks; and zips assembled by hand where no writer would go."""

from __future__ import annotations

import struct
import zlib

# (offset in the local header, offset in the central directory entry, format)
FIELDS = {
    "flags": (6, 8, "<H"),
    "method": (8, 10, "<H"),
    "crc": (14, 16, "<L"),
    "csize": (18, 20, "<L"),
    "usize": (22, 24, "<L"),
}


def central_entries(data: bytes) -> list[int]:
    """Offsets of the central directory entries, from the end record."""
    eocd = len(data) - 22
    count, _size, offset = struct.unpack_from("<HLL", data, eocd + 10)
    out, pos = [], offset
    for _ in range(count):
        out.append(pos)
        name_len, extra_len, comment_len = struct.unpack_from("<3H", data, pos + 28)
        pos += 46 + name_len + extra_len + comment_len
    return out


def member_index(data: bytes, name: str) -> int:
    for i, pos in enumerate(central_entries(data)):
        (name_len,) = struct.unpack_from("<H", data, pos + 28)
        if data[pos + 46 : pos + 46 + name_len] == name.encode():
            return i
    raise KeyError(name)


def set_field(
    data: bytes, name: str, field: str, value: int, *, local: bool = True, central: bool = True
) -> bytes:
    out = bytearray(data)
    cd = central_entries(data)[member_index(data, name)]
    (header,) = struct.unpack_from("<L", data, cd + 42)
    local_at, central_at, fmt = FIELDS[field]
    if local:
        struct.pack_into(fmt, out, header + local_at, value)
    if central:
        struct.pack_into(fmt, out, cd + central_at, value)
    return bytes(out)


def get_field(data: bytes, name: str, field: str) -> int:
    cd = central_entries(data)[member_index(data, name)]
    _local_at, central_at, fmt = FIELDS[field]
    (value,) = struct.unpack_from(fmt, data, cd + central_at)
    return int(value)


def set_external_mode(data: bytes, name: str, mode: int) -> bytes:
    out = bytearray(data)
    cd = central_entries(data)[member_index(data, name)]
    struct.pack_into("<L", out, cd + 38, mode << 16)
    return bytes(out)


def set_eocd(data: bytes, *, disk: int | None = None, cd_signature: bytes | None = None) -> bytes:
    out = bytearray(data)
    eocd = len(data) - 22
    if disk is not None:
        struct.pack_into("<H", out, eocd + 4, disk)
    if cd_signature is not None:
        at = central_entries(data)[0]
        out[at : at + 4] = cd_signature
    return bytes(out)


def local_file(name: bytes, data: bytes, *, declared: int | None = None) -> tuple[bytes, bytes, int, int]:
    """A deflated local member: (local bytes, body, crc, size); `declared`
    lies about the inflated size."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = compressor.compress(data) + compressor.flush()
    crc = zlib.crc32(data)
    size = len(data) if declared is None else declared
    header = struct.pack(
        "<4s2B4H3L2H", b"PK\x03\x04", 20, 0, 0, 8, 0, 0x21, crc, len(body), size, len(name), 0
    )
    return header + name + body, body, crc, size


def central(name: bytes, *, crc: int, csize: int, usize: int, offset: int, method: int = 8) -> bytes:
    return (
        struct.pack(
            "<4s4B4H3L5H2L",
            b"PK\x01\x02",
            20,
            3,
            20,
            0,
            0,
            method,
            0,
            0x21,
            crc,
            csize,
            usize,
            len(name),
            0,
            0,
            0,
            0,
            0o100644 << 16,
            offset,
        )
        + name
    )


def end_record(count: int, cd_size: int, cd_offset: int) -> bytes:
    return struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, 0)


def overlapping_bomb(names: list[str], kernel: bytes) -> bytes:
    """An overlapping-entry zip bomb (stored variant): each member's data is
    every later member, local headers and all, so N entries share one
    kernel and expand to about N times its size."""
    span = kernel
    locals_: list[bytes] = []
    for name in reversed(names):
        raw = name.encode()
        header = struct.pack(
            "<4s2B4H3L2H",
            b"PK\x03\x04",
            20,
            0,
            0,
            0,
            0,
            0x21,
            zlib.crc32(span),
            len(span),
            len(span),
            len(raw),
            0,
        )
        locals_.insert(0, header + raw)
        span = header + raw + span
    cd = b""
    offset = 0
    for name, header in zip(names, locals_, strict=True):
        size = len(span) - offset - len(header)
        data = span[offset + len(header) :]
        cd += central(name.encode(), crc=zlib.crc32(data), csize=size, usize=size, offset=offset, method=0)
        offset += len(header)
    return span + cd + end_record(len(names), len(cd), len(span))
