"""The bytecode index: (source blob, level, interpreter) -> the pyc's blob,
or "does not compile" (docs/BYTECODE.md). Pyc bodies are blobs like any
other, always files (staging.kept_inline), durable before the entry that
names them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from . import schema
from .index import Index
from .schema import FileRef
from .staging import Staged, kept_inline
from .venvs import sha256_file


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
