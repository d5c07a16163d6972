"""Generations of an environment and planning installs into them: install,
uninstall, rollback and the flip that commits a new generation.

A generation is the list of installed packages (each with the files
installing generated for it). `Generations.flip` builds the next one from
the current one, checks path conflicts and points the environment at it,
in one write transaction on the calling thread.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import lmdb
from packaging.utils import canonicalize_name

from nwcache.archive import Archive

from . import schema
from .bytecode_index import mark_pending
from .crashpoints import crash_point
from .errors import IncompatibleTags, NoSuchGeneration, StoreError, UnknownPackage
from .index import Index
from .ingest import WORKERS, Created, Ingester, Progress, check_names
from .layout import plan_install
from .reserve import Reserve
from .schema import EnvRecord, FileRef, GenerationRecord, Installed, PackageRecord
from .staging import Staged


def ranges(numbers: Iterable[int]) -> str:
    """Generation numbers as ranges: [1, 2, 3, 5] -> "1-3, 5"."""
    out: list[str] = []
    for n in sorted(numbers):
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


class Generations:
    def __init__(
        self, index: Index, ingester: Ingester, reserve: Reserve, take_back: Callable[[Created], None]
    ) -> None:
        self.index = index
        self.ingester = ingester
        self.reserve = reserve
        self._take_back = take_back

    def install(
        self,
        path: str | os.PathLike[str],
        archives: list[str | os.PathLike[str] | PackageRecord],
        *,
        requested: bool | Collection[str] = True,
        action: str | None = None,
        request: str | None = None,
        progress: Progress | None = None,
        remove: Iterable[str] = (),
        ingested: dict[str, PackageRecord] | None = None,
    ) -> GenerationRecord:
        """Install archives into an environment as one new generation. A
        distribution of the same name already there is replaced (upgrade).
        `request` (the client's request id) is recorded in the generation;
        `progress` follows the work as it is done. An item may be a stored
        package instead of a file (install by name); `remove` names
        distributions the same generation drops (sync); `ingested` collects
        each archive path's package; `requested` is whether the installed
        distributions get a REQUESTED file, or the canonical names that do
        (what the user asked for, not its dependencies, as pip marks them).
        When the result would be the current
        generation again (the same packages, nothing removed), no generation
        is added and the current one is returned."""
        env = self.index.get_env(path)
        staged = Staged(self.index.bodies)
        check_names(archives)
        created = Created()
        with ExitStack() as opened:
            # Every archive's metadata refusals before the first is stored: a
            # hostile second archive must not leave the first in the store.
            # Each is opened once, and stays open until it is ingested.
            sources: list[tuple[str | os.PathLike[str] | None, PackageRecord | Archive]] = []
            owners = self.ingester.owners(env)
            for archive_path in archives:
                if isinstance(archive_path, PackageRecord):
                    sources.append((None, self._still_stored(archive_path, env)))
                    continue
                known = self.ingester.ingested_file(archive_path, env.tags)
                if known is None:
                    archive = opened.enter_context(Archive.open(archive_path))
                    self.ingester.admit(archive, env.tags, env, owners)
                    sources.append((archive_path, archive))
                else:
                    sources.append((archive_path, known))
            try:
                if progress is not None:
                    progress.stage = "storing"
                gen = self._install(
                    env,
                    sources,
                    staged,
                    created,
                    requested=requested,
                    action=action,
                    request=request,
                    progress=progress,
                    remove=frozenset(canonicalize_name(n) for n in remove),
                    ingested=ingested,
                )
            except BaseException:
                # A later archive failing (a bad hash, a bomb found while its
                # payload is read) must not leave the earlier ones stored.
                if created.packages or created.blobs:
                    self._take_back(created)
                raise
        self.reserve.keep()  # grown as the index grows
        return gen

    def _install(
        self,
        env: EnvRecord,
        sources: list[tuple[str | os.PathLike[str] | None, PackageRecord | Archive]],
        staged: Staged,
        created: Created,
        *,
        requested: bool | Collection[str],
        action: str | None,
        request: str | None = None,
        progress: Progress | None = None,
        remove: frozenset[str] = frozenset(),
        ingested: dict[str, PackageRecord] | None = None,
    ) -> GenerationRecord:
        index = self.index
        # Shared from ingest to flip: GC must not collect the new packages
        # before a generation reaches them.
        with index.gate.shared():
            try:
                # Every archive's members are staged at once on one pool; one
                # publish (one sync) and one transaction store them all.
                with ThreadPoolExecutor(WORKERS) as pool:
                    finishes = [
                        (
                            path,
                            source
                            if isinstance(source, PackageRecord)
                            else self.ingester.stage(source, staged, pool, progress),
                        )
                        for path, source in sources
                    ]
                    packages = [
                        item if isinstance(item, PackageRecord) else item() for _path, item in finishes
                    ]
                names = [canonicalize_name(p.name) for p in packages]
                if ingested is not None:
                    for (path, source), pkg in zip(sources, packages, strict=True):
                        if isinstance(source, Archive) and path is not None:
                            ingested[os.fspath(path)] = pkg
                current = index.generation(env.path)
                have = {canonicalize_name(i.name): i.package for i in current.packages}
                if all(have.get(n) == p.id.hex() for n, p in zip(names, packages, strict=True)) and not (
                    remove & have.keys()
                ):
                    # The same packages, so stored already: nothing staged is new.
                    staged.discard()
                    return current  # nothing to do: no identical generation
                dropped = remove | set(names)

                def read_blob(blob: str) -> bytes:
                    content = staged.read(blob)
                    return index.read_blob(blob) if content is None else content

                plans = [
                    plan_install(
                        pkg,
                        env,
                        requested=requested
                        if isinstance(requested, bool)
                        else canonicalize_name(pkg.name) in requested,
                        read_blob=read_blob,
                        put_blob=lambda content, executable: FileRef(
                            staged.add_bytes(content), len(content), executable
                        ),
                        layout=index.layout(pkg),
                        archive=path,
                    )
                    for (path, _source), pkg in zip(sources, packages, strict=True)
                ]
                if any(isinstance(source, Archive) for _path, source in sources):
                    self.ingester.commit(staged, packages, created)
                    for (path, source), pkg in zip(sources, packages, strict=True):
                        if isinstance(source, Archive) and path is not None:
                            self.ingester.remember_file(path, pkg)
                    staged = Staged(index.bodies)
                else:
                    # Every package was stored already: the files installing
                    # generated are indexed by the flip's own transaction.
                    staged.publish()
                what = action or "install " + " ".join(f"{p.name}=={p.version}" for p in packages)
                return self.flip(
                    env.path,
                    what,
                    lambda current: [i for i in current if canonicalize_name(i.name) not in dropped] + plans,
                    staged,
                    request=request,
                )
            except BaseException:
                staged.discard()
                raise

    def _still_stored(self, item: PackageRecord, env: EnvRecord) -> PackageRecord:
        """A stored package to install by name, checked for the env's tags."""
        if self.index.get_package(item.id) is None:
            raise StoreError(
                f"{item.filename} is no longer stored (collected meanwhile)", hint="run the install again"
            )
        if not set(env.tags).intersection(item.tags):
            raise IncompatibleTags(
                f"{item.filename} is tagged {', '.join(item.tags)}; the environment accepts none of them"
            )
        return item

    def uninstall(
        self, path: str | os.PathLike[str], names: list[str], *, request: str | None = None
    ) -> GenerationRecord:
        wanted = {canonicalize_name(n) for n in names}

        def without(current: list[Installed]) -> list[Installed]:
            present = {canonicalize_name(i.name) for i in current}
            absent = sorted(wanted - present)
            if absent:
                raise UnknownPackage(f"not installed in {path}: {', '.join(absent)}")
            return [i for i in current if canonicalize_name(i.name) not in wanted]

        self.reserve.release_if_short()
        try:
            return self.flip(
                str(path),
                "uninstall " + " ".join(sorted(wanted)),
                without,
                Staged(self.index.bodies),
                request=request,
            )
        finally:
            self.reserve.keep()

    def flip(
        self,
        path: str,
        action: str,
        change: Callable[[list[Installed]], list[Installed]],
        staged: Staged,
        new_packages: Iterable[PackageRecord] = (),
        *,
        request: str | None = None,
    ) -> GenerationRecord:
        """Build the next generation from the current one and point the
        environment at it, in one transaction."""
        index = self.index
        with index.write() as txn:
            env = index.env_by_path(path, txn)
            current = index.generation_in(txn, env, env.current)
            packages = change(list(current.packages))
            staged.commit(txn, index.db["blobs"])
            for pkg in new_packages:
                index.check_blobs(txn, pkg.files.values())
                txn.put(pkg.id, pkg.encode(), db=index.db["packages"], overwrite=False)
            self._check_conflicts(txn, env, packages)
            gen = GenerationRecord(
                env.next,
                env.current,
                time.time(),
                action,
                packages,
                schema.changes_between(current.packages, packages),
                request,
            )
            txn.put(schema.generation_key(env.id, gen.number), gen.encode(), db=index.db["generations"])
            crash_point("generation-written")
            env.previous, env.current, env.next = env.current, gen.number, gen.number + 1
            txn.put(env.id, env.encode(), db=index.db["envs"])
            mark_pending(txn, index.db["compiling"], env.id, gen.number)
            crash_point("env-flipped")
        crash_point("flip-committed")
        return gen

    def _check_conflicts(self, txn: lmdb.Transaction, env: EnvRecord, packages: list[Installed]) -> None:
        """The next generation's packages exist and hold no path in common."""
        self.index.path_owners(txn, packages)
        for installed in packages:
            self.index.check_blobs(txn, [*installed.site.values(), *installed.outside.values()])

    def rollback(
        self, path: str | os.PathLike[str], to: int | None = None, *, request: str | None = None
    ) -> GenerationRecord:
        """Point the environment at a kept generation: `to`, or by default
        the one it was at before its last change (a new generation or a
        rollback), as `nix-env --rollback` and `conda install --revision`
        users expect: a rollback after `rollback --to 2` goes back. The
        generation left becomes the one the next plain rollback returns to.
        Returns the generation with `changes` against the one left."""
        self.reserve.release_if_short()
        try:
            return self._rollback(path, to, request)
        finally:
            self.reserve.keep()

    def _rollback(
        self, path: str | os.PathLike[str], to: int | None, request: str | None
    ) -> GenerationRecord:
        index = self.index
        with index.write() as txn:
            env = index.env_by_path(path, txn)
            current = index.generation_in(txn, env, env.current)
            number = to
            if number is None:
                number = current.parent if env.previous is None else env.previous
                if number is None:
                    raise NoSuchGeneration(
                        f"{env.path} is at generation {current.number}, its first: there is nothing to roll back to"
                    )
            kept = [g.number for g in index.generations_in(txn, env)]
            if number not in kept:
                if to is None:
                    why = f"generation {number}, where it was before, is no longer kept (gc dropped it)"
                elif number > max(kept):
                    why = f"no generation {number}"
                else:
                    why = f"generation {number} is no longer kept"
                raise NoSuchGeneration(f"{env.path} has {why}; it keeps {ranges(kept)}")
            gen = index.generation_in(txn, env, number)
            if gen.number != env.current:
                env.previous, env.current, env.request = env.current, gen.number, request
                txn.put(env.id, env.encode(), db=index.db["envs"])
                mark_pending(txn, index.db["compiling"], env.id, gen.number)
        return dataclasses.replace(gen, changes=schema.changes_between(current.packages, gen.packages))
