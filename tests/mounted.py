"""A mounted view for tests: a home directory and a daemon's service on a
thread (runner.ServiceThread), in each view mode. Registered as a pytest
plugin by conftest.py, so that every test file can ask for `view`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nwcache.daemon.linking import is_mount_point
from nwcache.daemon.runner import ServiceThread
from nwcache.daemon.store import Store
from nwcache.daemon.view import HANDLES, KERNEL_CACHED, PATCHED_PYFUSE3
from tests.conftest import run


class View:
    """A home directory and a view that can be started and stopped again."""

    def __init__(self, root: Path, *, bytecode_levels: tuple[int, ...] | None = None) -> None:
        self.home = root / "home"
        self.mountpoint = root / "home" / "view"
        self.bytecode_levels = bytecode_levels  # None: NWCACHE_BYTECODE (the suite turns it off)
        self.running: ServiceThread | None = None

    def start(self) -> ServiceThread:
        assert self.running is None
        self.running = ServiceThread(
            self.home, self.mountpoint, bytecode_levels=self.bytecode_levels
        ).__enter__()
        return self.running

    def stop(self) -> None:
        if self.running is not None:
            running, self.running = self.running, None
            running.stop()
        assert not is_mount_point(self.mountpoint)

    @property
    def service(self) -> ServiceThread:
        assert self.running is not None
        return self.running


@pytest.fixture(params=[KERNEL_CACHED, HANDLES])
def view_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Mounted tests run in both view modes (docs/VIEW.md, "Modes")."""
    mode = str(request.param)
    if mode == KERNEL_CACHED and not PATCHED_PYFUSE3:
        pytest.skip("pyfuse3 is not patched (make setup builds it with patches/pyfuse3)")
    monkeypatch.setenv("NWCACHE_VIEW_MODE", mode)
    return mode


@pytest.fixture
def view(tmp_path: Path, view_mode: str) -> Iterator[View]:
    made = View(tmp_path)
    made.start()
    try:
        yield made
    finally:
        made.stop()
        with Store(made.home) as store:
            assert store.fsck() == []


def py(venv: Path, code: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([venv / "bin" / "python", "-c", code], check=check, env={"PYTHONDONTWRITEBYTECODE": "1"})
