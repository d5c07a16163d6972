"""The compression-independent content digest (docs/FORMAT.md section 7).

sha256 over a version line and one line per installed file, sorted by the
UTF-8 bytes of the path:

    b"wheel-content-digest/1\\n"
    path "\\0" ("644" | "755") "\\0" sha256-hex "\\0" size-decimal "\\n"

A classic wheel and its 2.0 form have the same digest: WHEEL enters in its
classic form, and the zip container and compression play no part.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

PREFIX = b"wheel-content-digest/1\n"


@dataclass(frozen=True)
class DigestItem:
    path: str
    executable: bool
    sha256: bytes
    size: int


def content_digest(items: Iterable[DigestItem]) -> str:
    hasher = hashlib.sha256(PREFIX)
    for item in sorted(items, key=lambda i: i.path.encode("utf-8")):
        mode = b"755" if item.executable else b"644"
        hasher.update(
            b"%s\0%s\0%s\0%d\n" % (item.path.encode("utf-8"), mode, item.sha256.hex().encode(), item.size)
        )
    return "sha256:" + hasher.hexdigest()
