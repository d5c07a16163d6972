"""The FUSE view: one file system serving every registered environment's
site-packages, one directory per environment.

    <mount>/<venv name>-<id>/...   an environment's site-packages: its current
                                   generation with its copy-on-write layer on top

Inode numbers are the point of the design (docs/ARCHITECTURE.md, DESIGN 3):
a store file gets the inode of its (blob, executable) pair, the same in every
environment and every generation, so the kernel keeps one page cache for it
however many venvs import it; `st_nlink` says how many paths of the current
generations share it. Directories, files made inside an environment and
symlinks get inodes of their own. Content behind a store inode never changes,
so opens keep the page cache and entries and attributes are cached for a day;
the view invalidates exactly the names a generation flip changed.

FUSE names an inode, not a path, in open and setattr; a store inode is shared
by many paths, so writing to it, truncating or chmod-ing it cannot be copied
up for one environment and fails with EROFS (replace the file instead:
delete or rename over it, which is what pip, Python's bytecode writer and
most editors do). Everything else that changes names works: create, write,
truncate and chmod of new files, rename, unlink, mkdir, rmdir, symlink.

Only FUSEError leaves a handler. OSError keeps its errno; any other exception
becomes EIO, is logged once with the request and counted in `faults`.
Disk work (opening and reading bodies, writing new files) runs on worker
threads; lookups, readdir and attributes of store files are answered from
memory.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import pyfuse3
import trio
from pyfuse3 import FUSEError

from .overlay import WHITEOUT, Entry, Overlay, OverlayDir, StoreFile, Symlink, UpperFile, Whiteout
from .schema import FileRef
from .tree import Dir, content_counts, diff

log = logging.getLogger("nwcache.view")

# The kernel may cache names and attributes this long; every change the
# kernel did not make itself (a generation flip, an environment coming or
# going) is invalidated explicitly.
CACHE_TIMEOUT = 24 * 3600.0
BLOCK_SIZE = 128 * 1024
# Store files get an mtime derived from their content: identical content has
# the same mtime everywhere, different content (almost surely) a different
# one, so a pyc validated by (mtime, size) can never be taken for another
# version of its source. Seconds between 2000 and 2034: fits a pyc's 32 bits.
_MTIME_BASE = 946684800
_MTIME_SPAN = 1 << 30
# Open bodies kept after their last handle closed: re-opening a module is
# then a dictionary lookup instead of a thread hop.
KEPT_OPEN = 8192


def content_mtime_ns(blob: str) -> int:
    return (_MTIME_BASE + int(blob[:8], 16) % _MTIME_SPAN) * 1_000_000_000


class BlobSource(Protocol):
    def blob_location(self, blob: str) -> tuple[int, bytes | Path]: ...


@dataclass
class EnvView:
    """One environment as the view serves it."""

    name: str
    lower: Dir
    overlay: Overlay
    mtime_ns: int
    # The venv's root and its site-packages path below it ("lib/python3.11/
    # site-packages"): the environment's directory in the view mirrors that
    # path, and every other name on the way is a symlink into the venv, so
    # that `site-packages/../../../bin` (which pip writes through) is the
    # venv's bin even when site-packages is a symlink into the view.
    venv: Path = Path("/nonexistent")
    prefix: tuple[str, ...] = ()


@dataclass(eq=False)
class Inode:
    ino: int
    kind: str  # "root", "dir", "store", "upper", "link"
    key: tuple[Any, ...]
    env: EnvView | None = None
    path: str | None = None  # directories: moves with renames; None once gone
    ref: FileRef | None = None  # store files
    id: int = 0  # upper files and symlinks: the overlay id
    lookups: int = 0
    opens: int = 0
    # Store files: their attributes change only with the link count.
    attrs: pyfuse3.EntryAttributes | None = None
    attrs_nlink: int = 0


@dataclass(eq=False)
class Body:
    """An open body of a store blob, shared by every handle of its inode."""

    fd: int | None
    data: bytes | None
    users: int = 0


@dataclass(eq=False)
class Handle:
    inode: Inode
    body: Body | None = None  # store files
    fd: int | None = None  # upper files
    writable: bool = False


@dataclass
class DirListing:
    inode: Inode
    names: list[str]


@dataclass
class ViewStats:
    faults: int = 0
    lookups: int = 0
    opens: int = 0
    reads: int = 0
    bytes_read: int = 0
    writes: int = 0
    invalidations: int = 0
    fault_log: list[str] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND

P = ParamSpec("P")
R = TypeVar("R")


def handler(
    fn: Callable[Concatenate[ViewOperations, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[ViewOperations, P], Coroutine[Any, Any, R]]:
    """Let only FUSEError out: an OSError keeps its errno, anything else is
    a fault (EIO, logged once with the request, counted)."""

    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: ViewOperations, /, *args: P.args, **kwargs: P.kwargs) -> R:
        self.stats.requests[name] += 1
        try:
            return await fn(self, *args, **kwargs)
        except FUSEError:
            raise
        except OSError as exc:
            raise FUSEError(exc.errno or errno.EIO) from None
        except Exception as exc:
            self.stats.faults += 1
            shown = ", ".join(repr(a) for a in args if not isinstance(a, pyfuse3.RequestContext))
            message = f"{fn.__name__}({shown}): {type(exc).__name__}: {exc}"
            if len(self.stats.fault_log) < 100:
                self.stats.fault_log.append(message)
            log.error("view fault in %s", message, exc_info=exc)
            raise FUSEError(errno.EIO) from None

    return wrapper


def _keep_first_fd(handle: Handle, fd: int) -> None:
    if handle.fd is None:
        handle.fd = fd
    else:
        os.close(fd)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


class ViewOperations(pyfuse3.Operations):
    """Built from the objects it serves; the handlers can be awaited without
    a mount (tests/test_view_ops.py does), and nothing touches the kernel
    except `invalidate`, which is a no-op until `mounted` is set."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, blobs: BlobSource, *, limiter: trio.CapacityLimiter | None = None) -> None:
        super().__init__()
        self.blobs = blobs
        self.limiter = limiter or trio.CapacityLimiter(8)
        self.envs: dict[str, EnvView] = {}
        self.inodes: dict[int, Inode] = {}
        self.keys: dict[tuple[Any, ...], Inode] = {}
        self.handles: dict[int, Handle] = {}
        self.listings: dict[int, DirListing] = {}
        self.bodies: dict[tuple[str, bool], Body] = {}
        self.idle_bodies: OrderedDict[tuple[str, bool], Body] = OrderedDict()
        self.links: Counter[tuple[str, bool]] = Counter()
        self.stats = ViewStats()
        self.mounted = False
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.started_ns = time.time_ns()
        self._next_ino = pyfuse3.ROOT_INODE + 1
        self._next_fh = 1
        root = Inode(pyfuse3.ROOT_INODE, "root", ("root",))
        self.inodes[root.ino] = root
        self.keys[root.key] = root

    # -- environments (called by the daemon, on the trio thread) ---------------

    async def add_env(
        self, name: str, lower: Dir, overlay: Overlay, *, venv: Path, site_packages: str = ""
    ) -> None:
        if name in self.envs:
            raise ValueError(f"environment {name} is already in the view")
        prefix = tuple(p for p in site_packages.split("/") if p)
        self.envs[name] = EnvView(name, lower, overlay, time.time_ns(), venv, prefix)
        self.links.update(content_counts(lower))
        await self.invalidate([(pyfuse3.ROOT_INODE, name)])

    async def replace_tree(self, name: str, lower: Dir) -> int:
        """Serve a new generation; returns how many names changed. When it
        returns, every lookup through the kernel sees the new tree."""
        env = self.envs[name]
        old = env.lower
        changes = list(diff(old, lower))
        self.links.subtract(content_counts(old))
        self.links.update(content_counts(lower))
        self.links += Counter()  # drop zero counts
        env.lower = lower
        env.mtime_ns = time.time_ns()
        notes: list[tuple[int, str]] = []
        for change in changes:
            parent = self.keys.get(("dir", name, change.parent))
            if parent is not None:
                notes.append((parent.ino, change.name))
        await self.invalidate(notes)
        return len(changes)

    async def remove_env(self, name: str) -> None:
        env = self.envs.pop(name)
        self.links.subtract(content_counts(env.lower))
        self.links += Counter()
        for key in [
            k for k in self.keys if k[0] in ("dir", "upper", "link", "mirror", "out") and k[1] == name
        ]:
            inode = self.keys.pop(key)
            inode.path = None
            inode.env = None
        await self.invalidate([(pyfuse3.ROOT_INODE, name)])

    async def invalidate(self, notes: list[tuple[int, str]]) -> None:
        """Drop the kernel's cached entries for these (directory, name) pairs
        and wait until it has (from a worker thread: the kernel may need the
        file system to answer while it does)."""
        if not self.mounted or not notes:
            return
        self.stats.invalidations += len(notes)

        def run() -> None:
            for parent, name in notes:
                try:
                    pyfuse3.invalidate_entry(parent, os.fsencode(name))
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                        raise

        await trio.to_thread.run_sync(run, limiter=self.limiter)

    def pinned_blobs(self) -> set[str]:
        """Blobs GC must keep besides the generations': renamed store files
        in copy-on-write layers and bodies open right now."""
        pinned = {blob for blob, _ in self.bodies}
        pinned |= {h.inode.ref.blob for h in self.handles.values() if h.inode.ref is not None}
        for env in self.envs.values():
            pinned |= env.overlay.store_refs()
        return pinned

    # -- resolution ---------------------------------------------------------------

    def _lower(self, env: EnvView, path: str, *, beneath: bool = False) -> Dir | FileRef | None:
        """The generation's node at `path` if the layer lets it show through.
        With `beneath`, ignore the layer's entry at `path` itself (is there
        something a removal must white out?)."""
        entries = env.overlay.entries
        if entries:
            if not beneath:
                own = entries.get(path)
                if own is not None and not (isinstance(own, OverlayDir) and not own.opaque):
                    return None
            p = path
            while p:
                p = _parent(p)
                if not p:
                    break
                e = entries.get(p)
                if e is not None and not (isinstance(e, OverlayDir) and not e.opaque):
                    return None
        return env.lower.walk(path)

    def _resolve(self, env: EnvView, path: str) -> Entry | Dir | FileRef | None:
        """What `path` is in the merged tree: a Dir (or OverlayDir) for a
        directory, a FileRef for a store file, UpperFile or Symlink."""
        if not path:
            return env.lower
        own = env.overlay.entries.get(path)
        if own is not None:
            if isinstance(own, Whiteout):
                return None
            if isinstance(own, StoreFile):
                return own.ref
            return own
        return self._lower(env, path)

    def _names(self, env: EnvView, path: str) -> list[str]:
        names: set[str] = set()
        lower = self._lower(env, path) if path else env.lower
        if isinstance(lower, Dir):
            names.update(lower.names)
        for name in env.overlay.children.get(path, ()):
            if isinstance(env.overlay.entries[_join(path, name)], Whiteout):
                names.discard(name)
            else:
                names.add(name)
        return sorted(names)

    def _inode(self, key: tuple[Any, ...], make: Callable[[int], Inode]) -> Inode:
        inode = self.keys.get(key)
        if inode is None:
            inode = make(self._next_ino)
            self._next_ino += 1
            self.inodes[inode.ino] = inode
            self.keys[key] = inode
        return inode

    def _child_inode(self, env: EnvView, path: str, node: Entry | Dir | FileRef) -> Inode:
        if isinstance(node, Dir | OverlayDir):
            key: tuple[Any, ...] = ("dir", env.name, path)
            return self._inode(key, lambda ino: Inode(ino, "dir", key, env=env, path=path))
        if isinstance(node, FileRef):
            ref = node
            key = ("store", ref.blob, ref.executable)
            return self._inode(key, lambda ino: Inode(ino, "store", key, ref=ref))
        if isinstance(node, UpperFile):
            key = ("upper", env.name, node.id)
            upper_id = node.id
            return self._inode(key, lambda ino: Inode(ino, "upper", key, env=env, id=upper_id))
        if isinstance(node, Symlink):
            key = ("link", env.name, node.id)
            link_id = node.id
            return self._inode(key, lambda ino: Inode(ino, "link", key, env=env, id=link_id))
        raise TypeError(node)

    def _env_dir(self, env: EnvView) -> Inode:
        return self._mirror(env, 0) if env.prefix else self._site_root(env)

    def _site_root(self, env: EnvView) -> Inode:
        return self._child_inode(env, "", env.lower)

    def _mirror(self, env: EnvView, depth: int) -> Inode:
        key = ("mirror", env.name, depth)
        return self._inode(key, lambda ino: Inode(ino, "mirror", key, env=env, id=depth))

    async def _child(self, parent: Inode, text: str) -> Inode | None:
        """The inode `text` names in directory `parent` (not "." or "..")."""
        if parent.kind == "root":
            env = self.envs.get(text)
            return self._env_dir(env) if env is not None else None
        if parent.kind == "mirror":
            env = parent.env
            assert env is not None
            depth = parent.id
            if text == env.prefix[depth]:
                return self._mirror(env, depth + 1) if depth + 1 < len(env.prefix) else self._site_root(env)
            real = env.venv.joinpath(*env.prefix[:depth], text)
            if not await trio.to_thread.run_sync(os.path.lexists, real, limiter=self.limiter):
                return None
            key = ("out", env.name, str(real))
            return self._inode(key, lambda ino: Inode(ino, "out", key, env=env, path=str(real)))
        env, path = self._dir(parent.ino)
        return self._lookup_path(env, _join(path, text))

    def _up(self, inode: Inode) -> Inode:
        """The inode of ".." of a directory."""
        env = inode.env
        if inode.kind == "root" or env is None:
            return self.inodes[pyfuse3.ROOT_INODE]
        if inode.kind == "mirror":
            return self._mirror(env, inode.id - 1) if inode.id else self.inodes[pyfuse3.ROOT_INODE]
        assert inode.path is not None
        if inode.path:
            found = self._lookup_path(env, _parent(inode.path))
            assert found is not None
            return found
        return self._mirror(env, len(env.prefix) - 1) if env.prefix else self.inodes[pyfuse3.ROOT_INODE]

    def _dir(self, ino: int) -> tuple[EnvView, str]:
        """The environment and path of a directory inode (not the root)."""
        inode = self.inodes.get(ino)
        if inode is None:
            raise FUSEError(errno.ESTALE)
        if inode.kind in ("root", "mirror"):
            raise FUSEError(errno.EPERM)
        if inode.kind != "dir":
            raise FUSEError(errno.ENOTDIR)
        if inode.env is None or inode.path is None:
            raise FUSEError(errno.ENOENT)
        return inode.env, inode.path

    def _upper_path(self, inode: Inode) -> str | None:
        assert inode.env is not None
        return inode.env.overlay.path_of(inode.id)

    # -- attributes -------------------------------------------------------------

    def _attrs(self, inode: Inode, st: os.stat_result | None = None) -> pyfuse3.EntryAttributes:
        if inode.kind == "store" and inode.attrs is not None:
            assert inode.ref is not None
            if inode.attrs_nlink == self.links.get((inode.ref.blob, inode.ref.executable), 0):
                return inode.attrs  # replies copy it: sharing one object is safe
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = inode.ino
        attrs.generation = 0
        attrs.entry_timeout = CACHE_TIMEOUT
        attrs.attr_timeout = CACHE_TIMEOUT
        attrs.st_uid = self.uid
        attrs.st_gid = self.gid
        attrs.st_blksize = BLOCK_SIZE
        attrs.st_nlink = 1
        if inode.kind == "store":
            ref = inode.ref
            assert ref is not None
            attrs.st_mode = stat.S_IFREG | (0o755 if ref.executable else 0o644)
            attrs.st_size = ref.size
            inode.attrs_nlink = self.links.get((ref.blob, ref.executable), 0)
            attrs.st_nlink = max(1, inode.attrs_nlink)
            t = content_mtime_ns(ref.blob)
            attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = t
            attrs.st_blocks = (attrs.st_size + 511) // 512
            inode.attrs = attrs
            return attrs
        elif inode.kind == "upper":
            assert st is not None
            path = self._upper_path(inode)
            entry = inode.env.overlay.entries.get(path) if inode.env is not None and path else None
            mode = entry.mode if isinstance(entry, UpperFile) else 0o644
            attrs.st_mode = stat.S_IFREG | mode
            attrs.st_size = st.st_size
            attrs.st_nlink = 1 if path is not None else 0
            attrs.st_atime_ns = st.st_atime_ns
            attrs.st_mtime_ns = st.st_mtime_ns
            attrs.st_ctime_ns = st.st_ctime_ns
            # Files written here may change size behind cached attributes
            # only through this mount, which updates the kernel itself.
        elif inode.kind in ("link", "out"):
            assert inode.env is not None
            if inode.kind == "out":
                target = inode.path or ""
            else:
                path = self._upper_path(inode)
                entry = inode.env.overlay.entries.get(path) if path else None
                target = entry.target if isinstance(entry, Symlink) else ""
            attrs.st_mode = stat.S_IFLNK | 0o777
            attrs.st_size = len(os.fsencode(target))
            attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = inode.env.mtime_ns
        else:
            mode = 0o755
            mtime = self.started_ns
            if inode.kind == "dir":
                assert inode.env is not None
                assert inode.path is not None
                own = inode.env.overlay.entries.get(inode.path)
                if isinstance(own, OverlayDir):
                    mode = own.mode
                mtime = inode.env.mtime_ns
            attrs.st_mode = stat.S_IFDIR | mode
            attrs.st_size = 0
            attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = mtime
        attrs.st_blocks = (attrs.st_size + 511) // 512
        return attrs

    async def _stat_upper(self, inode: Inode) -> os.stat_result:
        assert inode.env is not None
        body = inode.env.overlay.body(inode.id)
        open_fd = next((h.fd for h in self.handles.values() if h.inode is inode and h.fd is not None), None)
        if open_fd is not None:
            return await trio.to_thread.run_sync(os.fstat, open_fd, limiter=self.limiter)
        return await trio.to_thread.run_sync(os.stat, body, limiter=self.limiter)

    async def _entry(self, inode: Inode) -> pyfuse3.EntryAttributes:
        if inode.kind == "upper":
            return self._attrs(inode, await self._stat_upper(inode))
        return self._attrs(inode)

    # -- lookups --------------------------------------------------------------------

    @handler
    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self.stats.lookups += 1
        text = os.fsdecode(name)
        parent = self.inodes.get(parent_inode)
        if parent is None:
            raise FUSEError(errno.ESTALE)
        if text == ".":
            found: Inode | None = parent
        elif text == "..":
            found = self._up(parent)
        else:
            found = await self._child(parent, text)
        if found is None:
            # A negative entry, cached like the others (a flip that adds the
            # name invalidates it), except beside site-packages, where the
            # venv's own directory decides.
            missing = pyfuse3.EntryAttributes()
            missing.st_ino = 0
            missing.entry_timeout = 0 if parent.kind == "mirror" else CACHE_TIMEOUT
            return missing
        attrs = await self._entry(found)
        found.lookups += 1
        return attrs

    def _lookup_path(self, env: EnvView, path: str) -> Inode | None:
        node = self._resolve(env, path)
        return None if node is None else self._child_inode(env, path, node)

    @handler
    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        for ino, count in inode_list:
            inode = self.inodes.get(ino)
            if inode is None:
                continue
            inode.lookups = max(0, inode.lookups - count)
            self._maybe_drop(inode)

    def _maybe_drop(self, inode: Inode) -> None:
        """Forget an inode the kernel no longer knows, unless a path of the
        current trees still leads to it through a directory we must keep."""
        if inode.lookups or inode.opens or inode.kind == "root":
            return
        if inode.kind == "dir" and inode.path is not None:
            return  # directories stay while their environment does
        del self.inodes[inode.ino]
        if self.keys.get(inode.key) is inode:
            del self.keys[inode.key]

    @handler
    async def getattr(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        found = self.inodes.get(inode)
        if found is None:
            raise FUSEError(errno.ESTALE)
        if found.kind == "dir":
            env, path = self._dir(inode)
            if not isinstance(self._resolve(env, path), Dir | OverlayDir):
                raise FUSEError(errno.ENOENT)
        return await self._entry(found)

    @handler
    async def readlink(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.FileNameT:
        found = self.inodes.get(inode)
        if found is not None and found.kind == "out" and found.path is not None:
            return os.fsencode(found.path)
        if found is None or found.kind != "link" or found.env is None:
            raise FUSEError(errno.EINVAL)
        path = self._upper_path(found)
        entry = found.env.overlay.entries.get(path) if path else None
        if not isinstance(entry, Symlink):
            raise FUSEError(errno.ENOENT)
        return os.fsencode(entry.target)

    # -- directories --------------------------------------------------------------

    @handler
    async def opendir(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.FileHandleT:
        found = self.inodes.get(inode)
        if found is None:
            raise FUSEError(errno.ESTALE)
        # A listing is a snapshot taken at opendir: offsets are indices into
        # it, so entries added or removed meanwhile never shift the others.
        if found.kind == "root":
            names = sorted(self.envs)
        elif found.kind == "mirror":
            env = found.env
            assert env is not None
            real = env.venv.joinpath(*env.prefix[: found.id])
            on_disk = await trio.to_thread.run_sync(os.listdir, real, limiter=self.limiter)
            names = sorted({env.prefix[found.id], *on_disk})
        else:
            env, path = self._dir(inode)
            names = self._names(env, path)
        fh = self._new_fh()
        self.listings[fh] = DirListing(found, names)
        return pyfuse3.FileHandleT(fh)

    @handler
    async def readdir(self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self.listings.get(fh)
        if listing is None:
            raise FUSEError(errno.EBADF)
        inode = listing.inode
        lower = self._plain_lower(inode)
        for index in range(start_id, len(listing.names)):
            name = listing.names[index]
            if lower is not None:
                # Resolved once per request, not once per entry: the layer has
                # nothing here, so every child is the generation's.
                node = lower.entries.get(name)
                if node is None:
                    continue  # removed since opendir
                assert inode.env is not None
                assert inode.path is not None
                child: Inode | None = self._child_inode(inode.env, _join(inode.path, name), node)
            else:
                if inode.kind == "dir" and inode.path is None:
                    return  # the directory went away
                child = await self._child(inode, name)
            if child is None:
                continue  # removed since opendir
            attrs = await self._entry(child)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attrs, index + 1):
                return
            child.lookups += 1

    def _plain_lower(self, inode: Inode) -> Dir | None:
        """The generation's directory behind `inode` when the layer neither
        hides it nor has entries directly inside it (the common case)."""
        if inode.kind != "dir" or inode.env is None or inode.path is None:
            return None
        env = inode.env
        if inode.path in env.overlay.children:
            return None
        node = self._resolve(env, inode.path)
        return node if isinstance(node, Dir) else None

    @handler
    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        self.listings.pop(fh, None)

    @handler
    async def fsyncdir(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        listing = self.listings.get(fh)
        if listing is not None and listing.inode.env is not None:
            await trio.to_thread.run_sync(listing.inode.env.overlay.sync, limiter=self.limiter)

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _writable_dir(self, parent_inode: int, name: bytes) -> tuple[EnvView, str]:
        env, path = self._dir(parent_inode)
        text = os.fsdecode(name)
        if not text or text in (".", "..") or "/" in text:
            raise FUSEError(errno.EINVAL)
        return env, _join(path, text)

    @handler
    async def mkdir(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        parent = self.inodes.get(parent_inode)
        if parent is not None and parent.kind == "mirror" and parent.env is not None:
            # Beside site-packages (pip's `../../../share/...` for .data/data):
            # the directory is made in the venv itself and shows as a symlink
            # to it, so mkdir reports that the name exists now.
            real = parent.env.venv.joinpath(*parent.env.prefix[: parent.id], os.fsdecode(name))
            await trio.to_thread.run_sync(lambda: real.mkdir(mode=mode & 0o7777), limiter=self.limiter)
            raise FUSEError(errno.EEXIST)
        env, path = self._writable_dir(parent_inode, name)
        if self._resolve(env, path) is not None:
            raise FUSEError(errno.EEXIST)
        # Over a removed generation directory the new one starts empty.
        hidden = self._lower(env, path, beneath=True) is not None
        env.overlay.put(path, OverlayDir(opaque=hidden, mode=mode & 0o7777))
        inode = self._child_inode(env, path, env.overlay.entries[path])
        attrs = self._attrs(inode)
        inode.lookups += 1
        return attrs

    @handler
    async def rmdir(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        env, path = self._writable_dir(parent_inode, name)
        node = self._resolve(env, path)
        if node is None:
            raise FUSEError(errno.ENOENT)
        if not isinstance(node, Dir | OverlayDir):
            raise FUSEError(errno.ENOTDIR)
        if self._names(env, path):
            raise FUSEError(errno.ENOTEMPTY)
        self._remove(env, path, directory=True)

    def _remove(self, env: EnvView, path: str, *, directory: bool) -> None:
        """Take `path` (and, for a directory, everything below it) out of the
        merged tree. Only a directory has layer entries or directory inodes
        below it, so removing a file (pip uninstall: one call per file) scans
        neither."""
        if directory:
            for below in sorted(env.overlay.below(path), reverse=True):
                env.overlay.put(below, None)
        hidden = self._lower(env, path, beneath=True) is not None
        if hidden:
            env.overlay.put(path, WHITEOUT)
        elif path in env.overlay.entries:
            env.overlay.put(path, None)
        if not directory:
            return
        for key in [k for k in self.keys if k[0] == "dir" and k[1] == env.name]:
            inode = self.keys[key]
            if inode.path == path or (inode.path or "").startswith(path + "/"):
                del self.keys[key]
                inode.path = None
                self._maybe_drop(inode)

    # -- files ------------------------------------------------------------------------

    @handler
    async def create(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        flags: pyfuse3.FlagT,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        env, path = self._writable_dir(parent_inode, name)
        if self._resolve(env, path) is not None:
            raise FUSEError(errno.EEXIST)
        upper = UpperFile(env.overlay.new_id(), mode & 0o7777)
        body = env.overlay.body(upper.id)
        fd = await trio.to_thread.run_sync(
            lambda: os.open(body, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600),
            limiter=self.limiter,
        )
        env.overlay.put(path, upper)
        inode = self._child_inode(env, path, upper)
        fh = self._new_fh()
        self.handles[fh] = Handle(inode, fd=fd, writable=True)
        inode.opens += 1
        attrs = self._attrs(inode, await trio.to_thread.run_sync(os.fstat, fd, limiter=self.limiter))
        inode.lookups += 1
        self.stats.opens += 1
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh)), attrs

    @handler
    async def symlink(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        target: pyfuse3.FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        env, path = self._writable_dir(parent_inode, name)
        if self._resolve(env, path) is not None:
            raise FUSEError(errno.EEXIST)
        link = Symlink(env.overlay.new_id(), os.fsdecode(target))
        env.overlay.put(path, link)
        inode = self._child_inode(env, path, link)
        attrs = self._attrs(inode)
        inode.lookups += 1
        return attrs

    @handler
    async def unlink(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        env, path = self._writable_dir(parent_inode, name)
        node = self._resolve(env, path)
        if node is None:
            raise FUSEError(errno.ENOENT)
        if isinstance(node, Dir | OverlayDir):
            raise FUSEError(errno.EISDIR)
        self._remove(env, path, directory=False)
        if isinstance(node, UpperFile):
            # Open handles keep their descriptors; the body goes now.
            await self._unlink_body(env, node.id)

    @handler
    async def rename(
        self,
        parent_inode_old: pyfuse3.InodeT,
        name_old: pyfuse3.FileNameT,
        parent_inode_new: pyfuse3.InodeT,
        name_new: pyfuse3.FileNameT,
        flags: pyfuse3.FlagT,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        env, src = self._writable_dir(parent_inode_old, name_old)
        env_new, dst = self._writable_dir(parent_inode_new, name_new)
        if env_new is not env:
            raise FUSEError(errno.EXDEV)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise FUSEError(errno.EINVAL)
        node = self._resolve(env, src)
        if node is None:
            raise FUSEError(errno.ENOENT)
        if src == dst:
            return
        target = self._resolve(env, dst)
        is_dir = isinstance(node, Dir | OverlayDir)
        if target is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise FUSEError(errno.EEXIST)
            target_dir = isinstance(target, Dir | OverlayDir)
            if is_dir and not target_dir:
                raise FUSEError(errno.ENOTDIR)
            if target_dir and not is_dir:
                raise FUSEError(errno.EISDIR)
            if target_dir and self._names(env, dst):
                raise FUSEError(errno.ENOTEMPTY)
        if is_dir and (dst + "/").startswith(src + "/"):
            raise FUSEError(errno.EINVAL)
        moved = dict(self._capture(env, src, node))
        moving_dirs = [
            inode
            for key, inode in self.keys.items()
            if key[0] == "dir"
            and key[1] == env.name
            and inode.path is not None
            and (inode.path == src or inode.path.startswith(src + "/"))
        ]
        for inode in moving_dirs:
            del self.keys[inode.key]
        replaced_body = target.id if isinstance(target, UpperFile) else None
        if target is not None:
            self._remove(env, dst, directory=isinstance(target, Dir | OverlayDir))
        self._remove(env, src, directory=is_dir)
        # A directory arrives opaque (_capture), so nothing of the generation
        # at `dst` shows through it; a file simply replaces the whiteout.
        for rel, entry in moved.items():
            env.overlay.put(_join(dst, rel) if rel else dst, entry)
        for inode in moving_dirs:
            assert inode.path is not None
            inode.path = dst + inode.path[len(src) :]
            inode.key = ("dir", env.name, inode.path)
            self.keys[inode.key] = inode
        if replaced_body is not None:
            await self._unlink_body(env, replaced_body)

    def _capture(
        self, env: EnvView, path: str, node: Entry | Dir | FileRef, rel: str = ""
    ) -> Iterator[tuple[str, Entry]]:
        """The layer entries that recreate `path` (and all below it) elsewhere:
        store files become StoreFile entries naming the same blobs, so a
        renamed directory costs entries, not copies."""
        if isinstance(node, Dir | OverlayDir):
            mode = node.mode if isinstance(node, OverlayDir) else 0o755
            yield rel, OverlayDir(opaque=True, mode=mode)
            for name in self._names(env, path):
                child = self._resolve(env, _join(path, name))
                if child is not None:
                    yield from self._capture(env, _join(path, name), child, _join(rel, name))
        elif isinstance(node, FileRef):
            yield rel, StoreFile(node)
        elif isinstance(node, UpperFile | Symlink | StoreFile):
            yield rel, node
        else:
            raise TypeError(node)

    @handler
    async def link(
        self,
        inode: pyfuse3.InodeT,
        new_parent_inode: pyfuse3.InodeT,
        new_name: pyfuse3.FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        raise FUSEError(errno.EPERM)

    @handler
    async def mknod(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        rdev: int,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        raise FUSEError(errno.EPERM)

    @handler
    async def setattr(
        self,
        inode: pyfuse3.InodeT,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: pyfuse3.FileHandleT | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        found = self.inodes.get(inode)
        if found is None:
            raise FUSEError(errno.ESTALE)
        if (fields.update_uid and attr.st_uid != self.uid) or (fields.update_gid and attr.st_gid != self.gid):
            raise FUSEError(errno.EPERM)
        if found.kind in ("store", "root"):
            if fields.update_size or fields.update_mode or fields.update_mtime or fields.update_atime:
                raise FUSEError(errno.EROFS)
            return self._attrs(found)
        if found.kind == "dir":
            env, path = self._dir(inode)
            if fields.update_size:
                raise FUSEError(errno.EISDIR)
            if fields.update_mode:
                own = env.overlay.entries.get(path)
                opaque = own.opaque if isinstance(own, OverlayDir) else False
                env.overlay.put(path, OverlayDir(opaque=opaque, mode=attr.st_mode & 0o7777))
            return self._attrs(found)
        if found.kind == "link":
            return self._attrs(found)
        assert found.env is not None
        body = found.env.overlay.body(found.id)
        handle = self.handles.get(fh) if fh is not None else None
        target: int | Path = handle.fd if handle is not None and handle.fd is not None else body
        if fields.update_size:
            size = attr.st_size
            await trio.to_thread.run_sync(
                lambda: os.ftruncate(target, size) if isinstance(target, int) else os.truncate(target, size),
                limiter=self.limiter,
            )
        if fields.update_mode:
            upper_path = self._upper_path(found)
            if upper_path is not None:
                found.env.overlay.put(upper_path, UpperFile(found.id, attr.st_mode & 0o7777))
        if fields.update_mtime or fields.update_atime:
            st = await self._stat_upper(found)
            atime = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
            mtime = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
            await trio.to_thread.run_sync(lambda: os.utime(target, ns=(atime, mtime)), limiter=self.limiter)
        return self._attrs(found, await self._stat_upper(found))

    @handler
    async def open(
        self, inode: pyfuse3.InodeT, flags: pyfuse3.FlagT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        found = self.inodes.get(inode)
        if found is None:
            raise FUSEError(errno.ESTALE)
        self.stats.opens += 1
        writing = bool(flags & _WRITE_FLAGS)
        fh = self._new_fh()
        if found.kind == "store":
            if writing:
                raise FUSEError(errno.EROFS)
            assert found.ref is not None
            # The body is opened by the first read, if one ever comes: with the
            # pages cached (keep_cache) an open is answered from memory.
            handle = Handle(found)
            body = self.bodies.get((found.ref.blob, found.ref.executable))
            if body is not None:
                self._attach(handle, body)
            self.handles[fh] = handle
            found.opens += 1
            # The content behind this inode never changes: keep its pages.
            return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=True)
        if found.kind == "upper":
            assert found.env is not None
            body_path = found.env.overlay.body(found.id)
            writable = bool(flags & (os.O_WRONLY | os.O_RDWR))
            fd = None
            if writable:
                fd = await trio.to_thread.run_sync(
                    lambda: os.open(body_path, os.O_RDWR | os.O_CLOEXEC), limiter=self.limiter
                )
            # A read-only handle opens the body at its first read (see _unlink_body).
            self.handles[fh] = Handle(found, fd=fd, writable=writable)
            found.opens += 1
            # Only the kernel writes these bodies, so its cached pages stay true.
            return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=True)
        raise FUSEError(errno.EISDIR if found.kind in ("dir", "root") else errno.ELOOP)

    async def _unlink_body(self, env: EnvView, upper_id: int) -> None:
        """Remove a layer file's body; handles still open on it get their
        descriptor first, so they keep reading what they opened."""
        body_path = env.overlay.body(upper_id)

        def pin_and_unlink(handles: list[Handle]) -> None:
            for handle in handles:
                if handle.fd is None:
                    handle.fd = os.open(body_path, os.O_RDONLY | os.O_CLOEXEC)
            body_path.unlink()

        lazy = [
            h
            for h in self.handles.values()
            if h.inode.kind == "upper" and h.inode.env is env and h.inode.id == upper_id
        ]
        await trio.to_thread.run_sync(pin_and_unlink, lazy, limiter=self.limiter)

    def _attach(self, handle: Handle, body: Body) -> None:
        ref = handle.inode.ref
        assert ref is not None
        self.idle_bodies.pop((ref.blob, ref.executable), None)
        body.users += 1
        handle.body = body

    async def _open_body(self, ref: FileRef) -> Body:
        key = (ref.blob, ref.executable)
        body = self.bodies.get(key)
        if body is not None:
            self.idle_bodies.pop(key, None)
            return body

        def locate_and_open() -> Body:
            _size, where = self.blobs.blob_location(ref.blob)
            if isinstance(where, bytes):
                return Body(None, where)
            return Body(os.open(where, os.O_RDONLY | os.O_CLOEXEC), None)

        body = await trio.to_thread.run_sync(locate_and_open, limiter=self.limiter)
        known = self.bodies.get(key)  # another open raced this one
        if known is not None:
            if body.fd is not None:
                os.close(body.fd)
            return known
        self.bodies[key] = body
        return body

    @handler
    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        handle = self.handles.get(fh)
        if handle is None:
            raise FUSEError(errno.EBADF)
        self.stats.reads += 1
        if handle.inode.kind == "upper" and handle.fd is None:
            env = handle.inode.env
            assert env is not None
            body_path = env.overlay.body(handle.inode.id)
            opened = await trio.to_thread.run_sync(
                lambda: os.open(body_path, os.O_RDONLY | os.O_CLOEXEC), limiter=self.limiter
            )
            _keep_first_fd(handle, opened)  # readahead may have raced this read
        if handle.inode.kind == "store" and handle.body is None:
            assert handle.inode.ref is not None
            body = await self._open_body(handle.inode.ref)
            if handle.body is None:
                self._attach(handle, body)
        if handle.body is not None and handle.body.data is not None:
            data = handle.body.data[off : off + size]
        else:
            source = handle.body.fd if handle.body is not None else handle.fd
            assert source is not None
            data = await trio.to_thread.run_sync(os.pread, source, size, off, limiter=self.limiter)
        self.stats.bytes_read += len(data)
        return data

    @handler
    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        handle = self.handles.get(fh)
        if handle is None:
            raise FUSEError(errno.EBADF)
        if not handle.writable or handle.fd is None:
            raise FUSEError(errno.EBADF)
        fd = handle.fd
        self.stats.writes += 1
        return await trio.to_thread.run_sync(os.pwrite, fd, buf, off, limiter=self.limiter)

    @handler
    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        # Nothing to do on close(): ENOSYS tells the kernel to stop asking,
        # which saves a round trip per closed file.
        raise FUSEError(errno.ENOSYS)

    @handler
    async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        handle = self.handles.get(fh)
        if handle is None or handle.fd is None:
            return
        fd = handle.fd
        overlay = handle.inode.env.overlay if handle.inode.env is not None else None
        await trio.to_thread.run_sync(os.fdatasync if datasync else os.fsync, fd, limiter=self.limiter)
        if overlay is not None:
            await trio.to_thread.run_sync(overlay.sync, limiter=self.limiter)

    @handler
    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        handle = self.handles.pop(fh, None)
        if handle is None:
            return
        inode = handle.inode
        inode.opens -= 1
        if handle.fd is not None:
            if handle.writable:  # closing after writes may flush (ext4's auto_da_alloc)
                await trio.to_thread.run_sync(os.close, handle.fd, limiter=self.limiter)
            else:
                os.close(handle.fd)
        if handle.body is not None:
            handle.body.users -= 1
            if handle.body.users == 0 and inode.ref is not None:
                key = (inode.ref.blob, inode.ref.executable)
                self.idle_bodies[key] = handle.body
                while len(self.idle_bodies) > KEPT_OPEN:
                    old_key, old = self.idle_bodies.popitem(last=False)
                    del self.bodies[old_key]
                    if old.fd is not None:
                        os.close(old.fd)
        self._maybe_drop(inode)

    @handler
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        where = next(iter(self.envs.values())).overlay.root if self.envs else Path("/")
        st = await trio.to_thread.run_sync(os.statvfs, where, limiter=self.limiter)
        data = pyfuse3.StatvfsData()
        data.f_bsize = st.f_bsize
        data.f_frsize = st.f_frsize
        data.f_blocks = st.f_blocks
        data.f_bfree = st.f_bfree
        data.f_bavail = st.f_bavail
        data.f_files = st.f_files
        data.f_ffree = st.f_ffree
        data.f_favail = st.f_favail
        data.f_namemax = 255
        return data

    def close_bodies(self) -> None:
        """Close every cached body (after unmount)."""
        for body in self.bodies.values():
            if body.fd is not None:
                os.close(body.fd)
        self.bodies.clear()
        self.idle_bodies.clear()

    def snapshot(self, name: str) -> list[tuple[str, Entry | FileRef]]:
        """Every path of an environment's merged tree, parents first, as
        OverlayDir (with its mode), FileRef, UpperFile or Symlink: what
        putting a real directory back must write."""
        env = self.envs[name]
        out: list[tuple[str, Entry | FileRef]] = []

        def walk(path: str) -> None:
            for child_name in self._names(env, path):
                child_path = _join(path, child_name)
                node = self._resolve(env, child_path)
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

    async def settle_layer(self, name: str, folded: dict[str, tuple[int, int, int]]) -> int:
        """After the layer's files became a generation: drop what that
        generation now holds. `folded` maps each folded layer file's path to
        (id, size, mtime_ns) as hashed; a file changed or open for writing
        since stays in the layer. Symlinks stay (generations hold regular
        files only), and so do directories that are empty or lead to one.
        Returns how many entries went."""
        env = self.envs[name]
        overlay = env.overlay
        writing = {h.inode.id for h in self.handles.values() if h.inode.kind == "upper" and h.writable}
        kept_dirs: set[str] = set()
        for path, entry in overlay.entries.items():
            if isinstance(entry, Symlink) or (isinstance(entry, OverlayDir) and not self._names(env, path)):
                parent = path
                while parent:
                    kept_dirs.add(parent)
                    parent = _parent(parent)
        dropped: list[tuple[str, Entry]] = []
        bodies: list[tuple[int, int, int, Path]] = []
        for path, entry in list(overlay.entries.items()):
            if isinstance(entry, Symlink) or path in kept_dirs:
                continue
            if isinstance(entry, UpperFile):
                seen = folded.get(path)
                if seen is None or seen[0] != entry.id or entry.id in writing:
                    continue
                bodies.append((entry.id, seen[1], seen[2], overlay.body(entry.id)))
            dropped.append((path, entry))

        def unchanged_bodies() -> set[int]:
            same = set()
            for upper_id, size, mtime, body in bodies:
                st = os.stat(body)
                if (st.st_size, st.st_mtime_ns) == (size, mtime):
                    same.add(upper_id)
            return same

        same = await trio.to_thread.run_sync(unchanged_bodies, limiter=self.limiter)
        notes: list[tuple[int, str]] = []
        for path, entry in sorted(dropped, key=lambda item: item[0].count("/"), reverse=True):
            if isinstance(entry, UpperFile) and entry.id not in same:
                continue
            if overlay.entries.get(path) != entry:
                continue  # changed meanwhile
            overlay.put(path, None)
            holder = self.keys.get(("dir", name, _parent(path)))
            if holder is not None:
                notes.append((holder.ino, path.rpartition("/")[2]))
            if isinstance(entry, UpperFile):
                await self._unlink_body(env, entry.id)
        await self.invalidate(notes)
        return len(notes)

    def layer_files(self, name: str) -> dict[str, FileRef | UpperFile]:
        """The merged tree's regular files: store files and layer files."""
        return {path: node for path, node in self.snapshot(name) if isinstance(node, FileRef | UpperFile)}
