"""The WHEEL file, the wheel file name, and the classic <-> 2.0 WHEEL transform.

A 2.0 WHEEL is the classic WHEEL with its `Wheel-Version` line replaced by
`Wheel-Version: 2.0` followed directly by the 2.0 fields (docs/FORMAT.md
section 4). The transform is exactly invertible, so RECORD, which keeps the
hash of the classic WHEEL, survives conversion unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from packaging.tags import Tag
from packaging.utils import (
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from .errors import InvalidArchive, UnsupportedArchive
from .paths import is_decimal

FORMAT_VERSION = "2.0"
PAYLOAD_COMPRESSION = "zstd"
DEFAULT_WINDOW_LOG = 23
DEFAULT_LEVEL = 19
MAX_WINDOW_LOG = 31
MIN_WINDOW_LOG = 10

# Fields only a 2.0 WHEEL carries, in the order they are written.
FIELD_CLASSIC_VERSION = "Classic-Wheel-Version"
FIELD_COMPRESSION = "Payload-Compression"
FIELD_WINDOW_LOG = "Payload-Window-Log"
FIELD_PAYLOAD_SIZE = "Payload-Size"
FIELD_DIGEST = "Content-Digest"
FIELD_EXECUTABLE = "Executable"
V2_FIELDS = (
    FIELD_CLASSIC_VERSION,
    FIELD_COMPRESSION,
    FIELD_WINDOW_LOG,
    FIELD_PAYLOAD_SIZE,
    FIELD_DIGEST,
    FIELD_EXECUTABLE,
)
_V2_KEYS = {name.lower() for name in V2_FIELDS}
_VERSION_LINE = re.compile(rb"^Wheel-Version: ([0-9]+\.[0-9]+)(\r?\n)", re.MULTILINE)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class WheelName:
    """What the file name says: distribution, version, build tag, tags."""

    name: NormalizedName
    version: Version
    build: tuple[int, str] | tuple[()]
    tags: frozenset[Tag]


def parse_filename(filename: str, *, archive: str) -> WheelName:
    try:
        name, version, build, tags = parse_wheel_filename(filename)
    except (InvalidWheelFilename, InvalidVersion) as exc:
        raise InvalidArchive(
            f"not a wheel file name ({exc})", rule="wheel-filename", archive=archive
        ) from None
    return WheelName(name, version, build, frozenset(tags))


def check_dist_info_name(dist_info: str, wheel: WheelName, *, archive: str) -> None:
    stem = dist_info.removesuffix(".dist-info")
    name, sep, version = stem.rpartition("-")
    try:
        ok = bool(sep) and canonicalize_name(name) == wheel.name and Version(version) == wheel.version
    except InvalidVersion:
        ok = False
    if not ok:
        raise InvalidArchive(
            f"{dist_info!r} does not match the file name ({wheel.name} {wheel.version})",
            rule="dist-info-name",
            archive=archive,
        )


@dataclass
class WheelFields:
    """A parsed WHEEL file: an ordered list of (key, value) lines."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def get(self, key: str) -> str | None:
        values = self.get_all(key)
        return values[0] if values else None

    def get_all(self, key: str) -> list[str]:
        lowered = key.lower()
        return [value for k, value in self.items if k.lower() == lowered]


def parse_wheel(data: bytes, *, archive: str, member: str) -> WheelFields:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArchive(
            "WHEEL is not valid UTF-8", rule="wheel-syntax", archive=archive, member=member
        ) from None
    fields = WheelFields()
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep or not key or key != key.strip():
            if line[:1].isspace() and fields.items:  # an RFC 822 continuation line
                k, v = fields.items[-1]
                fields.items[-1] = (k, v + " " + line.strip())
                continue
            raise InvalidArchive(
                f"malformed line {line!r}", rule="wheel-syntax", archive=archive, member=member
            )
        fields.items.append((key, value.strip()))
    return fields


@dataclass(frozen=True)
class V2Header:
    """The 2.0 fields of a WHEEL file."""

    classic_version: str
    window_log: int
    payload_size: int
    content_digest: str
    executables: tuple[str, ...]

    def lines(self) -> list[tuple[str, str]]:
        out = [
            (FIELD_CLASSIC_VERSION, self.classic_version),
            (FIELD_COMPRESSION, PAYLOAD_COMPRESSION),
            (FIELD_WINDOW_LOG, str(self.window_log)),
            (FIELD_PAYLOAD_SIZE, str(self.payload_size)),
            (FIELD_DIGEST, self.content_digest),
        ]
        out.extend((FIELD_EXECUTABLE, path) for path in self.executables)
        return out


def declared_version(data: bytes, *, archive: str, member: str) -> str:
    """The Wheel-Version a WHEEL file declares (exactly one such line)."""
    matches = _VERSION_LINE.findall(data)
    if len(matches) != 1:
        raise InvalidArchive(
            "WHEEL must have exactly one line 'Wheel-Version: X.Y' ending in a newline",
            rule="wheel-version-line",
            archive=archive,
            member=member,
        )
    return str(matches[0][0].decode())


def classic_version(data: bytes, *, archive: str, member: str) -> str:
    """The Wheel-Version of a classic WHEEL, checking that it can be converted."""
    version = declared_version(data, archive=archive, member=member)
    if not version.startswith("1."):
        raise UnsupportedArchive(
            f"Wheel-Version {version} (this reader handles 1.x and {FORMAT_VERSION})",
            rule="wheel-version",
            archive=archive,
            member=member,
        )
    fields = parse_wheel(data, archive=archive, member=member)
    clash = [key for key, _ in fields.items if key.lower() in _V2_KEYS]
    if clash:
        raise InvalidArchive(
            f"classic WHEEL already has the 2.0 field {clash[0]!r}",
            rule="wheel-field",
            archive=archive,
            member=member,
        )
    return version


def to_v2(classic: bytes, header: V2Header) -> bytes:
    """Insert the 2.0 fields after the version line, with its line ending."""
    match = _VERSION_LINE.search(classic)
    assert match is not None
    eol = match.group(2)
    block = b"Wheel-Version: " + FORMAT_VERSION.encode() + eol
    block += b"".join(f"{k}: {v}".encode() + eol for k, v in header.lines())
    return classic[: match.start()] + block + classic[match.end() :]


def from_v2(data: bytes, *, archive: str, member: str) -> tuple[bytes, V2Header]:
    """Split a 2.0 WHEEL into the classic WHEEL it came from and its 2.0 fields."""

    def fail(message: str, rule: str = "wheel-field") -> InvalidArchive:
        return InvalidArchive(message, rule=rule, archive=archive, member=member)

    match = re.search(rb"^Wheel-Version: 2\.0(\r?\n)", data, re.MULTILINE)
    if match is None or len(_VERSION_LINE.findall(data)) != 1:
        raise fail("WHEEL must have exactly one line 'Wheel-Version: 2.0'", "wheel-version-line")
    eol = match.group(1)
    pos = match.end()
    values: list[tuple[str, str]] = []
    while pos < len(data):
        end = data.find(b"\n", pos)
        line = data[pos : end + 1] if end >= 0 else data[pos:]
        key, sep, value = line.decode("utf-8", "replace").partition(": ")
        if not sep or key.lower() not in _V2_KEYS:
            break
        if not line.endswith(eol) or (eol == b"\n" and line.endswith(b"\r\n")):
            raise fail("2.0 field with a different line ending than the version line")
        values.append((key, value[: -len(eol)]))
        pos += len(line)
    rest = data[pos:]
    later = parse_wheel(rest, archive=archive, member=member)
    if any(key.lower() in _V2_KEYS for key, _ in later.items):
        raise fail("2.0 fields must directly follow 'Wheel-Version: 2.0'")
    order = [key for key, _ in values]
    expected = [f for f in V2_FIELDS if f != FIELD_EXECUTABLE]
    if order[: len(expected)] != expected or any(k != FIELD_EXECUTABLE for k in order[len(expected) :]):
        raise fail(f"2.0 fields must be, in this order: {', '.join(V2_FIELDS)} (repeated)")
    get = dict(values[: len(expected)])
    version = get[FIELD_CLASSIC_VERSION]
    if not re.fullmatch(r"1\.[0-9]+", version):
        raise fail(f"{FIELD_CLASSIC_VERSION} {version!r} is not a 1.x version")
    if get[FIELD_COMPRESSION] != PAYLOAD_COMPRESSION:
        raise UnsupportedArchive(
            f"{FIELD_COMPRESSION} {get[FIELD_COMPRESSION]!r} (only {PAYLOAD_COMPRESSION!r})",
            rule="payload-compression",
            archive=archive,
            member=member,
        )
    window = get[FIELD_WINDOW_LOG]
    if not is_decimal(window) or not MIN_WINDOW_LOG <= int(window) <= MAX_WINDOW_LOG:
        raise fail(f"{FIELD_WINDOW_LOG} {window!r} is not a number from {MIN_WINDOW_LOG} to {MAX_WINDOW_LOG}")
    size = get[FIELD_PAYLOAD_SIZE]
    if not is_decimal(size):
        raise fail(f"{FIELD_PAYLOAD_SIZE} {size!r} is not a number")
    digest = get[FIELD_DIGEST]
    if not _DIGEST.match(digest):
        raise fail(f"{FIELD_DIGEST} {digest!r} is not 'sha256:' and 64 lowercase hex digits")
    executables = tuple(v for k, v in values[len(expected) :])
    if list(executables) != sorted(set(executables), key=lambda p: p.encode()):
        raise fail(f"{FIELD_EXECUTABLE} paths must be unique and sorted")
    header = V2Header(version, int(window), int(size), digest, executables)
    classic = data[: match.start()] + f"Wheel-Version: {version}".encode() + eol + rest
    return classic, header
