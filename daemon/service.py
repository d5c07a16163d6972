"""What the daemon does for its clients: store operations that change an
environment, each followed by the view catching up, and the venv's
site-packages switched to the view and back.

Store calls (synchronous, LMDB) and disk work run on worker threads; the view
is updated on the trio thread, so its state has a single writer. Operations
on one environment are serialised; different environments proceed at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio

from . import bytecode, linking, rootlayer
from .crashpoints import crash_point
from .errors import NotAVenv, StoreError, UnknownEnv
from .ingest import Progress
from .notices import DownNotices
from .overlay import Entry, Overlay, OverlayDir, StoreFile, Symlink, UpperFile, Whiteout
from .schema import EnvRecord, FileRef, GenerationRecord, PackageRecord
from .store import GCReport, Store, check_names
from .tree import Dir, TreeBuilder
from .venvs import sha256_file, venv_path, venv_root
from .view import ViewOperations, content_mtime_ns

log = logging.getLogger("nwcache.daemon")
T = TypeVar("T")


def _inside(root: Path, rel: str) -> Path:
    """`root/rel`, refusing any path that would land outside `root` (by `..`,
    an absolute path or a symlink on the way)."""
    target = root / rel
    real_parent = os.path.realpath(target.parent)
    if os.path.isabs(rel) or not (real_parent == str(root) or real_parent.startswith(str(root) + os.sep)):
        raise StoreError(
            f"{rel} would be written outside {root}", hint="the archive is hostile; nothing more was written"
        )
    return target


@dataclass
class BytecodeCounts:
    """What compiling has cost since the daemon started (stats, tests)."""

    sources: int = 0  # sources handed to a worker
    failed: int = 0  # of which did not compile
    workers: int = 0  # worker processes started
    running: int = 0  # worker processes alive now
    seconds: float = 0.0  # wall time of the worker processes, added up
    errors: int = 0  # attempts that failed for a reason other than a source
    last_error: str | None = None


def _remove_prefixed(prefix: str) -> None:
    """A compile's job listings and whatever pyc files the store did not take."""
    folder, _, stem = prefix.rpartition("/")
    for leftover in Path(folder).glob(f"{stem}*"):
        leftover.unlink(missing_ok=True)


def _temp_of(target: Path) -> Path:
    """Where a file outside site-packages is written before it is renamed into place."""
    return target.with_name(f".{target.name}.nwcache-new")


def env_dir_name(env: EnvRecord) -> str:
    return f"{os.path.basename(env.path)}-{env.id.hex()[:12]}"  # not pathlib: several calls per request


class Service:
    def __init__(
        self,
        store: Store,
        view: ViewOperations,
        mountpoint: Path,
        *,
        bytecode_levels: tuple[int, ...] | None = None,
    ) -> None:
        self.store = store
        self.view = view
        self.mountpoint = mountpoint
        self.builder = TreeBuilder()
        self.limiter = trio.CapacityLimiter(max(2, os.cpu_count() or 2))
        self._locks: dict[str, trio.Lock] = {}
        self.overlays: dict[str, Overlay] = {}
        # Symlink mode: the layer holding each venv's root beside site-packages.
        self.tops: dict[str, Overlay] = {}
        self.bytecode_levels = (
            bytecode.parse_levels(os.environ.get("NWCACHE_BYTECODE"))
            if bytecode_levels is None
            else bytecode_levels
        )
        # One compiler process per core but one, which is left to the
        # processes importing while the background compile runs (measured in
        # docs/BENCH-INSTALL.md); one compile per interpreter at a time, so
        # that environments installing the same package at once compile it once.
        self.compilers = trio.CapacityLimiter(max(1, (os.cpu_count() or 1) - 1))
        self._compile_locks: dict[str, trio.Lock] = {}
        self.bytecode_counts = BytecodeCounts()
        view.bytecode_levels = self.bytecode_levels
        # The background compiler's queue (venv paths, in order), the one it
        # is compiling, and per venv how many sources lack bytecode: still
        # to compile (`_left`) or found when its tree was last built.
        self._to_compile: dict[str, None] = {}
        self._compiling: str | None = None
        self._left: dict[str, int] = {}
        self._missing: dict[str, int] = {}
        self._bytecode_event = trio.Event()
        self._background_limiter = trio.CapacityLimiter(1)
        # What each venv says while the daemon is down (set by run_service).
        self.notices: DownNotices | None = None

    async def _run(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self.limiter)

    def _lock(self, path: str) -> trio.Lock:
        return self._locks.setdefault(venv_path(path), trio.Lock())

    def overlay_root(self, env: EnvRecord) -> Path:
        return self.store.home / "overlay" / env.id.hex()

    def top_root(self, env: EnvRecord) -> Path:
        """The layer of the venv's root beside site-packages (daemon/rootlayer.py)."""
        return self.store.home / "roots" / env.id.hex()

    def site(self, env: EnvRecord) -> Path:
        return Path(env.path) / env.site_packages

    def target(self, env: EnvRecord) -> Path:
        return self.mountpoint / env_dir_name(env) / env.site_packages

    def venv_target(self, env: EnvRecord) -> Path:
        """What a venv registered in symlink mode links to: its directory in the view."""
        return self.mountpoint / env_dir_name(env)

    async def _site(self, env: EnvRecord) -> dict[str, FileRef]:
        """The environment's current site-packages with the shared bytecode
        of its interpreter that is compiled already; how many sources lack
        theirs is kept for `bytecode_state`."""
        tree = await self._run(partial(self.store.tree, env.path))
        if not self.bytecode_levels:
            return tree
        known = await self._run(
            partial(
                self.store.bytecode_known,
                env.interpreter,
                bytecode.sources(tree).values(),
                self.bytecode_levels,
            )
        )
        self._missing[env.path] = len(bytecode.missing(tree, known, self.bytecode_levels))
        return bytecode.with_bytecode(tree, known, env.cache_tag)

    # -- bytecode in the background -------------------------------------------------------

    def _queue_compile(self, env: EnvRecord) -> None:
        """Compile what the environment's current generation lacks, after
        the operation that called this has returned."""
        if not self.bytecode_levels:
            return
        self._to_compile[env.path] = None
        self._bytecode_changed()

    def _bytecode_changed(self) -> None:
        self._bytecode_event.set()
        self._bytecode_event = trio.Event()

    async def compile_in_background(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The background compiler: one environment at a time, in the order
        they were queued, its worker processes at a lower priority than
        anything else (bytecode.NICE). Runs until cancelled."""
        task_status.started()
        while True:
            while not self._to_compile:
                await self._bytecode_event.wait()
            path = next(iter(self._to_compile))
            del self._to_compile[path]
            self._compiling = path
            try:
                await self._compile_env(path)
            except Exception as exc:  # a cache: the daemon serves on, and says what went wrong
                log.exception("compiling bytecode for %s failed", path)
                self.bytecode_counts.errors += 1
                self.bytecode_counts.last_error = f"{path}: {exc}"
            finally:
                self._compiling = None
                self._left.pop(path, None)
                self._bytecode_changed()

    async def compiled(self, path: str | os.PathLike[str] | None = None) -> None:
        """Wait until nothing is queued or compiling (for `path`, or at all)."""
        real = None if path is None else venv_path(path)  # a registered venv is a link into the view

        def busy() -> bool:
            if real is None:
                return bool(self._to_compile) or self._compiling is not None
            return real in self._to_compile or self._compiling == real

        while busy():
            await self._bytecode_event.wait()

    async def bytecode_of(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """What an install answers about its environment's bytecode: how
        many sources are still to compile, and the last failure to compile
        that was not a source's fault (None if there is none)."""
        env = await self._run(partial(self.store.get_env, path))
        pending = await self._run(self.store.compile_pending)
        return {
            "pending": self._left.get(env.path, self._missing.get(env.path, 0)) if env.id in pending else 0,
            "error": pending[env.id][1] if env.id in pending else None,
        }

    async def bytecode_pending(self) -> list[dict[str, Any]]:
        """`nwcache stats`: every environment whose bytecode is not complete,
        with the sources still to compile (known once its tree was built),
        whether it is compiling now, and the last failure."""
        pending = await self._run(self.store.compile_pending)
        out = []
        for env in await self._run(self.store.envs):
            if env.id not in pending:
                continue
            out.append(
                {
                    "path": env.path,
                    "generation": pending[env.id][0],
                    "sources": self._left.get(env.path, self._missing.get(env.path)),
                    "compiling": self._compiling == env.path,
                    "error": pending[env.id][1],
                }
            )
        return sorted(out, key=lambda e: str(e["path"]))

    async def _compile_env(self, path: str) -> None:
        """Compile the sources of an environment's current generation that
        lack bytecode, in batches that grow (256, 512, ...), the shallowest
        paths first (packages' `__init__` before their submodules); after
        each batch the view serves the new pycs. The store's `compiling`
        entry goes once every source has an entry, and keeps the error
        otherwise (resumed at the next start or change)."""
        try:
            env = await self._background(partial(self.store.get_env, path))
            tree = await self._background(partial(self.store.tree, env.path))
        except UnknownEnv:
            return  # unregistered meanwhile
        known = await self._background(
            partial(
                self.store.bytecode_known,
                env.interpreter,
                bytecode.sources(tree).values(),
                self.bytecode_levels,
            )
        )
        missing = bytecode.missing(tree, known, self.bytecode_levels)
        paths = {ref.blob: p for p, ref in tree.items() if ref.blob in missing}
        order = sorted(missing, key=lambda blob: (paths[blob].count("/"), paths[blob]))
        self._left[path] = len(order)
        error: str | None = None
        size = 256
        while order and error is None:
            batch = {blob: missing[blob] for blob in order[:size]}
            order = order[size:]
            size *= 2
            found: dict[tuple[str, int], FileRef | None] = {}
            try:
                found = await self._compile(env, batch)
            except (OSError, StoreError) as exc:
                error = str(exc)
            self._left[path] = len(order) + (len(batch) if error is not None else 0)
            self._missing[path] = self._left[path]
            async with self._lock(env.path):
                await self._serve_pycs(env, tree, found)
            crash_point("bytecode-batch")
        if error is not None:
            counts = self.bytecode_counts
            counts.errors += 1
            counts.last_error = f"{env.path}: {error}"
            log.warning("compiling bytecode for %s failed: %s", env.path, error)
        await self._background(partial(self.store.compile_settled, env.id, env.current, error))

    async def _serve_pycs(
        self, env: EnvRecord, tree: dict[str, FileRef], found: dict[tuple[str, int], FileRef | None]
    ) -> None:
        """The view serves the pycs a batch compiled: added to the tree it
        serves (only the directories on their way are rebuilt) if the
        environment is still at the generation `tree` is of, else its whole
        current tree again. Under the environment's lock."""
        name = env_dir_name(env)
        if env.path not in self.overlays or name not in self.view.envs:
            return  # unregistered meanwhile
        now = await self._background(partial(self.store.get_env, env.path))
        if now.current != env.current:
            await self._refresh(now)
            return
        blobs = {blob for blob, _level in found}
        sources = {p: r for p, r in tree.items() if r.blob in blobs}
        pycs = {
            p: r for p, r in bytecode.with_bytecode(sources, found, env.cache_tag).items() if p not in sources
        }
        if pycs:
            root = await self._background(partial(self.builder.add_files, self.view.envs[name].lower, pycs))
            await self.view.replace_tree(name, root)

    async def _background(self, fn: Callable[[], T]) -> T:
        """A worker thread for background work: at most one at a time, so
        that requests always find threads."""
        return await trio.to_thread.run_sync(fn, limiter=self._background_limiter)

    async def _compile(
        self, env: EnvRecord, wanted: dict[str, FileRef]
    ) -> dict[tuple[str, int], FileRef | None]:
        """Compile the sources in `wanted` (blob -> source) at the configured
        levels; returns their bytecode entries."""
        lock = self._compile_locks.setdefault(env.interpreter, trio.Lock())
        async with lock:
            # Another environment of this interpreter may have compiled them
            # while this one waited for the lock.
            known = await self._background(
                partial(self.store.bytecode_known, env.interpreter, wanted.values(), self.bytecode_levels)
            )
            jobs: list[bytecode.Job] = []
            for blob, ref in wanted.items():
                lacking = tuple(level for level in self.bytecode_levels if (blob, level) not in known)
                if lacking:
                    jobs.append(bytecode.Job(str(len(jobs)), ref, lacking))
            if not jobs:
                return known
            prefix = f"{self.store.bodies.tmp}/pyc-{secrets.token_hex(6)}-"
            workers = min(int(self.compilers.total_tokens), -(-len(jobs) // bytecode.JOBS_PER_WORKER))
            outcome: dict[str, bool] = {}
            errors: list[str] = []
            try:
                async with trio.open_nursery() as nursery:
                    for n, share in enumerate(bytecode.split_jobs(jobs, workers)):
                        nursery.start_soon(
                            self._compile_share, env, share, f"{prefix}{n}.jobs", prefix, outcome, errors
                        )
                compiled = {
                    (job.source.blob, level): Path(f"{prefix}{job.id}.{level}")
                    for job in jobs
                    if outcome.get(job.id)
                    for level in job.levels
                }
                failed = [
                    (job.source.blob, level)
                    for job in jobs
                    if outcome.get(job.id) is False
                    for level in job.levels
                ]
                known.update(
                    await self._background(
                        partial(self.store.store_bytecode, env.interpreter, compiled, failed)
                    )
                )
                if errors:
                    raise StoreError(
                        errors[0], hint="nwcache compiles what is missing at the next start or change"
                    )
                return known
            finally:
                with trio.CancelScope(shield=True):
                    await self._background(partial(_remove_prefixed, prefix))

    async def _compile_share(
        self,
        env: EnvRecord,
        share: list[bytecode.Job],
        listing: str,
        prefix: str,
        outcome: dict[str, bool],
        errors: list[str],
    ) -> None:
        """One worker process in the environment's interpreter. A source the
        worker died on is remembered as not compiling (it would kill the next
        worker too); a failure that is not the source's (a full disk) goes to
        `errors`; the sources it did not reach are left for the next attempt."""

        def write_listing() -> None:
            where = {job.source.blob: self.store.blob_location(job.source.blob)[1] for job in share}
            mtime = {job.source.blob: content_mtime_ns(job.source.blob) // 1_000_000_000 for job in share}
            bytecode.write_jobs(Path(listing), share, where, mtime)

        await self._background(write_listing)
        counts = self.bytecode_counts
        async with self.compilers:
            counts.workers += 1
            counts.running += 1
            counts.sources += len(share)
            began = trio.current_time()
            try:
                run = await bytecode.run_worker(env.python, listing, prefix)
            finally:
                counts.running -= 1
                counts.seconds += trio.current_time() - began
        outcome.update(run.outcome)
        if run.error is not None:
            errors.append(f"the bytecode worker of {env.python} failed: {run.error}")
            return
        if run.returncode != 0:
            log.warning(
                "bytecode worker for %s %s: %s",
                env.python,
                "reported nothing for a while and was killed"
                if run.timed_out
                else f"exited {run.returncode}",
                run.stderr[-500:],
            )
        reported = sum(1 for job in share if job.id in run.outcome)
        if reported < len(share):
            # Jobs run in listing order: the first without a verdict is the one it died on.
            outcome.setdefault(share[reported].id, False)
        counts.failed += sum(1 for job in share if outcome.get(job.id) is False)

    async def _load(
        self,
        env: EnvRecord,
        *,
        built: dict[tuple[object, ...], tuple[Dir, dict[str, FileRef]]] | None = None,
    ) -> None:
        """Serve an environment's current generation. `built` (start-up)
        remembers, per interpreter and list of packages, the first tree
        built and the files installing generated for its venv (RECORD,
        INSTALLER, REQUESTED): another venv with the same packages differs
        only in those, so its tree is that one with them replaced, without
        reading, looking up bytecode for and building every file again."""
        key: tuple[object, ...] = ()
        generated: dict[str, FileRef] = {}
        root: Dir | None = None
        if built is not None:
            gen = await self._run(partial(self.store.generation, env.path))
            key = (env.interpreter, tuple(i.package for i in gen.packages))
            generated = {p: r for i in gen.packages for p, r in i.site.items()}
            first = built.get(key)
            if first is not None and first[1].keys() == generated.keys():
                root = await self._run(partial(self.builder.replace_files, first[0], generated))
        if root is None:
            tree = await self._site(env)
            root = await self._run(partial(self.builder.build, tree))
            if built is not None:
                built.setdefault(key, (root, generated))
        overlay = await self._run(partial(Overlay, self.overlay_root(env)))
        self.overlays[env.path] = overlay
        top = None
        if env.link == "symlink":
            top = await self._run(partial(Overlay, self.top_root(env)))
            self.tops[env.path] = top
            self.store.aliases[str(self.venv_target(env))] = env.path
        await self.view.add_env(
            env_dir_name(env), root, overlay, venv=Path(env.path), site_packages=env.site_packages, top=top
        )
        await self._write_notice(env)

    async def _write_notice(self, env: EnvRecord) -> None:
        """What the venv says while the daemon is down (daemon/notices.py):
        written again whenever its commands may have changed."""
        if self.notices is None:
            return
        top = self.tops.get(env.path)
        scripts = sorted(
            path.rpartition("/")[2]
            for path, entry in (top.entries.items() if top is not None else ())
            if path.rpartition("/")[0] == env.scripts and not isinstance(entry, Whiteout | OverlayDir)
        )
        await self._run(
            partial(self.notices.write, env_dir_name(env), env.site_packages, env.path, env.scripts, scripts)
        )

    async def _refresh(self, env: EnvRecord) -> int:
        tree = await self._site(env)
        root = await self._run(partial(self.builder.build, tree))
        return await self.view.replace_tree(env_dir_name(env), root)

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Serve every registered environment (the view must be mounted).
        An environment whose site-packages is a real directory again was
        being registered or unregistered when a daemon died: its directory
        is what the venv uses, so the registration is dropped."""
        built: dict[tuple[object, ...], tuple[Dir, dict[str, FileRef]]] = {}
        for env in await self._run(self.store.envs):
            site = self.site(env)
            venv = Path(env.path)
            if env.link == "symlink":
                await self._run(partial(linking.clean_leftovers, venv))
                if await self._run(partial(linking.state, venv, self.venv_target(env))) == "linked":
                    await self._load(env, built=built)
                    await self._run(partial(self._settle_outside, env))
                    continue
                # A real directory: registered by an older nwcache (its
                # site-packages links here), or being (un)registered when a
                # daemon died; the venv uses its own site-packages then.
                await self._run(partial(linking.clean_leftovers, site))
                if await self._run(partial(linking.state, site, self.target(env))) == "linked":
                    log.warning("%s: serving its whole directory from the view now", env.path)
                    await self._run(
                        partial(rootlayer.fill_layer, self.top_root(env), venv, env.site_packages)
                    )
                    await self._load(env, built=built)
                    await self._run(partial(linking.link, venv, self.venv_target(env)))
                    await self._run(partial(self._settle_outside, env))
                    continue
                await self._drop(env)
                continue
            await self._run(partial(linking.clean_leftovers, site))
            state = await self._run(partial(linking.state, site, self.target(env)))
            if state == "directory" and any(site.iterdir()):
                await self._drop(env)
                continue
            await self._load(env, built=built)
            await self._run(partial(self._settle_outside, env))
            if env.link == "bind" and state in ("directory", "bound"):
                await self._run(partial(linking.bind_over, site, self.target(env)))
        # Bytecode a daemon did not finish (killed, or a compile failed):
        # compiled in the background, served from the start as it comes.
        pending = await self._run(self.store.compile_pending)
        for env in await self._run(self.store.envs):
            if env.id not in pending:
                continue
            if self.bytecode_levels:
                self._queue_compile(env)
            else:
                await self._run(partial(self.store.compile_settled, env.id, pending[env.id][0], None))
        if self.notices is not None:
            served = {env_dir_name(env) for env in await self._run(self.store.envs)}
            await self._run(partial(self.notices.prune, served))

    async def _drop(self, env: EnvRecord) -> None:
        log.warning("%s has a real site-packages again; dropping its registration", env.path)
        await self._run(partial(self.store.unregister, env.path))
        await self._run(partial(shutil.rmtree, self.overlay_root(env), True))
        await self._run(partial(shutil.rmtree, self.top_root(env), True))

    async def stop(self) -> None:
        """Before unmounting: bind mounts over venvs go first."""
        for env in await self._run(self.store.envs):
            if env.link == "bind" and env.path in self.overlays:
                site = self.site(env)
                if await self._run(partial(linking.is_mount_point, site)):
                    await self._run(partial(linking.unbind, site))
        for overlay in [*self.overlays.values(), *self.tops.values()]:
            overlay.sync()
            overlay.close()
        self.overlays.clear()
        self.tops.clear()

    # -- environments -----------------------------------------------------------------

    async def register(self, path: str | os.PathLike[str], link: str = "symlink") -> EnvRecord:
        if link not in ("symlink", "bind"):
            raise StoreError(f"unknown link mode {link!r}", hint="use 'symlink' or 'bind'")
        if link == "bind" and os.geteuid() != 0:
            raise StoreError("bind mounts need root", hint="run the daemon as root or use symlink mode")
        root = await self._run(partial(self._registered_or_root, path))
        async with self._lock(root):
            env = await self._run(partial(self.store.register, root, link=link))
            crash_point("registered")
            site = self.site(env)
            venv = Path(env.path)
            state = await self._run(partial(linking.state, site, self.target(env)))
            if state == "foreign-link":
                raise NotAVenv(f"{site} is a symlink nwcache did not make", hint="make it a directory first")
            if env.link == "bind":
                if env.path not in self.overlays:
                    await self._load(env)
                    self._queue_compile(env)
                if state != "bound":
                    await self._run(partial(linking.bind_over, site, self.target(env)))
                return env
            if await self._run(partial(linking.state, venv, self.venv_target(env))) == "linked":
                return env
            if env.path not in self.overlays:
                await self._run(partial(rootlayer.fill_layer, self.top_root(env), venv, env.site_packages))
                crash_point("root-filled")
                await self._load(env)
                self._queue_compile(env)
            await self._run(partial(linking.link, venv, self.venv_target(env)))
            return env

    def _registered_or_root(self, path: str | os.PathLike[str]) -> str:
        """A registered venv's path (it may be a link into the view), or the
        root of a venv to register (refusing what is not one)."""
        try:
            return self.store.get_env(path).path
        except StoreError:
            return str(venv_root(path))

    async def unregister(self, path: str | os.PathLike[str]) -> None:
        env = await self._run(partial(self.store.get_env, path))
        async with self._lock(env.path):
            name = env_dir_name(env)
            plan = self.view.snapshot(name)
            overlay = self.overlays[env.path]
            top = self.tops.get(env.path)
            site = self.site(env)
            venv = Path(env.path)
            if top is not None:
                if await self._run(partial(linking.state, venv, self.venv_target(env))) == "linked":
                    fill = partial(self._fill_venv, self.view.snapshot_top(name), top, plan, overlay, env)
                    await self._run(partial(linking.restore, venv, fill))
            elif await self._run(partial(linking.state, site, self.target(env))) in ("linked", "bound"):
                await self._run(partial(linking.restore, site, partial(self._fill, plan, overlay)))
            crash_point("restored")
            await self._run(partial(self.store.unregister, env.path))
            await self.view.remove_env(name)
            self.store.aliases.pop(str(self.venv_target(env)), None)
            if self.notices is not None:
                await self._run(partial(self.notices.remove, name))
            overlay.close()
            del self.overlays[env.path]
            if top is not None:
                top.close()
                del self.tops[env.path]
            await self._run(partial(shutil.rmtree, self.overlay_root(env), True))
            await self._run(partial(shutil.rmtree, self.top_root(env), True))

    def _fill_venv(
        self,
        top_plan: list[tuple[str, Entry | FileRef]],
        top: Overlay,
        plan: list[tuple[str, Entry | FileRef]],
        overlay: Overlay,
        env: EnvRecord,
        dest: Path,
    ) -> None:
        """A real venv directory at `dest`: its root's layer, then site-packages."""
        self._fill(top_plan, top, dest)
        site = dest / env.site_packages
        site.mkdir(mode=0o755, parents=True)
        self._fill(plan, overlay, site)

    def _fill(self, plan: list[tuple[str, Entry | FileRef]], overlay: Overlay, dest: Path) -> None:
        for rel, node in plan:
            out = dest / rel
            if isinstance(node, OverlayDir):
                out.mkdir(mode=node.mode)
            elif isinstance(node, FileRef):
                self._copy_blob(node, out)
                # The view's mtime, which the shared pycs copied beside their
                # sources record: they stay valid in the real directory.
                mtime = content_mtime_ns(node.blob)
                os.utime(out, ns=(mtime, mtime))
            elif isinstance(node, UpperFile):
                body = overlay.body(node.id)
                shutil.copyfile(body, out)
                out.chmod(node.mode)
                st = os.stat(body)
                os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
            elif isinstance(node, Symlink):
                os.symlink(node.target, out)

    # -- generations -----------------------------------------------------------------

    async def fold(self, path: str | os.PathLike[str]) -> GenerationRecord | None:
        env = await self._run(partial(self.store.get_env, path))
        async with self._lock(env.path):
            return await self._fold(env)

    async def _fold(self, env: EnvRecord) -> GenerationRecord | None:
        """Turn what was written inside the venv (pip install, pip uninstall,
        bytecode) into a generation of its own, so that the next store
        operation starts from what the venv really holds and its history
        shows the change. None when the layer holds no file change."""
        overlay = self.overlays[env.path]
        if not any(
            isinstance(entry, UpperFile | Whiteout | StoreFile) and not bytecode.is_bytecode(path)
            for path, entry in overlay.entries.items()
        ):
            return None  # only directories, symlinks or Python's own pycs: nothing a generation holds
        name = env_dir_name(env)
        merged = self.view.layer_files(name)

        def describe() -> tuple[dict[str, FileRef | tuple[Path, bool]], dict[str, tuple[int, int, int]]]:
            """The files the generation will hold, and the layer files that
            go once it exists: those it holds, and the pycs Python wrote (the
            shared bytecode of the folded sources replaces them)."""
            files: dict[str, FileRef | tuple[Path, bool]] = {}
            seen: dict[str, tuple[int, int, int]] = {}
            generation = self.store.tree(env.path)
            for rel, node in merged.items():
                if isinstance(node, FileRef):
                    if not bytecode.is_bytecode(rel):
                        files[rel] = node
                    elif rel in generation:
                        # A pyc an archive shipped stays the package's, even
                        # where the view serves the store's own instead.
                        files[rel] = generation[rel]
                    continue
                body = overlay.body(node.id)
                st = os.stat(body)
                seen[rel] = (node.id, st.st_size, st.st_mtime_ns)
                if not bytecode.is_bytecode(rel):
                    files[rel] = (body, bool(node.mode & 0o111))
            return files, seen

        files, seen = await self._run(describe)
        top = self.tops.get(env.path)
        outside: dict[str, tuple[Path, bool]] = {}
        if top is not None:  # symlink mode: scripts pip wrote are in the root's layer
            for rel, entry in top.entries.items():
                if isinstance(entry, UpperFile):
                    outside[rel] = (top.body(entry.id), bool(entry.mode & 0o111))
        gen = await self._run(partial(self.store.fold, env.path, files, outside=outside))
        await self._refresh(env)
        await self.view.settle_layer(name, seen)
        await self._write_notice(env)
        self._queue_compile(env)
        return gen

    async def install(
        self,
        path: str | os.PathLike[str],
        archives: Sequence[str | os.PathLike[str] | PackageRecord],
        *,
        request: str | None = None,
        progress: Progress | None = None,
        remove: list[str] | None = None,
        ingested: dict[str, PackageRecord] | None = None,
        action: str | None = None,
        requested: bool | Collection[str] = True,
    ) -> GenerationRecord:
        """Store.install for the venv, registered first if new; `remove`,
        `ingested`, `action` and `requested` as there. A result that is the generation
        the venv was at (nothing to do) leaves the view and venv alone."""
        check_names(archives)  # before the venv is registered
        try:
            await self._run(partial(self.store.get_env, path))
            registered_here = False
        except StoreError:
            registered_here = True
        env = await self.register(path)
        stored = False
        try:
            async with self._lock(env.path):
                await self._fold(env)
                before = await self._run(partial(self.store.generation, env.path))
                gen = await self._run(
                    partial(
                        self.store.install,
                        env.path,
                        list(archives),
                        request=request,
                        progress=progress,
                        remove=remove or (),
                        ingested=ingested,
                        action=action,
                        requested=requested,
                    )
                )
                stored = True
                if gen.number == before.number:
                    return gen
                if progress is not None:
                    progress.stage = "serving"
                await self._refresh(env)
                crash_point("outside-pending")
                await self._run(partial(self._write_outside, env, before, gen))
                await self._write_notice(env)
                self._queue_compile(env)
                return gen
        except BaseException:
            if registered_here and not stored:
                # A refused install into a venv it registered leaves the venv
                # as it found it: a plain venv again, not registered.
                with trio.CancelScope(shield=True):
                    await self._unregister_after_failure(env)
            raise

    async def _unregister_after_failure(self, env: EnvRecord) -> None:
        try:
            await self.unregister(env.path)
        except Exception:  # the install's own error is the one to report
            log.exception("could not take back the registration of %s after a failed install", env.path)

    async def uninstall(
        self, path: str | os.PathLike[str], names: list[str], *, request: str | None = None
    ) -> GenerationRecord:
        env = await self._run(partial(self.store.get_env, path))
        async with self._lock(env.path):
            await self._fold(env)
            before = await self._run(partial(self.store.generation, env.path))
            gen = await self._run(partial(self.store.uninstall, env.path, names, request=request))
            await self._refresh(env)
            await self._run(partial(self._write_outside, env, before, gen))
            await self._write_notice(env)
            self._queue_compile(env)
            return gen

    async def rollback(
        self, path: str | os.PathLike[str], to: int | None = None, *, request: str | None = None
    ) -> GenerationRecord:
        env = await self._run(partial(self.store.get_env, path))
        async with self._lock(env.path):
            await self._fold(env)
            before = await self._run(partial(self.store.generation, env.path))
            gen = await self._run(partial(self.store.rollback, env.path, to, request=request))
            await self._refresh(env)
            await self._run(partial(self._write_outside, env, before, gen))
            await self._write_notice(env)
            self._queue_compile(env)
            return gen

    def _write_outside(self, env: EnvRecord, before: GenerationRecord, after: GenerationRecord) -> None:
        """Bring the venv's files outside site-packages (scripts, headers,
        data) from one generation to the next: write what is new or changed
        (atomically, exec bit from the record), remove what went, unless the
        user changed it since. Never anything outside the venv."""
        old = {p: r for i in before.packages for p, r in i.outside.items()}
        new = {p: r for i in after.packages for p, r in i.outside.items()}
        root = Path(env.path).resolve()
        for rel, ref in sorted(new.items()):
            target = _inside(root, rel)
            if old.get(rel) == ref and target.is_file():
                continue
            self._put_outside(target, ref)
        for rel, ref in sorted(old.items()):
            if rel in new:
                continue
            target = _inside(root, rel)
            if target.is_file() and not target.is_symlink() and sha256_file(target) == (ref.blob, ref.size):
                target.unlink()
            elif target.exists():
                log.warning("left %s in place: it changed since nwcache wrote it", target)

    def _copy_blob(self, ref: FileRef, out: Path) -> None:
        """A store file as a real file at `out`, with its executable bit."""
        _size, where = self.store.blob_location(ref.blob)
        if isinstance(where, bytes):
            out.write_bytes(where)
        else:
            shutil.copyfile(where, out)
        out.chmod(0o755 if ref.executable else 0o644)

    def _put_outside(self, target: Path, ref: FileRef) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = _temp_of(target)
        self._copy_blob(ref, temp)
        os.replace(temp, target)

    def _settle_outside(self, env: EnvRecord) -> None:
        """At start-up: a daemon killed between a generation flip and writing
        the venv's scripts, headers and data left them at the generation
        before. Bring them to the current one: write what is missing or still
        holds another kept generation's content, remove what only other
        generations name (unless the user changed it since)."""
        current = self.store.generation(env.path)
        new = {p: r for i in current.packages for p, r in i.outside.items()}
        others: dict[str, set[tuple[str, int]]] = {}
        for gen in self.store.history(env.path):
            for installed in gen.packages:
                for rel, ref in installed.outside.items():
                    others.setdefault(rel, set()).add((ref.blob, ref.size))
        root = Path(env.path).resolve()
        for rel in sorted(new.keys() | others.keys()):
            target = _inside(root, rel)
            _temp_of(target).unlink(missing_ok=True)  # a write the kill interrupted
            found = sha256_file(target) if target.is_file() and not target.is_symlink() else None
            wanted = new.get(rel)
            if wanted is not None and found != (wanted.blob, wanted.size):
                if found is None and (target.exists() or target.is_symlink()):
                    log.warning("left %s in place: it is not a file nwcache wrote", target)
                elif found is None or found in others.get(rel, set()):
                    log.warning("%s was at another generation; brought to generation %d", target, env.current)
                    self._put_outside(target, wanted)
                else:
                    log.warning("left %s in place: it changed since nwcache wrote it", target)
            elif wanted is None and found is not None and found in others[rel]:
                log.warning("removed %s: generation %d does not hold it", target, env.current)
                target.unlink()

    async def gc(self, keep: int = 5) -> GCReport:
        pinned = self.view.pinned_blobs()
        return await self._run(partial(self.store.gc, keep, pinned=pinned))
