"""RECORD: the manifest of every file a distribution installs."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from dataclasses import dataclass

from .errors import InvalidArchive
from .paths import MAX_FILES, check_path, is_decimal

# PEP 376 / the wheel spec: sha256 or stronger; md5 and sha1 are refused.
ALLOWED_HASHES = frozenset(
    {"sha256", "sha384", "sha512", "sha3_256", "sha3_384", "sha3_512", "blake2b", "blake2s"}
)
RECORD_SIGNATURES = ("RECORD.jws", "RECORD.p7s")
_DIGEST_SIZE = {name: hashlib.new(name).digest_size for name in ALLOWED_HASHES}


@dataclass(frozen=True)
class RecordEntry:
    path: str
    hash_name: str  # "" for RECORD itself and its signatures
    digest: bytes
    size: int | None

    @property
    def hash_value(self) -> str:
        """The hash as RECORD writes it: 'sha256=<urlsafe base64, no padding>'."""
        return f"{self.hash_name}={urlsafe_b64(self.digest)}" if self.hash_name else ""


def urlsafe_b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def parse_record(data: bytes, *, dist_info: str, archive: str) -> list[RecordEntry]:
    """Parse and validate RECORD. Every row but RECORD itself (and its
    signature files) must carry an allowed hash and a size."""
    member = f"{dist_info}/RECORD"

    def fail(message: str, rule: str) -> InvalidArchive:
        return InvalidArchive(message, rule=rule, archive=archive, member=member)

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise fail("RECORD is not valid UTF-8", "record-syntax") from None
    entries: list[RecordEntry] = []
    seen: set[str] = set()
    unhashed = {f"{dist_info}/RECORD"} | {f"{dist_info}/{sig}" for sig in RECORD_SIGNATURES}
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise fail(f"RECORD is not valid CSV ({exc})", "record-syntax") from None
    if len(rows) > MAX_FILES:
        raise fail(f"{len(rows)} rows exceed the limit of {MAX_FILES} files", "record-too-many-rows")
    for number, row in enumerate(rows, 1):
        if not row:
            continue
        if len(row) != 3:
            raise fail(f"line {number}: expected 3 fields, found {len(row)}", "record-syntax")
        path, hash_text, size_text = row
        if path.endswith("/") and not hash_text and not size_text:
            # A directory row (`dir/,,`): some builders write them, pip and
            # installer install such wheels. It names no file: its path must
            # still be safe, then it is ignored (RECORD itself is kept byte for
            # byte, so a conversion loses nothing).
            check_path(path[:-1], archive=archive)
            continue
        check_path(path, archive=archive)
        if path in seen:
            raise fail(f"line {number}: {path!r} listed twice", "record-duplicate")
        seen.add(path)
        if not hash_text:
            if path not in unhashed:
                raise fail(f"line {number}: {path!r} has no hash", "record-missing-hash")
            if size_text and not is_decimal(size_text):
                raise fail(f"line {number}: bad size {size_text!r}", "record-syntax")
            entries.append(RecordEntry(path, "", b"", int(size_text) if size_text else None))
            continue
        name, eq, encoded = hash_text.partition("=")
        if not eq or name not in ALLOWED_HASHES:
            raise fail(
                f"line {number}: hash {name!r} is not allowed (sha256 or stronger)",
                "record-hash-algorithm",
            )
        try:
            digest = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            raise fail(f"line {number}: hash is not urlsafe base64", "record-syntax") from None
        if len(digest) != _DIGEST_SIZE[name] or urlsafe_b64(digest) != encoded:
            raise fail(f"line {number}: malformed {name} digest", "record-syntax")
        if not is_decimal(size_text):
            raise fail(f"line {number}: bad size {size_text!r}", "record-syntax")
        entries.append(RecordEntry(path, name, digest, int(size_text)))
    if f"{dist_info}/RECORD" not in seen:
        raise fail("RECORD does not list itself", "record-syntax")
    return entries


def format_record(entries: list[RecordEntry]) -> bytes:
    """RECORD as this implementation writes it: rows in the given order, LF endings."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for entry in entries:
        writer.writerow([entry.path, entry.hash_value, "" if entry.size is None else entry.size])
    return out.getvalue().encode("utf-8")
