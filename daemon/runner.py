"""Running the store, the view and the service together on one trio loop.

`run_service` is what the daemon runs; `ServiceThread` runs the same on a
thread of its own, so that tests and benchmarks can drive a mounted view from
the calling thread (a process must not access its own FUSE mount from the
thread that serves it)."""

from __future__ import annotations

import logging
import os
import resource
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import trio

from .errors import StoreError
from .mount import clear_stale_mount, serve_view
from .notices import DownNotices
from .service import Service
from .store import Store
from .view import HANDLES, KERNEL_CACHED, PATCHED_PYFUSE3, ViewOperations

T = TypeVar("T")
START_TIMEOUT = 60.0


log = logging.getLogger("nwcache.view")


def view_mode() -> bool:
    """Whether the view runs kernel-cached: by default when pyfuse3 carries
    the project's patch; NWCACHE_VIEW_MODE=handles|kernel-cached chooses
    (tests and benchmarks run both)."""
    asked = os.environ.get("NWCACHE_VIEW_MODE", "")
    if asked == HANDLES:
        return False
    if asked == KERNEL_CACHED:
        if not PATCHED_PYFUSE3:
            raise StoreError(
                "NWCACHE_VIEW_MODE=kernel-cached needs pyfuse3 with the project's patch",
                hint="run `make setup` (it builds pyfuse3 with patches/pyfuse3), or unset NWCACHE_VIEW_MODE",
            )
        return True
    if asked:
        raise StoreError(
            f"NWCACHE_VIEW_MODE={asked!r} is not a view mode", hint=f"use {KERNEL_CACHED!r} or {HANDLES!r}"
        )
    if not PATCHED_PYFUSE3:
        log.warning(
            "pyfuse3 lacks the project's patch (patches/pyfuse3): the view serves in %s mode,"
            " one FUSE round trip per open and listing",
            HANDLES,
        )
    return PATCHED_PYFUSE3


def raise_fd_limit() -> None:
    """The view keeps bodies open (bodies.KEPT_OPEN) besides every open handle."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def run_service(
    home: Path,
    mountpoint: Path,
    *,
    bytecode_levels: tuple[int, ...] | None = None,
    task_status: trio.TaskStatus[Service] = trio.TASK_STATUS_IGNORED,
) -> None:
    raise_fd_limit()
    store = await trio.to_thread.run_sync(Store, home)
    notices = DownNotices(mountpoint)
    try:
        await trio.to_thread.run_sync(notices.prepare)
        view = ViewOperations(store, kernel_caching=view_mode())
        # Until every registered venv is served, a lookup of one waits
        # (bounded) instead of failing: a venv started during a restart runs.
        view.starting = trio.Event()
        service = Service(store, view, mountpoint, bytecode_levels=bytecode_levels)
        service.notices = notices
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_view, may_hold=notices.holds_only_notices), view, mountpoint)
            try:
                try:
                    await service.start()
                finally:
                    await view.started()
                # Cancelled before the service stops: bytecode is a cache.
                async with trio.open_nursery() as background:
                    await background.start(service.compile_in_background)
                    task_status.started(service)
                    await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await service.stop()
                nursery.cancel_scope.cancel()
    finally:
        notices.close()
        store.close()


class ServiceThread:
    def __init__(
        self, home: Path, mountpoint: Path, *, bytecode_levels: tuple[int, ...] | None = None
    ) -> None:
        self.home = home
        self.mountpoint = mountpoint
        self.bytecode_levels = bytecode_levels
        self.service: Service | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="nwcache-view", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._cancel = scope
                async with trio.open_nursery() as nursery:
                    self.service = await nursery.start(
                        partial(run_service, bytecode_levels=self.bytecode_levels), self.home, self.mountpoint
                    )
                    self._started.set()

        try:
            trio.run(main)
        except BaseException as exc:
            self._error = exc
        finally:
            self._started.set()

    def __enter__(self) -> ServiceThread:
        self._thread.start()
        if not self._started.wait(START_TIMEOUT):
            raise TimeoutError(f"the view did not come up within {START_TIMEOUT} s")
        if self._error is not None or self.service is None:
            raise RuntimeError(f"the view failed to start: {self._error!r}") from self._error
        return self

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        assert self._token is not None
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def stop(self) -> None:
        if self._token is not None and self._cancel is not None and self._thread.is_alive():
            cancel = self._cancel
            try:
                trio.from_thread.run_sync(cancel.cancel, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(START_TIMEOUT)
        # Last resort, so that no test leaves a mount behind.
        clear_stale_mount(self.mountpoint)
        if self._thread.is_alive():
            raise TimeoutError("the view thread did not stop")
        if self._error is not None:
            raise RuntimeError(f"the view thread failed: {self._error!r}") from self._error

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
