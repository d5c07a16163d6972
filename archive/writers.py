"""Writing archives: Wheel 2.0 from a random-access source, classic wheels
from a stream of verified files. Output goes to a temporary file beside the
destination and is renamed into place only when everything verified."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import zstandard

from . import tarfmt
from .digest import DigestItem, content_digest
from .errors import ArchiveError
from .sources import FileData, FileInfo, member_order, payload_name
from .wheelinfo import (
    DEFAULT_LEVEL,
    DEFAULT_WINDOW_LOG,
    MAX_WINDOW_LOG,
    MIN_WINDOW_LOG,
    V2Header,
    to_v2,
)
from .zipfmt import CHUNK, DEFLATED, STORED, ZIP_EPOCH, ZipWriter

_BATCH = 256 << 10
JOB_SIZE = 8 << 20


class Source(Protocol):
    """What the 2.0 writer needs: a manifest and random access to each file."""

    label: str
    dist_info: str
    files: list[FileInfo]
    classic_wheel: bytes
    classic_version: str

    @property
    def filename(self) -> str: ...

    def open_file(self, info: FileInfo, chunk: int = CHUNK) -> FileData: ...


@dataclass(frozen=True)
class WriteResult:
    path: Path
    format: int
    size: int
    content_digest: str
    files: int
    content_links: int


def default_timestamp() -> int:
    """SOURCE_DATE_EPOCH when set, clamped to what zip can hold (1980)."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return max(int(value), ZIP_EPOCH) if value.strip().isdigit() else ZIP_EPOCH


@contextmanager
def atomic_output(dest: Path) -> Iterator[BinaryIO]:
    """A temporary file beside `dest`, renamed over it on success and removed
    on any failure, so a failed write leaves nothing behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w+b") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _executable_order(paths: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(paths, key=lambda p: p.encode()))


def by_path(info: FileInfo) -> bytes:
    return info.path.encode()


def write_v2(
    source: Source,
    dest: Path,
    *,
    level: int = DEFAULT_LEVEL,
    window_log: int = DEFAULT_WINDOW_LOG,
    timestamp: int | None = None,
    content_links: bool = True,
    metadata_method: int = DEFLATED,
    order: Callable[[FileInfo], object] = by_path,
) -> WriteResult:
    if not MIN_WINDOW_LOG <= window_log <= MAX_WINDOW_LOG:
        raise ArchiveError(
            f"window log {window_log} outside {MIN_WINDOW_LOG}..{MAX_WINDOW_LOG}", rule="usage"
        )
    if not 1 <= level <= 22:
        raise ArchiveError(f"zstd level {level} outside 1..22", rule="usage")
    timestamp = default_timestamp() if timestamp is None else max(timestamp, ZIP_EPOCH)
    prefix = source.dist_info + "/"
    payload = sorted((f for f in source.files if not f.path.startswith(prefix)), key=order)  # type: ignore[arg-type]
    metadata = member_order((f for f in source.files if f.path.startswith(prefix)), source.dist_info)
    stored: list[FileInfo] = []
    links: list[FileInfo] = []
    seen: set[tuple[str, int]] = set()
    for info in payload:
        if content_links and info.link_key in seen:
            links.append(info)
        else:
            seen.add(info.link_key)
            stored.append(info)
    stored_set = {info.path for info in stored}
    tar_size = sum(tarfmt.member_size(f.path, f.size) for f in stored) + len(tarfmt.END_OF_ARCHIVE)
    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        source_size=tar_size,
        window_log=window_log,
        write_content_size=1,
        write_checksum=1,
        # Any worker count >= 1 gives the same bytes (0 would differ), so the
        # output does not depend on the machine's core count.
        threads=max(1, os.cpu_count() or 1),
        # libzstd's default job grows with the pledged size and buffers whole
        # jobs per worker: 222 MiB peak for a 200 MB file. A pinned 8 MiB job
        # keeps memory flat (77 MiB peak at level 3, tests/test_memory.py) for
        # 0.03% more bytes at level 19 (measured on pandas), and the bytes no
        # longer depend on libzstd's default. libzstd raises it to the overlap
        # size where it must.
        job_size=JOB_SIZE,
    )
    compressor = zstandard.ZstdCompressor(compression_params=params)
    digests: list[DigestItem] = []

    def tar_stream() -> Iterator[bytes]:
        batch = bytearray()
        for info in payload:
            data = source.open_file(info)
            if info.path in stored_set:
                batch += tarfmt.member_header(info.path, info.size, info.mode, timestamp)
                for chunk in data.chunks():
                    if len(batch) + len(chunk) > _BATCH and batch:
                        yield bytes(batch)
                        batch.clear()
                    if len(chunk) >= _BATCH:
                        yield chunk
                    else:
                        batch += chunk
                batch += tarfmt.padding(info.size)
            else:
                for _ in data.chunks():  # a content link: verified, not stored
                    pass
            assert data.sha256 is not None
            digests.append(DigestItem(info.path, info.executable, data.sha256, info.size))
        batch += tarfmt.END_OF_ARCHIVE
        yield bytes(batch)

    def compressed() -> Iterator[bytes]:
        chunker = compressor.chunker(size=tar_size, chunk_size=CHUNK)
        for piece in tar_stream():
            yield from chunker.compress(piece)
        yield from chunker.finish()  # type: ignore[no-untyped-call]

    with atomic_output(dest) as fh:
        writer = ZipWriter(fh, timestamp=timestamp)
        writer.add_stream(payload_name(source.dist_info), compressed(), size_bound=tar_size, method=STORED)
        meta_bytes: list[tuple[FileInfo, bytes]] = []
        for info in metadata:
            data = source.open_file(info)
            body = b"".join(data.chunks())
            assert data.sha256 is not None
            digests.append(DigestItem(info.path, info.executable, data.sha256, info.size))
            meta_bytes.append((info, body))
        digest = content_digest(digests)
        header = V2Header(
            classic_version=source.classic_version,
            window_log=window_log,
            payload_size=tar_size,
            content_digest=digest,
            executables=_executable_order(f.path for f in payload if f.executable),
        )
        for info, body in meta_bytes:
            if info.path == f"{prefix}WHEEL":
                body = to_v2(body, header)
            writer.add_bytes(info.path, body, mode=info.mode, method=metadata_method)
        writer.close()
        size = fh.tell()
    return WriteResult(dest, 2, size, digest, len(source.files), len(links))


def write_v1(
    files: Iterable[FileData],
    dest: Path,
    *,
    timestamp: int | None = None,
    level: int = 6,
) -> WriteResult:
    """A classic wheel from verified files in their iteration order; content
    links reuse the compressed bytes of the file they point to."""
    timestamp = default_timestamp() if timestamp is None else max(timestamp, ZIP_EPOCH)
    digests: list[DigestItem] = []
    links = 0
    with atomic_output(dest) as fh:
        writer = ZipWriter(fh, timestamp=timestamp)
        for data in files:
            mode = data.info.mode
            if data.link_to is not None:
                writer.add_copy(data.path, of=data.link_to.path, mode=mode)
                links += 1
            else:
                writer.add_stream(
                    data.path,
                    data.chunks(),
                    size_bound=data.info.size,
                    mode=mode,
                    method=DEFLATED,
                    level=level,
                )
            assert data.sha256 is not None
            digests.append(DigestItem(data.path, data.info.executable, data.sha256, data.info.size))
        writer.close()
        size = fh.tell()
    return WriteResult(dest, 1, size, content_digest(digests), len(digests), links)
