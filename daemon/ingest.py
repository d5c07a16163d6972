"""Ingest: an archive (classic or 2.0) into the store as a package record
and the blobs it lacks, every file verified against RECORD.

The refusals the metadata alone decides (the file name, the environment's
tags, installability, path conflicts with the other distributions) come
before a payload byte is read, so a refused install stores nothing.
Hashing and writing of bodies run on worker threads (archive.parallel); the
index is written in one short transaction once the bodies are durable.
"""

from __future__ import annotations

import copy
import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO

from packaging.utils import canonicalize_name

from nwcache.archive import Archive
from nwcache.archive.digest import DigestItem, content_digest
from nwcache.archive.parallel import SMALL_FILE, InFlight, executors, write_all
from nwcache.archive.sources import FileData, FileInfo, member_order
from nwcache.archive.wheelinfo import parse_filename
from nwcache.archive.zipfmt import ZipReader

from .crashpoints import crash_point
from .errors import IncompatibleTags, NotAWheel, PathConflict, StoreError
from .index import Index
from .layout import check_installable
from .schema import EnvRecord, FileRef, PackageRecord
from .staging import Staged, kept_inline

# Threads that inflate, hash and write members: zlib and hashlib release the GIL.
WORKERS = min(8, os.cpu_count() or 1)


@dataclass
class Progress:
    """What an install has done so far, updated by its threads as the work
    is done and read by whoever reports it (server.py's progress lines)."""

    stage: str = "checking"
    total: int = 0  # bytes of the archives' files to read and verify
    done: int = 0  # of which read and verified
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, size: int) -> None:
        with self._lock:
            self.done += size


@dataclass
class Created:
    """What one install added to the index, so a failure can take it back."""

    packages: set[bytes] = field(default_factory=set)
    blobs: set[str] = field(default_factory=set)


def _hex(data: FileData) -> str:
    assert data.sha256 is not None
    return data.sha256.hex()


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


class Ingester:
    def __init__(self, index: Index) -> None:
        self.index = index
        # Archive files this process ingested, by identity: path, inode, size, mtime -> digest.
        self._recent: dict[tuple[str, int, int, int, int], str] = {}
        self._recent_lock = threading.Lock()

    def ingest(
        self,
        path: str | os.PathLike[str],
        *,
        tags: list[str] | None = None,
        env: EnvRecord | None = None,
        created: Created | None = None,
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
        known = self.ingested_file(path, tags)
        if known is not None:
            return known
        with Archive.open(path) as archive:
            self.admit(archive, tags, env)
            return self.ingest_admitted(archive, path, created)

    def ingest_admitted(
        self, archive: Archive, path: str | os.PathLike[str], created: Created | None = None
    ) -> PackageRecord:
        """`ingest` of an archive already open and admitted (`admit`)."""
        staged = Staged(self.index.bodies)
        with self.index.gate.shared(), ThreadPoolExecutor(WORKERS) as pool:
            try:
                record = self.stage(archive, staged, pool)()
                self.commit(staged, [record], created)
            except BaseException:
                staged.discard()
                raise
        self.remember_file(path, record)
        return record

    def admit(
        self,
        archive: Archive,
        tags: list[str] | None,
        env: EnvRecord | None,
        owners: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        """The refusals the metadata alone decides: tags, then installability
        in `env`, whose current paths are `owners` (`owners(env)`, worked
        out once for several archives)."""
        if tags is not None:
            supported = set(tags)
            wheel_tags = sorted(str(t) for t in archive.wheel_name.tags)
            if not supported.intersection(wheel_tags):
                raise IncompatibleTags(
                    f"{archive.path.name} is tagged {', '.join(wheel_tags)}; the environment accepts none of them"
                )
        if env is not None:
            self._check_installable(archive, env, self.owners(env) if owners is None else owners)

    def owners(self, env: EnvRecord) -> dict[str, tuple[str, str]]:
        """The paths of the environment's current generation and who holds them."""
        index = self.index
        with index.env.begin() as txn:
            now = index.env_by_path(env.path, txn)
            current = index.generation_in(txn, now, now.current)
            try:
                return index.path_owners(txn, current.packages)
            except StoreError:
                return {}  # a broken generation: the flip reports it

    def _check_installable(
        self, archive: Archive, env: EnvRecord, owners: dict[str, tuple[str, str]]
    ) -> None:
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
        for path in sorted([*wanted.site, *(f"<venv>/{p}" for p in wanted.outside)]):
            other = owners.get(path)
            if other is not None and other[0] != canonicalize_name(name):  # the same name: an upgrade
                raise PathConflict(f"{other[1]} and {label} both install {path}")

    @staticmethod
    def _file_key(path: str | os.PathLike[str]) -> tuple[str, int, int, int, int]:
        st = os.stat(path)
        return os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

    def remember_file(self, path: str | os.PathLike[str], record: PackageRecord) -> None:
        try:
            key = self._file_key(path)
        except OSError:  # the archive went away once read: nothing to remember it by
            return
        with self._recent_lock:
            self._recent[key] = record.digest
            while len(self._recent) > 4096:
                self._recent.pop(next(iter(self._recent)))

    def ingested_file(self, path: str | os.PathLike[str], tags: list[str] | None) -> PackageRecord | None:
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
        record = self.index.get_package(bytes.fromhex(digest.removeprefix("sha256:")))
        if record is None:
            return None
        if tags is not None and not set(tags).intersection(record.tags):
            raise IncompatibleTags(
                f"{Path(path).name} is tagged {', '.join(record.tags)}; the environment accepts none of them"
            )
        return record

    def stage(
        self, archive: Archive, staged: Staged, pool: Executor, progress: Progress | None = None
    ) -> Callable[[], PackageRecord]:
        """Start staging the contents of `archive` that the store lacks into
        `staged`; returns the call that waits for them and gives the package
        record (every file verified by then). A classic wheel's members are
        inflated, hashed and written on `pool` (zlib and hashlib release the
        GIL), several archives' at once when their stagings overlap; a 2.0
        archive is decoded when its record is asked for, hashing and writing
        off the decoding thread (archive.parallel). Nothing is committed:
        see `commit`. The caller holds the gate, shared."""
        index = self.index
        claimed = archive.metadata_digest()
        if claimed is not None:
            existing = index.get_package(bytes.fromhex(claimed.removeprefix("sha256:")))
            if existing is not None:
                return lambda: existing
        known = {f.path: f.record.digest.hex() for f in archive.files if f.record.hash_name == "sha256"}
        # WHEEL (in its classic form, the one RECORD describes) and RECORD are
        # already in memory: hash them rather than take RECORD's word.
        known[f"{archive.dist_info}/WHEEL"] = hashlib.sha256(archive.classic_wheel).hexdigest()
        known[f"{archive.dist_info}/RECORD"] = hashlib.sha256(archive.record_bytes).hexdigest()
        missing = set(known.values()) - index.blobs_present(set(known.values()))

        def record(files: dict[str, FileRef], digest: str) -> PackageRecord:
            return PackageRecord(
                name=str(archive.wheel_name.name),
                version=archive.version,
                digest=digest,
                tags=sorted(str(t) for t in archive.wheel_name.tags),
                filename=archive.path.name,
                source="archive",
                dist_info=archive.dist_info,
                files=files,
            )

        if claimed is not None and len(known) == len(archive.files) and not missing:
            files = {f.path: FileRef(known[f.path], f.size, f.executable) for f in archive.files}
            return partial(record, files, claimed)
        if progress is not None:
            progress.total += archive.installed_size
        if archive.format == 1:
            finish = self._stage_classic(archive, staged, missing, pool, progress)
            return lambda: record(*finish())
        return lambda: record(self._read_payload(archive, staged, missing, progress), archive.verified_digest)

    def commit(self, staged: Staged, records: list[PackageRecord], created: Created | None) -> None:
        """Publish the staged bodies (durable, one sync for all) and index
        them with the packages in one transaction."""
        index = self.index
        staged.publish()
        with index.write() as txn:
            added = staged.commit(txn, index.db["blobs"])
            for pkg in records:
                index.check_blobs(txn, pkg.files.values())
            crash_point("package-commit")
            new = [
                pkg.id
                for pkg in records
                if txn.put(pkg.id, pkg.encode(), db=index.db["packages"], overwrite=False)
            ]
        crash_point("package-committed")
        if created is not None:
            created.blobs.update(added)
            created.packages.update(new)

    def _stage_classic(
        self, archive: Archive, staged: Staged, missing: set[str], pool: Executor, progress: Progress | None
    ) -> Callable[[], tuple[dict[str, FileRef], str]]:
        """Each member of a classic wheel as a job on `pool`: read through a
        descriptor of the job's thread, inflated with its CRC and size
        checked (archive.zipfmt), checked against RECORD (FileData), and
        its content kept if the store lacks it: inline bytes, or a body
        written to tmp/ in large writes. Returns the call that waits for
        every job and gives (files, content digest)."""
        index = self.index
        infos = member_order(archive.files, archive.dist_info)
        wheel_path = f"{archive.dist_info}/WHEEL"
        local = threading.local()
        lock = threading.Lock()
        handles: list[BinaryIO] = []

        def reader() -> ZipReader:
            mine: ZipReader | None = getattr(local, "reader", None)
            if mine is None:
                mine = copy.copy(archive.zip)
                mine.fh = open(archive.path, "rb")  # noqa: SIM115 (closed by finish)
                with lock:
                    handles.append(mine.fh)
                local.reader = mine
            return mine

        def job(info: FileInfo) -> tuple[bytes, bytes | None, Path | None]:
            if info.path == wheel_path:
                data = archive.open_file(info)
            else:
                data = FileData(info, reader().chunks(archive.zip.by_name[info.path]), archive.label)
            known = info.record.digest.hex() if info.record.hash_name == "sha256" else None
            content: bytes | None = None
            temp: Path | None = None
            if known is not None and known not in missing:
                for _ in data.chunks():
                    pass  # verified, not kept: the store has it
            elif kept_inline(info.size):
                content = b"".join(data.chunks())
            else:
                fd, temp = index.bodies.new_temp()
                staged.loose.add(temp)  # until staged: discard() removes it
                try:
                    for chunk in data.chunks():
                        write_all(fd, chunk)
                finally:
                    os.close(fd)
            assert data.sha256 is not None
            if progress is not None:
                progress.add(info.size)
            return data.sha256, content, temp

        # The largest first, so that the pool's threads end together.
        futures = {info.path: pool.submit(job, info) for info in sorted(infos, key=lambda i: -i.size)}

        def finish() -> tuple[dict[str, FileRef], str]:
            try:
                results = {path: future.result() for path, future in futures.items()}
            except BaseException:
                for future in futures.values():
                    future.cancel()
                wait(futures.values())
                raise
            finally:
                for fh in handles:
                    fh.close()
            files: dict[str, FileRef] = {}
            for info in infos:
                sha256, content, body = results[info.path]
                blob = sha256.hex()
                files[info.path] = FileRef(blob, info.size, info.executable)
                if content is not None:
                    staged.add_bytes(content, blob)
                elif body is not None:
                    staged.add_body(blob, body, info.size)
            digest = content_digest(
                DigestItem(info.path, info.executable, results[info.path][0], info.size) for info in infos
            )
            return files, digest

        return finish

    def _read_payload(
        self, archive: Archive, staged: Staged, missing: set[str], progress: Progress | None = None
    ) -> dict[str, FileRef]:
        """Stream every file, verified; stage the contents the store lacked
        (`missing`: RECORD's hashes the index did not hold when the ingest
        began; a content that turns out to differ from RECORD's hash is
        looked up once the stream ends). Hashing and writing run on worker
        threads (archive.parallel); the decoding stays here."""
        index = self.index
        stored: list[FileData] = []
        links: list[FileData] = []
        bodies: list[tuple[FileData, Path]] = []  # new contents written to tmp/
        lock = threading.Lock()

        def keep_inline(data: FileData, content: bytes) -> None:
            with lock:
                if _hex(data) not in staged:
                    staged.inline[_hex(data)] = content

        def keep_body(data: FileData, content: bytes) -> None:
            fd, temp = index.bodies.new_temp()
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
                    have = known is not None and known not in missing
                    if info.size <= SMALL_FILE:
                        sink = (
                            discard
                            if have
                            else partial(keep_inline if kept_inline(info.size) else keep_body, data)
                        )
                        job = data.read_then(pool, sink)
                    elif have:
                        job = data.stream_then(serial, discard, lambda: None)
                    else:
                        assert not kept_inline(info.size)
                        fd, temp = index.bodies.new_temp()
                        bodies.append((data, temp))
                        job = data.stream_then(serial, partial(write_all, fd), partial(os.close, fd))
                    in_flight.add(job, info.size)
                    if progress is not None:
                        progress.add(info.size)  # decoded and handed on; verified when the stream ends
            # iter_files is exhausted: every file verified, every job done.
            present = index.blobs_present({_hex(data) for data, _ in bodies} - missing)
            for data, temp in bodies:
                blob = _hex(data)
                if blob in present:
                    temp.unlink()
                else:
                    staged.add_body(blob, temp, data.info.size)
        except BaseException:
            for _, temp in bodies:
                temp.unlink(missing_ok=True)
            raise
        files = {d.path: FileRef(_hex(d), d.info.size, d.info.executable) for d in stored}
        for data in links:
            files[data.path] = FileRef(_hex(data), data.info.size, data.info.executable)
        return files
