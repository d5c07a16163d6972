"""A strict zip reader and a deterministic zip writer.

The reader accepts the subset of zip that wheels need (stored and deflated
members, zip64, data descriptors) and refuses everything that lets two readers
disagree about the content: gaps or overlaps between members, local headers
that contradict the central directory, trailing or prepended bytes, comments,
encryption, multi-disk archives, symlinks and special files.
"""

from __future__ import annotations

import stat
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from .errors import ArchiveError, InvalidArchive, RecordMismatch, UnsupportedArchive
from .paths import MAX_FILES

STORED = 0
DEFLATED = 8

_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIG = b"PK\x05\x06"
_Z64_LOCATOR = struct.Struct("<4sLQL")
_Z64_LOCATOR_SIG = b"PK\x06\x07"
_Z64_EOCD = struct.Struct("<4sQ2H2L4Q")
_Z64_EOCD_SIG = b"PK\x06\x06"
_CENTRAL = struct.Struct("<4s4B4H3L5H2L")
_CENTRAL_SIG = b"PK\x01\x02"
_LOCAL = struct.Struct("<4s2B4H3L2H")
_LOCAL_SIG = b"PK\x03\x04"
_DESCRIPTOR_SIG = b"PK\x07\x08"
_MAX32 = 0xFFFFFFFF
_MAX16 = 0xFFFF
_FLAG_ENCRYPTED = 0x0001
_FLAG_DESCRIPTOR = 0x0008
_FLAG_STRONG_ENCRYPTION = 0x0040
_FLAG_UTF8 = 0x0800
_FLAG_MASKED_HEADER = 0x2000
_UNIX = 3
CHUNK = 1 << 20
# 1980-01-01 00:00:00 UTC: the earliest time a zip header can hold.
ZIP_EPOCH = 315532800


def read_error(exc: OSError, archive: str, member: str | None = None) -> ArchiveError:
    return ArchiveError(
        f"cannot read the archive ({exc.strerror or exc})", rule="io", archive=archive, member=member
    )


@dataclass(frozen=True)
class ZipEntry:
    name: str
    method: int
    flags: int
    crc: int
    compressed_size: int
    file_size: int
    header_offset: int
    data_offset: int
    end_offset: int  # first byte after data and data descriptor
    mode: int  # permission bits; 0o644 when the creator stored none
    is_dir: bool


class ZipReader:
    """Reads and validates the structure of a zip file up front; member data
    is then streamed with CRC and size checks."""

    def __init__(self, fh: BinaryIO, *, archive: str, max_members: int = MAX_FILES) -> None:
        self.fh = fh
        self.archive = archive
        try:
            self.size = fh.seek(0, 2)
        except OSError as exc:
            raise self.read_error(exc) from None
        self.entries = self._read_central_directory(max_members)
        self.by_name = {entry.name: entry for entry in self.entries}

    def _fail(self, message: str, rule: str, member: str | None = None) -> InvalidArchive:
        return InvalidArchive(message, rule=rule, archive=self.archive, member=member)

    def read_error(self, exc: OSError, member: str | None = None) -> ArchiveError:
        """An I/O error reading the archive file (EIO, a file on a vanished
        mount...): the archive's error, not a bare OSError."""
        return read_error(exc, self.archive, member)

    def pread(self, offset: int, length: int) -> bytes:
        try:
            self.fh.seek(offset)
            data = self.fh.read(length)
        except OSError as exc:
            raise self.read_error(exc) from None
        if len(data) != length:
            raise self._fail("archive is truncated", "zip-truncated")
        return data

    def _read_central_directory(self, max_members: int) -> list[ZipEntry]:
        if self.size < _EOCD.size:
            raise self._fail("not a zip file (too short for an end of central directory)", "zip-truncated")
        eocd_at = self.size - _EOCD.size
        sig, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment_len = _EOCD.unpack(
            self.pread(eocd_at, _EOCD.size)
        )
        if sig != _EOCD_SIG:
            tail = self.pread(max(0, self.size - 65557), min(self.size, 65557))
            if _EOCD_SIG in tail:
                raise self._fail(
                    "data or a comment follows the end of central directory", "zip-trailing-data"
                )
            raise self._fail("no end of central directory: not a zip file, or truncated", "zip-truncated")
        if comment_len:
            raise self._fail("archive comment present", "zip-trailing-data")
        if disk or cd_disk or n_disk != n_total:
            raise self._fail("multi-disk archives are not supported", "zip-multi-disk")
        cd_end = eocd_at
        loc_at = eocd_at - _Z64_LOCATOR.size
        # Zip64 end records are read whenever their locator precedes the end
        # record, not only when its fields hold the 0xFFFF markers: the zip
        # specification says those fields SHOULD be the markers, and writers
        # such as CPython's zipfile keep the real values when they fit.
        has_locator = loc_at >= 0 and self.pread(loc_at, 4) == _Z64_LOCATOR_SIG
        if has_locator or _MAX16 in (n_total, n_disk) or _MAX32 in (cd_size, cd_offset):
            if loc_at < 0:
                raise self._fail("zip64 locator missing", "zip-truncated")
            lsig, ldisk, z64_at, ndisks = _Z64_LOCATOR.unpack(self.pread(loc_at, _Z64_LOCATOR.size))
            if lsig != _Z64_LOCATOR_SIG or ldisk or ndisks != 1:
                raise self._fail("bad zip64 end of central directory locator", "zip-structure")
            if z64_at != loc_at - _Z64_EOCD.size:
                raise self._fail("zip64 end record is not where its locator says", "zip-structure")
            (zsig, rec_size, _, _, zdisk, zcd_disk, zn_disk, zn_total, zcd_size, zcd_offset) = (
                _Z64_EOCD.unpack(self.pread(z64_at, _Z64_EOCD.size))
            )
            if zsig != _Z64_EOCD_SIG or rec_size != _Z64_EOCD.size - 12:
                raise self._fail("bad zip64 end of central directory record", "zip-structure")
            if zdisk or zcd_disk or zn_disk != zn_total:
                raise self._fail("multi-disk archives are not supported", "zip-multi-disk")
            # A field of the end record that is not the marker must say what
            # the zip64 record says: a reader that ignores zip64 records would
            # otherwise see another central directory.
            for value, z64_value, marker in (
                (n_total, zn_total, _MAX16),
                (cd_size, zcd_size, _MAX32),
                (cd_offset, zcd_offset, _MAX32),
            ):
                if value not in (marker, z64_value):
                    raise self._fail("the end record and the zip64 end record disagree", "zip-structure")
            n_total, cd_size, cd_offset = zn_total, zcd_size, zcd_offset
            cd_end = z64_at
        if cd_offset + cd_size != cd_end:
            rule = "zip-trailing-data" if cd_offset + cd_size < cd_end else "zip-structure"
            raise self._fail("central directory does not end where the end record begins", rule)
        if n_total > max_members:
            raise self._fail(f"{n_total} members exceed the limit of {max_members}", "zip-too-many-members")
        central = self.pread(cd_offset, cd_size)
        entries: list[ZipEntry] = []
        pos = 0
        seen: set[str] = set()
        for _ in range(n_total):
            entry, pos = self._parse_central(central, pos)
            if entry.name in seen:
                raise self._fail("duplicate member name", "duplicate-name", entry.name)
            seen.add(entry.name)
            entries.append(entry)
        if pos != len(central):
            raise self._fail("central directory holds more than its declared entries", "zip-structure")
        # Members must tile the file from byte 0 to the central directory:
        # no prepended data, no hidden bytes between members, no overlaps.
        expected = 0
        for entry in sorted(entries, key=lambda e: e.header_offset):
            if entry.header_offset < expected:
                raise self._fail("member overlaps the previous one", "zip-overlap", entry.name)
            if entry.header_offset > expected:
                raise self._fail(
                    f"{entry.header_offset - expected} unaccounted bytes before member",
                    "zip-gap",
                    entry.name,
                )
            expected = entry.end_offset
        if expected > cd_offset:
            raise self._fail("member data overlaps the central directory", "zip-overlap")
        if expected < cd_offset:
            raise self._fail("unaccounted bytes before the central directory", "zip-gap")
        return entries

    def _parse_central(self, central: bytes, pos: int) -> tuple[ZipEntry, int]:
        if pos + _CENTRAL.size > len(central):
            raise self._fail("central directory is truncated", "zip-structure")
        (
            sig,
            _ver,
            host,
            _need,
            _needhost,
            flags,
            method,
            _mtime,
            _mdate,
            crc,
            csize,
            usize,
            name_len,
            extra_len,
            comment_len,
            disk,
            _iattr,
            eattr,
            offset,
        ) = _CENTRAL.unpack_from(central, pos)
        if sig != _CENTRAL_SIG:
            raise self._fail("bad central directory entry signature", "zip-structure")
        pos += _CENTRAL.size
        raw_name = central[pos : pos + name_len]
        extra = central[pos + name_len : pos + name_len + extra_len]
        pos += name_len + extra_len + comment_len
        if pos > len(central):
            raise self._fail("central directory is truncated", "zip-structure")
        name = self._decode_name(raw_name, flags)
        if flags & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION | _FLAG_MASKED_HEADER):
            raise UnsupportedArchive(
                "encrypted member", rule="zip-encrypted", archive=self.archive, member=name
            )
        if method not in (STORED, DEFLATED):
            raise UnsupportedArchive(
                f"compression method {method} (only stored and deflate)",
                rule="zip-method",
                archive=self.archive,
                member=name,
            )
        if disk:
            raise self._fail("member on another disk", "zip-multi-disk", name)
        usize, csize, offset = self._zip64_fields(extra, usize, csize, offset, name)
        if method == STORED and csize != usize:
            raise self._fail(
                "stored member with different compressed and file sizes", "zip-inconsistent", name
            )
        file_type = stat.S_IFMT(eattr >> 16) if host == _UNIX else 0
        is_dir = name.endswith("/") or file_type == stat.S_IFDIR
        if file_type == stat.S_IFLNK:
            raise self._fail("symlink entry", "zip-symlink", name)
        if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise self._fail("special file entry (device, fifo or socket)", "zip-special-file", name)
        mode = 0o644
        if host == _UNIX and (eattr >> 16) & 0o111:
            mode = 0o755
        # The local header must agree with the central directory.
        # One read for the local header, its name and (usually) its extra field.
        if offset > self.size - _LOCAL.size:
            raise self._fail("local header offset beyond the end of the file", "zip-truncated", name)
        head = self.pread(offset, min(_LOCAL.size + name_len + 64, self.size - offset))
        if len(head) < _LOCAL.size:
            raise self._fail("archive is truncated", "zip-truncated", name)
        (lsig, _lneed, _lhost, lflags, lmethod, _lt, _ld, lcrc, lcsize, lusize, lname_len, lextra_len) = (
            _LOCAL.unpack_from(head)
        )
        if lsig != _LOCAL_SIG:
            raise self._fail("no local header where the central directory points", "zip-inconsistent", name)
        lname = head[_LOCAL.size : _LOCAL.size + lname_len]
        if lname != raw_name or lmethod != method or (lflags ^ flags) & ~_FLAG_UTF8 & 0xFFFF & ~0x0006:
            raise self._fail("local header disagrees with the central directory", "zip-inconsistent", name)
        data_offset = offset + _LOCAL.size + lname_len + lextra_len
        end = data_offset + csize
        if flags & _FLAG_DESCRIPTOR:
            end = self._check_descriptor(end, crc, csize, usize, name)
        else:
            extra_at = _LOCAL.size + lname_len
            lextra = head[extra_at : extra_at + lextra_len]
            if len(lextra) != lextra_len:
                lextra = self.pread(offset + extra_at, lextra_len)
            lusize, lcsize, _ = self._zip64_fields(lextra, lusize, lcsize, 0, name, local=True)
            if (lcrc, lcsize, lusize) != (crc, csize, usize):
                raise self._fail(
                    "local header sizes or CRC disagree with the central directory",
                    "zip-inconsistent",
                    name,
                )
        if end > self.size:
            raise self._fail("member data runs past the end of the file", "zip-truncated", name)
        entry = ZipEntry(name, method, flags, crc, csize, usize, offset, data_offset, end, mode, is_dir)
        return entry, pos

    def _check_descriptor(self, at: int, crc: int, csize: int, usize: int, name: str) -> int:
        head = self.pread(at, 4) if at + 4 <= self.size else b""
        if head == _DESCRIPTOR_SIG:
            at += 4
        zip64 = csize >= _MAX32 or usize >= _MAX32
        fmt = "<LQQ" if zip64 else "<LLL"
        length = struct.calcsize(fmt)
        if struct.unpack(fmt, self.pread(at, length)) != (crc, csize, usize):
            raise self._fail("data descriptor disagrees with the central directory", "zip-inconsistent", name)
        return at + length

    def _zip64_fields(
        self, extra: bytes, usize: int, csize: int, offset: int, name: str, local: bool = False
    ) -> tuple[int, int, int]:
        pos = 0
        while pos + 4 <= len(extra):
            tag, size = struct.unpack_from("<2H", extra, pos)
            body = extra[pos + 4 : pos + 4 + size]
            if len(body) != size:
                raise self._fail("truncated extra field", "zip-structure", name)
            if tag == 0x0001:
                values = list(struct.unpack_from(f"<{size // 8}Q", body)) if size >= 8 else []
                wanted = [usize == _MAX32, csize == _MAX32, not local and offset == _MAX32]
                result = [usize, csize, offset]
                for i, want in enumerate(wanted):
                    if want:
                        if not values:
                            raise self._fail("zip64 extra field is too short", "zip-structure", name)
                        result[i] = values.pop(0)
                return result[0], result[1], result[2]
            pos += 4 + size
        if pos != len(extra):
            raise self._fail("malformed extra field", "zip-structure", name)
        if _MAX32 in (usize, csize) or (not local and offset == _MAX32):
            raise self._fail("zip64 sizes without a zip64 extra field", "zip-structure", name)
        return usize, csize, offset

    def _decode_name(self, raw: bytes, flags: int) -> str:
        try:
            return raw.decode("utf-8") if flags & _FLAG_UTF8 else raw.decode("ascii")
        except UnicodeDecodeError:
            if flags & _FLAG_UTF8:
                raise self._fail("member name is not valid UTF-8", "path-encoding", repr(raw)) from None
            return raw.decode("cp437")

    def raw_chunks(self, entry: ZipEntry, chunk: int = CHUNK) -> Iterator[bytes]:
        """The member's bytes as stored in the archive (compressed if deflated)."""
        remaining = entry.compressed_size
        position = entry.data_offset
        while remaining:
            try:  # seek each time: the caller may have read elsewhere between chunks
                self.fh.seek(position)
                data = self.fh.read(min(chunk, remaining))
            except OSError as exc:
                raise self.read_error(exc, entry.name) from None
            if not data:
                raise self._fail("archive is truncated", "zip-truncated", entry.name)
            remaining -= len(data)
            position += len(data)
            yield data

    def chunks(self, entry: ZipEntry, chunk: int = CHUNK) -> Iterator[bytes]:
        """The member's content, checked against its CRC and declared size."""
        crc = 0
        produced = 0
        if entry.method == STORED:
            for data in self.raw_chunks(entry, chunk):
                crc = zlib.crc32(data, crc)
                produced += len(data)
                yield data
        else:
            inflater = zlib.decompressobj(-15)
            ended = False
            for raw in self.raw_chunks(entry, chunk):
                if ended:
                    raise self._fail("deflate stream does not end with the member", "zip-corrupt", entry.name)
                data = raw
                while data:
                    try:
                        out = inflater.decompress(data, chunk)
                    except zlib.error as exc:
                        raise self._fail(
                            f"corrupt deflate stream ({exc})", "zip-corrupt", entry.name
                        ) from None
                    data = inflater.unconsumed_tail
                    produced += len(out)
                    if produced > entry.file_size:
                        raise RecordMismatch(
                            "inflates past its declared size",
                            rule="zip-size",
                            archive=self.archive,
                            member=entry.name,
                        )
                    crc = zlib.crc32(out, crc)
                    if out:
                        yield out
                    if inflater.eof:
                        ended = True
                        # Stop here: past the stream's end, zlib keeps the
                        # unconsumed tail and a further call only moves it to
                        # unused_data, again and again (a hang, found by the fuzzer).
                        if inflater.unconsumed_tail or inflater.unused_data:
                            raise self._fail(
                                "deflate stream does not end with the member", "zip-corrupt", entry.name
                            )
                        break
            if not inflater.eof or inflater.unused_data:
                raise self._fail("deflate stream does not end with the member", "zip-corrupt", entry.name)
        if produced != entry.file_size:
            raise RecordMismatch(
                f"holds {produced} bytes, its header says {entry.file_size}",
                rule="zip-size",
                archive=self.archive,
                member=entry.name,
            )
        if crc != entry.crc:
            raise self._fail("CRC-32 mismatch", "zip-crc", entry.name)

    def read(self, entry: ZipEntry) -> bytes:
        return b"".join(self.chunks(entry))


def dos_datetime(timestamp: int) -> tuple[int, int]:
    """DOS (date, time) of a UTC timestamp, clamped to the zip epoch."""
    t = time.gmtime(max(timestamp, ZIP_EPOCH))
    year = min(t.tm_year, 2107)
    date = (year - 1980) << 9 | t.tm_mon << 5 | t.tm_mday
    clock = t.tm_hour << 11 | t.tm_min << 5 | t.tm_sec // 2
    return date, clock


class Compressor(Protocol):
    """What `ZipWriter.add_stream` feeds a member's content through: zlib's
    and zstandard's compression objects both fit."""

    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


@dataclass
class _Written:
    name: bytes
    flags: int
    method: int
    crc: int
    compressed_size: int
    file_size: int
    offset: int
    mode: int
    data_offset: int


class ZipWriter:
    """Writes members with fixed metadata so the same input gives the same bytes.

    Every field that zip leaves free is pinned: creator Unix, mode 0o644 or
    0o755, one timestamp, no extra fields but zip64 where sizes need it.
    """

    def __init__(self, fh: BinaryIO, *, timestamp: int = ZIP_EPOCH) -> None:
        self.fh = fh
        self.date, self.clock = dos_datetime(timestamp)
        self.members: list[_Written] = []
        self.names: set[str] = set()
        self._by_name: dict[str, _Written] = {}

    def _local_header(
        self, name: bytes, flags: int, method: int, crc: int, csize: int, usize: int, zip64: bool
    ) -> bytes:
        extra = struct.pack("<2H2Q", 1, 16, usize, csize) if zip64 else b""
        need = 45 if zip64 else 20
        sizes = (_MAX32, _MAX32) if zip64 else (csize, usize)
        return (
            _LOCAL.pack(
                _LOCAL_SIG,
                need,
                0,
                flags,
                method,
                self.clock,
                self.date,
                crc,
                *sizes,
                len(name),
                len(extra),
            )
            + name
            + extra
        )

    def _record(self, member: _Written) -> None:
        self.members.append(member)
        self._by_name[member.name.decode("utf-8")] = member

    def _start(self, name: str) -> tuple[bytes, int]:
        if name in self.names:
            raise ValueError(f"duplicate zip member {name!r}")
        self.names.add(name)
        raw = name.encode("utf-8")
        return raw, (_FLAG_UTF8 if not raw.isascii() else 0)

    def add_bytes(
        self, name: str, data: bytes, *, mode: int = 0o644, method: int = DEFLATED, level: int = 9
    ) -> None:
        raw, flags = self._start(name)
        crc = zlib.crc32(data)
        if method == DEFLATED:
            compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
            body = compressor.compress(data) + compressor.flush()
        else:
            body = data
        offset = self.fh.tell()
        zip64 = len(data) >= _MAX32 or len(body) >= _MAX32
        self.fh.write(self._local_header(raw, flags, method, crc, len(body), len(data), zip64))
        data_offset = self.fh.tell()
        self.fh.write(body)
        self._record(_Written(raw, flags, method, crc, len(body), len(data), offset, mode, data_offset))

    def add_stream(
        self,
        name: str,
        chunks: Iterable[bytes],
        *,
        size_bound: int,
        mode: int = 0o644,
        method: int = DEFLATED,
        level: int = 6,
        compressor: Compressor | None = None,
    ) -> int:
        """Stream a member whose sizes are known only at the end; the local
        header is patched afterwards, so `fh` must be seekable. `size_bound`
        (an upper bound of the content size) decides up front whether the
        header needs zip64 room. Returns the content size.

        `compressor`, when given, encodes the content for `method` instead of
        deflate at `level` (bench/corpus.py writes zstd members with it; the
        reader accepts only stored and deflated members)."""
        raw, flags = self._start(name)
        offset = self.fh.tell()
        zip64 = size_bound + (size_bound >> 8) + 1024 >= _MAX32
        self.fh.write(b"\0" * len(self._local_header(raw, flags, method, 0, 0, 0, zip64)))
        data_offset = self.fh.tell()
        if compressor is None and method == DEFLATED:
            compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
        crc = size = csize = 0
        for data in chunks:
            crc = zlib.crc32(data, crc)
            size += len(data)
            out = compressor.compress(data) if compressor else data
            csize += len(out)
            self.fh.write(out)
        if compressor:
            tail = compressor.flush()
            csize += len(tail)
            self.fh.write(tail)
        if max(size, csize) >= _MAX32 and not zip64:
            raise ValueError(f"member {name!r} exceeded its declared size bound")
        end = self.fh.tell()
        self.fh.seek(offset)
        self.fh.write(self._local_header(raw, flags, method, crc, csize, size, zip64))
        self.fh.seek(end)
        self._record(_Written(raw, flags, method, crc, csize, size, offset, mode, data_offset))
        return size

    def add_copy(self, name: str, of: str, *, mode: int = 0o644) -> None:
        """A new member with the same content as member `of`, reusing its
        compressed bytes; `fh` must be readable (opened "w+b")."""
        source = self._by_name[of]
        raw, flags = self._start(name)
        zip64 = max(source.file_size, source.compressed_size) >= _MAX32
        offset = self.fh.tell()
        self.fh.write(
            self._local_header(
                raw,
                flags,
                source.method,
                source.crc,
                source.compressed_size,
                source.file_size,
                zip64,
            )
        )
        data_offset = self.fh.tell()
        position = source.data_offset
        remaining = source.compressed_size
        while remaining:
            end = self.fh.tell()
            self.fh.seek(position)
            data = self.fh.read(min(CHUNK, remaining))
            self.fh.seek(end)
            self.fh.write(data)
            position += len(data)
            remaining -= len(data)
        self._record(
            _Written(
                raw,
                flags,
                source.method,
                source.crc,
                source.compressed_size,
                source.file_size,
                offset,
                mode,
                data_offset,
            )
        )

    def close(self) -> None:
        cd_offset = self.fh.tell()
        for m in self.members:
            zip64 = m.file_size >= _MAX32 or m.compressed_size >= _MAX32 or m.offset >= _MAX32
            if zip64:
                extra = struct.pack("<2H3Q", 1, 24, m.file_size, m.compressed_size, m.offset)
                sizes = (_MAX32, _MAX32, _MAX32)
            else:
                extra = b""
                sizes = (m.compressed_size, m.file_size, m.offset)
            need = 45 if zip64 else 20
            eattr = (stat.S_IFREG | m.mode) << 16
            self.fh.write(
                _CENTRAL.pack(
                    _CENTRAL_SIG,
                    need,
                    _UNIX,
                    need,
                    0,
                    m.flags,
                    m.method,
                    self.clock,
                    self.date,
                    m.crc,
                    sizes[0],
                    sizes[1],
                    len(m.name),
                    len(extra),
                    0,
                    0,
                    0,
                    eattr,
                    sizes[2],
                )
                + m.name
                + extra
            )
        cd_end = self.fh.tell()
        cd_size = cd_end - cd_offset
        count = len(self.members)
        if count >= _MAX16 or cd_size >= _MAX32 or cd_offset >= _MAX32:
            self.fh.write(
                _Z64_EOCD.pack(
                    _Z64_EOCD_SIG,
                    _Z64_EOCD.size - 12,
                    45,
                    45,
                    0,
                    0,
                    count,
                    count,
                    cd_size,
                    cd_offset,
                )
            )
            self.fh.write(_Z64_LOCATOR.pack(_Z64_LOCATOR_SIG, 0, cd_end, 1))
            self.fh.write(_EOCD.pack(_EOCD_SIG, 0, 0, _MAX16, _MAX16, _MAX32, _MAX32, 0))
        else:
            self.fh.write(_EOCD.pack(_EOCD_SIG, 0, 0, count, count, cd_size, cd_offset, 0))
