"""Immutable directory trees of a generation, shared between environments.

A generation's site-packages is a flat {path: FileRef}; the view needs it as
directories. Trees are hash-consed: two environments with the same numpy hold
the very same `numpy/` node, so a hundred registered venvs cost about one
tree's memory, and comparing two generations skips every shared subtree by
identity.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from .schema import FileRef


class Dir:
    """A directory node: name -> Dir or FileRef. Never modified once built."""

    __slots__ = ("__weakref__", "entries", "key", "names")

    def __init__(self, entries: dict[str, Dir | FileRef], key: bytes) -> None:
        self.entries = entries
        self.names = sorted(entries)
        self.key = key

    def walk(self, path: str) -> Dir | FileRef | None:
        node: Dir | FileRef | None = self
        if not path:
            return node
        for part in path.split("/"):
            if not isinstance(node, Dir):
                return None
            node = node.entries.get(part)
        return node

    def files(self, prefix: str = "") -> Iterator[tuple[str, FileRef]]:
        for name in self.names:
            child = self.entries[name]
            path = f"{prefix}{name}"
            if isinstance(child, Dir):
                yield from child.files(path + "/")
            else:
                yield path, child


def _nested(files: Mapping[str, FileRef]) -> dict[str, object]:
    """Paths -> refs as nested dicts of names (directories) and refs."""
    nested: dict[str, object] = {}
    for path, ref in files.items():
        node = nested
        *folders, name = path.split("/")
        for part in folders:
            child = node.setdefault(part, {})
            assert isinstance(child, dict)
            node = child
        node[name] = ref
    return nested


class TreeBuilder:
    """Builds and interns trees; one per view. Nodes live as long as some
    environment's tree refers to them."""

    def __init__(self) -> None:
        self._dirs: weakref.WeakValueDictionary[bytes, Dir] = weakref.WeakValueDictionary()
        # Interned file references, held only by the trees that use them (a
        # plain dict kept every reference the daemon ever served).
        self._refs: weakref.WeakValueDictionary[tuple[str, int, bool], FileRef] = (
            weakref.WeakValueDictionary()
        )

    def build(self, files: Mapping[str, FileRef]) -> Dir:
        nested: dict[str, object] = {}
        for path, ref in files.items():
            parts = path.split("/")
            node = nested
            for part in parts[:-1]:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise ValueError(f"{path} is below a file")
                node = child
            if parts[-1] in node:
                raise ValueError(f"{path} is both a file and a directory")
            node[parts[-1]] = self._intern_ref(ref)
        return self._freeze(nested)

    def merge(self, trees: Sequence[Dir]) -> Dir:
        """The tree build() makes of the files of `trees` put together in
        order (a later file replaces an earlier one at its path), made of
        their nodes: only directories that several trees hold are built
        again, so the work grows with the names they share, not their files."""
        if len(trees) == 1:
            return trees[0]
        entries: dict[str, Dir | FileRef] = {}
        shared: dict[str, list[Dir]] = {}
        for tree in trees:
            for name, child in tree.entries.items():
                old = entries.get(name)
                if old is not None and isinstance(old, Dir) != isinstance(child, Dir):
                    raise ValueError(f"{name} is both a file and a directory")
                if isinstance(child, Dir) and isinstance(old, Dir) and old is not child:
                    shared.setdefault(name, [old]).append(child)
                entries[name] = child
        for name, dirs in shared.items():
            entries[name] = self.merge(dirs)
        return self._intern(entries)

    def _intern_ref(self, ref: FileRef) -> FileRef:
        key = (ref.blob, ref.size, ref.executable)
        known = self._refs.get(key)
        if known is None:
            self._refs[key] = known = ref
        return known

    def _freeze(self, nested: dict[str, object]) -> Dir:
        entries: dict[str, Dir | FileRef] = {}
        for name, child in nested.items():
            if isinstance(child, dict):
                entries[name] = self._freeze(child)
            else:
                assert isinstance(child, FileRef)
                entries[name] = child
        return self._intern(entries)

    def replace_files(self, root: Dir, files: Mapping[str, FileRef]) -> Dir:
        """`root` with the files at `files`' paths replaced: the same tree
        build() makes of root's files updated by `files`, rebuilding only the
        directories on their way. Every path must be a file of `root` already
        (ValueError otherwise)."""
        return self._replace(root, _nested(files))

    def add_files(self, root: Dir, files: Mapping[str, FileRef]) -> Dir:
        """`root` with `files` added (directories made on the way) or, where
        a file is there already, replaced: the same tree build() makes of
        root's files updated by `files`, rebuilding only the directories on
        their way (the background compiler's new pycs)."""
        return self._replace(root, _nested(files), add=True)

    def add_dirs(self, root: Dir, paths: Sequence[str]) -> Dir:
        """`root` with empty directories at `paths` where it has none (the
        `__pycache__` of a source whose pyc is compiled on demand)."""
        nested: dict[str, object] = {}
        for path in paths:
            node = nested
            for part in path.split("/"):
                child = node.setdefault(part, {})
                assert isinstance(child, dict)
                node = child
        return self._replace(root, nested, add=True)

    def _replace(self, node: Dir, nested: dict[str, object], *, add: bool = False) -> Dir:
        entries = dict(node.entries)
        for name, child in nested.items():
            old = entries.get(name)
            if isinstance(child, dict):
                if add and old is None:
                    entries[name] = self._replace(self._intern({}), child, add=True)
                elif not isinstance(old, Dir):
                    raise ValueError(f"{name} is not a directory of the tree")
                else:
                    entries[name] = self._replace(old, child, add=add)
            else:
                assert isinstance(child, FileRef)
                if not isinstance(old, FileRef) and not (add and old is None):
                    raise ValueError(f"{name} is not a file of the tree")
                entries[name] = self._intern_ref(child)
        return self._intern(entries)

    def _intern(self, entries: dict[str, Dir | FileRef]) -> Dir:
        """The one Dir with these entries (hash-consed by content)."""
        hasher = hashlib.blake2b(digest_size=16)
        for name in sorted(entries):
            node = entries[name]
            if isinstance(node, Dir):
                hasher.update(b"d" + name.encode() + b"\0" + node.key)
            else:
                hasher.update(
                    b"f" + name.encode() + b"\0" + f"{node.blob}:{node.size}:{node.executable:d}".encode()
                )
        key = hasher.digest()
        known = self._dirs.get(key)
        if known is not None:
            return known
        made = Dir(entries, key)
        self._dirs[key] = made
        return made


@dataclass(frozen=True)
class Change:
    """A name in a directory whose meaning differs between two trees."""

    parent: str  # directory path relative to the environment root ("" for the root)
    name: str


def diff(old: Dir | None, new: Dir | None, prefix: str = "") -> Iterator[Change]:
    """Names that were added, removed or changed, shallowest first under
    each directory; a changed subtree is entered only when it is a directory
    in both trees (otherwise the name itself changed)."""
    if old is new:
        return
    old_entries = old.entries if old is not None else {}
    new_entries = new.entries if new is not None else {}
    for name in sorted(old_entries.keys() | new_entries.keys()):
        a = old_entries.get(name)
        b = new_entries.get(name)
        if a is b or (isinstance(a, FileRef) and a == b):
            continue
        if isinstance(a, Dir) and isinstance(b, Dir):
            yield from diff(a, b, f"{prefix}{name}/")
            continue
        yield Change(prefix.rstrip("/"), name)


# content_counts() of every directory node asked about, kept as long as the
# node lives: nodes are immutable and shared, so a venv whose site-packages is
# the same node as another's (the same packages) costs no walk at all, and a
# new tree walks only its new directories.
_counts: weakref.WeakKeyDictionary[Dir, Counter[tuple[str, bool]]] = weakref.WeakKeyDictionary()


def content_counts(root: Dir) -> Counter[tuple[str, bool]]:
    """How many paths of the tree hold each (blob, executable). Shared with
    later callers: do not modify the result."""
    counts = _counts.get(root)
    if counts is None:
        counts = Counter()
        for name in root.names:
            child = root.entries[name]
            if isinstance(child, Dir):
                counts.update(content_counts(child))
            else:
                counts[(child.blob, child.executable)] += 1
        _counts[root] = counts
    return counts
