"""The LMDB index of a store and reading it: blobs, packages, environments,
generations, with the decoded records kept in memory by key.

Every write transaction goes through `Index.write` (one writer at a time, on
the calling thread); readers take their own short read transactions and
never wait on a writer (LMDB's MVCC). The key and value layouts are in
`schema`; this module is the one place that opens the environment.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import lmdb
from packaging.utils import canonicalize_name

from . import schema
from .blobs import BlobFiles
from .errors import NoSuchGeneration, PathConflict, RemoteBody, StoreBusy, StoreError, UnknownEnv
from .layout import PackageLayout, package_layout
from .schema import EnvRecord, FileRef, GenerationRecord, Installed, PackageRecord
from .venvs import venv_of_interpreter, venv_path, venv_root

MAP_SIZE = 1 << 40  # address space only; the file grows as data does


class Gate:
    """Shared for writers of new bodies, exclusive for GC: GC never deletes a
    body that an ingest in progress found present or is about to point at.
    Waiting shared holders go first, so a busy GC cannot starve installs."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._shared_waiting = 0
        self._exclusive = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._shared_waiting += 1
            while self._exclusive:
                self._cond.wait()
            self._shared_waiting -= 1
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._shared or self._shared_waiting:
                self._cond.wait()
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class Index:
    """The open index of the store in `home` and its blob bodies."""

    def __init__(self, home: Path) -> None:
        self.bodies = BlobFiles(home)
        try:
            self.env = lmdb.open(
                str(home / "index"),
                map_size=MAP_SIZE,
                max_dbs=len(schema.DATABASES),
                subdir=True,
                lock=True,
                readahead=False,
                max_spare_txns=4,
            )
        except lmdb.Error as exc:
            raise StoreBusy(f"cannot open the index in {home}: {exc}") from None
        self.db = {name: self.env.open_db(name.encode()) for name in schema.DATABASES}
        with self.env.begin(write=True) as txn:
            version = txn.get(b"schema", db=self.db["meta"])
            if version is None:
                txn.put(b"schema", schema.SCHEMA_VERSION, db=self.db["meta"])
            elif version != schema.SCHEMA_VERSION:
                raise StoreError(f"index schema {version!r} is not {schema.SCHEMA_VERSION!r}")
        self._write_lock = threading.Lock()
        self.gate = Gate()
        # Decoded records by key, read back from committed state only: a
        # package record never changes once written (only GC deletes one, and
        # drops it here too); an environment's record is kept with the bytes
        # it was decoded from and handed out as a copy.
        self._packages: dict[bytes, tuple[PackageRecord, PackageLayout | None]] = {}
        self._env_records: dict[bytes, tuple[bytes, EnvRecord]] = {}
        # The view's directory of each venv registered in symlink mode -> the
        # venv's path: a path given from inside the venv resolves there.
        self.aliases: dict[str, str] = {}

    def close(self) -> None:
        self.env.close()

    @contextmanager
    def write(self) -> Iterator[lmdb.Transaction]:
        with self._write_lock, self.env.begin(write=True) as txn:
            yield txn

    # -- blobs ------------------------------------------------------------------

    def has_blob(self, blob: str, txn: lmdb.Transaction | None = None) -> bool:
        key = bytes.fromhex(blob)
        if txn is not None:
            return txn.get(key, db=self.db["blobs"]) is not None
        with self.env.begin() as read:
            return read.get(key, db=self.db["blobs"]) is not None

    def blobs_present(self, blobs: Iterable[str]) -> set[str]:
        """Those of `blobs` the index holds, in one read transaction."""
        with self.env.begin() as txn:
            return {b for b in blobs if txn.get(bytes.fromhex(b), db=self.db["blobs"]) is not None}

    def blob_location(self, blob: str) -> tuple[int, bytes | Path]:
        """(size, inline bytes or the body's path)."""
        with self.env.begin() as txn:
            value = txn.get(bytes.fromhex(blob), db=self.db["blobs"])
        if value is None:
            raise StoreError(f"blob {blob} is not in the store")
        remote = schema.blob_remote(value)
        if remote is not None:
            raise RemoteBody(blob, remote)
        size, inline = schema.decode_blob(value)
        return size, inline if inline is not None else self.bodies.path(blob)

    def read_blob(self, blob: str) -> bytes:
        _size, where = self.blob_location(blob)
        return where if isinstance(where, bytes) else where.read_bytes()

    def check_blobs(self, txn: lmdb.Transaction, refs: Iterable[FileRef]) -> None:
        for ref in refs:
            if not self.has_blob(ref.blob, txn):
                raise StoreError(f"blob {ref.blob} vanished before commit")

    # -- packages ---------------------------------------------------------------

    def get_package(
        self, package: str | bytes, txn: lmdb.Transaction | None = None, *, committed: bool = False
    ) -> PackageRecord | None:
        """The package's record (shared: never modify it). `committed`: `txn`
        is a read transaction, so what it finds may be remembered."""
        key = bytes.fromhex(package) if isinstance(package, str) else package
        cached = self._packages.get(key)
        if cached is not None:
            return cached[0]
        value: bytes | memoryview | None
        if txn is None:
            with self.env.begin() as read:
                value = read.get(key, db=self.db["packages"])
            committed = True
        else:
            value = txn.get(key, db=self.db["packages"])
        if value is None:
            return None
        record = PackageRecord.decode(value)
        if committed:
            # A record read inside a write transaction may yet be rolled back.
            self._packages.setdefault(key, (record, None))
        return record

    def layout(self, pkg: PackageRecord) -> PackageLayout:
        """package_layout(pkg), kept with the record once it is stored."""
        cached = self._packages.get(pkg.id)
        if cached is not None and cached[0] is pkg:
            if cached[1] is None:
                cached = (pkg, package_layout(pkg))
                self._packages[pkg.id] = cached
            assert cached[1] is not None
            return cached[1]
        return package_layout(pkg)

    def forget_packages(self, keys: Iterable[bytes]) -> None:
        for key in keys:
            self._packages.pop(bytes(key), None)

    def packages(self) -> list[PackageRecord]:
        with self.env.begin() as txn:
            return [PackageRecord.decode(v) for _, v in txn.cursor(db=self.db["packages"])]

    # -- environments -------------------------------------------------------------

    def env_by_path(self, path: str | os.PathLike[str], txn: lmdb.Transaction) -> EnvRecord:
        root = venv_path(path)
        key = schema.env_id(self.aliases.get(root, root))
        value = txn.get(key, db=self.db["envs"])
        if value is None:
            inside = venv_of_interpreter(Path(path))
            if inside is not None:
                venv_root(path)  # says it is the venv's interpreter, and which venv
            raise UnknownEnv(f"{path} is not a registered environment")
        return self.decode_env(key, value)

    def decode_env(self, key: bytes, value: bytes | memoryview) -> EnvRecord:
        """EnvRecord.decode(value), from memory when the bytes are the same
        (its list of supported tags runs to hundreds of entries). A copy:
        callers change `current` and `next`; `tags` is shared, never changed."""
        raw = bytes(value)
        cached = self._env_records.get(key)
        if cached is None or cached[0] != raw:
            cached = (raw, EnvRecord.decode(raw))
            self._env_records[key] = cached
        return dataclasses.replace(cached[1])

    # -- wheel files by hash (install by name) --------------------------------------

    def wheel_package(self, sha256: str) -> PackageRecord | None:
        """The stored package a wheel file with this sha256 became, if it is
        still stored: such a file is not downloaded again."""
        with self.env.begin() as txn:
            value = txn.get(schema.wheel_key(sha256), db=self.db["wheels"])
            return self.get_package(bytes(value), txn) if value is not None else None

    def remember_wheels(self, packages: Mapping[str, bytes]) -> None:
        """Record wheel file sha256 (hex) -> package id after an ingest."""
        if not packages:
            return
        with self.write() as txn:
            for sha256, package in packages.items():
                txn.put(schema.wheel_key(sha256), package, db=self.db["wheels"])

    def get_env(self, path: str | os.PathLike[str]) -> EnvRecord:
        with self.env.begin() as txn:
            return self.env_by_path(path, txn)

    def envs(self) -> list[EnvRecord]:
        with self.env.begin() as txn:
            return [EnvRecord.decode(v) for _, v in txn.cursor(db=self.db["envs"])]

    # -- generations ------------------------------------------------------------

    def generation_in(self, txn: lmdb.Transaction, env: EnvRecord, number: int) -> GenerationRecord:
        value = txn.get(schema.generation_key(env.id, number), db=self.db["generations"])
        if value is None:
            raise NoSuchGeneration(f"{env.path} has no generation {number}")
        return GenerationRecord.decode(value)

    def generations_in(self, txn: lmdb.Transaction, env: EnvRecord) -> list[GenerationRecord]:
        out = []
        cursor = txn.cursor(db=self.db["generations"])
        if cursor.set_range(env.id):
            for key, value in cursor:
                if key[:16] != env.id:
                    break
                out.append(GenerationRecord.decode(value))
        return out

    def generation(self, path: str | os.PathLike[str], number: int | None = None) -> GenerationRecord:
        with self.env.begin() as txn:
            env = self.env_by_path(path, txn)
            return self.generation_in(txn, env, env.current if number is None else number)

    def history(self, path: str | os.PathLike[str]) -> list[GenerationRecord]:
        with self.env.begin() as txn:
            return self.generations_in(txn, self.env_by_path(path, txn))

    def tree(self, path: str | os.PathLike[str], number: int | None = None) -> dict[str, FileRef]:
        """site-packages of an environment at a generation (default: current)."""
        with self.env.begin() as txn:
            env = self.env_by_path(path, txn)
            gen = self.generation_in(txn, env, env.current if number is None else number)
            return self.site_of(txn, env, gen)

    def site_parts(
        self, path: str | os.PathLike[str]
    ) -> list[tuple[bytes, dict[str, FileRef], dict[str, FileRef]]]:
        """site-packages of an environment's current generation as `tree`
        gives it, package by package: (package id, the package's own files,
        the files installing generated for this venv), in `tree`'s order."""
        with self.env.begin() as txn:
            env = self.env_by_path(path, txn)
            gen = self.generation_in(txn, env, env.current)
            parts = []
            for installed in gen.packages:
                pkg = self.get_package(installed.package, txn, committed=True)
                if pkg is None:
                    raise StoreError(
                        f"generation {gen.number} of {env.path} names missing package {installed.package}"
                    )
                parts.append((pkg.id, self.layout(pkg).site, installed.site))
            return parts

    def site_of(self, txn: lmdb.Transaction, env: EnvRecord, gen: GenerationRecord) -> dict[str, FileRef]:
        """`txn` is a read transaction."""
        tree: dict[str, FileRef] = {}
        for installed in gen.packages:
            pkg = self.get_package(installed.package, txn, committed=True)
            if pkg is None:
                raise StoreError(
                    f"generation {gen.number} of {env.path} names missing package {installed.package}"
                )
            tree.update(self.layout(pkg).site)
            tree.update(installed.site)
        return tree

    def path_owners(self, txn: lmdb.Transaction, packages: Iterable[Installed]) -> dict[str, tuple[str, str]]:
        """Every path the installed `packages` hold (site-packages relative,
        or `<venv>/...` outside it) -> (canonical name, "name version") of its
        package; PathConflict if two of them hold one path. Records are asked
        of `txn` itself, not of the decoded records in memory."""
        owner: dict[str, tuple[str, str]] = {}
        for installed in packages:
            pkg = self.get_package(installed.package, txn)
            if pkg is None or txn.get(pkg.id, db=self.db["packages"]) is None:
                raise StoreError(f"package {installed.package} is not in the store")
            mine = (canonicalize_name(pkg.name), f"{pkg.name} {pkg.version}")
            for paths in (self.layout(pkg).site, installed.site, (f"<venv>/{p}" for p in installed.outside)):
                for p in paths:
                    other = owner.setdefault(p, mine)
                    if other[1] != mine[1]:
                        raise PathConflict(f"{other[1]} and {mine[1]} both install {p}")
        return owner
