"""Keeping a store in order: GC (drop old generations, then every package
and blob no kept generation reaches), taking back what a failed install
added, the start-up sweep of temporary and orphaned bodies, fsck, and the
stats of what is stored.

GC is exclusive with ingests through the index's gate, and deletes bodies
only after the commit that drops their entries.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import bytecode, schema
from .crashpoints import crash_point
from .index import Index
from .ingest import Created
from .reserve import Reserve
from .schema import EnvRecord, FileRef, GenerationRecord, PackageRecord
from .venvs import sha256_file


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


def _mark(gen: GenerationRecord, packages: set[str], blobs: set[str]) -> None:
    """Add the packages and blobs one generation reaches."""
    for installed in gen.packages:
        packages.add(installed.package)
        blobs.update(r.blob for r in (*installed.site.values(), *installed.outside.values()))


class Upkeep:
    def __init__(self, index: Index, reserve: Reserve) -> None:
        self.index = index
        self.reserve = reserve
        # Files in tmp/ from before this (the start-up sweep removes them) are
        # leftovers; later ones belong to operations running now.
        self.opened_ns = time.time_ns()

    def gc(self, keep: int = 5, *, pinned: Iterable[str] = ()) -> GCReport:
        """Drop all but the newest `keep` generations of each environment (the
        current one always stays), then every package and blob no kept
        generation reaches and `pinned` does not name (the view's renamed
        store files). Bodies are deleted after the commit."""
        if keep < 1:
            raise ValueError("keep must be at least 1")
        with self.index.gate.exclusive():
            self.reserve.release_if_short()
            try:
                return self._gc(keep, pinned)
            finally:
                self.reserve.keep()

    def _gc(self, keep: int, pinned: Iterable[str]) -> GCReport:
        """gc's work, under the exclusive gate."""
        with self.index.write() as txn:
            dropped = 0
            reachable_pkgs: set[str] = set()
            reachable_blobs: set[str] = set()
            for env in [EnvRecord.decode(v) for _, v in txn.cursor(db=self.index.db["envs"])]:
                numbers = sorted(g.number for g in self.index.generations_in(txn, env))
                kept = set(numbers[-keep:]) | {env.current}
                for number in numbers:
                    key = schema.generation_key(env.id, number)
                    if number not in kept:
                        txn.delete(key, db=self.index.db["generations"])
                        dropped += 1
                        continue
                    _mark(self.index.generation_in(txn, env, number), reachable_pkgs, reachable_blobs)
            packages = 0
            deleted: list[bytes] = []
            for pkg_key, pkg_value in list(txn.cursor(db=self.index.db["packages"])):
                if pkg_key.hex() in reachable_pkgs:
                    reachable_blobs.update(r.blob for r in PackageRecord.decode(pkg_value).files.values())
                else:
                    txn.delete(pkg_key, db=self.index.db["packages"])
                    deleted.append(bytes(pkg_key))
                    packages += 1
            # A wheel file whose package is gone is downloaded again: its
            # entry (file sha256 -> package id) goes with the package.
            gone = set(deleted)
            for wheel_key, package in list(txn.cursor(db=self.index.db["wheels"])):
                if bytes(package) in gone:
                    txn.delete(wheel_key, db=self.index.db["wheels"])
            # Bytecode lives while its source does and some environment
            # runs its interpreter; its pyc is reachable through it.
            interpreters = {EnvRecord.decode(v).interpreter for _, v in txn.cursor(db=self.index.db["envs"])}
            for code_key, code_value in list(txn.cursor(db=self.index.db["bytecode"])):
                source, _level, interpreter = schema.split_bytecode_key(bytes(code_key))
                if source in reachable_blobs and interpreter in interpreters:
                    pyc = schema.decode_bytecode(code_value)
                    if pyc is not None:
                        reachable_blobs.add(pyc.blob)
                else:
                    txn.delete(code_key, db=self.index.db["bytecode"])
            reachable_blobs.update(pinned)
            # Forgotten before the commit as well as after: no reader may
            # take a deleted record from memory once it is gone from the index.
            self.index.forget_packages(deleted)
            doomed: list[str] = []
            freed = blobs = 0
            for blob_key, blob_value in list(txn.cursor(db=self.index.db["blobs"])):
                if blob_key.hex() not in reachable_blobs:
                    size, inline = schema.decode_blob(blob_value)
                    txn.delete(blob_key, db=self.index.db["blobs"])
                    freed += size
                    blobs += 1
                    if inline is None:
                        doomed.append(blob_key.hex())
            crash_point("gc-commit")
        self.index.forget_packages(deleted)
        crash_point("gc-committed")
        for blob in doomed:
            self.index.bodies.delete(blob)
        return GCReport(dropped, packages, blobs, freed)

    def take_back(self, created: Created) -> None:
        """Remove what a failed install added: its new packages that no
        generation reaches by now, and the blobs it wrote that nothing else
        holds (a concurrent install may have come to share them)."""
        with self.index.gate.exclusive():
            with self.index.write() as txn:
                reached_packages: set[str] = set()
                reached: set[str] = set()
                for env in [EnvRecord.decode(v) for _, v in txn.cursor(db=self.index.db["envs"])]:
                    for gen in self.index.generations_in(txn, env):
                        _mark(gen, reached_packages, reached)
                doomed = [key for key in created.packages if key.hex() not in reached_packages]
                for key in doomed:
                    txn.delete(key, db=self.index.db["packages"])
                self.index.forget_packages(doomed)
                for _, value in txn.cursor(db=self.index.db["packages"]):
                    reached.update(r.blob for r in PackageRecord.decode(value).files.values())
                for code_key, code_value in txn.cursor(db=self.index.db["bytecode"]):
                    source, _level, _interpreter = schema.split_bytecode_key(bytes(code_key))
                    reached.add(source)
                    pyc = schema.decode_bytecode(code_value)
                    if pyc is not None:
                        reached.add(pyc.blob)
                bodies = []
                for blob in sorted(created.blobs - reached):
                    entry = txn.get(bytes.fromhex(blob), db=self.index.db["blobs"])
                    if entry is None:
                        continue
                    txn.delete(bytes.fromhex(blob), db=self.index.db["blobs"])
                    if schema.decode_blob(entry)[1] is None:
                        bodies.append(blob)
            self.index.forget_packages(doomed)
            for blob in bodies:
                self.index.bodies.delete(blob)
            # Shard directories left empty go too (the install made them):
            # bodies are published only under the shared gate, so none is on
            # its way in.
            for directory in {self.index.bodies.path(blob).parent for blob in bodies}:
                try:
                    directory.rmdir()
                except OSError:
                    pass  # holds other bodies

    def sweep(self) -> tuple[int, int]:
        """Start-up clean-up: temporary bodies of writes that never finished,
        and published bodies no index entry names (a crash between making a
        body durable and committing). Returns (temporary, orphans) removed."""
        with self.index.gate.exclusive():
            temps = self.index.bodies.sweep_temp()
            with self.index.env.begin() as txn:
                orphans = [
                    b
                    for b in self.index.bodies.all_bodies()
                    if txn.get(bytes.fromhex(b), db=self.index.db["blobs"]) is None
                ]
            for blob in orphans:
                self.index.bodies.delete(blob)
        return temps, len(orphans)

    def fsck(self, *, deep: bool = True) -> list[Problem]:
        """Check every invariant; returns the failures (empty when clean).
        Exclusive with ingests, as GC is (a body published and not yet
        indexed is no orphan), and blind to the temporary files of work
        begun since the store was opened (a background compile's)."""
        with self.index.gate.exclusive():
            return self._fsck(deep)

    def _fsck(self, deep: bool) -> list[Problem]:
        problems: list[Problem] = []
        with self.index.env.begin() as txn:
            blob_sizes: dict[str, tuple[int, bytes | None]] = {}
            remote_only: set[str] = set()
            for key, value in txn.cursor(db=self.index.db["blobs"]):
                blob = key.hex()
                size, inline = schema.decode_blob(value)
                blob_sizes[blob] = (size, inline)
                if schema.blob_remote(value) is not None:
                    # On a remote only (docs/REMOTE.md): no body expected; one
                    # may be there if a fetch was cut off between publishing
                    # it and indexing it (the next fetch indexes it).
                    remote_only.add(blob)
                    continue
                if inline is not None:
                    if len(inline) != size or hashlib.sha256(inline).hexdigest() != blob:
                        problems.append(
                            Problem("bad-blob", f"inline blob {blob} does not match its hash or size")
                        )
                elif not self.index.bodies.exists(blob):
                    problems.append(Problem("missing-body", f"blob {blob} has no body file"))
                elif deep and sha256_file(self.index.bodies.path(blob)) != (blob, size):
                    problems.append(Problem("bad-blob", f"body of {blob} does not match its hash or size"))
            for blob in self.index.bodies.all_bodies():
                if blob in remote_only:
                    continue
                if blob not in blob_sizes or blob_sizes[blob][1] is not None:
                    problems.append(
                        Problem("orphan-body", f"{self.index.bodies.path(blob)} is named by no index entry")
                    )
            leftovers = [p for p in self.index.bodies.tmp.iterdir() if _older_than(p, self.opened_ns)]
            if leftovers:
                problems.append(
                    Problem("temporary-files", f"{len(leftovers)} files in {self.index.bodies.tmp}")
                )

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
            for key, value in txn.cursor(db=self.index.db["packages"]):
                pkg = PackageRecord.decode(value)
                package_ids.add(key.hex())
                if pkg.id != bytes(key):
                    problems.append(
                        Problem("bad-package", f"{pkg.name} {pkg.version} is filed under {key.hex()}")
                    )
                for path, ref in pkg.files.items():
                    check_ref(ref, f"package {pkg.name} {pkg.version}: {path}")
            env_ids: set[bytes] = set()
            for key, value in txn.cursor(db=self.index.db["envs"]):
                env = EnvRecord.decode(value)
                env_ids.add(bytes(key))
                if env.id != bytes(key):
                    problems.append(Problem("bad-env", f"{env.path} is filed under the wrong id"))
                numbers = {g.number for g in self.index.generations_in(txn, env)}
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
            for key, value in txn.cursor(db=self.index.db["generations"]):
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
            for key, value in txn.cursor(db=self.index.db["bytecode"]):
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
        with self.index.env.begin() as txn:
            stored = remote_bytes = remote_blobs = 0
            for _, value in txn.cursor(db=self.index.db["blobs"]):
                if schema.blob_remote(value) is not None:
                    remote_blobs += 1
                    remote_bytes += schema.decode_blob(value)[0]
                else:
                    stored += schema.decode_blob(value)[0]
            blobs = txn.stat(self.index.db["blobs"])["entries"] - remote_blobs
            per_env: list[dict[str, Any]] = []
            # By path: the index orders environments by the hash of their path.
            for env in sorted(
                (EnvRecord.decode(v) for _, v in txn.cursor(db=self.index.db["envs"])), key=lambda e: e.path
            ):
                tree = self.index.site_of(txn, env, self.index.generation_in(txn, env, env.current))
                sizes = [r.size for r in tree.values()]
                for ref in bytecode.sources(tree).values():
                    for level in bytecode.LEVELS:
                        code = txn.get(
                            schema.bytecode_key(ref.blob, level, env.interpreter),
                            db=self.index.db["bytecode"],
                        )
                        pyc = schema.decode_bytecode(code) if code is not None else None
                        if pyc is not None:
                            sizes.append(pyc.size)
                per_env.append({"path": env.path, "files": len(sizes), "bytes": sum(sizes)})
            pycs: dict[str, int] = {}
            for _, value in txn.cursor(db=self.index.db["bytecode"]):
                pyc = schema.decode_bytecode(value)
                if pyc is not None:
                    pycs[pyc.blob] = pyc.size
        return {
            "stored_bytes": stored,
            "blobs": blobs,
            # Indexed with their bodies on a remote only (docs/REMOTE.md).
            "remote_only_blobs": remote_blobs,
            "remote_only_bytes": remote_bytes,
            "logical_bytes": sum(e["bytes"] for e in per_env),
            "files": sum(e["files"] for e in per_env),
            "bytecode_blobs": len(pycs),
            "bytecode_bytes": sum(pycs.values()),
            "envs": per_env,
        }


def _older_than(path: Path, when_ns: int) -> bool:
    try:
        return path.lstat().st_mtime_ns < when_ns
    except FileNotFoundError:
        return False  # its operation finished meanwhile
