"""The bytecode index: (source blob, level, interpreter) -> the pyc's blob,
or "does not compile" (docs/BYTECODE.md). Pyc bodies are blobs like any
other, always files (staging.kept_inline), durable before the entry that
names them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import lmdb

from . import schema
from .blobs import fsync_path, syncfs
from .demand import compile_here
from .index import Index
from .schema import FileRef
from .staging import FSYNC_ONE_BY_ONE, Staged, kept_inline
from .venvs import sha256_file


def mark_pending(txn: lmdb.Transaction, db: lmdb._Database, env_id: bytes, generation: int) -> None:
    """In the transaction that points an environment at `generation`: its
    bytecode is to be compiled (the error of an earlier attempt is kept
    until an attempt succeeds)."""
    old = txn.get(env_id, db=db)
    error = schema.decode_compiling(old)[1] if old is not None else None
    txn.put(env_id, schema.encode_compiling(generation, error), db=db)


class BytecodeIndex:
    def __init__(self, index: Index) -> None:
        self.index = index

    def known(
        self, interpreter: str, files: Iterable[FileRef], levels: Iterable[int]
    ) -> dict[tuple[str, int], FileRef | None]:
        """(source blob, level) -> its pyc, or None where the source does not
        compile, for those of `files` that have an entry."""
        index = self.index
        known: dict[tuple[str, int], FileRef | None] = {}
        wanted = tuple(sorted(set(levels)))
        with index.env.begin() as txn:
            for ref in files:
                for level in wanted:
                    if (ref.blob, level) in known:
                        continue
                    value = txn.get(
                        schema.bytecode_key(ref.blob, level, interpreter), db=index.db["bytecode"]
                    )
                    if value is not None:
                        known[(ref.blob, level)] = schema.decode_bytecode(value)
        return known

    def store(
        self, interpreter: str, compiled: Mapping[tuple[str, int], Path], failed: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], FileRef | None]:
        """Index what a compile produced: each pyc file (in tmp/, consumed)
        becomes a blob, durable before the entry that names it; sources that
        did not compile are remembered as such. Returns the entries."""
        index = self.index
        staged = Staged(index.bodies)
        entries: dict[tuple[str, int], FileRef | None] = {key: None for key in failed}
        with index.gate.shared():
            try:
                for key, output in compiled.items():
                    blob, size = sha256_file(output)
                    entries[key] = FileRef(blob, size, False)
                    assert not kept_inline(size, pyc=True)
                    if index.has_blob(blob):
                        output.unlink()
                    else:
                        staged.add_body(blob, output, size)
                staged.publish()
                with index.write() as txn:
                    staged.commit(txn, index.db["blobs"])
                    for (source, level), pyc in entries.items():
                        if txn.get(bytes.fromhex(source), db=index.db["blobs"]) is None:
                            continue  # GC took the source meanwhile
                        txn.put(
                            schema.bytecode_key(source, level, interpreter),
                            schema.encode_bytecode(pyc),
                            db=index.db["bytecode"],
                        )
            except BaseException:
                staged.discard()
                raise
        return entries

    def put_in_place(self, output: Path) -> FileRef:
        """A pyc compiled on demand (in tmp/, consumed) as its blob's body,
        neither durable nor indexed yet, so that the view can serve it at
        once; `index_in_place` makes it durable and indexes it later, with
        others (a daemon killed before that leaves an orphan body, which the
        next start sweeps)."""
        blob, size = sha256_file(output)
        assert not kept_inline(size, pyc=True)
        bodies = self.index.bodies
        if bodies.exists(blob):
            output.unlink()
        else:
            bodies.publish(output, blob)
        return FileRef(blob, size, False)

    def compile_in_place(
        self, interpreter: str, source: FileRef, level: int, mtime: int
    ) -> tuple[bool, FileRef | None]:
        """In one worker thread: the pyc of `source` that is indexed (found:
        True), or compiled by the daemon's own interpreter and put in place
        as `put_in_place` does (found: False; None: it does not compile); its
        header records `mtime`, the source's mtime in the view."""
        known = self.known(interpreter, [source], (level,))
        if (source.blob, level) in known:
            return True, known[(source.blob, level)]
        _size, where = self.index.blob_location(source.blob)
        content = where if isinstance(where, bytes) else where.read_bytes()
        pyc = compile_here(content, mtime, level)
        if pyc is None:
            return False, None
        fd, temp = self.index.bodies.new_temp()
        with os.fdopen(fd, "wb") as out:
            out.write(pyc)
        return False, self.put_in_place(temp)

    def index_in_place(self, interpreter: str, entries: Mapping[tuple[str, int], FileRef | None]) -> None:
        """Make durable and index what `put_in_place` put (an entry already
        indexed, by the background compiler meanwhile, stays as it is)."""
        index = self.index
        bodies = {ref.blob: index.bodies.path(ref.blob) for ref in entries.values() if ref is not None}
        with index.gate.shared():
            if len(bodies) > FSYNC_ONE_BY_ONE:
                syncfs(index.bodies.root)
            else:
                for body in bodies.values():
                    fsync_path(body)
                for directory in {body.parent for body in bodies.values()}:
                    fsync_path(directory)
            with index.write() as txn:
                for (source, level), pyc in entries.items():
                    if txn.get(bytes.fromhex(source), db=index.db["blobs"]) is None:
                        continue  # GC took the source meanwhile
                    if pyc is not None:
                        txn.put(
                            bytes.fromhex(pyc.blob),
                            schema.encode_blob(pyc.size, None),
                            db=index.db["blobs"],
                            overwrite=False,
                        )
                    txn.put(
                        schema.bytecode_key(source, level, interpreter),
                        schema.encode_bytecode(pyc),
                        db=index.db["bytecode"],
                        overwrite=False,
                    )

    def pending(self) -> dict[bytes, tuple[int, str | None]]:
        """env id -> (generation, error of the last attempt) of every
        environment whose bytecode is not complete."""
        index = self.index
        with index.env.begin() as txn:
            return {
                bytes(key): schema.decode_compiling(value)
                for key, value in txn.cursor(db=index.db["compiling"])
            }

    def settle(self, env_id: bytes, generation: int, error: str | None) -> None:
        """An attempt to compile an environment's bytecode at `generation`
        ended: without `error`, it is complete unless the environment moved
        on since; with one, the error is kept for the user."""
        index = self.index
        with index.write() as txn:
            old = txn.get(env_id, db=index.db["compiling"])
            if old is None:
                return
            now, _ = schema.decode_compiling(old)
            if error is not None:
                txn.put(env_id, schema.encode_compiling(now, error), db=index.db["compiling"])
            elif now == generation:
                txn.delete(env_id, db=index.db["compiling"])
