"""Moving hashing and writing off the thread that decodes an archive.

The decoding thread reads files in stream order; `FileData.read_then` sends a
small file, whole, to a pool, and `FileData.stream_then` sends a large file's
chunks to one ordered worker. Both unpack and the store's ingest use this."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
# Files up to this size are read whole, then verified (and written) by a pool
# thread; larger ones go chunk by chunk to one ordered worker.
SMALL_FILE = 1 << 20
# Below this many bytes in all, starting and joining threads costs more than
# it saves: a small archive is handled on the calling thread.
PARALLEL_MIN = 4 << 20


def write_all(fd: int, content: bytes) -> None:
    """os.write until every byte is written."""
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view) :]


class Inline(Executor):
    """Runs each job at once on the calling thread."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


@contextmanager
def executors(total_bytes: int, workers: int) -> Iterator[tuple[Executor, Executor]]:
    """(pool, serial): threads for archives worth it, inline otherwise."""
    if total_bytes < PARALLEL_MIN or workers <= 1:
        yield Inline(), Inline()
        return
    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nwcache-files") as pool,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="nwcache-large-file") as serial,
    ):
        yield pool, serial


class InFlight:
    """Bounds the bytes handed to workers and not yet done: waits for the
    oldest job (and so surfaces its failure early) when over the bound."""

    def __init__(self, max_bytes: int = 32 << 20, max_jobs: int = 512) -> None:
        self.jobs: deque[tuple[Future[None], int]] = deque()
        self.bytes = 0
        self.max_bytes = max_bytes
        self.max_jobs = max_jobs

    def add(self, job: Future[None], size: int) -> None:
        if job.done():
            # Run inline (or already finished): its failure surfaces now, in
            # stream order, so a small archive is refused for the same first
            # fault as when it is only read.
            job.result()
        self.jobs.append((job, size))
        self.bytes += size
        while self.bytes > self.max_bytes or len(self.jobs) > self.max_jobs:
            done, done_size = self.jobs.popleft()
            done.result()
            self.bytes -= done_size

    def wait_all(self) -> None:
        """Wait for every job, oldest first; the first failure raises."""
        while self.jobs:
            done, done_size = self.jobs.popleft()
            done.result()
            self.bytes -= done_size
