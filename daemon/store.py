"""The content-addressed store: blobs, packages, environments, generations.

Synchronous by design: the daemon calls it through `trio.to_thread.run_sync`.
Every write transaction begins and commits inside one method call, on the
calling thread, and holds the writer lock only for the short index update:
hashing, decompression and writing bodies happen before it. Readers use their
own short read transactions and never wait on a writer (LMDB's MVCC).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import lmdb
from packaging.utils import canonicalize_name

from nwcache.archive import Archive
from nwcache.archive.digest import DigestItem, content_digest
from nwcache.archive.parallel import SMALL_FILE, InFlight, executors, write_all
from nwcache.archive.sources import FileData
from nwcache.archive.wheelinfo import parse_filename

from . import bytecode, schema
from .blobs import BlobFiles, fsync_path, syncfs
from .crashpoints import crash_point
from .errors import (
    IncompatibleTags,
    NoSuchGeneration,
    NotAWheel,
    PathConflict,
    StoreBusy,
    StoreError,
    UnknownEnv,
    UnknownPackage,
)
from .layout import PackageLayout, check_installable, package_layout, plan_install, site_tree
from .reserve import Reserve
from .schema import EnvRecord, FileRef, GenerationRecord, Installed, PackageRecord
from .venvs import (
    group_distributions,
    probe,
    scan_site_packages,
    sha256_file,
    venv_of_interpreter,
    venv_root,
)

MAP_SIZE = 1 << 40  # address space only; the file grows as data does
CHUNK = 1 << 20
# Up to this many new bodies are made durable one fsync each (and one per
# directory); more in one batch, one syncfs. syncfs flushes every dirty page
# of the file system, other programs' too: tens of ms on a busy machine for
# the one new RECORD an install of a stored package writes.
FSYNC_ONE_BY_ONE = 16


def _hex(data: FileData) -> str:
    assert data.sha256 is not None
    return data.sha256.hex()


class _Gate:
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


@dataclass
class _Pending:
    """Blobs an operation has prepared but the index does not hold yet."""

    inline: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, tuple[Path, int]] = field(default_factory=dict)  # blob -> (temp, size)

    def discard(self) -> None:
        for temp, _ in self.files.values():
            try:
                temp.unlink()
            except FileNotFoundError:
                pass


def _mark(gen: GenerationRecord, packages: set[str], blobs: set[str]) -> None:
    """Add the packages and blobs one generation reaches."""
    for installed in gen.packages:
        packages.add(installed.package)
        blobs.update(r.blob for r in (*installed.site.values(), *installed.outside.values()))


def check_names(archives: Iterable[str | os.PathLike[str] | PackageRecord]) -> None:
    """What the file names alone refuse, before anything is stored or
    registered: an sdist or other non-wheel, two versions of one distribution.
    A stored package (install by name, a wheel file ingested before) counts
    under its file name."""
    seen: dict[str, str] = {}
    for archive in archives:
        if isinstance(archive, PackageRecord):
            archive = archive.filename
        name = Path(archive).name
        if not name.endswith(".whl"):
            sdist = name.endswith((".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip"))
            raise NotAWheel(
                f"{archive} is {'a source distribution (sdist)' if sdist else 'not a wheel (.whl)'}: "
                "nwcache installs wheels"
            )
        key = canonicalize_name(parse_filename(name, archive=str(archive)).name)
        if key in seen:
            raise StoreError(
                f"{seen[key]} and {name} are two versions of {key}: one install takes one of each distribution",
                hint="install the one you want (installing the other later replaces it; history keeps both)",
            )
        seen[key] = name


def _ranges(numbers: Iterable[int]) -> str:
    """Generation numbers as ranges: [1, 2, 3, 5] -> "1-3, 5"."""
    out: list[str] = []
    for n in sorted(numbers):
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


@dataclass
class _Created:
    """What one install added to the index, so a failure can take it back."""

    packages: set[bytes] = field(default_factory=set)
    blobs: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Problem:
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True)
class GCReport:
    generations: int
    packages: int
    blobs: int
    bytes_freed: int


class Store:
    def __init__(self, home: str | os.PathLike[str], *, sweep: bool = True) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        # One process owns a store: the writer lock, the GC gate and the
        # start-up sweep of tmp/ all assume no other writer. The kernel drops
        # the lock when the owner dies, however it dies.
        self._owner = os.open(self.home / "owner.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._owner)
            raise StoreBusy(f"another process has the store in {self.home} open") from None
        self.bodies = BlobFiles(self.home)
        try:
            self.env = lmdb.open(
                str(self.home / "index"),
                map_size=MAP_SIZE,
                max_dbs=len(schema.DATABASES),
                subdir=True,
                lock=True,
                readahead=False,
                max_spare_txns=4,
            )
        except lmdb.Error as exc:
            raise StoreBusy(f"cannot open the index in {self.home}: {exc}") from None
        self.db = {name: self.env.open_db(name.encode()) for name in schema.DATABASES}
        with self.env.begin(write=True) as txn:
            version = txn.get(b"schema", db=self.db["meta"])
            if version is None:
                txn.put(b"schema", schema.SCHEMA_VERSION, db=self.db["meta"])
            elif version != schema.SCHEMA_VERSION:
                raise StoreError(f"index schema {version!r} is not {schema.SCHEMA_VERSION!r}")
        self._write_lock = threading.Lock()
        self._gate = _Gate()
        # Archive files this process ingested, by identity: path, inode, size, mtime -> digest.
        self._recent: dict[tuple[str, int, int, int, int], str] = {}
        self._recent_lock = threading.Lock()
        # Decoded records by key, read back from committed state only: a
        # package record never changes once written (only GC deletes one, and
        # drops it here too); an environment's record is kept with the bytes
        # it was decoded from and handed out as a copy.
        self._packages: dict[bytes, tuple[PackageRecord, PackageLayout | None]] = {}
        self._env_records: dict[bytes, tuple[bytes, EnvRecord]] = {}
        self.reserve = Reserve(self.home / "reserve", self.home / "index" / "data.mdb")
        if sweep:
            self.sweep()
        self.reserve.keep()

    def close(self) -> None:
        self.env.close()
        os.close(self._owner)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[lmdb.Transaction]:
        with self._write_lock, self.env.begin(write=True) as txn:
            yield txn

    # -- blobs ------------------------------------------------------------------

    def has_blob(self, blob: str, txn: lmdb.Transaction | None = None) -> bool:
        key = bytes.fromhex(blob)
        if txn is not None:
            return txn.get(key, db=self.db["blobs"]) is not None
        with self.env.begin() as read:
            return read.get(key, db=self.db["blobs"]) is not None

    def read_blob(self, blob: str) -> bytes:
        _size, where = self.blob_location(blob)
        return where if isinstance(where, bytes) else where.read_bytes()

    def body_path(self, blob: str) -> Path:
        """Where the body of `blob` lives if it is a file (it may be inline)."""
        return self.bodies.path(blob)

    def blob_location(self, blob: str) -> tuple[int, bytes | Path]:
        """(size, inline bytes or the body's path) for the view."""
        with self.env.begin() as txn:
            value = txn.get(bytes.fromhex(blob), db=self.db["blobs"])
        if value is None:
            raise StoreError(f"blob {blob} is not in the store")
        size, inline = schema.decode_blob(value)
        return size, inline if inline is not None else self.bodies.path(blob)

    def _stage_bytes(self, pending: _Pending, content: bytes) -> str:
        blob = hashlib.sha256(content).hexdigest()
        if blob in pending.inline or blob in pending.files:
            return blob
        if len(content) <= schema.INLINE_MAX:
            pending.inline[blob] = content
        else:
            fd, temp = self.bodies.new_temp()
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            pending.files[blob] = (temp, len(content))
        return blob

    def _commit_blobs(self, txn: lmdb.Transaction, pending: _Pending) -> list[str]:
        """Index the pending blobs (bodies already published and durable);
        returns those the index did not hold."""
        added = []
        for blob, content in pending.inline.items():
            if txn.put(
                bytes.fromhex(blob),
                schema.encode_blob(len(content), content),
                db=self.db["blobs"],
                overwrite=False,
            ):
                added.append(blob)
        for blob, (_temp, size) in pending.files.items():
            if txn.put(
                bytes.fromhex(blob), schema.encode_blob(size, None), db=self.db["blobs"], overwrite=False
            ):
                added.append(blob)
        return added

    def _publish(self, pending: _Pending) -> None:
        """Bodies into place, durably, before any index entry names them."""
        if not pending.files:
            return
        published = []
        for blob, (temp, _size) in pending.files.items():
            if self.bodies.exists(blob):
                temp.unlink()
            else:
                self.bodies.publish(temp, blob)
                published.append(self.bodies.path(blob))
        crash_point("bodies-published")
        if len(published) > FSYNC_ONE_BY_ONE:
            syncfs(self.bodies.root)
        else:
            for body in published:
                fsync_path(body)
            for directory in {body.parent for body in published}:
                fsync_path(directory)
        crash_point("bodies-durable")

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

    def _layout(self, pkg: PackageRecord) -> PackageLayout:
        """package_layout(pkg), kept with the record once it is stored."""
        cached = self._packages.get(pkg.id)
        if cached is not None and cached[0] is pkg:
            if cached[1] is None:
                cached = (pkg, package_layout(pkg))
                self._packages[pkg.id] = cached
            assert cached[1] is not None
            return cached[1]
        return package_layout(pkg)

    def _forget_packages(self, keys: Iterable[bytes]) -> None:
        for key in keys:
            self._packages.pop(bytes(key), None)

    def packages(self) -> list[PackageRecord]:
        with self.env.begin() as txn:
            return [PackageRecord.decode(v) for _, v in txn.cursor(db=self.db["packages"])]

    def ingest(
        self,
        path: str | os.PathLike[str],
        *,
        tags: list[str] | None = None,
        env: EnvRecord | None = None,
        created: _Created | None = None,
    ) -> PackageRecord:
        """Store a classic or 2.0 archive, verifying every file against RECORD.
        Writes only the blobs the store lacks; reads no payload byte when the
        package, or every one of its blobs, is already stored. With `tags`
        (default: `env`'s), refuses an archive that fits none before reading
        its payload; with `env`, also one whose installation there would be
        refused (layout.check_installable), so a refused install stores nothing.
        `created` collects the package and blobs this call added."""
        if tags is None and env is not None:
            tags = env.tags
        known = self._ingested_file(path, tags)
        if known is not None:
            return known
        with Archive.open(path) as archive:
            self._admit(archive, tags, env)
            with self._gate.shared():
                record = self._ingest(archive, created)
        self._remember_file(path, record)
        return record

    def _admit(self, archive: Archive, tags: list[str] | None, env: EnvRecord | None) -> None:
        """The refusals the metadata alone decides: tags, then installability."""
        if tags is not None:
            supported = set(tags)
            wheel_tags = sorted(str(t) for t in archive.wheel_name.tags)
            if not supported.intersection(wheel_tags):
                raise IncompatibleTags(
                    f"{archive.path.name} is tagged {', '.join(wheel_tags)}; the environment accepts none of them"
                )
        if env is not None:
            self._check_installable(archive, env)

    def _check_installable(self, archive: Archive, env: EnvRecord) -> None:
        """Every install-time refusal, from the metadata, before a byte is stored:
        the layout's rules, then the files of other distributions in the
        environment (a conflict found only at the flip would come after the
        package was stored)."""
        entry_points = next(
            (f for f in archive.files if f.path == f"{archive.dist_info}/entry_points.txt"), None
        )
        text = b"".join(archive.open_file(entry_points).chunks()) if entry_points is not None else None
        name = str(archive.wheel_name.name)
        label = f"{name} {archive.version}"
        wanted = check_installable(label, archive.dist_info, name, (f.path for f in archive.files), text, env)
        ours = wanted.site | {f"<venv>/{p}" for p in wanted.outside}
        with self.env.begin() as txn:
            now = self._env_by_path(env.path, txn)
            current = self._generation(txn, now, now.current)
            for installed in current.packages:
                if canonicalize_name(installed.name) == name:
                    continue  # an upgrade replaces it
                pkg = self.get_package(installed.package, txn)
                if pkg is None:
                    continue  # the flip reports it
                theirs = [*site_tree(pkg, env), *installed.site, *(f"<venv>/{p}" for p in installed.outside)]
                clash = sorted(ours.intersection(theirs))
                if clash:
                    raise PathConflict(f"{pkg.name} {pkg.version} and {label} both install {clash[0]}")

    @staticmethod
    def _file_key(path: str | os.PathLike[str]) -> tuple[str, int, int, int, int]:
        st = os.stat(path)
        return os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

    def _remember_file(self, path: str | os.PathLike[str], record: PackageRecord) -> None:
        try:
            key = self._file_key(path)
        except OSError:  # the archive went away once read: nothing to remember it by
            return
        with self._recent_lock:
            self._recent[key] = record.digest
            while len(self._recent) > 4096:
                self._recent.pop(next(iter(self._recent)))

    def _ingested_file(self, path: str | os.PathLike[str], tags: list[str] | None) -> PackageRecord | None:
        """The package an unchanged archive file (same path, inode, size and
        mtime as when this process ingested it) already is, if still stored:
        installing a stored wheel again then opens nothing."""
        try:
            key = self._file_key(path)
        except OSError:
            return None
        with self._recent_lock:
            digest = self._recent.get(key)
        if digest is None:
            return None
        record = self.get_package(bytes.fromhex(digest.removeprefix("sha256:")))
        if record is None:
            return None
        if tags is not None and not set(tags).intersection(record.tags):
            raise IncompatibleTags(
                f"{Path(path).name} is tagged {', '.join(record.tags)}; the environment accepts none of them"
            )
        return record

    def _ingest(self, archive: Archive, created: _Created | None = None) -> PackageRecord:
        claimed = archive.metadata_digest()
        if claimed is not None:
            existing = self.get_package(bytes.fromhex(claimed.removeprefix("sha256:")))
            if existing is not None:
                return existing
        known = {f.path: f.record.digest.hex() for f in archive.files if f.record.hash_name == "sha256"}
        # WHEEL (in its classic form, the one RECORD describes) and RECORD are
        # already in memory: hash them rather than take RECORD's word.
        known[f"{archive.dist_info}/WHEEL"] = hashlib.sha256(archive.classic_wheel).hexdigest()
        known[f"{archive.dist_info}/RECORD"] = hashlib.sha256(archive.record_bytes).hexdigest()
        pending = _Pending()
        with self.env.begin() as txn:
            missing = {blob for blob in known.values() if not self.has_blob(blob, txn)}
        try:
            if claimed is not None and len(known) == len(archive.files) and not missing:
                files = {f.path: FileRef(known[f.path], f.size, f.executable) for f in archive.files}
                digest = claimed
            else:
                files = self._read_payload(archive, pending)
                digest = archive.verified_digest
            record = PackageRecord(
                name=str(archive.wheel_name.name),
                version=archive.version,
                digest=digest,
                tags=sorted(str(t) for t in archive.wheel_name.tags),
                filename=archive.path.name,
                source="archive",
                dist_info=archive.dist_info,
                files=files,
            )
            self._publish(pending)
            with self._write() as txn:
                added = self._commit_blobs(txn, pending)
                self._check_blobs(txn, record.files.values())
                crash_point("package-commit")
                new = txn.put(record.id, record.encode(), db=self.db["packages"], overwrite=False)
            crash_point("package-committed")
            if created is not None:
                created.blobs.update(added)
                if new:
                    created.packages.add(record.id)
        except BaseException:
            pending.discard()
            raise
        return record

    def _check_blobs(self, txn: lmdb.Transaction, refs: Iterable[FileRef]) -> None:
        for ref in refs:
            if not self.has_blob(ref.blob, txn):
                raise StoreError(f"blob {ref.blob} vanished before commit")

    def _read_payload(self, archive: Archive, pending: _Pending) -> dict[str, FileRef]:
        """Stream every file, verified; stage the contents the store lacks.
        Hashing and writing run on worker threads (archive.parallel); the
        decoding stays here."""
        stored: list[FileData] = []
        links: list[FileData] = []
        bodies: list[tuple[FileData, Path]] = []  # new contents written to tmp/
        lock = threading.Lock()

        def keep_inline(data: FileData, content: bytes) -> None:
            assert data.sha256 is not None
            with lock:
                pending.inline.setdefault(data.sha256.hex(), content)

        def keep_body(data: FileData, content: bytes) -> None:
            fd, temp = self.bodies.new_temp()
            with lock:
                bodies.append((data, temp))
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)

        def discard(_: bytes) -> None:
            pass

        try:
            with executors(archive.installed_size, workers=min(4, os.cpu_count() or 1)) as (pool, serial):
                in_flight = InFlight()
                for data in archive.iter_files():
                    info = data.info
                    if data.link_to is not None:
                        links.append(data)
                        continue
                    stored.append(data)
                    known = info.record.digest.hex() if info.record.hash_name == "sha256" else None
                    have = known is not None and (
                        known in pending.inline or known in pending.files or self.has_blob(known)
                    )
                    if info.size <= SMALL_FILE:
                        sink = (
                            discard
                            if have
                            else partial(keep_inline if info.size <= schema.INLINE_MAX else keep_body, data)
                        )
                        job = data.read_then(pool, sink)
                    elif have:
                        job = data.stream_then(serial, discard, lambda: None)
                    else:
                        fd, temp = self.bodies.new_temp()
                        bodies.append((data, temp))
                        job = data.stream_then(serial, partial(write_all, fd), partial(os.close, fd))
                    in_flight.add(job, info.size)
            # iter_files is exhausted: every file verified, every job done.
            for data, temp in bodies:
                assert data.sha256 is not None
                blob = data.sha256.hex()
                if blob in pending.files or self.has_blob(blob):
                    temp.unlink()
                else:
                    pending.files[blob] = (temp, data.info.size)
        except BaseException:
            for _, temp in bodies:
                temp.unlink(missing_ok=True)
            raise
        files = {d.path: FileRef(_hex(d), d.info.size, d.info.executable) for d in stored}
        for data in links:
            files[data.path] = FileRef(_hex(data), data.info.size, data.info.executable)
        return files

    # -- environments -------------------------------------------------------------

    def _env_by_path(self, path: str | os.PathLike[str], txn: lmdb.Transaction) -> EnvRecord:
        root = os.path.realpath(path)
        key = schema.env_id(root)
        value = txn.get(key, db=self.db["envs"])
        if value is None:
            inside = venv_of_interpreter(Path(path))
            if inside is not None:
                venv_root(path)  # says it is the venv's interpreter, and which venv
            raise UnknownEnv(f"{path} is not a registered environment")
        return self._decode_env(key, value)

    def _decode_env(self, key: bytes, value: bytes | memoryview) -> EnvRecord:
        """EnvRecord.decode(value), from memory when the bytes are the same
        (its list of supported tags runs to hundreds of entries). A copy:
        callers change `current` and `next`; `tags` is shared, never changed."""
        raw = bytes(value)
        cached = self._env_records.get(key)
        if cached is None or cached[0] != raw:
            cached = (raw, EnvRecord.decode(raw))
            self._env_records[key] = cached
        return dataclasses.replace(cached[1])

    def get_env(self, path: str | os.PathLike[str]) -> EnvRecord:
        with self.env.begin() as txn:
            return self._env_by_path(path, txn)

    def envs(self) -> list[EnvRecord]:
        with self.env.begin() as txn:
            return [EnvRecord.decode(v) for _, v in txn.cursor(db=self.db["envs"])]

    def register(self, path: str | os.PathLike[str], *, link: str = "symlink") -> EnvRecord:
        """Adopt a venv: ask its interpreter what it is, store what its
        site-packages holds as generation 1. Registering twice is a no-op."""
        root = venv_root(path)
        with self.env.begin() as txn:
            value = txn.get(schema.env_id(str(root)), db=self.db["envs"])
            if value is not None:
                return self._decode_env(schema.env_id(str(root)), value)
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
        pending = _Pending()
        with self._gate.shared():
            try:
                packages = [
                    self._adopt(site, d.name, d.version, d.dist_info, d.files, d.external, pending)
                    for d in dists
                ]
                if unowned:
                    packages.append(self._adopt(site, "(unowned)", "0", "", unowned, [], pending))
                self._publish(pending)
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
                with self._write() as txn:
                    raced = txn.get(env.id, db=self.db["envs"])
                    if raced is not None:
                        pending.discard()
                        return EnvRecord.decode(raced)
                    self._commit_blobs(txn, pending)
                    for pkg in packages:
                        self._check_blobs(txn, pkg.files.values())
                        txn.put(pkg.id, pkg.encode(), db=self.db["packages"], overwrite=False)
                    txn.put(schema.generation_key(env.id, 1), generation.encode(), db=self.db["generations"])
                    txn.put(env.id, env.encode(), db=self.db["envs"])
            except BaseException:
                pending.discard()
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
        pending: _Pending,
    ) -> PackageRecord:
        files = {
            rel: self._stage_path(pending, site / rel, executable)
            for rel, executable in sorted(paths.items())
        }
        return self._adopted(name, version, dist_info, files, external)

    @staticmethod
    def _adopted(
        name: str, version: str, dist_info: str, files: dict[str, FileRef], external: list[str]
    ) -> PackageRecord:
        digest = content_digest(
            DigestItem(p, r.executable, bytes.fromhex(r.blob), r.size) for p, r in files.items()
        )
        return PackageRecord(name, version, digest, [], "", "adopted", dist_info, files, sorted(external))

    def _stage_path(self, pending: _Pending, full: Path, executable: bool) -> FileRef:
        """Stage a file's content unless the store or `pending` has it."""
        blob, size = sha256_file(full)
        if not (blob in pending.inline or blob in pending.files or self.has_blob(blob)):
            if size <= schema.INLINE_MAX:
                content = full.read_bytes()
                if hashlib.sha256(content).hexdigest() != blob:
                    raise StoreError(f"{full} changed while it was being adopted")
                pending.inline[blob] = content
            else:
                fd, temp = self.bodies.new_temp()
                with os.fdopen(fd, "wb") as out, open(full, "rb") as src:
                    while block := src.read(CHUNK):
                        out.write(block)
                if sha256_file(temp) != (blob, size):
                    temp.unlink()
                    raise StoreError(f"{full} changed while it was being adopted")
                pending.files[blob] = (temp, size)
        return FileRef(blob, size, executable)

    def _staged_bytes(self, pending: _Pending, blob: str) -> bytes:
        if blob in pending.inline:
            return pending.inline[blob]
        if blob in pending.files:
            return pending.files[blob][0].read_bytes()
        return self.read_blob(blob)

    def fold(
        self,
        path: str | os.PathLike[str],
        files: dict[str, FileRef | tuple[Path, bool]],
        action: str = "adopt changes made inside the venv",
    ) -> GenerationRecord:
        """Make what site-packages holds now (store files as FileRefs, files
        written inside the venv as (body, executable)) the next generation.
        Installed packages whose files are all unchanged stay as they are;
        every other distribution is adopted from its RECORD, as at
        registration."""
        env = self.get_env(path)
        pending = _Pending()
        with self._gate.shared():
            try:
                refs = {
                    rel: item if isinstance(item, FileRef) else self._stage_path(pending, item[0], item[1])
                    for rel, item in files.items()
                }

                def read_text(rel: str) -> str | None:
                    ref = refs.get(rel)
                    return (
                        None
                        if ref is None
                        else self._staged_bytes(pending, ref.blob).decode("utf-8", "replace")
                    )

                dists, unowned = group_distributions({p: r.executable for p, r in refs.items()}, read_text)
                current = self.generation(env.path)
                unchanged: dict[tuple[tuple[str, FileRef], ...], Installed] = {}
                for installed in current.packages:
                    pkg = self.get_package(installed.package)
                    if pkg is not None:
                        site = {**site_tree(pkg, env), **installed.site}
                        unchanged[tuple(sorted(site.items()))] = installed
                kept: list[Installed] = []
                adopted: list[PackageRecord] = []
                groups = [(d.name, d.version, d.dist_info, d.files, d.external) for d in dists]
                if unowned:
                    groups.append(("(unowned)", "0", "", unowned, []))
                for name, version, dist_info, paths, external in groups:
                    now = {p: refs[p] for p in paths}
                    same = unchanged.get(tuple(sorted(now.items())))
                    if same is not None:
                        kept.append(same)
                    else:
                        adopted.append(self._adopted(name, version, dist_info, now, external))
                self._publish(pending)
                installed_new = [
                    Installed(p.digest.removeprefix("sha256:"), p.name, p.version, False, {}, {})
                    for p in adopted
                ]
                return self._flip(env.path, action, lambda _: kept + installed_new, pending, adopted)
            except BaseException:
                pending.discard()
                raise

    def unregister(self, path: str | os.PathLike[str]) -> None:
        """Forget an environment and its generations (GC frees what only it used)."""
        self.reserve.release_if_short()
        try:
            self._unregister(path)
        finally:
            self.reserve.keep()

    def _unregister(self, path: str | os.PathLike[str]) -> None:
        with self._write() as txn:
            env = self._env_by_path(path, txn)
            cursor = txn.cursor(db=self.db["generations"])
            keys = []
            if cursor.set_range(env.id):
                for key in cursor.iternext(values=False):
                    if key[:16] != env.id:
                        break
                    keys.append(bytes(key))
            for key in keys:
                txn.delete(key, db=self.db["generations"])
            txn.delete(env.id, db=self.db["envs"])

    # -- generations ------------------------------------------------------------

    def generation(self, path: str | os.PathLike[str], number: int | None = None) -> GenerationRecord:
        with self.env.begin() as txn:
            env = self._env_by_path(path, txn)
            return self._generation(txn, env, env.current if number is None else number)

    def _generation(self, txn: lmdb.Transaction, env: EnvRecord, number: int) -> GenerationRecord:
        value = txn.get(schema.generation_key(env.id, number), db=self.db["generations"])
        if value is None:
            raise NoSuchGeneration(f"{env.path} has no generation {number}")
        return GenerationRecord.decode(value)

    def history(self, path: str | os.PathLike[str]) -> list[GenerationRecord]:
        with self.env.begin() as txn:
            return self._generations(txn, self._env_by_path(path, txn))

    def tree(self, path: str | os.PathLike[str], number: int | None = None) -> dict[str, FileRef]:
        """site-packages of an environment at a generation (default: current)."""
        with self.env.begin() as txn:
            env = self._env_by_path(path, txn)
            gen = self._generation(txn, env, env.current if number is None else number)
            return self._site_of(txn, env, gen)

    def _site_of(self, txn: lmdb.Transaction, env: EnvRecord, gen: GenerationRecord) -> dict[str, FileRef]:
        """`txn` is a read transaction."""
        tree: dict[str, FileRef] = {}
        for installed in gen.packages:
            pkg = self.get_package(installed.package, txn, committed=True)
            if pkg is None:
                raise StoreError(
                    f"generation {gen.number} of {env.path} names missing package {installed.package}"
                )
            tree.update(self._layout(pkg).site)
            tree.update(installed.site)
        return tree

    def install(
        self,
        path: str | os.PathLike[str],
        archives: list[str | os.PathLike[str] | PackageRecord],
        *,
        requested: bool = True,
        action: str | None = None,
        request: str | None = None,
        remove: Iterable[str] = (),
        ingested: dict[str, PackageRecord] | None = None,
    ) -> GenerationRecord:
        """Install archives into an environment as one new generation. A
        distribution of the same name already there is replaced (upgrade).
        `request` (the client's request id) is recorded in the generation.
        An item may be a stored package instead of a file (install by name);
        `remove` names distributions the same generation drops (sync);
        `ingested` collects each archive path's package. When the result
        would be the current generation again (the same packages, nothing
        removed), no generation is added and the current one is returned."""
        env = self.get_env(path)
        pending = _Pending()
        check_names(archives)
        if len(archives) > 1:
            # Every archive's metadata refusals before the first is stored: a
            # hostile second archive must not leave the first in the store.
            for item in archives:
                if isinstance(item, PackageRecord):
                    continue
                if self._ingested_file(item, env.tags) is None:
                    with Archive.open(item) as archive:
                        self._admit(archive, env.tags, env)
        created = _Created()
        try:
            gen = self._install(
                env,
                archives,
                pending,
                created,
                requested=requested,
                action=action,
                request=request,
                remove={canonicalize_name(n) for n in remove},
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
        archives: list[str | os.PathLike[str] | PackageRecord],
        pending: _Pending,
        created: _Created,
        *,
        requested: bool,
        action: str | None,
        request: str | None = None,
        remove: set[str] | frozenset[str] = frozenset(),
        ingested: dict[str, PackageRecord] | None = None,
    ) -> GenerationRecord:
        # Shared from ingest to flip: GC must not collect the new packages
        # before a generation reaches them.
        with self._gate.shared():
            packages = [self._stored(a, env, created, ingested) for a in archives]
            names = [canonicalize_name(p.name) for p in packages]
            current = self.generation(env.path)
            have = {canonicalize_name(i.name): i.package for i in current.packages}
            if all(have.get(n) == p.id.hex() for n, p in zip(names, packages, strict=True)) and not (
                remove & have.keys()
            ):
                return current  # nothing to do: no identical generation
            dropped = remove | set(names)
            try:
                plans = [
                    plan_install(
                        pkg,
                        env,
                        requested=requested,
                        read_blob=self.read_blob,
                        put_blob=lambda content, executable: FileRef(
                            self._stage_bytes(pending, content), len(content), executable
                        ),
                        layout=self._layout(pkg),
                    )
                    for pkg in packages
                ]
                self._publish(pending)
                what = action or "install " + " ".join(f"{p.name}=={p.version}" for p in packages)
                return self._flip(
                    env.path,
                    what,
                    lambda current: [i for i in current if canonicalize_name(i.name) not in dropped] + plans,
                    pending,
                    request=request,
                )
            except BaseException:
                pending.discard()
                raise

    def _stored(
        self,
        item: str | os.PathLike[str] | PackageRecord,
        env: EnvRecord,
        created: _Created,
        ingested: dict[str, PackageRecord] | None,
    ) -> PackageRecord:
        """An archive ingested, or a stored package checked for the env's tags."""
        if not isinstance(item, PackageRecord):
            record = self.ingest(item, env=env, created=created)
            if ingested is not None:
                ingested[os.fspath(item)] = record
            return record
        if self.get_package(item.id) is None:
            raise StoreError(
                f"{item.filename} is no longer stored (collected meanwhile)", hint="run the install again"
            )
        if not set(env.tags).intersection(item.tags):
            raise IncompatibleTags(
                f"{item.filename} is tagged {', '.join(item.tags)}; the environment accepts none of them"
            )
        return item

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
        with self._write() as txn:
            for sha256, package in packages.items():
                txn.put(schema.wheel_key(sha256), package, db=self.db["wheels"])

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
            return self._flip(
                str(path), "uninstall " + " ".join(sorted(wanted)), without, _Pending(), request=request
            )
        finally:
            self.reserve.keep()

    def _flip(
        self,
        path: str,
        action: str,
        change: Callable[[list[Installed]], list[Installed]],
        pending: _Pending,
        new_packages: Iterable[PackageRecord] = (),
        *,
        request: str | None = None,
    ) -> GenerationRecord:
        """Build the next generation from the current one and point the
        environment at it, in one transaction."""
        with self._write() as txn:
            env = self._env_by_path(path, txn)
            current = self._generation(txn, env, env.current)
            packages = change(list(current.packages))
            self._commit_blobs(txn, pending)
            for pkg in new_packages:
                self._check_blobs(txn, pkg.files.values())
                txn.put(pkg.id, pkg.encode(), db=self.db["packages"], overwrite=False)
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
            txn.put(schema.generation_key(env.id, gen.number), gen.encode(), db=self.db["generations"])
            crash_point("generation-written")
            env.previous, env.current, env.next = env.current, gen.number, gen.number + 1
            txn.put(env.id, env.encode(), db=self.db["envs"])
            crash_point("env-flipped")
        crash_point("flip-committed")
        return gen

    def _check_conflicts(self, txn: lmdb.Transaction, env: EnvRecord, packages: list[Installed]) -> None:
        owner: dict[str, str] = {}
        for installed in packages:
            # Asked of the index itself, not of the decoded records in memory.
            pkg = self.get_package(installed.package, txn)
            if pkg is None or txn.get(pkg.id, db=self.db["packages"]) is None:
                raise StoreError(f"package {installed.package} is not in the store")
            self._check_blobs(txn, [*installed.site.values(), *installed.outside.values()])
            label = f"{pkg.name} {pkg.version}"
            paths = [
                *self._layout(pkg).site,
                *installed.site,
                *(f"<venv>/{p}" for p in installed.outside),
            ]
            for p in paths:
                other = owner.get(p)
                if other is not None and other != label:
                    raise PathConflict(f"{other} and {label} both install {p}")
                owner[p] = label

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
        with self._write() as txn:
            env = self._env_by_path(path, txn)
            current = self._generation(txn, env, env.current)
            number = to
            if number is None:
                number = current.parent if env.previous is None else env.previous
                if number is None:
                    raise NoSuchGeneration(
                        f"{env.path} is at generation {current.number}, its first: there is nothing to roll back to"
                    )
            kept = [g.number for g in self._generations(txn, env)]
            if number not in kept:
                if to is None:
                    why = f"generation {number}, where it was before, is no longer kept (gc dropped it)"
                elif number > max(kept):
                    why = f"no generation {number}"
                else:
                    why = f"generation {number} is no longer kept"
                raise NoSuchGeneration(f"{env.path} has {why}; it keeps {_ranges(kept)}")
            gen = self._generation(txn, env, number)
            if gen.number != env.current:
                env.previous, env.current, env.request = env.current, gen.number, request
                txn.put(env.id, env.encode(), db=self.db["envs"])
        return dataclasses.replace(gen, changes=schema.changes_between(current.packages, gen.packages))

    # -- bytecode ---------------------------------------------------------------

    def bytecode_known(
        self, interpreter: str, files: Iterable[FileRef], levels: Iterable[int]
    ) -> dict[tuple[str, int], FileRef | None]:
        """(source blob, level) -> its pyc, or None where the source does not
        compile, for those of `files` that have an entry."""
        known: dict[tuple[str, int], FileRef | None] = {}
        wanted = tuple(sorted(set(levels)))
        with self.env.begin() as txn:
            for ref in files:
                for level in wanted:
                    if (ref.blob, level) in known:
                        continue
                    value = txn.get(schema.bytecode_key(ref.blob, level, interpreter), db=self.db["bytecode"])
                    if value is not None:
                        known[(ref.blob, level)] = schema.decode_bytecode(value)
        return known

    def store_bytecode(
        self, interpreter: str, compiled: Mapping[tuple[str, int], Path], failed: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], FileRef | None]:
        """Index what a compile produced: each pyc file (in tmp/, consumed)
        becomes a blob, durable before the entry that names it; sources that
        did not compile are remembered as such. Returns the entries."""
        pending = _Pending()
        entries: dict[tuple[str, int], FileRef | None] = {key: None for key in failed}
        with self._gate.shared():
            try:
                for key, output in compiled.items():
                    blob, size = sha256_file(output)
                    entries[key] = FileRef(blob, size, False)
                    if blob in pending.inline or blob in pending.files or self.has_blob(blob):
                        output.unlink()
                    else:
                        # A pyc is a file body whatever its size: the view
                        # hands pycs out as symlinks to their bodies, so that
                        # Python opens and reads them on the store's own file
                        # system (docs/VIEW.md, "Bytecode").
                        pending.files[blob] = (output, size)
                self._publish(pending)
                with self._write() as txn:
                    self._commit_blobs(txn, pending)
                    for (source, level), pyc in entries.items():
                        if txn.get(bytes.fromhex(source), db=self.db["blobs"]) is None:
                            continue  # GC took the source meanwhile
                        txn.put(
                            schema.bytecode_key(source, level, interpreter),
                            schema.encode_bytecode(pyc),
                            db=self.db["bytecode"],
                        )
            except BaseException:
                pending.discard()
                raise
        return entries

    # -- GC, fsck, sweep ------------------------------------------------------------

    def gc(self, keep: int = 5, *, pinned: Iterable[str] = ()) -> GCReport:
        """Drop all but the newest `keep` generations of each environment (the
        current one always stays), then every package and blob no kept
        generation reaches and `pinned` does not name (the view's renamed
        store files). Bodies are deleted after the commit."""
        if keep < 1:
            raise ValueError("keep must be at least 1")
        with self._gate.exclusive():
            self.reserve.release_if_short()
            try:
                return self._gc(keep, pinned)
            finally:
                self.reserve.keep()

    def _gc(self, keep: int, pinned: Iterable[str]) -> GCReport:
        """gc's work, under the exclusive gate."""
        with self._write() as txn:
            dropped = 0
            reachable_pkgs: set[str] = set()
            reachable_blobs: set[str] = set()
            for env in [EnvRecord.decode(v) for _, v in txn.cursor(db=self.db["envs"])]:
                numbers = sorted(g.number for g in self._generations(txn, env))
                kept = set(numbers[-keep:]) | {env.current}
                for number in numbers:
                    key = schema.generation_key(env.id, number)
                    if number not in kept:
                        txn.delete(key, db=self.db["generations"])
                        dropped += 1
                        continue
                    _mark(self._generation(txn, env, number), reachable_pkgs, reachable_blobs)
            packages = 0
            deleted: list[bytes] = []
            for pkg_key, pkg_value in list(txn.cursor(db=self.db["packages"])):
                if pkg_key.hex() in reachable_pkgs:
                    reachable_blobs.update(r.blob for r in PackageRecord.decode(pkg_value).files.values())
                else:
                    txn.delete(pkg_key, db=self.db["packages"])
                    deleted.append(bytes(pkg_key))
                    packages += 1
            # Bytecode lives while its source does and some environment
            # runs its interpreter; its pyc is reachable through it.
            interpreters = {EnvRecord.decode(v).interpreter for _, v in txn.cursor(db=self.db["envs"])}
            for code_key, code_value in list(txn.cursor(db=self.db["bytecode"])):
                source, _level, interpreter = schema.split_bytecode_key(bytes(code_key))
                if source in reachable_blobs and interpreter in interpreters:
                    pyc = schema.decode_bytecode(code_value)
                    if pyc is not None:
                        reachable_blobs.add(pyc.blob)
                else:
                    txn.delete(code_key, db=self.db["bytecode"])
            reachable_blobs.update(pinned)
            # Forgotten before the commit as well as after: no reader may
            # take a deleted record from memory once it is gone from the index.
            self._forget_packages(deleted)
            doomed: list[str] = []
            freed = blobs = 0
            for blob_key, blob_value in list(txn.cursor(db=self.db["blobs"])):
                if blob_key.hex() not in reachable_blobs:
                    size, inline = schema.decode_blob(blob_value)
                    txn.delete(blob_key, db=self.db["blobs"])
                    freed += size
                    blobs += 1
                    if inline is None:
                        doomed.append(blob_key.hex())
            crash_point("gc-commit")
        self._forget_packages(deleted)
        crash_point("gc-committed")
        for blob in doomed:
            self.bodies.delete(blob)
        return GCReport(dropped, packages, blobs, freed)

    def _take_back(self, created: _Created) -> None:
        """Remove what a failed install added: its new packages that no
        generation reaches by now, and the blobs it wrote that nothing else
        holds (a concurrent install may have come to share them)."""
        with self._gate.exclusive():
            with self._write() as txn:
                reached_packages: set[str] = set()
                reached: set[str] = set()
                for env in [EnvRecord.decode(v) for _, v in txn.cursor(db=self.db["envs"])]:
                    for gen in self._generations(txn, env):
                        _mark(gen, reached_packages, reached)
                doomed = [key for key in created.packages if key.hex() not in reached_packages]
                for key in doomed:
                    txn.delete(key, db=self.db["packages"])
                self._forget_packages(doomed)
                for _, value in txn.cursor(db=self.db["packages"]):
                    reached.update(r.blob for r in PackageRecord.decode(value).files.values())
                for code_key, code_value in txn.cursor(db=self.db["bytecode"]):
                    source, _level, _interpreter = schema.split_bytecode_key(bytes(code_key))
                    reached.add(source)
                    pyc = schema.decode_bytecode(code_value)
                    if pyc is not None:
                        reached.add(pyc.blob)
                bodies = []
                for blob in sorted(created.blobs - reached):
                    entry = txn.get(bytes.fromhex(blob), db=self.db["blobs"])
                    if entry is None:
                        continue
                    txn.delete(bytes.fromhex(blob), db=self.db["blobs"])
                    if schema.decode_blob(entry)[1] is None:
                        bodies.append(blob)
            self._forget_packages(doomed)
            for blob in bodies:
                self.bodies.delete(blob)
            # Shard directories left empty go too (the install made them):
            # bodies are published only under the shared gate, so none is on
            # its way in.
            for directory in {self.bodies.path(blob).parent for blob in bodies}:
                try:
                    directory.rmdir()
                except OSError:
                    pass  # holds other bodies

    def _generations(self, txn: lmdb.Transaction, env: EnvRecord) -> list[GenerationRecord]:
        out = []
        cursor = txn.cursor(db=self.db["generations"])
        if cursor.set_range(env.id):
            for key, value in cursor:
                if key[:16] != env.id:
                    break
                out.append(GenerationRecord.decode(value))
        return out

    def sweep(self) -> tuple[int, int]:
        """Start-up clean-up: temporary bodies of writes that never finished,
        and published bodies no index entry names (a crash between making a
        body durable and committing). Returns (temporary, orphans) removed."""
        with self._gate.exclusive():
            temps = self.bodies.sweep_temp()
            with self.env.begin() as txn:
                orphans = [
                    b
                    for b in self.bodies.all_bodies()
                    if txn.get(bytes.fromhex(b), db=self.db["blobs"]) is None
                ]
            for blob in orphans:
                self.bodies.delete(blob)
        return temps, len(orphans)

    def fsck(self, *, deep: bool = True) -> list[Problem]:
        """Check every invariant; returns the failures (empty when clean)."""
        problems: list[Problem] = []
        with self.env.begin() as txn:
            blob_sizes: dict[str, tuple[int, bytes | None]] = {}
            for key, value in txn.cursor(db=self.db["blobs"]):
                blob = key.hex()
                size, inline = schema.decode_blob(value)
                blob_sizes[blob] = (size, inline)
                if inline is not None:
                    if len(inline) != size or hashlib.sha256(inline).hexdigest() != blob:
                        problems.append(
                            Problem("bad-blob", f"inline blob {blob} does not match its hash or size")
                        )
                elif not self.bodies.exists(blob):
                    problems.append(Problem("missing-body", f"blob {blob} has no body file"))
                elif deep and sha256_file(self.bodies.path(blob)) != (blob, size):
                    problems.append(Problem("bad-blob", f"body of {blob} does not match its hash or size"))
            for blob in self.bodies.all_bodies():
                if blob not in blob_sizes or blob_sizes[blob][1] is not None:
                    problems.append(
                        Problem("orphan-body", f"{self.bodies.path(blob)} is named by no index entry")
                    )
            leftovers = list(self.bodies.tmp.iterdir())
            if leftovers:
                problems.append(Problem("temporary-files", f"{len(leftovers)} files in {self.bodies.tmp}"))

            def check_ref(ref: FileRef, where: str) -> None:
                known = blob_sizes.get(ref.blob)
                if known is None:
                    problems.append(Problem("dangling-blob", f"{where} names missing blob {ref.blob}"))
                elif known[0] != ref.size:
                    problems.append(
                        Problem(
                            "size-mismatch", f"{where}: blob {ref.blob} is {known[0]} bytes, not {ref.size}"
                        )
                    )

            package_ids: set[str] = set()
            for key, value in txn.cursor(db=self.db["packages"]):
                pkg = PackageRecord.decode(value)
                package_ids.add(key.hex())
                if pkg.id != bytes(key):
                    problems.append(
                        Problem("bad-package", f"{pkg.name} {pkg.version} is filed under {key.hex()}")
                    )
                for path, ref in pkg.files.items():
                    check_ref(ref, f"package {pkg.name} {pkg.version}: {path}")
            env_ids: set[bytes] = set()
            for key, value in txn.cursor(db=self.db["envs"]):
                env = EnvRecord.decode(value)
                env_ids.add(bytes(key))
                if env.id != bytes(key):
                    problems.append(Problem("bad-env", f"{env.path} is filed under the wrong id"))
                numbers = {g.number for g in self._generations(txn, env)}
                if env.current not in numbers:
                    problems.append(
                        Problem(
                            "dangling-generation", f"{env.path} points at missing generation {env.current}"
                        )
                    )
                if numbers and max(numbers) >= env.next:
                    problems.append(
                        Problem(
                            "bad-env", f"{env.path}: generation {max(numbers)} is not below next {env.next}"
                        )
                    )
            for key, value in txn.cursor(db=self.db["generations"]):
                env_key, number = schema.split_generation_key(bytes(key))
                gen = GenerationRecord.decode(value)
                if env_key not in env_ids:
                    problems.append(
                        Problem(
                            "orphan-generation", f"generation {number} of unknown environment {env_key.hex()}"
                        )
                    )
                if gen.number != number:
                    problems.append(Problem("bad-generation", f"generation {number} says it is {gen.number}"))
                for installed in gen.packages:
                    if installed.package not in package_ids:
                        problems.append(
                            Problem(
                                "dangling-package",
                                f"generation {number} names missing package {installed.name}",
                            )
                        )
                    for path, ref in (*installed.site.items(), *installed.outside.items()):
                        check_ref(ref, f"generation {number}: {installed.name}: {path}")
            for key, value in txn.cursor(db=self.db["bytecode"]):
                source, level, interpreter = schema.split_bytecode_key(bytes(key))
                where = f"bytecode of {source} for {interpreter} at level {level}"
                if source not in blob_sizes:
                    problems.append(Problem("dangling-bytecode", f"{where}: the source is not in the store"))
                pyc = schema.decode_bytecode(value)
                if pyc is not None:
                    check_ref(pyc, where)
        return problems

    def stats(self) -> dict[str, Any]:
        """Stored bytes (unique blobs, pycs included) against logical bytes:
        every file each environment's current site-packages shows, the
        shared pycs of its interpreter included (a pip venv holds its own)."""
        with self.env.begin() as txn:
            stored = sum(schema.decode_blob(v)[0] for _, v in txn.cursor(db=self.db["blobs"]))
            blobs = txn.stat(self.db["blobs"])["entries"]
            per_env: list[dict[str, Any]] = []
            # By path: the index orders environments by the hash of their path.
            for env in sorted(
                (EnvRecord.decode(v) for _, v in txn.cursor(db=self.db["envs"])), key=lambda e: e.path
            ):
                tree = self._site_of(txn, env, self._generation(txn, env, env.current))
                sizes = [r.size for r in tree.values()]
                for ref in bytecode.sources(tree).values():
                    for level in bytecode.LEVELS:
                        code = txn.get(
                            schema.bytecode_key(ref.blob, level, env.interpreter), db=self.db["bytecode"]
                        )
                        pyc = schema.decode_bytecode(code) if code is not None else None
                        if pyc is not None:
                            sizes.append(pyc.size)
                per_env.append({"path": env.path, "files": len(sizes), "bytes": sum(sizes)})
            pycs: dict[str, int] = {}
            for _, value in txn.cursor(db=self.db["bytecode"]):
                pyc = schema.decode_bytecode(value)
                if pyc is not None:
                    pycs[pyc.blob] = pyc.size
        return {
            "stored_bytes": stored,
            "blobs": blobs,
            "logical_bytes": sum(e["bytes"] for e in per_env),
            "files": sum(e["files"] for e in per_env),
            "bytecode_blobs": len(pycs),
            "bytecode_bytes": sum(pycs.values()),
            "envs": per_env,
        }
