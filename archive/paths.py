"""The rules every member and RECORD path must follow (docs/FORMAT.md section 3)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import UnsafePath

# C0 controls, DEL and the C1 controls: never part of a file name we install.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DRIVE = re.compile(r"^[A-Za-z]:")
MAX_PATH_BYTES = 4096
# A reader limit on files per archive (zip members, RECORD rows): far above
# any real wheel (the largest of the benchmark corpus has 1,844 files), far
# below what makes a directory listing or an index update a denial of service.
MAX_FILES = 65_536
_DECIMAL = re.compile(r"[0-9]+")


def is_decimal(text: str) -> bool:
    """ASCII digits only: str.isdigit also accepts '²' and other digits int() refuses."""
    return _DECIMAL.fullmatch(text) is not None


def check_path(path: str, *, archive: str | None = None) -> None:
    """Raise UnsafePath unless `path` is a clean relative POSIX file path."""

    def fail(message: str, rule: str) -> UnsafePath:
        return UnsafePath(message, rule=rule, archive=archive, member=repr(path))

    if not path:
        raise fail("empty path", "path-empty")
    if _CONTROL.search(path):
        raise fail("path contains a control character", "path-control-char")
    if "\\" in path:
        raise fail("path contains a backslash", "path-backslash")
    if path.startswith("/"):
        raise fail("absolute path", "path-absolute")
    if _DRIVE.match(path):
        raise fail("path starts with a drive letter", "path-drive")
    if path.endswith("/"):
        raise fail("directory entry where a regular file is required", "path-directory")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise fail(f"path longer than {MAX_PATH_BYTES} bytes", "path-too-long")
    for part in path.split("/"):
        if part == "..":
            raise fail("path traversal ('..' component)", "path-traversal")
        if part in ("", "."):
            raise fail("empty or '.' path component", "path-component")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise fail("path is not valid UTF-8", "path-encoding") from None


def check_collisions(paths: Iterable[str], *, archive: str | None = None) -> None:
    """Refuse two paths that name the same file on a case-insensitive file system,
    and a path that is used both as a file and as a directory."""
    folded: dict[str, str] = {}
    for path in paths:
        key = path.casefold()
        other = folded.get(key)
        if other is not None:
            rule = "duplicate-name" if other == path else "case-collision"
            raise UnsafePath(
                f"collides with {other!r} on a case-insensitive file system"
                if other != path
                else "duplicate name",
                rule=rule,
                archive=archive,
                member=repr(path),
            )
        folded[key] = path
    for key, path in folded.items():
        parts = key.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in folded:
                raise UnsafePath(
                    f"{folded[parent]!r} is a file but is also used as a directory",
                    rule="file-dir-conflict",
                    archive=archive,
                    member=repr(path),
                )
