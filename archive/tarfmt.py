"""The tar subset inside a Wheel 2.0 payload (docs/FORMAT.md section 5).

Regular files only, POSIX ustar headers, with a pax extended header (keys
`path` and `size` only) in front of a member whose path is not ASCII or is
longer than 100 bytes, or whose size needs more than 11 octal digits. The
writer's encoding is canonical: one input always gives the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from .errors import InvalidArchive

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
_MAX_OCTAL_SIZE = 8**11 - 1
_MAX_PAX_HEADER = 1 << 16
_MAGIC = b"ustar\x0000"
# int() accepts signs, underscores and whitespace: numeric fields are digits only.
_OCTAL = re.compile(rb"[0-7]+")
_DECIMAL = re.compile(rb"[0-9]+")
_PAX_NAME = b"././@PaxHeader"
_REJECTED_TYPES = {
    b"1": ("hardlink entry", "tar-hardlink"),
    b"2": ("symlink entry", "tar-symlink"),
    b"5": ("directory entry", "tar-directory"),
    b"3": ("character device entry", "tar-special-file"),
    b"4": ("block device entry", "tar-special-file"),
    b"6": ("fifo entry", "tar-special-file"),
    b"7": ("contiguous file entry", "tar-type"),
    b"g": ("pax global header", "tar-type"),
    b"L": ("GNU long name entry", "tar-type"),
    b"K": ("GNU long link entry", "tar-type"),
}


def _padding(size: int) -> int:
    return -size % BLOCK


def _pax_records(records: list[tuple[str, bytes]]) -> bytes:
    out = bytearray()
    for key, value in records:
        body = b" " + key.encode() + b"=" + value + b"\n"
        length = len(body) + 1
        while len(str(length)) + len(body) != length:
            length = len(str(length)) + len(body)
        out += str(length).encode() + body
    return bytes(out)


def _ustar(name: bytes, size: int, mode: int, mtime: int, typeflag: bytes) -> bytes:
    header = bytearray(BLOCK)
    header[0 : len(name)] = name
    header[100:108] = b"%07o\0" % mode
    header[108:116] = b"0000000\0"
    header[116:124] = b"0000000\0"
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"%011o\0" % mtime
    header[148:156] = b" " * 8
    header[156:157] = typeflag
    header[257:265] = _MAGIC
    header[329:337] = b"0000000\0"
    header[337:345] = b"0000000\0"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def member_header(path: str, size: int, mode: int, mtime: int) -> bytes:
    """The canonical header bytes (pax header included) for one regular file."""
    raw = path.encode("utf-8")
    records: list[tuple[str, bytes]] = []
    if not raw.isascii() or len(raw) > 100:
        records.append(("path", raw))
        name = raw[:100] if raw.isascii() else b"nwcache-pax-path"
    else:
        name = raw
    field_size = size
    if size > _MAX_OCTAL_SIZE:
        records.append(("size", str(size).encode()))
        field_size = 0
    out = b""
    if records:
        pax = _pax_records(records)
        out = _ustar(_PAX_NAME, len(pax), 0o644, mtime, b"x") + pax + b"\0" * _padding(len(pax))
    return out + _ustar(name, field_size, mode, mtime, b"0")


def member_size(path: str, size: int) -> int:
    """Bytes one member takes in the tar stream, header and padding included
    (the length of member_header, computed without building it)."""
    total = BLOCK + size + _padding(size)
    if path.isascii() and len(path) <= 100 and size <= _MAX_OCTAL_SIZE:
        return total
    records: list[tuple[str, bytes]] = []
    raw = path.encode("utf-8")
    if not raw.isascii() or len(raw) > 100:
        records.append(("path", raw))
    if size > _MAX_OCTAL_SIZE:
        records.append(("size", str(size).encode()))
    pax = len(_pax_records(records))
    return total + BLOCK + pax + _padding(pax)


def padding(size: int) -> bytes:
    return b"\0" * _padding(size)


class ReadStream(Protocol):
    def read(self, size: int, /) -> bytes: ...


@dataclass(frozen=True)
class TarMember:
    path: str
    size: int
    executable: bool


class TarReader:
    """Parses a tar stream of the subset; raises InvalidArchive on anything else."""

    def __init__(self, stream: ReadStream, *, archive: str, member: str) -> None:
        self.stream = stream
        self.archive = archive
        self.member = member
        self.offset = 0

    def _fail(self, message: str, rule: str, path: str | None = None) -> InvalidArchive:
        where = f"{self.member}: {path}" if path else f"{self.member} @ {self.offset}"
        return InvalidArchive(message, rule=rule, archive=self.archive, member=where)

    def _read_exact(self, size: int) -> bytes:
        data = self.stream.read(size)
        if len(data) != size:
            raise self._fail("tar stream ends inside a member", "tar-truncated")
        self.offset += size
        return data

    def _parse_header(self, block: bytes) -> tuple[bytes, bytes, int, int]:
        if block[257:265] != _MAGIC:
            raise self._fail("not a POSIX ustar header", "tar-format")
        stored = self._octal(block[148:156], "checksum")
        if stored != sum(block[:148]) + 256 + sum(block[156:]):
            raise self._fail("header checksum mismatch", "tar-checksum")
        name = block[0:100].split(b"\0", 1)[0]
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
        size = self._octal(block[124:136], "size")
        mode = self._octal(block[100:108], "mode")
        return block[156:157], name, size, mode

    def _octal(self, field: bytes, what: str) -> int:
        text = field.rstrip(b"\0 ").lstrip(b" ")
        if not text:
            return 0
        if not _OCTAL.fullmatch(text):
            raise self._fail(f"malformed {what} field", "tar-format")
        return int(text, 8)

    def _parse_pax(self, data: bytes) -> dict[str, bytes]:
        records: dict[str, bytes] = {}
        pos = 0
        while pos < len(data):
            space = data.find(b" ", pos)
            if space < 0 or not _DECIMAL.fullmatch(data[pos:space]):
                raise self._fail("malformed pax record", "tar-pax")
            length = int(data[pos:space])
            record = data[pos : pos + length]
            if space < 0 or length <= 0 or len(record) != length or not record.endswith(b"\n"):
                raise self._fail("malformed pax record", "tar-pax")
            key, eq, value = record[space - pos + 1 : -1].partition(b"=")
            if not eq or key.decode("ascii", "replace") not in ("path", "size", "mtime"):
                raise self._fail(f"pax key {key!r} is not allowed", "tar-pax")
            if key.decode() in records:
                raise self._fail(f"pax key {key!r} repeated", "tar-pax")
            records[key.decode()] = value
            pos += length
        return records

    def members(self) -> Iterator[TarMember]:
        """Yield each member; the caller must consume `data(member)` in full
        before asking for the next one."""
        pax: dict[str, bytes] | None = None
        while True:
            block = self._read_exact(BLOCK)
            if block == b"\0" * BLOCK:
                if pax is not None:
                    raise self._fail("pax header without a member", "tar-pax")
                if self._read_exact(BLOCK) != b"\0" * BLOCK:
                    raise self._fail("single zero block inside the stream", "tar-format")
                if self.stream.read(1):
                    raise self._fail("data after the end-of-archive marker", "tar-trailing-data")
                return
            typeflag, name, size, mode = self._parse_header(block)
            if typeflag == b"x":
                if pax is not None:
                    raise self._fail("two pax headers in a row", "tar-pax")
                if size > _MAX_PAX_HEADER:
                    raise self._fail("pax header too large", "tar-pax")
                pax = self._parse_pax(self._read_exact(size))
                self._read_exact(_padding(size))
                continue
            if typeflag not in (b"0", b"\0"):
                message, rule = _REJECTED_TYPES.get(typeflag, (f"entry type {typeflag!r}", "tar-type"))
                raise self._fail(message, rule, name.decode("utf-8", "replace"))
            if pax is not None:
                name = pax.get("path", name)
                if "size" in pax:
                    if not _DECIMAL.fullmatch(pax["size"]):
                        raise self._fail("malformed pax size", "tar-pax")
                    size = int(pax["size"])
                pax = None
            try:
                path = name.decode("utf-8")
            except UnicodeDecodeError:
                raise self._fail("member path is not valid UTF-8", "path-encoding", repr(name)) from None
            yield TarMember(path, size, bool(mode & 0o111))

    def data(self, member: TarMember, chunk: int) -> Iterator[bytes]:
        remaining = member.size
        while remaining:
            data = self.stream.read(min(chunk, remaining))
            if not data:
                raise self._fail("tar stream ends inside a member", "tar-truncated", member.path)
            self.offset += len(data)
            remaining -= len(data)
            yield data
        self._read_exact(_padding(member.size))
