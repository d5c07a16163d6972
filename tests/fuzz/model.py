"""An archive as the fuzzer sees it, and how it becomes bytes.

A `Model` holds what a wheel is made of; `build` turns it into archive bytes
stage by stage (payload tar, zstd frame, RECORD, WHEEL, zip members, the zip
file), calling the model's hooks between stages. A hook changes one stage's
output; everything built after it is derived from the changed bytes, so RECORD
hashes, Payload-Size, Content-Digest and zip CRCs stay consistent unless a
hook breaks them on purpose.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field

import zstandard

from nwcache.archive import tarfmt
from nwcache.archive.digest import DigestItem, content_digest
from nwcache.archive.wheelinfo import V2Header, to_v2
from nwcache.archive.zipfmt import DEFLATED, STORED, ZipWriter
from tests.vectors.generate import EPOCH

WHEEL = b"Wheel-Version: 1.0\nGenerator: nwcache-fuzz\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


@dataclass
class Entry:
    path: str
    data: bytes
    executable: bool = False


Rows = list[list[str]]
Members = list[tuple[str, bytes, int, int]]  # name, data, unix mode (type bits included), method


@dataclass
class Hooks:
    """Changes applied between stages; each takes and returns that stage's output."""

    tar: list[Callable[[bytes], bytes]] = field(default_factory=list)
    frame: list[Callable[[bytes], bytes]] = field(default_factory=list)
    record: list[Callable[[Rows], Rows]] = field(default_factory=list)
    record_bytes: list[Callable[[bytes], bytes]] = field(default_factory=list)
    wheel: list[Callable[[bytes], bytes]] = field(default_factory=list)
    members: list[Callable[[Members], Members]] = field(default_factory=list)
    final: list[Callable[[bytes], bytes]] = field(default_factory=list)


@dataclass
class Model:
    name: str = "demo"
    version: str = "1.0"
    form: int = 2
    files: list[Entry] = field(default_factory=list)  # payload files, paths from the archive root
    meta: list[Entry] = field(default_factory=list)  # .dist-info files but WHEEL and RECORD, relative
    wheel: bytes = WHEEL  # the classic WHEEL
    window_log: int = 20  # declared; the frame uses min(this, frame_window_log)
    frame_window_log: int = 20
    level: int = 3
    payload_size_delta: int = 0
    digest: str | None = None  # Content-Digest override
    executables: tuple[str, ...] | None = None  # Executable override
    filename: str | None = None  # file name override
    dist_info_name: str | None = None  # .dist-info directory override
    raw: bytes | None = None  # a finished archive (a test vector): only the final hooks apply
    hooks: Hooks = field(default_factory=Hooks)

    @property
    def dist_info(self) -> str:
        return self.dist_info_name or f"{self.name}-{self.version}.dist-info"

    @property
    def stem(self) -> str:
        return self.dist_info.removesuffix(".dist-info")

    def wheel_filename(self) -> str:
        return self.filename or f"{self.name}-{self.version}-py3-none-any.whl"


def b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def row(path: str, data: bytes) -> list[str]:
    return [path, f"sha256={b64(hashlib.sha256(data).digest())}", str(len(data))]


def canonical_tar(files: list[Entry]) -> bytes:
    """Each distinct (content, size) once, in path order; the rest are content links."""
    out = bytearray()
    seen: set[bytes] = set()
    for entry in sorted(files, key=lambda e: e.path.encode("utf-8", "surrogatepass")):
        key = hashlib.sha256(entry.data).digest()
        if key in seen:
            continue
        seen.add(key)
        mode = 0o755 if entry.executable else 0o644
        out += tarfmt.member_header(entry.path, len(entry.data), mode, EPOCH)
        out += entry.data + tarfmt.padding(len(entry.data))
    return bytes(out) + tarfmt.END_OF_ARCHIVE


def compress(data: bytes, *, level: int, window_log: int) -> bytes:
    params = zstandard.ZstdCompressionParameters.from_level(
        level, window_log=window_log, write_content_size=1, write_checksum=1, source_size=len(data)
    )
    return zstandard.ZstdCompressor(compression_params=params).compress(data)


def format_rows(rows: Rows) -> bytes:
    """CSV as a wheel writer writes it: a path with a comma, quote or newline is quoted."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8", "surrogatepass")


def digest_of(record: bytes, rows: Rows, executables: set[str], dist_info: str) -> str:
    """Content-Digest as RECORD and the declared modes give it (sha256 rows only)."""
    items = []
    for r in rows:
        if len(r) == 3 and r[1].startswith("sha256=") and r[2].isascii() and r[2].isdigit() and r[1][7:]:
            try:
                digest = base64.urlsafe_b64decode(r[1].removeprefix("sha256=") + "==")
            except ValueError:
                continue
            items.append(DigestItem(r[0], r[0] in executables, digest, int(r[2])))
    items.append(DigestItem(f"{dist_info}/RECORD", False, hashlib.sha256(record).digest(), len(record)))
    return content_digest(items)


def zip_archive(members: Members) -> bytes:
    """tests.vectors.generate.zip_archive at deflate level 1 (speed): keeps
    duplicate names and file type bits."""
    out = io.BytesIO()
    writer = ZipWriter(out, timestamp=EPOCH)
    for name, data, mode, method in members:
        writer.names.discard(name)
        writer.add_bytes(name, data, mode=mode & 0o777, method=method, level=1)
        writer.members[-1].mode = mode
    writer.close()
    return out.getvalue()


def build(model: Model) -> bytes:
    hooks = model.hooks
    if model.raw is not None:
        data = model.raw
        for change_bytes in hooks.final:
            data = change_bytes(data)
        return data
    dist_info = model.dist_info
    wheel_path = f"{dist_info}/WHEEL"
    meta = [Entry(f"{dist_info}/{m.path}", m.data, m.executable) for m in model.meta]
    rows = [row(f.path, f.data) for f in [*model.files, *meta]]
    rows.append(row(wheel_path, model.wheel))
    rows.append([f"{dist_info}/RECORD", "", ""])
    for change in hooks.record:
        rows = change(rows)
    record = format_rows(rows)
    for change_bytes in hooks.record_bytes:
        record = change_bytes(record)
    members: Members = []
    wheel = model.wheel
    if model.form == 2:
        tar = canonical_tar(model.files)
        for change_bytes in hooks.tar:
            tar = change_bytes(tar)
        window = max(10, min(model.window_log, model.frame_window_log, 27))
        frame = compress(tar, level=model.level, window_log=window)
        for change_bytes in hooks.frame:
            frame = change_bytes(frame)
        executables = model.executables
        if executables is None:
            executables = tuple(sorted({f.path for f in model.files if f.executable}, key=str.encode))
        digest = model.digest or digest_of(
            record, [r for r in rows if r[:1] != [f"{dist_info}/RECORD"]], set(executables), dist_info
        )
        header = V2Header("1.0", model.window_log, len(tar) + model.payload_size_delta, digest, executables)
        try:
            wheel = to_v2(model.wheel, header)
        except AssertionError:  # the classic WHEEL lost its version line: keep it as it is
            wheel = model.wheel
        members.append((f"{model.stem}.payload.tar.zst", frame, 0o644, STORED))
    else:
        members += [(f.path, f.data, 0o755 if f.executable else 0o644, DEFLATED) for f in model.files]
    for change_bytes in hooks.wheel:
        wheel = change_bytes(wheel)
    members += [(m.path, m.data, 0o755 if m.executable else 0o644, DEFLATED) for m in meta]
    members.append((wheel_path, wheel, 0o644, DEFLATED))
    members.append((f"{dist_info}/RECORD", record, 0o644, DEFLATED))
    for change_members in hooks.members:
        members = change_members(members)
    data = zip_archive(members)
    for change_bytes in hooks.final:
        data = change_bytes(data)
    return data
