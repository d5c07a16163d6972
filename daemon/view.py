"""The FUSE view: one file system serving every registered environment's
site-packages, one directory per environment. The handlers live here; they
ask their collaborators, passed in or made at start:

    merged.EnvView     an environment's merged tree (generation + layer), by path
    inodes.InodeTable  what each inode number means and how long it lives
    bodies.BodyCache   open bodies of store blobs, shared by every reader

Inode numbers are the point of the design (docs/VIEW.md, DESIGN 3): a store
file gets the inode of its (blob, executable) pair, the same in every
environment and generation, so the kernel keeps one page cache for it
however many venvs import it. Content behind a store inode never changes, so
pages, entries and attributes are cached by the kernel for a day; the view
invalidates exactly the names and directories a generation flip changed.

Two modes (docs/VIEW.md, "Modes"):
- kernel-cached (the default with the project's pyfuse3 patch, patches/):
  `open` and `opendir` answer ENOSYS once, after which the kernel sends no
  OPEN, RELEASE, OPENDIR or RELEASEDIR at all, keeps pages as with
  keep_cache and caches listings; symlink targets are cached too. Reads,
  writes and listings arrive with the inode (fh is 0), and the kernel's
  lookup counts keep store bodies alive (GC keeps every blob whose inode the
  kernel still knows). Truncating opens arrive as setattr.
- handles (an unpatched pyfuse3): every open and opendir is a round trip
  that makes a handle, as pyfuse3 3.5 requires.

FUSE names an inode, not a path, in open, write and setattr; a store inode
is shared by many paths, so writing to it, truncating or chmod-ing it cannot
be copied up for one environment and fails with EROFS (replace the file
instead: delete or rename over it, which is what pip, Python's bytecode
writer and most editors do).

Only FUSEError leaves a handler. OSError keeps its errno; any other exception
becomes EIO, is logged once with the request and counted in `faults`.
Disk work (opening and reading bodies, writing new files) runs on worker
threads; lookups, listings and attributes of store files come from memory.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyfuse3
import trio
from pyfuse3 import FUSEError

from .bodies import BlobSource, Body, BodyCache, pread_cached
from .bytecode import is_bytecode
from .inodes import Inode, InodeTable
from .merged import DirTimes, EnvView, Node, join, parent_of
from .overlay import Entry, Overlay, OverlayDir, Symlink, UpperFile
from .schema import FileRef
from .tree import Change, Dir, diff

log = logging.getLogger("nwcache.view")

# The kernel may cache names and attributes this long; every change the
# kernel did not make itself (a generation flip, an environment coming or
# going) is invalidated explicitly.
CACHE_TIMEOUT = 24 * 3600.0
BLOCK_SIZE = 128 * 1024
NAME_MAX = 255
# Store files get an mtime derived from their content: identical content has
# the same mtime everywhere, different content (almost surely) a different
# one, so a pyc validated by (mtime, size) can never be taken for another
# version of its source. Seconds between 2000 and 2034: fits a pyc's 32 bits.
_MTIME_BASE = 946684800
_MTIME_SPAN = 1 << 30

# The project's pyfuse3 patch (patches/pyfuse3/) adds these; without them the
# view runs in handle mode.
PATCHED_PYFUSE3 = "cache_readdir" in dir(pyfuse3.FileInfo)

KERNEL_CACHED = "kernel-cached"
HANDLES = "handles"


# The generation under a root environment's layer: a venv's root outside
# site-packages holds nothing of the store.
EMPTY_DIR = Dir({}, b"")
# How long a lookup of a venv waits for the daemon's start-up to serve it.
STARTING_WAIT = 60.0


def content_mtime_ns(blob: str) -> int:
    return (_MTIME_BASE + int(blob[:8], 16) % _MTIME_SPAN) * 1_000_000_000


@dataclass(eq=False)
class Handle:
    """An open file in handle mode."""

    inode: Inode
    body: Body | None = None  # store files
    fd: int | None = None  # upper files
    writable: bool = False


@dataclass
class ViewStats:
    mode: str = HANDLES
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


def _keep_first_fd(holder: Handle | Inode, fd: int) -> int:
    """Two reads may race to open the same body: the first descriptor wins."""
    if holder.fd is None:
        holder.fd = fd
    else:
        os.close(fd)
    return holder.fd


def _new_files(tree: Dir, changes: Sequence[Change]) -> Iterator[tuple[str, FileRef]]:
    """The store files (path, ref) that the changed names lead to in `tree`."""
    for change in changes:
        path = join(change.parent, change.name)
        node = tree.walk(path)
        if isinstance(node, Dir):
            yield from node.files(path + "/")
        elif node is not None:
            yield path, node


def _pyc_of_store_source(env: EnvView, path: str, levels: tuple[int, ...]) -> bool:
    """`path` is a pyc Python writes for itself (`__pycache__/<module>.<tag>
    [.opt-N].pyc`, or its temporary `.pyc.<n>`) at one of the shared
    `levels`, and its source is a file of the generation, which gets a
    shared pyc. A source written inside the venv (the layer) keeps Python's own."""
    folder, _, name = path.rpartition("/")
    package, _, cache = folder.rpartition("/")
    if cache != "__pycache__" or ".pyc" not in name:
        return False
    level = 1 if ".opt-1.pyc" in name else 2 if ".opt-2.pyc" in name else 0
    if level not in levels:
        return False
    source = join(package, name.split(".", 1)[0] + ".py")
    return source not in env.overlay.entries and isinstance(env.lower_at(source), FileRef)


def _check_name(name: bytes) -> None:
    if len(name) > NAME_MAX:
        raise FUSEError(errno.ENAMETOOLONG)


class ViewOperations(pyfuse3.Operations):
    """Built from the objects it serves; the handlers can be awaited without
    a mount (tests/test_view_ops.py does), and nothing touches the kernel
    except `invalidate`, which is a no-op until `mounted` is set."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        blobs: BlobSource,
        *,
        limiter: trio.CapacityLimiter | None = None,
        kernel_caching: bool | None = None,
    ) -> None:
        super().__init__()
        if kernel_caching is None:
            kernel_caching = PATCHED_PYFUSE3
        if kernel_caching and not PATCHED_PYFUSE3:
            raise ValueError("kernel-cached mode needs the project's pyfuse3 patch (patches/pyfuse3)")
        self.kernel_caching = kernel_caching
        # Read by the patched pyfuse3 when it mounts (patches/pyfuse3/README.md).
        self.pass_inode_to_handle_ops = kernel_caching
        self.enable_cache_symlinks = kernel_caching
        self.enable_atomic_o_trunc = not kernel_caching
        self.limiter = limiter or trio.CapacityLimiter(8)
        self.envs: dict[str, EnvView] = {}
        self.inodes = InodeTable()
        self.blobs = blobs
        self.bodies = BodyCache(blobs, self.limiter)
        # Shared pycs whose bodies are files: blob -> the body's path (None:
        # inline in the index). Such a pyc is served as a symlink to its body,
        # so that Python opens and reads it on the store's file system: no
        # FUSE request at all, not even the isatty ioctl that io.open asks of
        # every file and that FUSE always forwards.
        self.pyc_bodies: dict[str, Path | None] = {}
        # The optimization levels whose pycs the daemon shares (set by the
        # service): Python's own pycs for a store source at those levels are
        # refused, so none lands in a venv's layer.
        self.bytecode_levels: tuple[int, ...] = ()
        # Asked (by the service) about a name the tree lacks, before the
        # lookup answers ENOENT: a pyc compiled on demand (docs/BYTECODE.md).
        self.on_demand: Callable[[EnvView, str], Awaitable[Node | None]] | None = None
        self.handles: dict[int, Handle] = {}
        self.listings: dict[int, tuple[Inode, list[str]]] = {}
        self.stats = ViewStats(mode=KERNEL_CACHED if kernel_caching else HANDLES)
        self.mounted = False
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.started_ns = time.time_ns()
        self.root_mtime_ns = self.started_ns
        self._next_fh = 1
        # Set while the daemon starts (runner.run_service): see _child.
        self.starting: trio.Event | None = None
        self._added = trio.Event()  # set (and replaced) whenever an environment is added

    @property
    def mode(self) -> str:
        return self.stats.mode

    # -- environments (called by the daemon, on the trio thread) ---------------

    async def add_env(
        self,
        name: str,
        lower: Dir,
        overlay: Overlay,
        *,
        venv: Path,
        site_packages: str = "",
        top: Overlay | None = None,
    ) -> None:
        """Serve an environment as `name`: its site-packages from `lower`
        under `overlay`; with `top` (symlink mode), the rest of the venv's
        root from that layer, so that the venv itself can link here."""
        if name in self.envs:
            raise ValueError(f"environment {name} is already in the view")
        prefix = tuple(p for p in site_packages.split("/") if p)
        env = EnvView(name, lower, overlay, venv, prefix)
        if top is not None:
            # The name of a root environment ends in "/", which no
            # environment's name holds: its inode keys never meet another's.
            env.top = EnvView(name + "/", EMPTY_DIR, top, venv)
            env.top.site = env
        self.envs[name] = env
        self.root_mtime_ns = time.time_ns()
        self._added.set()
        self._added = trio.Event()
        if self.starting is None or self.starting.is_set():
            # (While starting, lookups of the name wait for it and hold the
            # root's lock, which invalidating needs: `started` does it once.)
            await self.invalidate([(pyfuse3.ROOT_INODE, name)], [pyfuse3.ROOT_INODE])

    async def started(self) -> None:
        """Every registered venv is served: lookups stop waiting."""
        if self.starting is not None and not self.starting.is_set():
            self.starting.set()
            self._added.set()
            await self.invalidate([], [pyfuse3.ROOT_INODE])

    async def replace_tree(self, name: str, lower: Dir) -> int:
        """Serve a new generation; returns how many names changed. When it
        returns, every lookup and listing through the kernel sees the new
        tree, and every directory whose names changed has a new mtime."""
        env = self.envs[name]
        changes = list(diff(env.lower, lower))
        pycs: list[FileRef] = []
        others: list[FileRef] = []
        for path, ref in _new_files(lower, changes):
            # is_bytecode's test, without a regular expression for each of
            # the thousands of files a new venv's tree holds
            head, _, file_name = path.rpartition("/")
            bytecode = file_name.endswith(".pyc") and (head == "__pycache__" or head.endswith("/__pycache__"))
            (pycs if bytecode else others).append(ref)
        await self._learn_pycs(pycs)
        await self.bodies.prefetch(others)
        env.lower = lower
        now = time.time_ns()
        notes: list[tuple[int, str]] = []
        parents: set[int] = set()
        for change in changes:
            env.touch(change.parent, now)
            parent = self.inodes.find(("dir", name, change.parent))
            if parent is not None:
                notes.append((parent.ino, change.name))
                parents.add(parent.ino)
        await self.invalidate(notes, sorted(parents))
        return len(changes)

    async def remove_env(self, name: str) -> None:
        self.envs.pop(name)
        for env_name in (name, name + "/"):
            for inode in list(self.inodes.of_env(env_name, ("dir", "upper", "link", "mirror", "out"))):
                self.inodes.unkey(inode)
                inode.path = None
                inode.env = None
                self._maybe_drop(inode)
        self.root_mtime_ns = time.time_ns()
        await self.invalidate([(pyfuse3.ROOT_INODE, name)], [pyfuse3.ROOT_INODE])

    async def invalidate(self, notes: list[tuple[int, str]], directories: Sequence[int] = ()) -> None:
        """Drop the kernel's cached entries for these (directory, name) pairs,
        and the attributes and cached listings of these directories, and wait
        until it has (from a worker thread: the kernel may need the file
        system to answer while it does)."""
        if not self.mounted or not (notes or directories):
            return
        self.stats.invalidations += len(notes) + len(directories)

        def run() -> None:
            for parent, name in notes:
                try:
                    pyfuse3.invalidate_entry(parent, os.fsencode(name))
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                        raise
            for ino in directories:
                try:
                    pyfuse3.invalidate_inode(ino, attr_only=False)
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise

        await trio.to_thread.run_sync(run, limiter=self.limiter)

    def pinned_blobs(self) -> set[str]:
        """Blobs GC must keep besides the generations': store files the
        kernel still knows (a process may hold one open or mapped: in
        kernel-cached mode the view is never told), bodies being read,
        handles, and renamed store files in copy-on-write layers."""
        pinned = self.bodies.held()
        pinned |= {i.ref.blob for i in self.inodes if i.ref is not None and i.known}
        pinned |= {h.inode.ref.blob for h in self.handles.values() if h.inode.ref is not None}
        for env in self.envs.values():
            pinned |= env.overlay.store_refs()
            if env.top is not None:
                pinned |= env.top.overlay.store_refs()
        return pinned

    # -- resolution ---------------------------------------------------------------

    def _child_inode(self, env: EnvView, path: str, node: Entry | Dir | FileRef) -> Inode:
        if isinstance(node, Dir | OverlayDir):
            key: tuple[Any, ...] = ("dir", env.name, path)
            return self.inodes.make(key, lambda ino: Inode(ino, "dir", key, env=env, path=path))
        if isinstance(node, FileRef):
            ref = node
            body = self.pyc_bodies.get(ref.blob) if is_bytecode(path) else None
            if body is not None:
                key = ("pyc", ref.blob)
                target = str(body)
                return self.inodes.make(key, lambda ino: Inode(ino, "pyc", key, ref=ref, path=target))
            key = ("store", ref.blob, ref.executable)
            return self.inodes.make(key, lambda ino: Inode(ino, "store", key, ref=ref))
        if isinstance(node, UpperFile):
            key = ("upper", env.name, node.id)
            upper_id = node.id
            return self.inodes.make(key, lambda ino: Inode(ino, "upper", key, env=env, id=upper_id))
        if isinstance(node, Symlink):
            key = ("link", env.name, node.id)
            link_id = node.id
            return self.inodes.make(key, lambda ino: Inode(ino, "link", key, env=env, id=link_id))
        raise TypeError(node)

    async def _learn_pycs(self, refs: Iterable[FileRef]) -> None:
        """Find out, in one worker thread hop, which of these pycs have file
        bodies (see `pyc_bodies`)."""
        unknown = {ref.blob for ref in refs if ref.blob not in self.pyc_bodies}
        if not unknown:
            return

        def find() -> dict[str, Path | None]:
            found: dict[str, Path | None] = {}
            for blob in unknown:
                body = self.blobs.body_path(blob)
                found[blob] = body if body.is_file() else None
            return found

        self.pyc_bodies.update(await trio.to_thread.run_sync(find, limiter=self.limiter))

    def _env_dir(self, env: EnvView) -> Inode:
        return self._mirror(env, 0) if env.prefix else self._site_root(env)

    def _site_root(self, env: EnvView) -> Inode:
        return self._child_inode(env, "", env.lower)

    def _mirror(self, env: EnvView, depth: int) -> Inode:
        key = ("mirror", env.name, depth)
        return self.inodes.make(key, lambda ino: Inode(ino, "mirror", key, env=env, id=depth))

    async def _child(self, parent: Inode, text: str) -> Inode | None:
        """The inode `text` names in directory `parent` (not "." or "..")."""
        if parent.kind == "root":
            env = self.envs.get(text)
            if env is None and self.starting is not None and not self.starting.is_set():
                # Until this venv is served (not until start-up ends: start-up
                # itself looks its venvs up, and the kernel makes a second
                # lookup of a name wait for the first).
                with trio.move_on_after(STARTING_WAIT):
                    while text not in self.envs and not self.starting.is_set():
                        await self._added.wait()
                env = self.envs.get(text)
            return self._env_dir(env) if env is not None else None
        if parent.kind == "mirror":
            env = parent.env
            assert env is not None
            depth = parent.id
            if text == env.prefix[depth]:
                return self._mirror(env, depth + 1) if depth + 1 < len(env.prefix) else self._site_root(env)
            if env.top is not None:
                return self._lookup_path(env.top, join(env.step_path(depth), text))
            real = env.venv.joinpath(*env.prefix[:depth], text)
            if not await trio.to_thread.run_sync(os.path.lexists, real, limiter=self.limiter):
                return None
            key = ("out", env.name, str(real))
            return self.inodes.make(key, lambda ino: Inode(ino, "out", key, env=env, path=str(real)))
        env, path = self._dir(parent.ino)
        child = join(path, text)
        node = env.resolve(child)
        if node is None and self.on_demand is not None and (text == "__pycache__" or is_bytecode(child)):
            node = await self.on_demand(env, child)
        if node is None:
            return None
        if isinstance(node, FileRef) and is_bytecode(child):
            await self._learn_pycs([node])
        return self._child_inode(env, child, node)

    def _up(self, inode: Inode) -> Inode:
        """The inode of ".." of a directory."""
        env = inode.env
        if inode.kind == "root" or env is None:
            return self.inodes.root
        if inode.kind == "mirror":
            return self._mirror(env, inode.id - 1) if inode.id else self.inodes.root
        assert inode.path is not None
        if inode.path:
            parent = parent_of(inode.path)
            depth = env.reserved(parent)
            if depth is not None and env.site is not None:
                return self._mirror(env.site, depth)  # a directory beside site-packages
            found = self._lookup_path(env, parent)
            assert found is not None
            return found
        return self._mirror(env, len(env.prefix) - 1) if env.prefix else self.inodes.root

    def _inode(self, ino: int) -> Inode:
        inode = self.inodes.get(ino)
        if inode is None:
            raise FUSEError(errno.ESTALE)
        return inode

    def _dir(self, ino: int) -> tuple[EnvView, str]:
        """The environment and path of a directory inode (not the root)."""
        inode = self._inode(ino)
        if inode.kind == "mirror" and inode.env is not None and inode.env.top is not None:
            return inode.env.top, inode.env.step_path(inode.id)
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

    def _lookup_path(self, env: EnvView, path: str) -> Inode | None:
        node = env.resolve(path)
        return None if node is None else self._child_inode(env, path, node)

    # -- attributes -------------------------------------------------------------

    def _attrs(self, inode: Inode, st: os.stat_result | None = None) -> pyfuse3.EntryAttributes:
        if inode.attrs is not None:
            return inode.attrs  # replies copy it: sharing one object is safe
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = inode.ino
        attrs.generation = 0
        attrs.entry_timeout = CACHE_TIMEOUT
        attrs.attr_timeout = CACHE_TIMEOUT
        attrs.st_uid = self.uid
        attrs.st_gid = self.gid
        attrs.st_blksize = BLOCK_SIZE
        # One link per path: a store inode shared by many paths is not a
        # hard link that writing in place would change everywhere (editors
        # such as vim write in place into files with several links).
        attrs.st_nlink = 1
        if inode.kind == "store":
            ref = inode.ref
            assert ref is not None
            attrs.st_mode = stat.S_IFREG | (0o755 if ref.executable else 0o644)
            attrs.st_size = ref.size
            t = content_mtime_ns(ref.blob)
            attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = t
            attrs.st_blocks = (attrs.st_size + 511) // 512
            inode.attrs = attrs
            return attrs
        if inode.kind == "upper":
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
        elif inode.kind == "pyc":
            assert inode.ref is not None
            attrs.st_mode = stat.S_IFLNK | 0o777
            attrs.st_size = len(os.fsencode(inode.path or ""))
            t = content_mtime_ns(inode.ref.blob)
            attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = t
            attrs.st_blocks = 0
            inode.attrs = attrs
            return attrs
        elif inode.kind in ("link", "out"):
            assert inode.env is not None
            if inode.kind == "out":
                target = inode.path or ""
                times = DirTimes(inode.env.born_ns, inode.env.born_ns, inode.env.born_ns)
            else:
                path = self._upper_path(inode)
                entry = inode.env.overlay.entries.get(path) if path else None
                target = entry.target if isinstance(entry, Symlink) else ""
                times = inode.env.times_of(path or "")
            attrs.st_mode = stat.S_IFLNK | 0o777
            attrs.st_size = len(os.fsencode(target))
            attrs.st_atime_ns, attrs.st_mtime_ns, attrs.st_ctime_ns = (
                times.atime_ns,
                times.mtime_ns,
                times.ctime_ns,
            )
        elif inode.kind == "dir":
            assert inode.env is not None
            assert inode.path is not None
            own = inode.env.overlay.entries.get(inode.path)
            attrs.st_mode = stat.S_IFDIR | (own.mode if isinstance(own, OverlayDir) else 0o755)
            attrs.st_size = 0
            times = inode.env.times_of(inode.path)
            attrs.st_atime_ns, attrs.st_mtime_ns, attrs.st_ctime_ns = (
                times.atime_ns,
                times.mtime_ns,
                times.ctime_ns,
            )
        elif inode.kind == "mirror" and inode.env is not None and inode.env.top is not None:
            top = inode.env.top
            path = inode.env.step_path(inode.id)
            own = top.overlay.entries.get(path)
            attrs.st_mode = stat.S_IFDIR | (own.mode if isinstance(own, OverlayDir) else 0o755)
            attrs.st_size = 0
            times = top.times_of(path)
            attrs.st_atime_ns, attrs.st_mtime_ns, attrs.st_ctime_ns = (
                times.atime_ns,
                times.mtime_ns,
                times.ctime_ns,
            )
        else:  # root, mirror
            mtime = self.root_mtime_ns if inode.kind == "root" else self.started_ns
            attrs.st_mode = stat.S_IFDIR | 0o755
            attrs.st_size = 0
            attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = mtime
        attrs.st_blocks = (attrs.st_size + 511) // 512
        return attrs

    async def _stat_upper(self, inode: Inode) -> os.stat_result:
        assert inode.env is not None
        open_fd = inode.fd
        if open_fd is None:
            open_fd = next(
                (h.fd for h in self.handles.values() if h.inode is inode and h.fd is not None), None
            )
        if open_fd is not None:
            return os.fstat(open_fd)  # an open descriptor: answered from memory
        return await trio.to_thread.run_sync(os.stat, inode.env.overlay.body(inode.id), limiter=self.limiter)

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
        _check_name(name)
        text = os.fsdecode(name)
        parent = self._inode(parent_inode)
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
            beside_venv = parent.kind == "mirror" and parent.env is not None and parent.env.top is None
            missing.entry_timeout = 0 if beside_venv else CACHE_TIMEOUT
            return missing
        attrs = await self._entry(found)
        found.lookups += 1
        return attrs

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
        if inode.known or inode.kind == "root":
            return
        if inode.kind == "dir" and inode.path is not None:
            inode.listing = None
            return  # directories stay while their environment does
        if inode.fd is not None:
            os.close(inode.fd)
            inode.fd = None
        self.inodes.drop(inode)

    @handler
    async def getattr(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        found = self._inode(inode)
        if found.kind == "dir":
            env, path = self._dir(inode)
            if not isinstance(env.resolve(path), Dir | OverlayDir):
                raise FUSEError(errno.ENOENT)
        return await self._entry(found)

    @handler
    async def readlink(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.FileNameT:
        found = self.inodes.get(inode)
        if found is not None and found.kind in ("out", "pyc") and found.path is not None:
            return os.fsencode(found.path)
        if found is None or found.kind != "link" or found.env is None:
            raise FUSEError(errno.EINVAL)
        path = self._upper_path(found)
        entry = found.env.overlay.entries.get(path) if path else None
        if not isinstance(entry, Symlink):
            raise FUSEError(errno.ENOENT)
        return os.fsencode(entry.target)

    # -- directories --------------------------------------------------------------

    async def _list(self, inode: Inode) -> list[str]:
        if inode.kind == "root":
            return sorted(self.envs)
        if inode.kind == "mirror":
            env = inode.env
            assert env is not None
            if env.top is not None:
                return sorted({env.prefix[inode.id], *env.top.names(env.step_path(inode.id))})
            real = env.venv.joinpath(*env.prefix[: inode.id])
            on_disk = await trio.to_thread.run_sync(os.listdir, real, limiter=self.limiter)
            return sorted({env.prefix[inode.id], *on_disk})
        env, path = self._dir(inode.ino)
        return env.names(path)

    @handler
    async def opendir(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.FileHandleT:
        if self.kernel_caching:
            # Once: the kernel then opens directories itself and caches listings.
            raise FUSEError(errno.ENOSYS)
        found = self._inode(inode)
        # A listing is a snapshot taken at opendir: offsets are indices into
        # it, so entries added or removed meanwhile never shift the others.
        fh = self._new_fh()
        self.listings[fh] = (found, await self._list(found))
        return pyfuse3.FileHandleT(fh)

    @handler
    async def readdir(
        self,
        fh: pyfuse3.FileHandleT,
        start_id: int,
        token: pyfuse3.ReaddirToken,
        inode: pyfuse3.InodeT | None = None,
    ) -> None:
        if fh == 0 and inode is not None:
            # No-opendir mode: the kernel reads a listing from offset 0 to the
            # end into its cache; the names taken at offset 0 are paged through.
            directory = self._inode(inode)
            if start_id == 0 or directory.listing is None:
                directory.listing = await self._list(directory)
            names = directory.listing
        else:
            listing = self.listings.get(fh)
            if listing is None:
                raise FUSEError(errno.EBADF)
            directory, names = listing
        lower = None
        if directory.kind == "dir" and directory.env is not None and directory.path is not None:
            lower = directory.env.plain_lower(directory.path)
            if lower is not None and directory.path.rpartition("/")[2] == "__pycache__":
                await self._learn_pycs(ref for ref in lower.entries.values() if isinstance(ref, FileRef))
        for index in range(start_id, len(names)):
            name = names[index]
            if lower is not None:
                # Resolved once per request, not once per entry: the layer has
                # nothing here, so every child is the generation's.
                node = lower.entries.get(name)
                if node is None:
                    continue  # removed since the listing was taken
                assert directory.env is not None
                assert directory.path is not None
                child: Inode | None = self._child_inode(directory.env, join(directory.path, name), node)
            else:
                if directory.kind == "dir" and directory.path is None:
                    return  # the directory went away
                child = await self._child(directory, name)
            if child is None:
                continue  # removed since the listing was taken
            attrs = await self._entry(child)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attrs, index + 1):
                return
            child.lookups += 1

    @handler
    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        self.listings.pop(fh, None)

    @handler
    async def fsyncdir(
        self, fh: pyfuse3.FileHandleT, datasync: bool, inode: pyfuse3.InodeT | None = None
    ) -> None:
        listing = self.listings.get(fh)
        directory = listing[0] if listing is not None else self.inodes.get(inode or 0)
        if directory is not None and directory.env is not None:
            env = directory.env.top if directory.kind == "mirror" and directory.env.top else directory.env
            await trio.to_thread.run_sync(env.overlay.sync, limiter=self.limiter)

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _writable_dir(self, parent_inode: int, name: bytes) -> tuple[EnvView, str]:
        _check_name(name)
        env, path = self._dir(parent_inode)
        text = os.fsdecode(name)
        if not text or text in (".", "..") or "/" in text:
            raise FUSEError(errno.EINVAL)
        child = join(path, text)
        if env.reserved(child) is not None:
            raise FUSEError(errno.EBUSY)  # lib/, lib/python3.X/, site-packages: the view's own
        return env, child

    @handler
    async def mkdir(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: pyfuse3.ModeT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        parent = self.inodes.get(parent_inode)
        if (
            parent is not None
            and parent.kind == "mirror"
            and parent.env is not None
            and parent.env.top is None
        ):
            # Beside site-packages (pip's `../../../share/...` for .data/data):
            # the directory is made in the venv itself and shows as a symlink
            # to it, so mkdir reports that the name exists now.
            _check_name(name)
            real = parent.env.venv.joinpath(*parent.env.prefix[: parent.id], os.fsdecode(name))
            await trio.to_thread.run_sync(lambda: real.mkdir(mode=mode & 0o7777), limiter=self.limiter)
            raise FUSEError(errno.EEXIST)
        env, path = self._writable_dir(parent_inode, name)
        if env.resolve(path) is not None:
            raise FUSEError(errno.EEXIST)
        # Over a removed generation directory the new one starts empty.
        hidden = env.lower_at(path, beneath=True) is not None
        env.overlay.put(path, OverlayDir(opaque=hidden, mode=mode & 0o7777))
        env.touch(parent_of(path))
        env.touch(path)
        inode = self._child_inode(env, path, env.overlay.entries[path])
        attrs = self._attrs(inode)
        inode.lookups += 1
        return attrs

    @handler
    async def rmdir(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        env, path = self._writable_dir(parent_inode, name)
        node = env.resolve(path)
        if node is None:
            raise FUSEError(errno.ENOENT)
        if not isinstance(node, Dir | OverlayDir):
            raise FUSEError(errno.ENOTDIR)
        if env.names(path):
            raise FUSEError(errno.ENOTEMPTY)
        self._remove(env, path, directory=True)

    def _remove(self, env: EnvView, path: str, *, directory: bool) -> None:
        """Take `path` out of the merged tree; a directory's inodes below it
        lose their paths."""
        env.remove(path, directory=directory)
        env.touch(parent_of(path))
        if not directory:
            return
        for inode in list(self.inodes.of_env(env.name, ("dir",))):
            if inode.path == path or (inode.path or "").startswith(path + "/"):
                self.inodes.unkey(inode)
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
        if env.resolve(path) is not None:
            raise FUSEError(errno.EEXIST)
        if self.bytecode_levels and _pyc_of_store_source(env, path, self.bytecode_levels):
            # The shared pyc is compiled in the background (docs/BYTECODE.md):
            # Python goes on without writing its own (it ignores OSError there).
            raise FUSEError(errno.EACCES)
        upper = UpperFile(env.overlay.new_id(), mode & 0o7777)
        body = env.overlay.body(upper.id)
        fd = await trio.to_thread.run_sync(
            lambda: os.open(body, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600),
            limiter=self.limiter,
        )
        env.overlay.put(path, upper)
        env.touch(parent_of(path))
        inode = self._child_inode(env, path, upper)
        attrs = self._attrs(inode, os.fstat(fd))
        inode.lookups += 1
        self.stats.opens += 1
        if self.kernel_caching:
            # No RELEASE will come: the inode holds the descriptor (fh 0).
            _keep_first_fd(inode, fd)
            return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(0)), attrs
        fh = self._new_fh()
        self.handles[fh] = Handle(inode, fd=fd, writable=True)
        inode.opens += 1
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
        if env.resolve(path) is not None:
            raise FUSEError(errno.EEXIST)
        link = Symlink(env.overlay.new_id(), os.fsdecode(target))
        env.overlay.put(path, link)
        env.touch(parent_of(path))
        env.touch(path)
        inode = self._child_inode(env, path, link)
        attrs = self._attrs(inode)
        inode.lookups += 1
        return attrs

    @handler
    async def unlink(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        env, path = self._writable_dir(parent_inode, name)
        node = env.resolve(path)
        if node is None:
            raise FUSEError(errno.ENOENT)
        if isinstance(node, Dir | OverlayDir):
            raise FUSEError(errno.EISDIR)
        self._remove(env, path, directory=False)
        if isinstance(node, UpperFile):
            # Open files keep their descriptors; the body goes now.
            await self._unlink_body(env, node.id)

    async def _unlink_body(self, env: EnvView, upper_id: int) -> None:
        """Remove a layer file's body. Whoever may still read it gets a
        descriptor first: open handles, and in kernel-cached mode the inode
        itself while the kernel knows it (a process may hold it open)."""
        body_path = env.overlay.body(upper_id)
        holders: list[Handle | Inode] = [
            h
            for h in self.handles.values()
            if h.inode.kind == "upper" and h.inode.env is env and h.inode.id == upper_id
        ]
        inode = self.inodes.find(("upper", env.name, upper_id))
        if inode is not None and self.kernel_caching and inode.known:
            holders.append(inode)

        def pin_and_unlink() -> None:
            for holder in holders:
                if holder.fd is None:
                    holder.fd = os.open(body_path, os.O_RDWR | os.O_CLOEXEC)
            body_path.unlink()

        await trio.to_thread.run_sync(pin_and_unlink, limiter=self.limiter)

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
        node = env.resolve(src)
        if node is None:
            raise FUSEError(errno.ENOENT)
        if src == dst:
            return
        target = env.resolve(dst)
        is_dir = isinstance(node, Dir | OverlayDir)
        if target is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise FUSEError(errno.EEXIST)
            target_dir = isinstance(target, Dir | OverlayDir)
            if is_dir and not target_dir:
                raise FUSEError(errno.ENOTDIR)
            if target_dir and not is_dir:
                raise FUSEError(errno.EISDIR)
            if target_dir and env.names(dst):
                raise FUSEError(errno.ENOTEMPTY)
        if is_dir and (dst + "/").startswith(src + "/"):
            raise FUSEError(errno.EINVAL)
        moved = dict(env.capture(src, node))
        # Only a directory takes directory inodes along (renaming a file,
        # which pip and uv do for every file they write, scans nothing).
        moving_dirs = [
            inode
            for inode in (self.inodes.of_env(env.name, ("dir",)) if is_dir else ())
            if inode.path is not None and (inode.path == src or inode.path.startswith(src + "/"))
        ]
        for inode in moving_dirs:
            self.inodes.unkey(inode)
        replaced_body = target.id if isinstance(target, UpperFile) else None
        if target is not None:
            self._remove(env, dst, directory=isinstance(target, Dir | OverlayDir))
        self._remove(env, src, directory=is_dir)
        # A directory arrives opaque (capture), so nothing of the generation
        # at `dst` shows through it; a file simply replaces the whiteout.
        for rel, entry in moved.items():
            env.overlay.put(join(dst, rel) if rel else dst, entry)
        env.touch(parent_of(dst))
        for inode in moving_dirs:
            assert inode.path is not None
            inode.path = dst + inode.path[len(src) :]
            self.inodes.rekey(inode, ("dir", env.name, inode.path))
        if replaced_body is not None:
            await self._unlink_body(env, replaced_body)

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
        found = self._inode(inode)
        if (fields.update_uid and attr.st_uid != self.uid) or (fields.update_gid and attr.st_gid != self.gid):
            raise FUSEError(errno.EPERM)
        changes = fields.update_size or fields.update_mode or fields.update_mtime or fields.update_atime
        if found.kind in ("store", "pyc", "root"):
            if changes:
                raise FUSEError(errno.EROFS)
            return self._attrs(found)
        if found.kind == "out" or (found.kind == "mirror" and (found.env is None or found.env.top is None)):
            if changes:
                raise FUSEError(errno.EPERM)
            return self._attrs(found)
        atime = attr.st_atime_ns if fields.update_atime else None
        mtime = attr.st_mtime_ns if fields.update_mtime else None
        if found.kind in ("dir", "mirror"):
            env, path = self._dir(inode)
            if fields.update_size:
                raise FUSEError(errno.EISDIR)
            if fields.update_mode:
                if not path:
                    raise FUSEError(errno.EPERM)  # the venv's own directory keeps its mode
                own = env.overlay.entries.get(path)
                opaque = own.opaque if isinstance(own, OverlayDir) else False
                env.overlay.put(path, OverlayDir(opaque=opaque, mode=attr.st_mode & 0o7777))
                env.changed_attributes(path)
            if fields.update_mtime or fields.update_atime:
                env.set_times(path, atime, mtime)
            return self._attrs(found)
        if found.kind == "link":
            link_path = self._upper_path(found)
            if (
                link_path is not None
                and found.env is not None
                and (fields.update_mtime or fields.update_atime)
            ):
                found.env.set_times(link_path, atime, mtime)
            return self._attrs(found)
        assert found.env is not None
        body = found.env.overlay.body(found.id)
        handle = self.handles.get(fh) if fh else None
        fd = handle.fd if handle is not None and handle.fd is not None else found.fd
        target: int | Path = fd if fd is not None else body
        if fields.update_mode:
            upper_path = self._upper_path(found)
            if upper_path is not None:
                found.env.overlay.put(upper_path, UpperFile(found.id, attr.st_mode & 0o7777))
        size = attr.st_size if fields.update_size else None

        def apply() -> os.stat_result:
            if size is not None:
                os.truncate(target, size)
            if fields.update_mode:
                # The body keeps its own mode; chmod-ing it moves its ctime,
                # as the chmod the user made must.
                os.chmod(target, 0o600)
            if atime is not None or mtime is not None:
                st = os.stat(target)
                os.utime(
                    target,
                    ns=(
                        atime if atime is not None else st.st_atime_ns,
                        mtime if mtime is not None else st.st_mtime_ns,
                    ),
                )
            return os.stat(target)

        if isinstance(target, int) and size is None:
            # Metadata of an open descriptor: no disk read, cheaper here than
            # a worker thread (pip and uv chmod and utime every file they write).
            return self._attrs(found, apply())
        return self._attrs(found, await trio.to_thread.run_sync(apply, limiter=self.limiter))

    @handler
    async def open(
        self, inode: pyfuse3.InodeT, flags: pyfuse3.FlagT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        if self.kernel_caching:
            # Once: the kernel then opens files itself, keeps their pages, and
            # sends reads and writes by inode (truncation as setattr).
            raise FUSEError(errno.ENOSYS)
        found = self._inode(inode)
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
            body = self.bodies.known(found.ref)
            if body is not None:
                handle.body = self.bodies.hold(found.ref, body)
            self.handles[fh] = handle
            found.opens += 1
            # The content behind this inode never changes: keep its pages.
            return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=True)
        if found.kind == "upper":
            assert found.env is not None
            body_path = found.env.overlay.body(found.id)
            writable = bool(flags & (os.O_WRONLY | os.O_RDWR))
            truncate = bool(flags & os.O_TRUNC) and writable
            fd = None
            if writable:

                def open_body() -> int:
                    fd = os.open(body_path, os.O_RDWR | os.O_CLOEXEC)
                    if truncate:  # atomic_o_trunc: the kernel leaves it to open
                        os.ftruncate(fd, 0)
                    return fd

                fd = await trio.to_thread.run_sync(open_body, limiter=self.limiter)
            # A read-only handle opens the body at its first read (see _unlink_body).
            self.handles[fh] = Handle(found, fd=fd, writable=writable)
            found.opens += 1
            # Only the kernel writes these bodies, so its cached pages stay true
            # (a truncating open drops them itself).
            return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=not truncate)
        raise FUSEError(errno.EISDIR if found.kind in ("dir", "root", "mirror") else errno.ELOOP)

    def _keep_first_body(self, handle: Handle, ref: FileRef, body: Body) -> Body:
        """Two reads of one handle may race to open its body: the first wins."""
        if handle.body is None:
            handle.body = body
        else:
            self.bodies.release(ref, body)
        return handle.body

    async def _upper_fd(self, holder: Handle | Inode, inode: Inode) -> int:
        """The descriptor of an upper file's body, opened at first use."""
        if holder.fd is not None:
            return holder.fd
        assert inode.env is not None
        body_path = inode.env.overlay.body(inode.id)
        flags = os.O_RDWR if isinstance(holder, Inode) else os.O_RDONLY
        opened = await trio.to_thread.run_sync(
            lambda: os.open(body_path, flags | os.O_CLOEXEC), limiter=self.limiter
        )
        return _keep_first_fd(holder, opened)  # readahead may have raced this read

    @handler
    async def read(
        self, fh: pyfuse3.FileHandleT, off: int, size: int, inode: pyfuse3.InodeT | None = None
    ) -> bytes:
        self.stats.reads += 1
        if fh == 0 and inode is not None:  # no-open mode
            found = self._inode(inode)
            if found.kind == "store":
                assert found.ref is not None
                data = await self.bodies.read(found.ref, size, off)
            elif found.kind == "upper":
                fd = await self._upper_fd(found, found)
                data = await self._read_upper(fd, size, off)
            else:
                raise FUSEError(errno.EISDIR)
            self.stats.bytes_read += len(data)
            return data
        handle = self.handles.get(fh)
        if handle is None:
            raise FUSEError(errno.EBADF)
        ref = handle.inode.ref
        if ref is not None:
            body = handle.body or self._keep_first_body(handle, ref, await self.bodies.acquire(ref))
            data = await self.bodies.read_from(body, ref, size, off)
        else:
            fd = await self._upper_fd(handle, handle.inode)
            data = await self._read_upper(fd, size, off)
        self.stats.bytes_read += len(data)
        return data

    async def _read_upper(self, fd: int, size: int, off: int) -> bytes:
        """A layer file: its size is what the body's is, so a short read may be
        the end of the file; only a full read is taken from the event loop."""
        cached = pread_cached(fd, size, off, size)
        if cached is not None:
            return cached
        return await trio.to_thread.run_sync(os.pread, fd, size, off, limiter=self.limiter)

    @handler
    async def write(
        self, fh: pyfuse3.FileHandleT, off: int, buf: bytes, inode: pyfuse3.InodeT | None = None
    ) -> int:
        if fh == 0 and inode is not None:  # no-open mode
            found = self._inode(inode)
            if found.kind != "upper":
                raise FUSEError(errno.EROFS if found.kind == "store" else errno.EBADF)
            fd = await self._upper_fd(found, found)
        else:
            handle = self.handles.get(fh)
            if handle is None or not handle.writable or handle.fd is None:
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
    async def fsync(
        self, fh: pyfuse3.FileHandleT, datasync: bool, inode: pyfuse3.InodeT | None = None
    ) -> None:
        handle = self.handles.get(fh)
        found = handle.inode if handle is not None else self.inodes.get(inode or 0)
        fd = handle.fd if handle is not None else (found.fd if found is not None else None)
        if fd is None or found is None:
            return
        await trio.to_thread.run_sync(os.fdatasync if datasync else os.fsync, fd, limiter=self.limiter)
        if found.env is not None:
            await trio.to_thread.run_sync(found.env.overlay.sync, limiter=self.limiter)

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
        if handle.body is not None and inode.ref is not None:
            self.bodies.release(inode.ref, handle.body)
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
        data.f_namemax = NAME_MAX
        return data

    def close_bodies(self) -> None:
        """Close every cached body and layer descriptor (after unmount)."""
        self.bodies.close()
        for inode in self.inodes:
            if inode.fd is not None:
                os.close(inode.fd)
                inode.fd = None

    def snapshot(self, name: str) -> list[tuple[str, Entry | FileRef]]:
        """Every path of an environment's merged tree (EnvView.snapshot)."""
        return self.envs[name].snapshot()

    def snapshot_top(self, name: str) -> list[tuple[str, Entry | FileRef]]:
        """Every path of the venv's root beside site-packages (symlink mode)."""
        top = self.envs[name].top
        return [] if top is None else top.snapshot()

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
            if isinstance(entry, Symlink) or (isinstance(entry, OverlayDir) and not env.names(path)):
                parent = path
                while parent:
                    kept_dirs.add(parent)
                    parent = parent_of(parent)
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
            holder = self.inodes.find(("dir", name, parent_of(path)))
            if holder is not None:
                notes.append((holder.ino, path.rpartition("/")[2]))
            if isinstance(entry, UpperFile):
                await self._unlink_body(env, entry.id)
        await self.invalidate(notes)
        return len(notes)

    # -- the daemon's own writes into a venv's root (symlink mode) ---------------------
    #
    # The daemon never reads or writes through its own mount: a worker thread
    # waiting on the view while the loop that answers it stops (SIGTERM) or
    # dies (SIGKILL) would wait for ever, and keep the process and the mount
    # alive with it (found by `make faults`). Scripts, headers and data of an
    # install go straight into the root layer, as the view's own writes do.

    def root_files(self, name: str) -> dict[str, Path]:
        """The regular files of the venv's root layer: path -> body."""
        top = self.envs[name].top
        if top is None:
            return {}
        overlay = top.overlay
        return {p: overlay.body(e.id) for p, e in overlay.entries.items() if isinstance(e, UpperFile)}

    def new_root_bodies(self, name: str, count: int) -> list[tuple[int, Path]]:
        """Ids and body paths for files the daemon is about to place in the
        venv's root (`place_root_files`); the caller writes the bodies."""
        top = self.envs[name].top
        assert top is not None, "a root layer exists in symlink mode only"
        ids = [top.overlay.new_id() for _ in range(count)]
        return [(upper_id, top.overlay.body(upper_id)) for upper_id in ids]

    async def place_root_files(
        self, name: str, placed: dict[str, UpperFile], removed: Sequence[str] = ()
    ) -> None:
        """Put files whose bodies are written (`new_root_bodies`) at their
        paths in the venv's root, replacing what is there, making the
        directories on the way; remove `removed`. The kernel forgets the
        names it knew."""
        env = self.envs[name]
        top = env.top
        assert top is not None, "a root layer exists in symlink mode only"
        notes: list[tuple[int, str]] = []
        gone: list[int] = []

        def note(path: str) -> None:
            parent = parent_of(path)
            depth = top.reserved(parent)
            holder = (
                self.inodes.find(("mirror", env.name, depth))
                if depth is not None
                else self.inodes.find(("dir", top.name, parent))
            )
            if holder is not None:
                notes.append((holder.ino, path.rpartition("/")[2]))

        for path in removed:
            old = top.overlay.entries.get(path)
            if isinstance(old, UpperFile):
                self._remove(top, path, directory=False)
                gone.append(old.id)
                note(path)
        for path, upper in sorted(placed.items()):
            ancestor = ""
            for part in parent_of(path).split("/") if parent_of(path) else ():
                ancestor = join(ancestor, part)
                if top.reserved(ancestor) is None and top.resolve(ancestor) is None:
                    top.overlay.put(ancestor, OverlayDir(opaque=False, mode=0o755))
                    top.touch(parent_of(ancestor))
                    note(ancestor)
            old = top.overlay.entries.get(path)
            if isinstance(old, UpperFile):
                gone.append(old.id)
            top.overlay.put(path, upper)
            top.touch(parent_of(path))
            note(path)
        for upper_id in gone:
            await self._unlink_body(top, upper_id)
        await self.invalidate(notes)

    def layer_files(self, name: str) -> dict[str, FileRef | UpperFile]:
        """The merged tree's regular files: store files and layer files."""
        return {path: node for path, node in self.snapshot(name) if isinstance(node, FileRef | UpperFile)}
