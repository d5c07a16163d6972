"""Staging new blobs: contents an operation has prepared but the index does
not hold yet, then publishing them (bodies into place, durably) and
indexing them in the operation's write transaction.

`kept_inline` is the one place that decides whether a blob lives in the
index (small contents) or as a body file under `blobs/`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lmdb

from . import schema
from .blobs import BlobFiles, fsync_path, syncfs
from .crashpoints import crash_point
from .errors import StoreError
from .schema import FileRef
from .venvs import sha256_file

CHUNK = 1 << 20
# Up to this many new bodies are made durable one fsync each (and one per
# directory); more in one batch, one syncfs. syncfs flushes every dirty page
# of the file system, other programs' too: tens of ms on a busy machine for
# the one new RECORD an install of a stored package writes.
FSYNC_ONE_BY_ONE = 16


def kept_inline(size: int, *, pyc: bool = False) -> bool:
    """Whether a blob of `size` bytes is kept in the index rather than as a
    body file. A pyc is a file whatever its size: the view hands pycs out as
    symlinks to their bodies, so that Python opens and reads them on the
    store's own file system (docs/BYTECODE.md)."""
    return not pyc and size <= schema.INLINE_MAX


@dataclass
class Staged:
    """Blobs an operation has prepared but the index does not hold yet."""

    bodies: BlobFiles
    inline: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, tuple[Path, int]] = field(default_factory=dict)  # blob -> (temp, size)
    # Bodies being written to tmp/ (by worker threads) that are not staged
    # yet: removed by `discard` if the operation fails before staging them.
    loose: set[Path] = field(default_factory=set)

    def __contains__(self, blob: str) -> bool:
        return blob in self.inline or blob in self.files

    def add_bytes(self, content: bytes, blob: str | None = None) -> str:
        """Stage `content` (its sha256 `blob` if already known); returns the blob."""
        if blob is None:
            blob = hashlib.sha256(content).hexdigest()
        if blob in self:
            return blob
        if kept_inline(len(content)):
            self.inline[blob] = content
        else:
            fd, temp = self.bodies.new_temp()
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            self.files[blob] = (temp, len(content))
        return blob

    def add_body(self, blob: str, temp: Path, size: int) -> None:
        """Stage a body already written to `temp` (consumed: unlinked if the
        blob is staged already)."""
        self.loose.discard(temp)
        if blob in self:
            temp.unlink()
        else:
            self.files[blob] = (temp, size)

    def add_path(self, full: Path, executable: bool, present: Callable[[str], bool]) -> FileRef:
        """Stage a file's content unless it is staged already or `present(blob)`
        (the index has it); a file changing while it is read is refused."""
        blob, size = sha256_file(full)
        if blob not in self and not present(blob):
            if kept_inline(size):
                content = full.read_bytes()
                if hashlib.sha256(content).hexdigest() != blob:
                    raise StoreError(f"{full} changed while it was being adopted")
                self.inline[blob] = content
            else:
                fd, temp = self.bodies.new_temp()
                with os.fdopen(fd, "wb") as out, open(full, "rb") as src:
                    while block := src.read(CHUNK):
                        out.write(block)
                if sha256_file(temp) != (blob, size):
                    temp.unlink()
                    raise StoreError(f"{full} changed while it was being adopted")
                self.files[blob] = (temp, size)
        return FileRef(blob, size, executable)

    def read(self, blob: str) -> bytes | None:
        """A staged blob's content, or None if it is not staged."""
        if blob in self.inline:
            return self.inline[blob]
        if blob in self.files:
            return self.files[blob][0].read_bytes()
        return None

    def discard(self) -> None:
        for temp in [*self.loose, *(temp for temp, _ in self.files.values())]:
            try:
                temp.unlink()
            except FileNotFoundError:
                pass

    def publish(self) -> None:
        """Bodies into place, durably, before any index entry names them."""
        if not self.files:
            return
        published = []
        for blob, (temp, _size) in self.files.items():
            if self.bodies.exists(blob):
                temp.unlink()
            else:
                self.bodies.publish(temp, blob)
                published.append(self.bodies.path(blob))
        crash_point("bodies-published")
        if len(published) > FSYNC_ONE_BY_ONE:
            syncfs(self.bodies.root)
        else:
            for body in published:
                fsync_path(body)
            for directory in {body.parent for body in published}:
                fsync_path(directory)
        crash_point("bodies-durable")

    def commit(self, txn: lmdb.Transaction, blobs_db: lmdb._Database) -> list[str]:
        """Index the staged blobs (bodies already published and durable);
        returns those the index did not hold."""
        added = []
        for blob, content in self.inline.items():
            if _put(txn, blobs_db, blob, schema.encode_blob(len(content), content)):
                added.append(blob)
        for blob, (_temp, size) in self.files.items():
            if _put(txn, blobs_db, blob, schema.encode_blob(size, None)):
                added.append(blob)
        return added


def _put(txn: lmdb.Transaction, blobs_db: lmdb._Database, blob: str, value: bytes) -> bool:
    """Index a blob whose body is local now; an entry saying its body is on
    a remote only (schema kind 2) is replaced. Whether it was absent."""
    key = bytes.fromhex(blob)
    if txn.put(key, value, db=blobs_db, overwrite=False):
        return True
    old = txn.get(key, db=blobs_db)
    if old is not None and schema.blob_remote(old) is not None:
        txn.put(key, value, db=blobs_db)
    return False
