"""Shared fixtures: wheels built offline from the demo projects in
tests/projects/, and a fresh virtual environment to install them into.

The machine's global pip configuration adds local indexes and find-links, so
every pip (and ensurepip) run here gets an explicit environment with no PIP_*
variable inherited and PIP_CONFIG_FILE=/dev/null.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    from tests.daemon_process import Daemon

# Property tests draw the same examples on every run (CI and developers alike)
# and keep no example database: a failure reproduces from a clean checkout.
# Wide random exploration is the fuzzing suite's job, not the test suite's.
settings.register_profile("nwcache", derandomize=True, database=None, deadline=None)
settings.load_profile("nwcache")

# Compiling the bytecode of pip (about 500 sources) takes 2 to 4 s of CPU on
# these machines, at every registration into a new store. Tests that are not
# about bytecode turn it off, daemons they start included (clean_env copies
# this); tests/test_bytecode.py and the end-to-end daemon test turn it on.
os.environ["NWCACHE_BYTECODE"] = "off"

from tests.helpers import (  # noqa: E402  (after the bytecode setting above)
    _SUBPROCESS_TIMEOUT,
    PROJECTS,
    PROJECTS_DIR,
    SOURCE_DATE_EPOCH,
    clean_env,
    make_venv,
    new_venv,
    pip_wheel_command,
    run,
    site_of,
)

__all__ = [
    "PROJECTS",
    "PROJECTS_DIR",
    "SOURCE_DATE_EPOCH",
    "clean_env",
    "make_venv",
    "new_venv",
    "pip_wheel_command",
    "run",
    "site_of",
]


@pytest.fixture(scope="session")
def built_wheels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Each demo project copied to a temporary directory and built offline with
    `pip wheel --no-build-isolation --no-index`; kind -> the wheel's path.
    The builds run in parallel."""
    root = tmp_path_factory.mktemp("built-wheels")
    jobs: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    try:
        for kind, (directory, _) in PROJECTS.items():
            source = root / "src" / directory
            shutil.copytree(
                PROJECTS_DIR / directory,
                source,
                ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
            )
            for script in (source / "scripts").glob("*"):
                script.chmod(0o755)  # a checkout may have lost the exec bit
            out = root / "wheels" / kind
            out.mkdir(parents=True)
            process = subprocess.Popen(
                pip_wheel_command(source, out),
                env=clean_env(),
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            jobs[kind] = (process, out)
        wheels: dict[str, Path] = {}
        for kind, (process, out) in jobs.items():
            output, _ = process.communicate(timeout=_SUBPROCESS_TIMEOUT)
            assert process.returncode == 0, f"building {kind} failed:\n{output}"
            found = sorted(out.glob("*.whl"))
            assert len(found) == 1, f"building {kind} gave {found}:\n{output}"
            assert found[0].name.startswith(PROJECTS[kind][1] + "-0.1.0-")
            wheels[kind] = found[0]
        yield wheels
    finally:
        for process, _ in jobs.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new venv with only pip in it (see make_venv); yields its python
    executable. Shared by the session: do not install into it, make your own
    with make_venv."""
    root = tmp_path_factory.mktemp("fresh-venv")
    try:
        yield make_venv(root / "venv")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A real daemon process (tests/daemon_process.py), not started yet; stopped
    and its mount checked gone at the end. Some test files define their own."""
    from nwcache.daemon.linking import is_mount_point
    from tests.daemon_process import Daemon

    made = Daemon(tmp_path)
    try:
        yield made
    finally:
        made.stop()
        assert not is_mount_point(made.home / "view")


# The mounted-view fixtures (`view`, `view_mode`), for every test file; at the
# end, since tests.mounted uses what this module defines.
from tests.mounted import view, view_mode  # noqa: E402, F401
