"""Writers install and uninstall in several environments while readers walk
their trees and read every blob, and GC runs: readers always see a whole
generation, never wait for a writer to finish, and fsck stays clean."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from nwcache.daemon.schema import FileRef
from nwcache.daemon.store import Store
from tests.helpers import new_venv
from tests.vectors.generate import FILENAME

VECTORS = Path(__file__).parent / "vectors"
ROUNDS = 6
READERS = 4


def test_installs_in_parallel_with_readers(tmp_path: Path) -> None:
    roots = []
    for i in range(3):
        root = tmp_path / f"venv{i}"
        new_venv(root)
        roots.append(root)
    archives = [
        VECTORS / name / FILENAME for name in ("ok-v2-content-links", "ok-v2-pax-paths", "ok-v2-crlf-wheel")
    ]
    with Store(tmp_path / "home") as store:
        allowed: dict[Path, list[dict[str, FileRef]]] = {}
        for root in roots:
            store.register(root)
            allowed[root] = [store.tree(root)]
        errors: list[BaseException] = []
        seen: dict[Path, set[int]] = {root: set() for root in roots}
        stop = threading.Event()
        reads = 0
        read_latency: list[float] = []

        def writer(root: Path, archive: Path) -> None:
            try:
                for _ in range(ROUNDS):
                    store.install(root, [archive])
                    if len(allowed[root]) == 1:
                        allowed[root].append(store.tree(root))
                    store.uninstall(root, ["demo"])
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        def reader() -> None:
            nonlocal reads
            try:
                while not stop.is_set():
                    for root in roots:
                        started = time.perf_counter()
                        tree = store.tree(root)
                        for ref in tree.values():
                            data = store.read_blob(ref.blob)
                            assert len(data) == ref.size
                        read_latency.append(time.perf_counter() - started)
                        number = store.get_env(root).current
                        seen[root].add(number)
                        assert tree in allowed[root] or len(allowed[root]) == 1, (
                            f"{root}: a tree no generation has"
                        )
                        reads += 1
            except BaseException as exc:
                errors.append(exc)

        def collector() -> None:
            try:
                for _ in range(3 * ROUNDS):
                    if stop.is_set():
                        break
                    store.gc(keep=2)
            except BaseException as exc:
                errors.append(exc)

        writers = [threading.Thread(target=writer, args=(r, a)) for r, a in zip(roots, archives, strict=True)]
        others = [threading.Thread(target=reader) for _ in range(READERS)] + [
            threading.Thread(target=collector)
        ]
        for thread in others + writers:
            thread.start()
        for thread in writers:
            thread.join(timeout=300)
        stop.set()
        for thread in others:
            thread.join(timeout=60)
        assert not errors, errors
        assert all(not t.is_alive() for t in writers + others)
        for root in roots:
            # Every tree a reader saw was one of the two states this root has.
            assert len(allowed[root]) == 2
            assert store.get_env(root).current == 1 + 2 * ROUNDS
            assert store.tree(root) == allowed[root][0]
        assert reads > 0
        assert max(read_latency) < 5.0
        assert store.fsck() == []
