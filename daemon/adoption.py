"""Environments entering and leaving the store: registering a venv (what
its site-packages holds becomes generation 1), folding what was written
inside a venv into a generation, unregistering.

A distribution found in a venv is adopted from its RECORD as a package of
source "adopted"; files no RECORD names go to one "(unowned)" package.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from nwcache.archive.digest import DigestItem, content_digest

from . import schema
from .bytecode_index import mark_pending
from .generations import Generations
from .index import Index
from .layout import site_tree
from .reserve import Reserve
from .schema import EnvRecord, FileRef, GenerationRecord, Installed, PackageRecord
from .staging import Staged
from .venvs import group_distributions, probe, scan_site_packages, venv_path, venv_root


def adopted(
    name: str, version: str, dist_info: str, files: dict[str, FileRef], external: list[str]
) -> PackageRecord:
    digest = content_digest(
        DigestItem(p, r.executable, bytes.fromhex(r.blob), r.size) for p, r in files.items()
    )
    return PackageRecord(name, version, digest, [], "", "adopted", dist_info, files, sorted(external))


class Adoption:
    def __init__(self, index: Index, generations: Generations, reserve: Reserve) -> None:
        self.index = index
        self.generations = generations
        self.reserve = reserve

    def register(self, path: str | os.PathLike[str], *, link: str = "symlink") -> EnvRecord:
        """Adopt a venv: ask its interpreter what it is, store what its
        site-packages holds as generation 1. Registering twice is a no-op."""
        index = self.index
        with index.env.begin() as txn:
            key = schema.env_id(venv_path(path))
            value = txn.get(key, db=index.db["envs"])
            if value is not None:
                return index.decode_env(key, value)
        root = venv_root(path)
        interp = probe(root)
        env = EnvRecord(
            path=str(root),
            python=interp.python,
            version=interp.version,
            cache_tag=interp.cache_tag,
            magic=interp.magic,
            tags=interp.tags,
            site_packages=interp.site_packages,
            scripts=interp.scripts,
            include=interp.include,
            current=1,
            next=2,
            created=time.time(),
            link=link,
        )
        site = root / env.site_packages
        dists, unowned = scan_site_packages(site)
        staged = Staged(index.bodies)
        with index.gate.shared():
            try:
                packages = [
                    self._adopt(site, d.name, d.version, d.dist_info, d.files, d.external, staged)
                    for d in dists
                ]
                if unowned:
                    packages.append(self._adopt(site, "(unowned)", "0", "", unowned, [], staged))
                staged.publish()
                installed = [
                    Installed(p.digest.removeprefix("sha256:"), p.name, p.version, False, {}, {})
                    for p in packages
                ]
                generation = GenerationRecord(
                    1,
                    None,
                    time.time(),
                    "register (adopted site-packages)",
                    installed,
                    schema.changes_between([], installed),
                )
                with index.write() as txn:
                    raced = txn.get(env.id, db=index.db["envs"])
                    if raced is not None:
                        staged.discard()
                        return EnvRecord.decode(raced)
                    staged.commit(txn, index.db["blobs"])
                    for pkg in packages:
                        index.check_blobs(txn, pkg.files.values())
                        txn.put(pkg.id, pkg.encode(), db=index.db["packages"], overwrite=False)
                    txn.put(schema.generation_key(env.id, 1), generation.encode(), db=index.db["generations"])
                    txn.put(env.id, env.encode(), db=index.db["envs"])
                    mark_pending(txn, index.db["compiling"], env.id, 1)
            except BaseException:
                staged.discard()
                raise
        return env

    def _adopt(
        self,
        site: Path,
        name: str,
        version: str,
        dist_info: str,
        paths: dict[str, bool],
        external: list[str],
        staged: Staged,
    ) -> PackageRecord:
        files = {rel: self._add(staged, site / rel, executable) for rel, executable in sorted(paths.items())}
        return adopted(name, version, dist_info, files, external)

    def _add(self, staged: Staged, full: Path, executable: bool) -> FileRef:
        """Stage a file's content unless the store or `staged` has it."""
        return staged.add_path(full, executable, self.index.has_blob)

    def _outside(
        self, staged: Staged, env: EnvRecord, external: list[str], outside: dict[str, tuple[Path, bool]]
    ) -> dict[str, FileRef]:
        """The files outside site-packages an adopted RECORD names (paths
        relative to site-packages, `../../../bin/x`) that the venv holds."""
        found: dict[str, FileRef] = {}
        for entry in external:
            rel = os.path.normpath(os.path.join(env.site_packages, entry))
            item = outside.get(rel)
            if item is not None and not rel.startswith(".."):
                found[rel] = self._add(staged, item[0], item[1])
        return found

    def fold(
        self,
        path: str | os.PathLike[str],
        files: dict[str, FileRef | tuple[Path, bool]],
        action: str = "adopt changes made inside the venv",
        outside: dict[str, tuple[Path, bool]] | None = None,
    ) -> GenerationRecord:
        """Make what site-packages holds now (store files as FileRefs, files
        written inside the venv as (body, executable)) the next generation.
        Installed packages whose files are all unchanged stay as they are;
        every other distribution is adopted from its RECORD, as at
        registration, with the files its RECORD names outside site-packages
        that `outside` (venv-relative path -> (body, executable)) holds: its
        scripts, which a rollback then takes away or puts back."""
        index = self.index
        env = index.get_env(path)
        staged = Staged(index.bodies)
        with index.gate.shared():
            try:
                refs = {
                    rel: item if isinstance(item, FileRef) else self._add(staged, item[0], item[1])
                    for rel, item in files.items()
                }

                def read_text(rel: str) -> str | None:
                    ref = refs.get(rel)
                    if ref is None:
                        return None
                    content = staged.read(ref.blob)
                    if content is None:
                        content = index.read_blob(ref.blob)
                    return content.decode("utf-8", "replace")

                dists, unowned = group_distributions({p: r.executable for p, r in refs.items()}, read_text)
                current = index.generation(env.path)
                unchanged: dict[tuple[tuple[str, FileRef], ...], Installed] = {}
                for installed in current.packages:
                    pkg = index.get_package(installed.package)
                    if pkg is not None:
                        site = {**site_tree(pkg, env), **installed.site}
                        unchanged[tuple(sorted(site.items()))] = installed
                kept: list[Installed] = []
                new: list[PackageRecord] = []
                groups = [(d.name, d.version, d.dist_info, d.files, d.external) for d in dists]
                if unowned:
                    groups.append(("(unowned)", "0", "", unowned, []))
                for name, version, dist_info, paths, external in groups:
                    now = {p: refs[p] for p in paths}
                    same = unchanged.get(tuple(sorted(now.items())))
                    if same is not None:
                        kept.append(same)
                    else:
                        new.append(adopted(name, version, dist_info, now, external))
                installed_new = [
                    Installed(
                        p.digest.removeprefix("sha256:"),
                        p.name,
                        p.version,
                        False,
                        {},
                        self._outside(staged, env, p.external, outside or {}),
                    )
                    for p in new
                ]
                staged.publish()
                return self.generations.flip(env.path, action, lambda _: kept + installed_new, staged, new)
            except BaseException:
                staged.discard()
                raise

    def unregister(self, path: str | os.PathLike[str]) -> None:
        """Forget an environment and its generations (GC frees what only it used)."""
        self.reserve.release_if_short()
        try:
            self._unregister(path)
        finally:
            self.reserve.keep()

    def _unregister(self, path: str | os.PathLike[str]) -> None:
        index = self.index
        with index.write() as txn:
            env = index.env_by_path(path, txn)
            cursor = txn.cursor(db=index.db["generations"])
            keys = []
            if cursor.set_range(env.id):
                for key in cursor.iternext(values=False):
                    if key[:16] != env.id:
                        break
                    keys.append(bytes(key))
            for key in keys:
                txn.delete(key, db=index.db["generations"])
            txn.delete(env.id, db=index.db["envs"])
            txn.delete(env.id, db=index.db["compiling"])
