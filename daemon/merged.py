"""One environment as the view serves it: its current generation's tree with
its copy-on-write layer on top, answered by path. Pure and in memory: no
FUSE, no I/O, so it is tested by calling it (tests/test_view_ops.py).

    resolve(path)   what the merged tree holds at path: a Dir or OverlayDir
                    (directory), a FileRef (store file), an UpperFile or a
                    Symlink of the layer, or None
    names(path)     the sorted names of a directory of the merged tree

A directory's times live here too: an mtime and ctime per directory path,
moved on by every change the layer makes in it and by every generation flip
that changes its names (Python's import and metadata caches key on directory
mtimes: a module installed while a process runs must move them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .overlay import Entry, Overlay, OverlayDir, StoreFile, Symlink, UpperFile, Whiteout
from .schema import FileRef
from .tree import Dir

Node = Entry | Dir | FileRef


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


@dataclass
class DirTimes:
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


@dataclass
class EnvView:
    """One environment: its generation's tree (`lower`) and its layer."""

    name: str
    lower: Dir
    overlay: Overlay
    # The venv's root and its site-packages path below it ("lib/python3.11/
    # site-packages"): the environment's directory in the view mirrors that
    # path, and every other name on the way is a symlink into the venv, so
    # that `site-packages/../../../bin` (which pip writes through) is the
    # venv's bin even when site-packages is a symlink into the view.
    venv: Path = Path("/nonexistent")
    prefix: tuple[str, ...] = ()
    # Symlink mode: the rest of the venv's root (bin/, include/, pyvenv.cfg,
    # lib/python3.X/ beside site-packages) is an environment of its own, with
    # an empty generation under its own layer (`top`); the directories on the
    # way to site-packages show its names beside the next step. Bind mode
    # and older registrations have none: those names are symlinks into the
    # venv. A root environment knows the environment it carries (`site`).
    top: EnvView | None = None
    site: EnvView | None = None
    # When the view began serving the environment: the time of every
    # directory and symlink that nothing changed since.
    born_ns: int = field(default_factory=time.time_ns)
    times: dict[str, DirTimes] = field(default_factory=dict)

    # -- times ------------------------------------------------------------------

    def times_of(self, path: str) -> DirTimes:
        known = self.times.get(path)
        if known is None:
            return DirTimes(self.born_ns, self.born_ns, self.born_ns)
        return known

    def touch(self, path: str, now: int | None = None) -> None:
        """A name in directory `path` was added, removed or replaced."""
        now = time.time_ns() if now is None else now
        atime = self.times_of(path).atime_ns
        self.times[path] = DirTimes(atime, now, now)

    def set_times(self, path: str, atime_ns: int | None, mtime_ns: int | None) -> None:
        old = self.times_of(path)
        self.times[path] = DirTimes(
            old.atime_ns if atime_ns is None else atime_ns,
            old.mtime_ns if mtime_ns is None else mtime_ns,
            time.time_ns(),
        )

    def changed_attributes(self, path: str) -> None:
        """chmod and friends: ctime only."""
        old = self.times_of(path)
        self.times[path] = DirTimes(old.atime_ns, old.mtime_ns, time.time_ns())

    def forget_times(self, path: str) -> None:
        """A directory went: its times (and those below it) go too."""
        prefix = path + "/"
        for known in [p for p in self.times if p == path or p.startswith(prefix)]:
            del self.times[known]

    def step_path(self, depth: int) -> str:
        """The root environment's path of the directory `depth` steps on the
        way to site-packages ("" is the venv's root, then lib, lib/python3.X)."""
        return "/".join(self.prefix[:depth])

    def reserved(self, path: str) -> int | None:
        """For a root environment: the depth of `path` if it is a step on the
        way to site-packages (or site-packages itself, the last), else None.
        Those names are the view's, never the layer's."""
        site = self.site
        if site is None:
            return None
        for depth in range(len(site.prefix) + 1):
            if path == site.step_path(depth):
                return depth
        return None

    # -- the merged tree ------------------------------------------------------------

    def lower_at(self, path: str, *, beneath: bool = False) -> Dir | FileRef | None:
        """The generation's node at `path` if the layer lets it show through.
        With `beneath`, ignore the layer's entry at `path` itself (is there
        something a removal must white out?)."""
        entries = self.overlay.entries
        if entries:
            if not beneath:
                own = entries.get(path)
                if own is not None and not (isinstance(own, OverlayDir) and not own.opaque):
                    return None
            p = path
            while p:
                p = parent_of(p)
                if not p:
                    break
                e = entries.get(p)
                if e is not None and not (isinstance(e, OverlayDir) and not e.opaque):
                    return None
        return self.lower.walk(path)

    def resolve(self, path: str) -> Node | None:
        """What `path` is in the merged tree: a Dir (or OverlayDir) for a
        directory, a FileRef for a store file, UpperFile or Symlink."""
        if not path:
            return self.lower
        own = self.overlay.entries.get(path)
        if own is not None:
            if isinstance(own, Whiteout):
                return None
            if isinstance(own, StoreFile):
                return own.ref
            return own
        return self.lower_at(path)

    def names(self, path: str) -> list[str]:
        names: set[str] = set()
        lower = self.lower_at(path) if path else self.lower
        if isinstance(lower, Dir):
            names.update(lower.names)
        for name in self.overlay.children.get(path, ()):
            if isinstance(self.overlay.entries[join(path, name)], Whiteout):
                names.discard(name)
            else:
                names.add(name)
        return sorted(names)

    def plain_lower(self, path: str) -> Dir | None:
        """The generation's directory at `path` when the layer neither hides
        it nor has entries directly inside it (the common case)."""
        if path in self.overlay.children:
            return None
        node = self.resolve(path)
        return node if isinstance(node, Dir) else None

    def capture(self, path: str, node: Node, rel: str = "") -> Iterator[tuple[str, Entry]]:
        """The layer entries that recreate `path` (and all below it) elsewhere:
        store files become StoreFile entries naming the same blobs, so a
        renamed directory costs entries, not copies."""
        if isinstance(node, Dir | OverlayDir):
            mode = node.mode if isinstance(node, OverlayDir) else 0o755
            yield rel, OverlayDir(opaque=True, mode=mode)
            for name in self.names(path):
                child = self.resolve(join(path, name))
                if child is not None:
                    yield from self.capture(join(path, name), child, join(rel, name))
        elif isinstance(node, FileRef):
            yield rel, StoreFile(node)
        elif isinstance(node, UpperFile | Symlink | StoreFile):
            yield rel, node
        else:
            raise TypeError(node)

    def remove(self, path: str, *, directory: bool) -> None:
        """Take `path` (and, for a directory, everything below it) out of the
        merged tree's layer. Only a directory has layer entries below it, so
        removing a file (pip uninstall: one call per file) scans nothing."""
        if directory:
            for below in sorted(self.overlay.below(path), reverse=True):
                self.overlay.put(below, None)
            self.forget_times(path)
        hidden = self.lower_at(path, beneath=True) is not None
        if hidden:
            self.overlay.put(path, Whiteout())
        elif path in self.overlay.entries:
            self.overlay.put(path, None)

    def snapshot(self) -> list[tuple[str, Entry | FileRef]]:
        """Every path of the merged tree, parents first, as OverlayDir (with
        its mode), FileRef, UpperFile or Symlink: what putting a real
        directory back must write."""
        out: list[tuple[str, Entry | FileRef]] = []

        def walk(path: str) -> None:
            for child_name in self.names(path):
                child_path = join(path, child_name)
                node = self.resolve(child_path)
                if isinstance(node, Dir):
                    out.append((child_path, OverlayDir(opaque=False, mode=0o755)))
                    walk(child_path)
                elif isinstance(node, OverlayDir):
                    out.append((child_path, node))
                    walk(child_path)
                elif node is not None and not isinstance(node, Whiteout | StoreFile):
                    out.append((child_path, node))

        walk("")
        return out
