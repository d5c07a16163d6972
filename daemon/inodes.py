"""The view's inode table: which inode number means what, and how long the
kernel still knows it.

Kinds and keys (the key is what makes two lookups the same inode):

    root     ("root",)                        the mount's root
    mirror   ("mirror", env, depth)           a directory on the way from an
                                              environment's directory to its
                                              site-packages (lib/, lib/python3.X/)
    out      ("out", env, real path)          a symlink into the venv itself
    dir      ("dir", env, path)               a directory of the merged tree
    store    ("store", blob, executable)      a store file: ONE inode for the
                                              same content in every environment
                                              and generation (one page cache)
    pyc      ("pyc", blob)                    a shared pyc with a file body: a
                                              symlink to that body (`path`)
    upper    ("upper", env, layer id)         a file written inside the venv
    link     ("link", env, layer id)          a symlink made inside the venv

An inode lives while the kernel holds a lookup of it (`lookups`, given back
by FORGET) or a handle is open on it; directories also while their path
exists, so that a path keeps its inode number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyfuse3

from .merged import EnvView
from .schema import FileRef


@dataclass(eq=False)
class Inode:
    ino: int
    kind: str  # "root", "mirror", "out", "dir", "store", "pyc", "upper", "link"
    key: tuple[Any, ...]
    env: EnvView | None = None
    path: str | None = None  # directories: moves with renames; None once gone. out, pyc: the target
    ref: FileRef | None = None  # store files and pycs
    id: int = 0  # upper files and symlinks: the layer id; mirrors: the depth
    lookups: int = 0
    opens: int = 0
    # Store files: attributes never change (content, mode and times are the
    # blob's), so they are built once.
    attrs: pyfuse3.EntryAttributes | None = None
    # Upper files, in no-open mode: the body's descriptor, opened by the
    # first read or write and kept while the kernel knows the inode.
    fd: int | None = None
    # Directories, in no-opendir mode: the listing that readdir pages
    # through, taken when the kernel asks from offset 0.
    listing: list[str] | None = None

    @property
    def known(self) -> bool:
        return bool(self.lookups or self.opens)


class InodeTable:
    def __init__(self) -> None:
        self.by_ino: dict[int, Inode] = {}
        self.by_key: dict[tuple[Any, ...], Inode] = {}
        self._next = pyfuse3.ROOT_INODE + 1
        root = Inode(pyfuse3.ROOT_INODE, "root", ("root",))
        self.by_ino[root.ino] = root
        self.by_key[root.key] = root

    @property
    def root(self) -> Inode:
        return self.by_ino[pyfuse3.ROOT_INODE]

    def get(self, ino: int) -> Inode | None:
        return self.by_ino.get(ino)

    def find(self, key: tuple[Any, ...]) -> Inode | None:
        return self.by_key.get(key)

    def make(self, key: tuple[Any, ...], build: Callable[[int], Inode]) -> Inode:
        """The inode of `key`, made with a new number if there is none."""
        inode = self.by_key.get(key)
        if inode is None:
            inode = build(self._next)
            self._next += 1
            self.by_ino[inode.ino] = inode
            self.by_key[key] = inode
        return inode

    def unkey(self, inode: Inode) -> None:
        """No path leads to `inode` any more (it lives on while known)."""
        if self.by_key.get(inode.key) is inode:
            del self.by_key[inode.key]

    def rekey(self, inode: Inode, key: tuple[Any, ...]) -> None:
        inode.key = key
        self.by_key[key] = inode

    def drop(self, inode: Inode) -> None:
        del self.by_ino[inode.ino]
        self.unkey(inode)

    def of_env(self, name: str, kinds: tuple[str, ...]) -> Iterator[Inode]:
        for key in list(self.by_key):
            if key[0] in kinds and key[1] == name:
                yield self.by_key[key]

    def __iter__(self) -> Iterator[Inode]:
        return iter(self.by_ino.values())
