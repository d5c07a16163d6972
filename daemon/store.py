"""`Store`: the content-addressed store as one object, put together from
the modules that own its parts (docs/ARCHITECTURE.md):

- `index`: the LMDB index, reading records, the GC gate;
- `staging`: new blobs before the index holds them (inline or file);
- `ingest`: archives into packages and blobs, every file verified;
- `generations`: install, uninstall, rollback, the flip;
- `adoption`: register, fold, unregister;
- `bytecode_index`: the shared bytecode's entries;
- `upkeep`: GC, take-back, sweep, fsck, stats.

Synchronous by design: the daemon calls it through `trio.to_thread.run_sync`.
Every write transaction begins and commits inside one method call, on the
calling thread, and holds the writer lock only for the short index update:
hashing, decompression and writing bodies happen before it. One process
owns a store (an exclusive `flock` on `owner.lock`).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .adoption import Adoption
from .bytecode_index import BytecodeIndex
from .errors import StoreBusy
from .generations import Generations
from .index import MAP_SIZE, Index
from .ingest import Created, Ingester, check_names
from .reserve import Reserve
from .upkeep import GCReport, Problem, Upkeep

__all__ = ["MAP_SIZE", "GCReport", "Problem", "Store", "check_names"]


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
        self.index = index = Index(self.home)
        self.env = index.env
        self.db = index.db
        self.bodies = index.bodies
        self.aliases = index.aliases
        self.reserve = Reserve(self.home / "reserve", self.home / "index" / "data.mdb")
        self.upkeep = Upkeep(index, self.reserve)
        self.ingester = Ingester(index)
        self.generations = Generations(index, self.ingester, self.reserve, self.upkeep.take_back)
        self.adoption = Adoption(index, self.generations, self.reserve)
        self.bytecode = BytecodeIndex(index)

        # Reading (index)
        self.has_blob = index.has_blob
        self.read_blob = index.read_blob
        self.blob_location = index.blob_location
        self.get_package = index.get_package
        self.packages = index.packages
        self.get_env = index.get_env
        self.wheel_package = index.wheel_package
        self.remember_wheels = index.remember_wheels
        self.envs = index.envs
        self.generation = index.generation
        self.history = index.history
        self.tree = index.tree
        self.site_parts = index.site_parts
        self._forget_packages = index.forget_packages
        # Ingest, generations, adoption
        self.ingest = self.ingester.ingest
        self.install = self.generations.install
        self.uninstall = self.generations.uninstall
        self.rollback = self.generations.rollback
        self.register = self.adoption.register
        self.fold = self.adoption.fold
        self.unregister = self.adoption.unregister
        # Bytecode
        self.bytecode_known = self.bytecode.known
        self.store_bytecode = self.bytecode.store
        self.put_in_place = self.bytecode.put_in_place
        self.index_in_place = self.bytecode.index_in_place
        self.compile_in_place = self.bytecode.compile_in_place
        self.compile_pending = self.bytecode.pending
        self.compile_settled = self.bytecode.settle
        # Upkeep
        self.gc = self.upkeep.gc
        self.sweep = self.upkeep.sweep
        self.fsck = self.upkeep.fsck
        self.stats = self.upkeep.stats
        self._take_back = self.upkeep.take_back

        if sweep:
            self.sweep()
        self.reserve.keep()

    def body_path(self, blob: str) -> Path:
        """Where the body of `blob` lives if it is a file (it may be inline)."""
        return self.bodies.path(blob)

    def close(self) -> None:
        self.index.close()
        os.close(self._owner)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_Created = Created  # what Store._take_back takes
