"""Reading archives: classic (1.x) wheels and Wheel 2.0 archives.

`Archive.open` validates the container and all metadata without reading a
byte of the payload. `Archive.iter_files` then streams every installed file,
each checked against RECORD as it is read; the whole archive is verified only
once that iterator is exhausted, so consumers write to a temporary place and
commit at the end.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import zstandard

from . import tarfmt
from .digest import DigestItem, content_digest
from .errors import ArchiveError, InvalidArchive, RecordMismatch, UnsupportedArchive
from .paths import check_collisions, check_path
from .records import RECORD_SIGNATURES, RecordEntry, format_record, parse_record
from .wheelinfo import (
    FORMAT_VERSION,
    MAX_WINDOW_LOG,
    V2Header,
    WheelFields,
    WheelName,
    check_dist_info_name,
    classic_version,
    declared_version,
    from_v2,
    parse_filename,
    parse_wheel,
)
from .zipfmt import CHUNK, STORED, ZipEntry, ZipReader, read_error

# A reader refuses archives that declare a larger window than this unless told
# otherwise: 2**27 (128 MiB) is zstd's own default decoding limit.
DEFAULT_MAX_WINDOW_LOG = 27
PAYLOAD_SUFFIX = ".payload.tar.zst"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Every .dist-info file is metadata a reader may hold in memory.
MAX_METADATA = 64 << 20
# libzstd's message when a frame decodes past its Frame_Content_Size.
_ZSTD_OVERRUN = "Destination buffer is too small"


def payload_name(dist_info: str) -> str:
    return dist_info.removesuffix(".dist-info") + PAYLOAD_SUFFIX


def member_order(files: Iterable[FileInfo], dist_info: str) -> list[FileInfo]:
    """The order both writers use: payload files by path, then .dist-info by
    path with RECORD and its signatures last (so a reader of the archive's
    tail finds the metadata and the central directory together)."""
    prefix = dist_info + "/"
    last = {f"{prefix}RECORD": 1, f"{prefix}RECORD.jws": 2, f"{prefix}RECORD.p7s": 3}

    def key(info: FileInfo) -> tuple[int, int, bytes]:
        in_dist_info = info.path.startswith(prefix)
        return (in_dist_info, last.get(info.path, 0), info.path.encode())

    return sorted(files, key=key)


@dataclass(frozen=True)
class FileInfo:
    """One installed file as the metadata describes it."""

    path: str
    executable: bool
    size: int
    record: RecordEntry  # for RECORD itself: no hash, size of the member

    @property
    def link_key(self) -> tuple[str, int]:
        return self.record.hash_value, self.size

    @property
    def mode(self) -> int:
        """The normalised permission bits: only the executable bit survives."""
        return 0o755 if self.executable else 0o644


class FileData:
    """A file produced by `Archive.iter_files` (or a source's `open_file`):
    either bytes to read, verified as they are read, or a content link to a
    file already produced (`link_to`). After reading, `sha256` is set."""

    def __init__(
        self,
        info: FileInfo,
        raw: Iterable[bytes] | None,
        label: str = "",
        link_to: FileData | None = None,
    ) -> None:
        self.info = info
        self._raw = raw
        self.label = label
        self.link_to = link_to
        self._sha256: bytes | None = None
        self.pending: Future[None] | None = None

    @property
    def path(self) -> str:
        return self.info.path

    @property
    def sha256(self) -> bytes | None:
        """Set once the content verified (a link's: its target's)."""
        return self.link_to.sha256 if self.link_to is not None else self._sha256

    def _take(self) -> Iterable[bytes]:
        if self._raw is None:
            what = f"a content link to {self.link_to.path}" if self.link_to else "already read"
            raise TypeError(f"{self.path} is {what}")
        raw, self._raw = self._raw, None
        return raw

    def chunks(self) -> Iterator[bytes]:
        """The content, checked against RECORD as it streams; the last chunk
        is followed by the size and hash checks."""
        checker = _Checker(self)
        for chunk in self._take():
            checker.update(chunk)
            yield chunk
        checker.finish()

    def take(self) -> bytes:
        """The whole content, read now in stream order and NOT yet verified:
        pass it to `verify` (on any thread) before trusting it, and set
        `pending` to the future that does, so that the archive's final check
        waits for it and fails the whole iteration if it failed."""
        return b"".join(self._take())

    def verify(self, content: bytes) -> None:
        """Check `content` (from `take`) against RECORD; sets `sha256`."""
        checker = _Checker(self)
        checker.update(content)
        checker.finish()

    def read_then(self, executor: Executor, then: Callable[[bytes], None]) -> Future[None]:
        """Read the whole file now, in stream order, and on `executor` verify
        it and hand the bytes to `then`. For small files: hashing leaves the
        reading thread. The archive waits for the future before its final
        check, so a failure still fails the whole iteration."""
        content = self.take()

        def job() -> None:
            self.verify(content)
            then(content)

        self.pending = executor.submit(job)
        return self.pending

    def stream_then(
        self, serial: Executor, write: Callable[[bytes], None], close: Callable[[], None]
    ) -> Future[None]:
        """Read the file chunk by chunk in stream order, and on `serial` (an
        executor with ONE worker, which keeps the chunks in order) hash and
        `write` each, then verify and `close`. For large files: hashing and
        writing leave the reading thread. Waits for the oldest chunk jobs so
        that at most `max_ahead` chunks are in memory."""
        checker = _Checker(self)
        jobs: deque[Future[None]] = deque()
        failed: list[BaseException] = []
        max_ahead = 8

        def put(chunk: bytes) -> None:
            if failed:
                return
            try:
                checker.update(chunk)
                write(chunk)
            except BaseException as exc:
                failed.append(exc)

        def finish() -> None:
            try:
                if failed:
                    raise failed[0]
                checker.finish()
            finally:
                close()

        for chunk in self._take():
            jobs.append(serial.submit(put, chunk))
            while len(jobs) > max_ahead:
                jobs.popleft().result()
        self.pending = serial.submit(finish)
        return self.pending


class _Checker:
    """Size and RECORD hash of one file, plus its sha256 for the digest."""

    def __init__(self, data: FileData) -> None:
        self.data = data
        info = data.info
        self.hasher = hashlib.new(info.record.hash_name) if info.record.hash_name else None
        self.sha = self.hasher if info.record.hash_name == "sha256" else hashlib.sha256()
        self.size = 0

    def _fail(self, message: str, rule: str) -> RecordMismatch:
        return RecordMismatch(message, rule=rule, archive=self.data.label, member=self.data.path)

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.data.info.size:
            raise self._fail(f"larger than the {self.data.info.size} bytes RECORD lists", "record-size")
        if self.hasher is not None:
            self.hasher.update(chunk)
        if self.sha is not self.hasher:
            assert self.sha is not None
            self.sha.update(chunk)

    def finish(self) -> None:
        info = self.data.info
        if self.size != info.size:
            raise self._fail(f"{self.size} bytes, RECORD lists {info.size}", "record-size")
        if self.hasher is not None and self.hasher.digest() != info.record.digest:
            raise self._fail("content does not match its RECORD hash", "record-hash")
        assert self.sha is not None
        self.data._sha256 = self.sha.digest()


class _Limited(io.RawIOBase):
    """The byte range of one stored zip member, read sequentially (by the
    zstd decoder: what it raises reaches the payload stream unchanged)."""

    def __init__(
        self, fh: BinaryIO, start: int, length: int, fail: Callable[[OSError | None], ArchiveError]
    ) -> None:
        self.fh = fh
        self.pos = start
        self.end = start + length
        self.crc = 0
        self.fail = fail

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.end - self.pos)
        if want <= 0:
            return 0
        try:
            # One pread: no seek, and the file's own buffer is bypassed.
            n = os.preadv(self.fh.fileno(), [view[:want]], self.pos)
        except OSError as exc:
            raise self.fail(exc) from None
        if n == 0:  # the file shrank after it was opened
            raise self.fail(None)
        self.crc = zlib.crc32(view[:n], self.crc)
        self.pos += n
        return n

    def drain(self) -> None:
        """Read (and CRC) whatever the decoder left unread: usually nothing,
        so no 1 MiB buffer is made for it."""
        if self.pos >= self.end:
            return
        buffer = bytearray(min(CHUNK, self.end - self.pos))
        while self.readinto(memoryview(buffer)):
            pass


class _PayloadStream:
    """The decoded payload as the tar reader reads it: refuses more bytes
    than the payload declared, and turns every decoder failure into the
    archive's error here, where the bytes are pulled. Decoding happens inside
    whichever read asks for more, including a file's data read by a consumer
    outside `iter_files`' own frame (a large file streamed to a worker)."""

    def __init__(
        self,
        raw: io.BufferedReader[io.RawIOBase],
        limit: int,
        too_big: ArchiveError,
        corrupt: Callable[[str], ArchiveError],
    ) -> None:
        self.raw = raw
        self.left = limit
        self.too_big = too_big
        self.corrupt = corrupt

    def read(self, size: int, /) -> bytes:
        try:
            data = self.raw.read(size)
        except zstandard.ZstdError as exc:
            if _ZSTD_OVERRUN in str(exc):  # a bomb: more than the frame (= Payload-Size) declares
                raise self.too_big from None
            raise self.corrupt(str(exc)) from None
        self.left -= len(data)
        if self.left < 0:
            raise self.too_big
        return data


class Archive:
    """An opened, structurally validated archive of either format."""

    def __init__(self, path: Path, fh: BinaryIO, *, max_window_log: int) -> None:
        self.path = path
        self.fh = fh
        self.label = str(path)
        self.max_window_log = max_window_log
        self.zip = ZipReader(fh, archive=self.label)
        self.wheel_name: WheelName = parse_filename(path.name, archive=self.label)
        self._validate()

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, max_window_log: int = DEFAULT_MAX_WINDOW_LOG) -> Archive:
        path = Path(path)
        try:
            # O_NONBLOCK: opening a fifo must not wait for a writer; a regular
            # file ignores it.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise ArchiveError(f"cannot open ({exc.strerror})", rule="io", archive=str(path)) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ArchiveError("not a regular file", rule="io", archive=str(path))
        os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
        try:
            return cls(path, fh, max_window_log=max_window_log)
        except BaseException:
            fh.close()
            raise

    def close(self) -> None:
        self.fh.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fail(self, message: str, rule: str, member: str | None = None) -> InvalidArchive:
        return InvalidArchive(message, rule=rule, archive=self.label, member=member)

    # -- validation of everything but the payload ----------------------------

    def _validate(self) -> None:
        members = self.zip.entries
        files = [member for member in members if not member.is_dir]
        tops = {e.name.split("/", 1)[0] for e in files if "/" in e.name}
        dist_infos = sorted(t for t in tops if t.endswith(".dist-info"))
        if len(dist_infos) != 1:
            raise self._fail(f"expected one .dist-info directory, found {len(dist_infos)}", "dist-info-count")
        self.dist_info = dist_infos[0]
        check_dist_info_name(self.dist_info, self.wheel_name, archive=self.label)
        wheel_member = self.zip.by_name.get(f"{self.dist_info}/WHEEL")
        record_member = self.zip.by_name.get(f"{self.dist_info}/RECORD")
        if wheel_member is None or record_member is None:
            raise self._fail("WHEEL or RECORD missing from .dist-info", "dist-info-missing")
        for member in files:
            if member.name.startswith(self.dist_info + "/") and member.file_size > MAX_METADATA:
                raise self._fail(
                    f"metadata file larger than {MAX_METADATA >> 20} MiB", "metadata-too-large", member.name
                )
        self.v2: V2Header | None
        self.wheel_bytes = self._read_small(wheel_member)
        self.record_bytes = self._read_small(record_member)
        self.record = parse_record(self.record_bytes, dist_info=self.dist_info, archive=self.label)
        record_by_path = {entry.path: entry for entry in self.record}
        # RECORD's paths were checked as it was parsed; check the others.
        for member in members:
            if member.name not in record_by_path:
                check_path(
                    member.name.removesuffix("/") if member.is_dir else member.name, archive=self.label
                )
        check_collisions(record_by_path, archive=self.label)
        # A 2.0 payload path may not add a second .dist-info either.
        for path in record_by_path:
            top = path.split("/", 1)[0]
            if "/" in path and top.endswith(".dist-info") and top != self.dist_info:
                raise self._fail(f"RECORD lists a second .dist-info directory, {top!r}", "dist-info-count")
        wheel_label = f"{self.dist_info}/WHEEL"
        if declared_version(self.wheel_bytes, archive=self.label, member=wheel_label) == FORMAT_VERSION:
            self.format = 2
            self.classic_wheel, self.v2 = from_v2(self.wheel_bytes, archive=self.label, member=wheel_label)
            self.classic_version = self.v2.classic_version
        else:
            self.format = 1
            self.classic_version = classic_version(self.wheel_bytes, archive=self.label, member=wheel_label)
            self.classic_wheel = self.wheel_bytes
            self.v2 = None
        self.wheel: WheelFields = parse_wheel(self.classic_wheel, archive=self.label, member=wheel_label)
        prefix = self.dist_info + "/"
        unlisted = {f"{prefix}RECORD"} | {prefix + sig for sig in RECORD_SIGNATURES}
        zip_files = {e.name: e for e in files}
        self.files: list[FileInfo] = []
        self.payload = self._validate_v2(zip_files, record_by_path) if self.format == 2 else None
        for name in zip_files:
            if (
                name not in record_by_path
                and name not in unlisted
                and (self.payload is None or name != self.payload.name)
            ):
                raise RecordMismatch(
                    "file is not listed in RECORD",
                    rule="record-unlisted",
                    archive=self.label,
                    member=name,
                )
        for entry in self.record:
            zip_entry = zip_files.get(entry.path)
            if entry.path.startswith(prefix) or self.format == 1:
                if zip_entry is None:
                    raise RecordMismatch(
                        "listed in RECORD but missing",
                        rule="record-missing-file",
                        archive=self.label,
                        member=entry.path,
                    )
                size = len(self.classic_wheel) if entry.path == wheel_label else zip_entry.file_size
                if entry.size is not None and entry.size != size:
                    raise RecordMismatch(
                        f"RECORD says {entry.size} bytes, the archive holds {size}",
                        rule="record-size",
                        archive=self.label,
                        member=entry.path,
                    )
                self.files.append(FileInfo(entry.path, zip_entry.mode == 0o755, size, entry))
            else:
                assert self.v2 is not None
                assert entry.size is not None
                self.files.append(FileInfo(entry.path, entry.path in self._executables, entry.size, entry))
        for name in unlisted - {f"{prefix}RECORD"}:
            if name in zip_files and name not in record_by_path:
                member = zip_files[name]
                self.files.append(
                    FileInfo(
                        name,
                        member.mode == 0o755,
                        member.file_size,
                        RecordEntry(name, "", b"", None),
                    )
                )
        self.files.sort(key=lambda f: f.path.encode())
        if self.format == 2 and all(f.record.hash_name in ("sha256", "") for f in self.files):
            assert self.v2 is not None
            if self.metadata_digest() != self.v2.content_digest:
                raise RecordMismatch(
                    "Content-Digest does not match RECORD and the declared modes",
                    rule="content-digest",
                    archive=self.label,
                    member=wheel_label,
                )

    def _validate_v2(self, zip_files: dict[str, ZipEntry], record: dict[str, RecordEntry]) -> ZipEntry:
        assert self.v2 is not None
        name = payload_name(self.dist_info)
        payload = self.zip.by_name.get(name)
        if payload is None:
            raise self._fail(f"payload member {name!r} missing", "payload-missing")
        if payload.header_offset != 0:
            raise self._fail("the payload must be the first member", "member-order", name)
        if payload.method != STORED:
            raise self._fail("the payload must be stored, not compressed by zip", "payload-stored", name)
        for entry in self.zip.entries:
            if entry.is_dir:
                raise self._fail("directory entry in a 2.0 archive", "zip-directory", entry.name)
            if entry is not payload and not entry.name.startswith(self.dist_info + "/"):
                raise self._fail(
                    "only the payload and .dist-info files may be zip members",
                    "member-outside-dist-info",
                    entry.name,
                )
        self._executables = set(self.v2.executables)
        prefix = self.dist_info + "/"
        payload_paths = {p for p in record if not p.startswith(prefix)}
        stray = self._executables - payload_paths
        if stray:
            raise self._fail(
                f"Executable names {sorted(stray)[0]!r}, which is not a payload file in RECORD",
                "wheel-field",
            )
        if self.v2.window_log > self.max_window_log:
            raise UnsupportedArchive(
                f"Payload-Window-Log {self.v2.window_log} exceeds this reader's limit of {self.max_window_log}"
                f" (a {1 << self.v2.window_log >> 20} MiB decoding window)",
                rule="window-log-limit",
                archive=self.label,
                member=name,
            )
        bound = sum(tarfmt.member_size(p, record[p].size or 0) for p in payload_paths) + len(
            tarfmt.END_OF_ARCHIVE
        )
        if self.v2.payload_size > bound:
            raise RecordMismatch(
                f"Payload-Size {self.v2.payload_size} exceeds what RECORD allows ({bound})",
                rule="payload-size",
                archive=self.label,
                member=name,
            )
        return payload

    def _read_small(self, entry: ZipEntry) -> bytes:
        return self.zip.read(entry)  # a .dist-info member: size checked in _validate

    # -- what the metadata says ----------------------------------------------

    @property
    def name(self) -> str:
        return str(self.wheel_name.name)

    @property
    def version(self) -> str:
        return str(self.wheel_name.version)

    @property
    def window_log(self) -> int | None:
        return self.v2.window_log if self.v2 else None

    @property
    def installed_size(self) -> int:
        return sum(f.size for f in self.files)

    def metadata_digest(self) -> str | None:
        """The content digest as the metadata claims it, or None if RECORD
        uses a hash other than sha256 (then only reading the files tells)."""
        items = []
        for f in self.files:
            if f.record.hash_name == "sha256":
                items.append(DigestItem(f.path, f.executable, f.record.digest, f.size))
            elif f.record.hash_name == "":
                data = (
                    self.record_bytes
                    if f.path.endswith("/RECORD")
                    else self.zip.read(self.zip.by_name[f.path])
                )
                items.append(DigestItem(f.path, f.executable, hashlib.sha256(data).digest(), f.size))
            else:
                return None
        return content_digest(items)

    # -- streaming every file, verified --------------------------------------

    def iter_files(
        self, chunk: int = CHUNK, *, drain: Callable[[], None] | None = None
    ) -> Iterator[FileData]:
        """Every installed file, each verified as it is read. The caller must
        read each stored file's chunks in full before advancing. Content links
        come after the payload; .dist-info last, with WHEEL in its classic form
        (the one RECORD describes). Exhausting the iterator verifies the whole.
        A consumer that holds files back (taken, not yet verified) passes
        `drain`, called once the last file is out and before the final check:
        by its return every such file's `pending` is set."""
        produced: list[FileData] = []
        if self.format == 2:
            yield from self._iter_payload(produced, chunk)
        for info in member_order(self.files, self.dist_info):
            if self.format == 1 or info.path.startswith(self.dist_info + "/"):
                data = self.open_file(info, chunk)
                produced.append(data)
                yield data
        if drain is not None:
            drain()
        for data in produced:
            if data.pending is not None:
                data.pending.result()
            if data.sha256 is None:
                raise RuntimeError(f"{data.path} was not read before iter_files advanced")
        self.verified_digest = content_digest(
            DigestItem(d.path, d.info.executable, d.sha256 or b"", d.info.size) for d in produced
        )
        if self.v2 is not None and self.verified_digest != self.v2.content_digest:
            raise RecordMismatch(
                "content does not match Content-Digest", rule="content-digest", archive=self.label
            )

    def open_file(self, info: FileInfo, chunk: int = CHUNK) -> FileData:
        """Random access to one zip member (any file of a classic wheel, a
        .dist-info file of a 2.0 archive), verified as it is read."""
        if info.path == f"{self.dist_info}/WHEEL":
            return FileData(info, [self.classic_wheel], self.label)
        entry = self.zip.by_name.get(info.path)
        if entry is None:
            raise TypeError(f"{info.path} is inside the payload; use iter_files")
        return FileData(info, self.zip.chunks(entry, chunk), self.label)

    @property
    def filename(self) -> str:
        return self.path.name

    def _frame_end(self, payload: ZipEntry) -> None:
        """Walk the zstd frame's block headers: exactly one frame, declared
        content size and checksum, no dictionary, window within the bound,
        nothing after it."""
        name = payload.name
        assert self.v2 is not None
        head = self.zip.pread(payload.data_offset, min(18, payload.file_size))
        if head[:4] != _ZSTD_MAGIC:
            raise self._fail("payload is not a zstd frame", "payload-frame", name)
        try:
            params = zstandard.get_frame_parameters(head)
            header_size = zstandard.frame_header_size(head)
        except zstandard.ZstdError as exc:
            raise self._fail(f"bad zstd frame header ({exc})", "payload-frame", name) from None
        if params.dict_id:
            raise self._fail("payload frame uses a dictionary", "payload-frame", name)
        if not params.has_checksum:
            raise self._fail("payload frame carries no checksum", "payload-frame", name)
        if params.content_size != self.v2.payload_size:
            raise RecordMismatch(
                f"frame content size {params.content_size} differs from Payload-Size {self.v2.payload_size}",
                rule="payload-size",
                archive=self.label,
                member=name,
            )
        if params.window_size > 1 << self.v2.window_log:
            raise UnsupportedArchive(
                f"payload frame needs a {params.window_size}-byte window, more than Payload-Window-Log"
                f" {self.v2.window_log} declares",
                rule="window-log-exceeded",
                archive=self.label,
                member=name,
            )
        pos = payload.data_offset + header_size
        end = payload.data_offset + payload.file_size
        # Raw and RLE blocks say how many bytes they decode to: a frame of
        # them that adds up past Payload-Size is a bomb, refused unread.
        at_least = 0
        while True:
            if pos + 3 > end:
                raise self._fail("payload frame is truncated", "payload-frame", name)
            (header,) = struct.unpack("<I", self.zip.pread(pos, 3) + b"\0")
            last, kind, size = header & 1, (header >> 1) & 3, header >> 3
            if kind == 3:
                raise self._fail("reserved zstd block type", "payload-frame", name)
            if kind in (0, 1):
                at_least += size
            pos += 3 + (1 if kind == 1 else size)
            if last:
                break
        if at_least > self.v2.payload_size:
            raise RecordMismatch(
                f"payload frame decodes to at least {at_least} bytes, more than Payload-Size"
                f" {self.v2.payload_size}",
                rule="payload-size",
                archive=self.label,
                member=name,
            )
        pos += 4
        if pos > end:
            raise self._fail("payload frame is truncated", "payload-frame", name)
        if pos < end:
            raise self._fail(f"{end - pos} bytes follow the payload frame", "payload-trailing-data", name)

    def _iter_payload(self, produced: list[FileData], chunk: int) -> Iterator[FileData]:
        assert self.payload is not None
        assert self.v2 is not None
        payload = self.payload
        self._frame_end(payload)
        # The zip CRC of the payload is checked too: stored members are read raw.
        raw = _Limited(
            self.fh,
            payload.data_offset,
            payload.compressed_size,
            lambda exc: (
                read_error(exc, self.label, payload.name)
                if exc is not None
                else self._fail("archive is truncated", "zip-truncated", payload.name)
            ),
        )
        dctx = zstandard.ZstdDecompressor(max_window_size=1 << min(self.v2.window_log, MAX_WINDOW_LOG))
        zreader = dctx.stream_reader(
            cast(BinaryIO, raw), read_size=CHUNK, read_across_frames=False, closefd=False
        )
        buffered = io.BufferedReader(cast(io.RawIOBase, zreader), buffer_size=CHUNK)
        too_big = RecordMismatch(
            f"payload decompresses past its declared {self.v2.payload_size} bytes",
            rule="payload-size",
            archive=self.label,
            member=payload.name,
        )
        stream = _PayloadStream(
            buffered,
            self.v2.payload_size,
            too_big,
            lambda why: self._fail(f"payload does not decompress ({why})", "payload-corrupt", payload.name),
        )
        tar = tarfmt.TarReader(stream, archive=self.label, member=payload.name)
        prefix = self.dist_info + "/"
        infos = {f.path: f for f in self.files if not f.path.startswith(prefix)}
        stored: dict[tuple[str, int], FileData] = {}
        seen: set[str] = set()
        for member in tar.members():
            info = infos.get(member.path)
            if info is None:
                check_path(member.path, archive=self.label)
                rule, message = (
                    ("duplicate-name", "stored twice in the payload")
                    if member.path in seen
                    else ("payload-dist-info", ".dist-info file inside the payload")
                    if member.path.startswith(prefix)
                    else ("record-unlisted", "file is not listed in RECORD")
                )
                raise RecordMismatch(message, rule=rule, archive=self.label, member=member.path)
            del infos[member.path]
            seen.add(member.path)
            if member.size != info.size:
                raise RecordMismatch(
                    f"{member.size} bytes, RECORD lists {info.size}",
                    rule="record-size",
                    archive=self.label,
                    member=info.path,
                )
            if member.executable != info.executable:
                raise InvalidArchive(
                    "executable bit differs from the WHEEL Executable list",
                    rule="payload-mode",
                    archive=self.label,
                    member=info.path,
                )
            data = FileData(info, tar.data(member, chunk), self.label)
            stored.setdefault(info.link_key, data)
            produced.append(data)
            yield data
            if data._raw is not None:  # the consumer skipped it: still verify
                for _ in data.chunks():
                    pass
        if stream.read(1):
            raise self._fail("data after the tar stream", "tar-trailing-data", payload.name)
        raw.drain()
        if raw.crc != payload.crc:
            raise self._fail("CRC-32 mismatch", "zip-crc", payload.name)
        # Every RECORD path absent from the tar is a content link.
        for info in sorted(infos.values(), key=lambda f: f.path.encode()):
            target = stored.get(info.link_key)
            if target is None:
                raise RecordMismatch(
                    "listed in RECORD but neither in the payload nor a content link",
                    rule="record-missing-file",
                    archive=self.label,
                    member=info.path,
                )
            link = FileData(info, None, self.label, link_to=target)
            produced.append(link)
            yield link


class TreeSource:
    """A directory laid out as a wheel's root: payload files and exactly one
    .dist-info with a classic WHEEL. RECORD, when present, must describe the
    tree exactly; when absent it is generated (sha256, this writer's order)."""

    def __init__(self, root: str | os.PathLike[str], *, filename: str | None = None) -> None:
        self.root = Path(root)
        self.label = str(self.root)
        if not self.root.is_dir():
            raise ArchiveError("not a directory", rule="tree-not-directory", archive=self.label)
        on_disk = self._scan()
        dist_infos = sorted(
            {p.split("/", 1)[0] for p in on_disk if "/" in p and p.split("/", 1)[0].endswith(".dist-info")}
        )
        if len(dist_infos) != 1:
            raise InvalidArchive(
                f"expected one .dist-info directory, found {len(dist_infos)}",
                rule="dist-info-count",
                archive=self.label,
            )
        self.dist_info = dist_infos[0]
        prefix = self.dist_info + "/"
        wheel_path = f"{prefix}WHEEL"
        if wheel_path not in on_disk:
            raise InvalidArchive(
                "WHEEL missing from .dist-info", rule="dist-info-missing", archive=self.label
            )
        self.classic_wheel = (self.root / wheel_path).read_bytes()
        self.classic_version = classic_version(self.classic_wheel, archive=self.label, member=wheel_path)
        self.wheel = parse_wheel(self.classic_wheel, archive=self.label, member=wheel_path)
        self.filename = filename or self._filename()
        self.wheel_name = parse_filename(self.filename, archive=self.label)
        check_dist_info_name(self.dist_info, self.wheel_name, archive=self.label)
        check_collisions(on_disk, archive=self.label)
        record_path = f"{prefix}RECORD"
        if record_path in on_disk:
            self.record_bytes = (self.root / record_path).read_bytes()
        else:
            self.record_bytes = self._generate_record(on_disk, record_path)
            on_disk[record_path] = False
        record = parse_record(self.record_bytes, dist_info=self.dist_info, archive=self.label)
        listed = {entry.path: entry for entry in record}
        unlisted = {record_path} | {prefix + sig for sig in RECORD_SIGNATURES}
        for path in on_disk:
            if path not in listed and path not in unlisted:
                raise RecordMismatch(
                    "file is not listed in RECORD",
                    rule="record-unlisted",
                    archive=self.label,
                    member=path,
                )
        self.files: list[FileInfo] = []
        for path, executable in on_disk.items():
            entry = listed.get(path) or RecordEntry(path, "", b"", None)
            size = len(self.record_bytes) if path == record_path else (self.root / path).stat().st_size
            if entry.size is not None and entry.size != size:
                raise RecordMismatch(
                    f"RECORD says {entry.size} bytes, the file has {size}",
                    rule="record-size",
                    archive=self.label,
                    member=path,
                )
            self.files.append(FileInfo(path, executable, size, entry))
        missing = set(listed) - set(on_disk)
        if missing:
            raise RecordMismatch(
                "listed in RECORD but missing",
                rule="record-missing-file",
                archive=self.label,
                member=sorted(missing)[0],
            )
        self.files.sort(key=lambda f: f.path.encode())

    def _scan(self) -> dict[str, bool]:
        """Relative path -> executable, for every regular file under the root."""
        found: dict[str, bool] = {}
        root = os.path.realpath(self.root)
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                check_path(rel, archive=self.label)
                if os.path.islink(full):
                    target = os.path.realpath(full)
                    if not target.startswith(root + os.sep) or not os.path.isfile(target):
                        raise InvalidArchive(
                            "symlink that does not point to a file inside the tree",
                            rule="tree-symlink",
                            archive=self.label,
                            member=rel,
                        )
                st = os.stat(full)
                if not stat.S_ISREG(st.st_mode):
                    raise InvalidArchive(
                        "not a regular file",
                        rule="tree-special-file",
                        archive=self.label,
                        member=rel,
                    )
                found[rel] = bool(st.st_mode & 0o111)
        return found

    def _filename(self) -> str:
        stem = self.dist_info.removesuffix(".dist-info")
        tags = [parse_tag(t) for t in self.wheel.get_all("Tag")]
        if not tags:
            raise InvalidArchive("WHEEL has no Tag lines", rule="wheel-field", archive=self.label)
        pythons, abis, platforms = ({t[i] for t in tags} for i in range(3))
        if len(tags) != len(pythons) * len(abis) * len(platforms) or len(set(tags)) != len(tags):
            raise InvalidArchive(
                "WHEEL tags do not form a compressed tag set; pass a file name",
                rule="wheel-field",
                archive=self.label,
            )
        build = self.wheel.get("Build")
        parts = (
            [stem] + ([build] if build else []) + [".".join(sorted(x)) for x in (pythons, abis, platforms)]
        )
        return "-".join(parts) + ".whl"

    def _generate_record(self, on_disk: dict[str, bool], record_path: str) -> bytes:
        entries = []
        infos = [FileInfo(p, x, 0, RecordEntry(p, "", b"", None)) for p, x in on_disk.items()]
        for info in member_order(infos, self.dist_info):
            hasher = hashlib.sha256()
            with open(self.root / info.path, "rb") as fh:
                for block in iter(lambda: fh.read(CHUNK), b""):
                    hasher.update(block)
            entries.append(
                RecordEntry(info.path, "sha256", hasher.digest(), (self.root / info.path).stat().st_size)
            )
        entries.append(RecordEntry(record_path, "", b"", None))
        return format_record(entries)

    def open_file(self, info: FileInfo, chunk: int = CHUNK) -> FileData:
        if info.path == f"{self.dist_info}/RECORD":
            return FileData(info, [self.record_bytes], self.label)

        def chunks() -> Iterator[bytes]:
            with open(self.root / info.path, "rb") as fh:
                yield from iter(lambda: fh.read(chunk), b"")

        return FileData(info, chunks(), self.label)


def parse_tag(text: str) -> tuple[str, str, str]:
    parts = text.split("-")
    if len(parts) != 3 or not all(parts):
        raise InvalidArchive(f"malformed Tag {text!r}", rule="wheel-field")
    return parts[0], parts[1], parts[2]
