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
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio

from . import bytecode, demand, linking, outside, rootlayer
from .crashpoints import crash_point
from .demand import DemandWorker
from .environment import Environment, Places, view_name
from .errors import NotAVenv, StoreError, UnknownEnv
from .ingest import Progress
from .merged import EnvView, Node, join
from .notices import DownNotices
from .overlay import Entry, Overlay, OverlayDir, StoreFile, Symlink, UpperFile, Whiteout
from .schema import EnvRecord, FileRef, GenerationRecord, PackageRecord
from .store import GCReport, Store, check_names
from .tree import Dir, TreeBuilder
from .venvs import venv_path, venv_root
from .view import ViewOperations, content_mtime_ns

log = logging.getLogger("nwcache.daemon")
T = TypeVar("T")
# Package trees kept (see Service._package_trees); more are built again.
PACKAGE_TREES = 4096


@dataclass
class BytecodeCounts:
    """What compiling has cost since the daemon started (stats, tests)."""

    sources: int = 0  # sources handed to a worker
    failed: int = 0  # of which did not compile
    workers: int = 0  # worker processes started
    running: int = 0  # worker processes alive now
    seconds: float = 0.0  # wall time of the worker processes, added up
    errors: int = 0  # attempts that failed for a reason other than a source
    on_demand: int = 0  # pycs compiled (or found) on demand, served to a waiting lookup
    on_demand_seconds: float = 0.0  # wall time of those lookups in the daemon, added up
    last_error: str | None = None


def _remove_prefixed(prefix: str) -> None:
    """A compile's job listings and whatever pyc files the store did not take."""
    folder, _, stem = prefix.rpartition("/")
    for leftover in Path(folder).glob(f"{stem}*"):
        leftover.unlink(missing_ok=True)


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
        # The environments served, by venv path (daemon/environment.py).
        self.envs: dict[str, Environment] = {}
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
        # Makes remote-only bodies local before they are compiled (daemon/lazy.py; set by the daemon).
        self.fetch_bodies: Callable[[list[str]], Awaitable[int]] | None = None
        view.bytecode_levels = self.bytecode_levels
        # The background compiler's queue (venv paths, in order), the one it
        # is compiling, and per venv how many sources lack bytecode: still
        # to compile (`_left`) or found when its tree was last built.
        self._to_compile: dict[str, None] = {}
        self._compiling: str | None = None
        self._left: dict[str, int] = {}
        self._missing: dict[str, int] = {}
        self._bytecode_event = trio.Event()
        # Each package's tree with the shared pycs known for an interpreter:
        # (package id, interpreter) -> (tree, sources lacking bytecode), valid
        # while `_bytecode_epoch` (moved by whatever adds or drops bytecode
        # entries) stays where it was when they were built. A venv's tree is
        # these merged: a warm install builds only what no venv had before.
        self._package_trees: dict[tuple[bytes, str], tuple[Dir, frozenset[str]]] = {}
        self._bytecode_epoch = 0
        # Pycs compiled on demand (daemon/demand.py): one worker per
        # interpreter, and the environments by their name in the view.
        self._demand: dict[str, DemandWorker] = {}
        # Compile on demand in a worker process even for the daemon's own
        # interpreter (the tests of the worker; a comparison in the bench).
        self.demand_in_worker = os.environ.get("NWCACHE_DEMAND_WORKER") == "1"
        self._env_named: dict[str, EnvRecord] = {}
        # interpreter -> (source blob, level) -> pyc compiled on demand and
        # served but not indexed yet (None: it does not compile).
        self._demanded: dict[str, dict[tuple[str, int], FileRef | None]] = {}
        self._demanded_while: dict[str, bool] = {}  # venv path -> a pyc was compiled on demand
        view.on_demand = self._on_demand
        self._package_trees_epoch = 0
        self._background_limiter = trio.CapacityLimiter(1)
        # What each venv says while the daemon is down (set by run_service).
        self.notices: DownNotices | None = None

    async def _run(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self.limiter)

    def _lock(self, path: str) -> trio.Lock:
        return self._locks.setdefault(venv_path(path), trio.Lock())

    def places(self, env: EnvRecord) -> Places:
        """Where the environment's layers, venv and view directory are."""
        return Places(self.store.home, self.mountpoint, env)

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

    async def _site_tree(self, env: EnvRecord) -> Dir:
        """The tree `_site` gives, built by merging each package's tree
        (cached, see `_package_trees`) with the files generated for this venv."""
        if not self.bytecode_levels:
            return await self._run(partial(self.builder.build, await self._site(env)))
        return await self._run(partial(self._merged_tree, env))

    def _merged_tree(self, env: EnvRecord) -> Dir:
        """In a worker thread."""
        parts = self.store.site_parts(env.path)
        epoch = self._bytecode_epoch
        if self._package_trees_epoch != epoch or len(self._package_trees) > PACKAGE_TREES:
            self._package_trees = {}
            self._package_trees_epoch = epoch
        trees: list[Dir] = []
        missing: set[str] = set()
        for package, site, generated in parts:
            key = (package, env.interpreter)
            built = self._package_trees.get(key)
            if built is None:
                built = self._tree_with_bytecode(env, site)
                if self._bytecode_epoch == epoch:  # no bytecode stored meanwhile
                    self._package_trees[key] = built
            trees.append(built[0])
            missing |= built[1]
            if generated:
                extra = self._tree_with_bytecode(env, generated)
                trees.append(extra[0])
                missing |= extra[1]
        self._missing[env.path] = len(missing)
        return self.builder.merge(trees) if trees else self.builder.build({})

    def _tree_with_bytecode(self, env: EnvRecord, files: dict[str, FileRef]) -> tuple[Dir, frozenset[str]]:
        known = self.store.bytecode_known(
            env.interpreter, bytecode.sources(files).values(), self.bytecode_levels
        )
        lacking = frozenset(bytecode.missing(files, known, self.bytecode_levels))
        return self.builder.build(bytecode.with_bytecode(files, known, env.cache_tag)), lacking

    # -- bytecode on demand ----------------------------------------------------------------

    def _compiling_for(self, name: str) -> EnvRecord | None:
        """The environment named `name` in the view if its bytecode is being
        compiled in the background (or queued to be)."""
        env = self._env_named.get(name)
        if env is None or not self.bytecode_levels:
            return None
        if env.path not in self._to_compile and self._compiling != env.path:
            return None
        return env

    async def _on_demand(self, view_env: EnvView, path: str) -> Node | None:
        """The view's hook for a name it does not have (docs/BYTECODE.md,
        "Before a pyc is ready"): while the environment's bytecode is being
        compiled, a `__pycache__` beside store sources is made (empty), and
        the pyc of a store source is compiled at once, stored as the
        background compiler stores it and added to the tree served.
        Returns what `path` now is, or None."""
        env = self._compiling_for(view_env.name)
        if env is None or path in view_env.overlay.entries:
            return None
        folder, _, name = path.rpartition("/")
        if name == "__pycache__":
            here = view_env.lower_at(folder) if folder else view_env.lower
            if isinstance(here, Dir) and any(
                bytecode.compilable(join(folder, n)) and isinstance(c, FileRef)
                for n, c in here.entries.items()
            ):
                view_env.lower = self.builder.add_dirs(view_env.lower, [path])
                return view_env.resolve(path)
            return None
        wanted = bytecode.source_of_pyc(path, env.cache_tag)
        if wanted is None or wanted[1] not in self.bytecode_levels:
            return None
        source, level = wanted
        ref = view_env.lower_at(source)
        if not isinstance(ref, FileRef) or source in view_env.overlay.entries:
            return None
        began = trio.current_time()
        pyc = await self._compile_now(env, ref, level)
        if pyc is not None:
            view_env.lower = self.builder.add_files(view_env.lower, {path: pyc})
            self.bytecode_counts.on_demand += 1
            self._demanded_while[env.path] = True
        self.bytecode_counts.on_demand_seconds += trio.current_time() - began
        return None if pyc is None else view_env.resolve(path)

    async def _compile_now(self, env: EnvRecord, ref: FileRef, level: int) -> FileRef | None:
        """The pyc of one source at one level: the stored one, or compiled now
        (by the daemon itself if its interpreter has the environment's magic
        number and cache tag, else by the interpreter's demand worker) and
        put in place. None: it does not compile (or the worker failed:
        Python compiles for itself then)."""
        demanded = self._demanded.setdefault(env.interpreter, {})
        if (ref.blob, level) in demanded:
            return demanded[(ref.blob, level)]
        mtime = content_mtime_ns(ref.blob) // 1_000_000_000
        if env.interpreter == demand.HERE and not self.demand_in_worker:
            # The daemon's own interpreter accepts this bytecode: compiled
            # here, in the thread that looks it up and puts it in place.
            found, pyc = await self._run(
                partial(self.store.compile_in_place, env.interpreter, ref, level, mtime)
            )
            if not found:
                demanded[(ref.blob, level)] = pyc
            if pyc is not None:
                self.view.pyc_bodies[pyc.blob] = self.store.bodies.path(pyc.blob)
            return pyc
        known = await self._run(partial(self.store.bytecode_known, env.interpreter, [ref], (level,)))
        if (ref.blob, level) in known:
            return known[(ref.blob, level)]
        worker = self._demand.get(env.interpreter)
        if worker is None:
            worker = self._demand[env.interpreter] = DemandWorker(env.python)
        where = (await self._run(partial(self.store.blob_location, ref.blob)))[1]
        out = f"{self.store.bodies.tmp}/pyc-{secrets.token_hex(6)}-now"
        verdict = await worker.compile(
            where if isinstance(where, bytes) else os.fspath(where), mtime, level, out
        )
        if verdict.startswith("error"):
            log.warning("compiling a pyc on demand with %s failed: %s", env.python, verdict[6:])
            await self._run(partial(_remove_prefixed, out))
            return None
        # Served at once; made durable and indexed with the others later
        # (`index_demanded`): a commit per pyc would cost the import more
        # than the compile.
        pyc = await self._run(partial(self.store.put_in_place, Path(out))) if verdict == "ok" else None
        demanded[(ref.blob, level)] = pyc
        if pyc is not None:
            self.view.pyc_bodies[pyc.blob] = self.store.bodies.path(pyc.blob)
        return pyc

    async def index_demanded(self) -> None:
        """Index the pycs compiled on demand so far (before the background
        compiler looks up what is missing, when it is done, at stop)."""
        for interpreter, entries in list(self._demanded.items()):
            if not entries:
                continue
            self._demanded[interpreter] = {}
            self._bytecode_epoch += 1
            try:
                await self._run(partial(self.store.index_in_place, interpreter, entries))
            finally:
                self._bytecode_epoch += 1

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
            if self._missing.get(path) == 0:
                # Its tree, built at the flip, found bytecode for every source.
                await self.index_demanded()
                await self._background(partial(self.store.compile_settled, env.id, env.current, None))
                return
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
        await self.index_demanded()
        if self._demanded_while.pop(path, False):
            # A batch served while a pyc was compiled on demand may have left
            # it out of the tree: served again from the index, which has all.
            async with self._lock(env.path):
                if env.path in self.envs and view_name(env) in self.view.envs:
                    await self._refresh(await self._background(partial(self.store.get_env, env.path)))
        await self._background(partial(self.store.compile_settled, env.id, env.current, error))

    async def _serve_pycs(
        self, env: EnvRecord, tree: dict[str, FileRef], found: dict[tuple[str, int], FileRef | None]
    ) -> None:
        """The view serves the pycs a batch compiled: added to the tree it
        serves (only the directories on their way are rebuilt) if the
        environment is still at the generation `tree` is of, else its whole
        current tree again. Under the environment's lock."""
        served = self.envs.get(env.path)
        if served is None or served.name not in self.view.envs:
            return  # unregistered meanwhile
        name = served.name
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
            await self.index_demanded()
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
            if self.fetch_bodies is not None:  # sources whose bodies are on a remote only
                await self.fetch_bodies([job.source.blob for job in jobs])
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
                self._bytecode_epoch += 1
                known.update(
                    await self._background(
                        partial(self.store.store_bytecode, env.interpreter, compiled, failed)
                    )
                )
                self._bytecode_epoch += 1
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
            root = await self._site_tree(env)
            if built is not None:
                built.setdefault(key, (root, generated))
        places = self.places(env)
        overlay = await self._run(partial(Overlay, places.layer))
        top = None
        if env.link == "symlink":
            top = await self._run(partial(Overlay, places.root_layer))
            self.store.aliases[str(places.view_dir)] = env.path
        self.envs[env.path] = Environment(places, self._lock(env.path), overlay, top)
        self._env_named[places.name] = env
        await self.view.add_env(
            places.name, root, overlay, venv=places.venv, site_packages=env.site_packages, top=top
        )
        await self._write_notice(env)

    async def _write_notice(self, env: EnvRecord) -> None:
        """What the venv says while the daemon is down (daemon/notices.py):
        written again whenever its commands may have changed."""
        if self.notices is None:
            return
        top = self.envs[env.path].root_layer
        scripts = sorted(
            path.rpartition("/")[2]
            for path, entry in (top.entries.items() if top is not None else ())
            if path.rpartition("/")[0] == env.scripts and not isinstance(entry, Whiteout | OverlayDir)
        )
        await self._run(
            partial(self.notices.write, view_name(env), env.site_packages, env.path, env.scripts, scripts)
        )

    async def _refresh(self, env: EnvRecord) -> int:
        root = await self._site_tree(env)
        return await self.view.replace_tree(view_name(env), root)

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Serve every registered environment (the view must be mounted).
        An environment whose site-packages is a real directory again was
        being registered or unregistered when a daemon died: its directory
        is what the venv uses, so the registration is dropped."""
        built: dict[tuple[object, ...], tuple[Dir, dict[str, FileRef]]] = {}
        for env in await self._run(self.store.envs):
            site = self.places(env).site
            venv = Path(env.path)
            if env.link == "symlink":
                await self._run(partial(linking.clean_leftovers, venv))
                if await self._run(partial(linking.state, venv, self.places(env).view_dir)) == "linked":
                    await self._load(env, built=built)
                    await self._settle_outside(env)
                    continue
                # A real directory: registered by an older nwcache (its
                # site-packages links here), or being (un)registered when a
                # daemon died; the venv uses its own site-packages then.
                await self._run(partial(linking.clean_leftovers, site))
                if await self._run(partial(linking.state, site, self.places(env).view_site)) == "linked":
                    log.warning("%s: serving its whole directory from the view now", env.path)
                    await self._run(
                        partial(rootlayer.fill_layer, self.places(env).root_layer, venv, env.site_packages)
                    )
                    await self._load(env, built=built)
                    await self._run(partial(linking.link, venv, self.places(env).view_dir))
                    await self._settle_outside(env)
                    continue
                await self._drop(env)
                continue
            await self._run(partial(linking.clean_leftovers, site))
            state = await self._run(partial(linking.state, site, self.places(env).view_site))
            if state == "directory" and any(site.iterdir()):
                await self._drop(env)
                continue
            await self._load(env, built=built)
            await self._settle_outside(env)
            if env.link == "bind" and state in ("directory", "bound"):
                await self._run(partial(linking.bind_over, site, self.places(env).view_site))
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
            served = {view_name(env) for env in await self._run(self.store.envs)}
            await self._run(partial(self.notices.prune, served))

    async def _drop(self, env: EnvRecord) -> None:
        log.warning("%s has a real site-packages again; dropping its registration", env.path)
        await self._run(partial(self.store.unregister, env.path))
        await self._run(partial(shutil.rmtree, self.places(env).layer, True))
        await self._run(partial(shutil.rmtree, self.places(env).root_layer, True))

    async def stop(self) -> None:
        """Before unmounting: bind mounts over venvs go first."""
        for env in await self._run(self.store.envs):
            if env.link == "bind" and env.path in self.envs:
                site = self.places(env).site
                if await self._run(partial(linking.is_mount_point, site)):
                    await self._run(partial(linking.unbind, site))
        for worker in self._demand.values():
            await worker.aclose()
        await self.index_demanded()
        for served in self.envs.values():
            served.close()
        self.envs.clear()

    # -- environments -----------------------------------------------------------------

    async def register(self, path: str | os.PathLike[str], link: str = "symlink") -> EnvRecord:
        if link not in ("symlink", "bind"):
            raise StoreError(f"unknown link mode {link!r}", hint="use 'symlink' or 'bind'")
        if link == "bind" and os.geteuid() != 0:
            raise StoreError("bind mounts need root", hint="run the daemon as root or use symlink mode")
        root = await self._run(partial(self._registered_or_root, path))
        async with self._lock(root):
            return await self._register(root, link)

    async def _register(self, root: str, link: str) -> EnvRecord:
        """Register (or find registered) and serve the venv at `root`, under its lock."""
        env = await self._run(partial(self.store.register, root, link=link))
        crash_point("registered")
        places = self.places(env)
        site, venv = places.site, places.venv
        state = await self._run(partial(linking.state, site, places.view_site))
        if state == "foreign-link":
            raise NotAVenv(f"{site} is a symlink nwcache did not make", hint="make it a directory first")
        if env.link == "bind":
            if env.path not in self.envs:
                await self._load(env)
                self._queue_compile(env)
            if state != "bound":
                await self._run(partial(linking.bind_over, site, places.view_site))
            return env
        if await self._run(partial(linking.state, venv, places.view_dir)) == "linked":
            return env
        if env.path not in self.envs:
            await self._run(partial(rootlayer.fill_layer, places.root_layer, venv, env.site_packages))
            crash_point("root-filled")
            await self._load(env)
            self._queue_compile(env)
        await self._run(partial(linking.link, venv, places.view_dir))
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
            await self._unregister(env)

    async def _unregister(self, env: EnvRecord) -> None:
        """The venv a real directory again, holding what it holds; under its lock."""
        served = self.envs[env.path]
        name = served.name
        plan = self.view.snapshot(name)
        overlay = served.layer
        top = served.root_layer
        places = self.places(env)
        site, venv = places.site, places.venv
        if top is not None:
            if await self._run(partial(linking.state, venv, places.view_dir)) == "linked":
                fill = partial(self._fill_venv, self.view.snapshot_top(name), top, plan, overlay, env)
                await self._run(partial(linking.restore, venv, fill))
        elif await self._run(partial(linking.state, site, places.view_site)) in (
            "linked",
            "bound",
        ):
            await self._run(partial(linking.restore, site, partial(self._fill, plan, overlay)))
        crash_point("restored")
        await self._run(partial(self.store.unregister, env.path))
        await self.view.remove_env(name)
        self.store.aliases.pop(str(places.view_dir), None)
        if self.notices is not None:
            await self._run(partial(self.notices.remove, name))
        for layer in (overlay, top):  # not written out: they go next
            if layer is not None:
                layer.close()
        del self.envs[env.path]
        self._env_named.pop(name, None)
        await self._run(partial(shutil.rmtree, places.layer, True))
        await self._run(partial(shutil.rmtree, places.root_layer, True))

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
        served = self.envs[env.path]
        overlay = served.layer
        if not any(
            isinstance(entry, UpperFile | Whiteout | StoreFile) and not bytecode.is_bytecode(path)
            for path, entry in overlay.entries.items()
        ):
            return None  # only directories, symlinks or Python's own pycs: nothing a generation holds
        name = served.name
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
        top = served.root_layer
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

    async def _change(
        self, env: EnvRecord, change: Callable[[], GenerationRecord], progress: Progress | None = None
    ) -> GenerationRecord:
        """The one sequence of every change to an environment, under its
        lock: fold what was written inside the venv, the store's change (a
        worker thread), and unless it left the generation as it was (nothing
        to do), the view serving the new one, the files outside
        site-packages, the down notices and its bytecode queued."""
        await self._fold(env)
        before = await self._run(partial(self.store.generation, env.path))
        gen = await self._run(change)
        if gen.number == before.number:
            return gen
        if progress is not None:
            progress.stage = "serving"
        await self._refresh(env)
        crash_point("outside-pending")
        await self._write_outside(env, before, gen)
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
        """Store.install for the venv, registered first if new (under the
        same hold of its lock); `remove`, `ingested` and `action` as there. A
        refused install into a venv it registered leaves the venv as it found
        it: a plain venv again, not registered."""
        check_names(archives)  # before the venv is registered
        root = await self._run(partial(self._registered_or_root, path))
        async with self._lock(root):
            registered_here = venv_path(root) not in self.envs
            env = await self._register(root, "symlink")
            stored = False

            def install() -> GenerationRecord:
                nonlocal stored
                gen = self.store.install(
                    env.path,
                    list(archives),
                    request=request,
                    progress=progress,
                    remove=remove or (),
                    ingested=ingested,
                    action=action,
                    requested=requested,
                )
                stored = True
                return gen

            try:
                return await self._change(env, install, progress)
            except BaseException:
                if registered_here and not stored:
                    with trio.CancelScope(shield=True):
                        await self._unregister_after_failure(env)
                raise

    async def _unregister_after_failure(self, env: EnvRecord) -> None:
        try:
            await self._unregister(env)
        except Exception:  # the install's own error is the one to report
            log.exception("could not take back the registration of %s after a failed install", env.path)

    async def uninstall(
        self, path: str | os.PathLike[str], names: list[str], *, request: str | None = None
    ) -> GenerationRecord:
        env = await self._run(partial(self.store.get_env, path))
        async with self._lock(env.path):
            return await self._change(env, partial(self.store.uninstall, env.path, names, request=request))

    async def rollback(
        self, path: str | os.PathLike[str], to: int | None = None, *, request: str | None = None
    ) -> GenerationRecord:
        env = await self._run(partial(self.store.get_env, path))
        async with self._lock(env.path):
            return await self._change(env, partial(self.store.rollback, env.path, to, request=request))

    # -- the venv's files outside site-packages (daemon/outside.py) -------------------

    async def _write_outside(self, env: EnvRecord, before: GenerationRecord, after: GenerationRecord) -> None:
        """Bring the venv's scripts, headers and data from one generation to
        the next (written whole, exec bit from the record; removed unless the
        user changed them since). Never anything outside the venv."""
        old = {p: r for i in before.packages for p, r in i.outside.items()}
        new = {p: r for i in after.packages for p, r in i.outside.items()}
        await self._apply_outside(env, partial(outside.plan_change, old, new))

    async def _settle_outside(self, env: EnvRecord) -> None:
        """At start-up: a daemon killed between a generation flip and writing
        the venv's scripts, headers and data left them at the generation
        before; bring them to the current one (outside.plan_settle)."""

        def kept() -> tuple[dict[str, FileRef], dict[str, set[tuple[str, int]]]]:
            current = self.store.generation(env.path)
            others: dict[str, set[tuple[str, int]]] = {}
            for gen in self.store.history(env.path):
                for installed in gen.packages:
                    for rel, ref in installed.outside.items():
                        others.setdefault(rel, set()).add((ref.blob, ref.size))
            return {p: r for i in current.packages for p, r in i.outside.items()}, others

        current, others = await self._run(kept)
        plan_for = partial(outside.plan_settle, current, others, generation=env.current)
        await self._apply_outside(
            env, lambda root: plan_for(root), clean=sorted(current.keys() | others.keys())
        )

    async def _apply_outside(
        self, env: EnvRecord, plan_for: Callable[[outside.Root], outside.Plan], clean: Sequence[str] = ()
    ) -> None:
        """Plan against the venv's root as it is, then write: into the real
        directory in bind mode, into the root layer through the view in
        symlink mode (never through the mount: daemon/view.py)."""
        served = self.envs[env.path]
        if served.root_layer is None:
            real = outside.RealRoot(served.places.venv)

            def write_real() -> None:
                real.clean(list(clean))
                real.apply(plan_for(real), self._copy_blob)

            await self._run(write_real)
            return
        layer = served.root_layer
        root = outside.LayerRoot(self.view.root_files(served.name), set(layer.entries))

        def decide() -> outside.Plan:
            plan = plan_for(root)
            for rel in [*plan.put, *plan.drop]:
                outside.refuse_escape(rel, env.site_packages)
            return plan

        plan = await self._run(decide)
        if not plan.put and not plan.drop:
            return
        slots = self.view.new_root_bodies(served.name, len(plan.put))

        def write_bodies() -> dict[str, UpperFile]:
            placed = {}
            for (rel, ref), (upper_id, body) in zip(sorted(plan.put.items()), slots, strict=True):
                self._copy_blob(ref, body)
                os.chmod(body, 0o600)  # the layer's own file; the entry holds the mode the venv sees
                placed[rel] = UpperFile(upper_id, 0o755 if ref.executable else 0o644)
            return placed

        placed = await self._run(write_bodies)
        await self.view.place_root_files(served.name, placed, plan.drop)

    def _copy_blob(self, ref: FileRef, out: Path) -> None:
        """A store file as a real file at `out`, with its executable bit."""
        _size, where = self.store.blob_location(ref.blob)
        outside.copy_body(where, out)
        out.chmod(0o755 if ref.executable else 0o644)

    async def gc(self, keep: int = 5) -> GCReport:
        pinned = self.view.pinned_blobs()
        self._bytecode_epoch += 1  # GC drops bytecode entries
        try:
            return await self._run(partial(self.store.gc, keep, pinned=pinned))
        finally:
            self._bytecode_epoch += 1
