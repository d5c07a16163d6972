"""The copy-on-write layer of one environment: what was written inside the
venv's site-packages on top of its current generation.

    $NWCACHE_HOME/overlay/<env id hex>/
      journal       one JSON line per change: [path, entry or null]
      files/<n>     bodies of files created inside the environment

An entry shadows the path in the generation's tree:
    Whiteout        deleted (the generation's file or directory is hidden)
    OverlayDir      a directory made here; `opaque` hides the generation's
                    directory of the same name (it was removed and remade)
    UpperFile       a file made here, body in files/<n>, writable
    StoreFile       a file of the store under a new name (a rename moved it);
                    the blob stays shared and read-only
    Symlink         a symbolic link made here

Shared blobs are never written: a deletion is a whiteout, a rename of a
store file is a StoreFile entry naming the same blob. The journal is replayed
and compacted when the layer is opened; a line is appended per change, in
order, by the event-loop thread that made it (a few hundred bytes into the
page cache, like S3QL's metadata updates), and fsync'd on request.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .schema import FileRef


@dataclass(frozen=True)
class Whiteout:
    pass


@dataclass(frozen=True)
class OverlayDir:
    opaque: bool
    mode: int


@dataclass(frozen=True)
class UpperFile:
    id: int
    mode: int


@dataclass(frozen=True)
class StoreFile:
    ref: FileRef


@dataclass(frozen=True)
class Symlink:
    id: int
    target: str


Entry = Whiteout | OverlayDir | UpperFile | StoreFile | Symlink
WHITEOUT = Whiteout()


def encode_entry(entry: Entry | None) -> Any:
    match entry:
        case None:
            return None
        case Whiteout():
            return ["wh"]
        case OverlayDir(opaque, mode):
            return ["dir", opaque, mode]
        case UpperFile(id, mode):
            return ["file", id, mode]
        case StoreFile(ref):
            return ["ref", *ref.to_json()]
        case Symlink(id, target):
            return ["link", id, target]
    raise TypeError(entry)


def decode_entry(value: Any) -> Entry | None:
    if value is None:
        return None
    kind = value[0]
    if kind == "wh":
        return WHITEOUT
    if kind == "dir":
        return OverlayDir(bool(value[1]), int(value[2]))
    if kind == "file":
        return UpperFile(int(value[1]), int(value[2]))
    if kind == "ref":
        return StoreFile(FileRef.from_json(value[1:]))
    if kind == "link":
        return Symlink(int(value[1]), str(value[2]))
    raise ValueError(f"unknown overlay entry {value!r}")


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


class Overlay:
    """In-memory state of the layer, authoritative while the daemon runs,
    with its journal on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = root / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, Entry] = {}
        self.children: dict[str, set[str]] = {}
        self.id_paths: dict[int, str] = {}  # upper files and symlinks: where each is now
        self._next_id = 1
        self._load()

    def _load(self) -> None:
        journal = self.root / "journal"
        if journal.exists():
            with open(journal, "rb") as fh:
                for line in fh:
                    if not line.endswith(b"\n"):
                        break  # a line cut short by a crash: the change never completed
                    path, value = json.loads(line)
                    self._apply(path, decode_entry(value))
        ids = [e.id for e in self.entries.values() if isinstance(e, UpperFile | Symlink)]
        self._next_id = max(ids, default=0) + 1
        # Bodies no entry names: files created by a change whose line never
        # reached the journal, or removed by one that did.
        live = {str(e.id) for e in self.entries.values() if isinstance(e, UpperFile)}
        for body in self.files.iterdir():
            if body.name not in live:
                body.unlink()
        self._compact()
        self._journal = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _compact(self) -> None:
        temp = self.root / "journal.tmp"
        with open(temp, "w", encoding="utf-8") as out:
            for path in sorted(self.entries):
                out.write(json.dumps([path, encode_entry(self.entries[path])], separators=(",", ":")) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.rename(temp, self.root / "journal")

    def _apply(self, path: str, entry: Entry | None) -> None:
        parent, _, name = path.rpartition("/")
        old = self.entries.get(path)
        if isinstance(old, UpperFile | Symlink) and self.id_paths.get(old.id) == path:
            del self.id_paths[old.id]
        if isinstance(entry, UpperFile | Symlink):
            self.id_paths[entry.id] = path
        if entry is None:
            if self.entries.pop(path, None) is not None:
                names = self.children.get(parent)
                if names is not None:
                    names.discard(name)
                    if not names:
                        del self.children[parent]
        else:
            self.entries[path] = entry
            self.children.setdefault(parent, set()).add(name)

    def put(self, path: str, entry: Entry | None) -> None:
        self._apply(path, entry)
        line = json.dumps([path, encode_entry(entry)], separators=(",", ":")) + "\n"
        os.write(self._journal, line.encode())

    def below(self, path: str) -> list[str]:
        """Every entry strictly below a directory path."""
        prefix = path + "/" if path else ""
        return [p for p in self.entries if p.startswith(prefix) and p != path]

    def new_id(self) -> int:
        made = self._next_id
        self._next_id += 1
        return made

    def path_of(self, id: int) -> str | None:
        return self.id_paths.get(id)

    def body(self, id: int) -> Path:
        return self.files / str(id)

    def sync(self) -> None:
        os.fsync(self._journal)

    def close(self) -> None:
        os.close(self._journal)

    def is_empty(self) -> bool:
        return not self.entries

    def store_refs(self) -> set[str]:
        """Blobs this layer names (GC must keep them)."""
        return {e.ref.blob for e in self.entries.values() if isinstance(e, StoreFile)}
