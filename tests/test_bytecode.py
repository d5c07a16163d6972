"""Bytecode compiled once per interpreter and shared by every environment,
on a real mount: Python loads every installed module from a pyc the store
compiled, never compiles one itself, and a second venv adds nothing."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from nwcache.daemon import bytecode
from nwcache.daemon.service import Service
from nwcache.daemon.store import Store
from tests.conftest import clean_env, make_venv, run
from tests.helpers import site_of
from tests.mounted import View
from tests.test_roundtrip import HYPO_FILENAME, build_classic_wheel
from tests.test_store import find_python

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
CACHE_TAG = sys.implementation.cache_tag
POLL_TIMEOUT = 60.0


class Daemon(View):
    """A mounted view (tests.mounted) with bytecode on, and the Service behind it."""

    def __init__(self, root: Path, levels: tuple[int, ...] = (0,)) -> None:
        super().__init__(root, bytecode_levels=levels)
        self.thread = self.start()
        assert self.thread.service is not None
        self.svc: Service = self.thread.service  # the Service behind the view

    def install(self, venv: Path, *wheels: Path) -> None:
        """Install, then wait for the background compile (bounded: `call`'s timeout)."""
        self.thread.call(self.svc.install, venv, list(wheels))
        self.compiled()

    def compiled(self) -> None:
        self.thread.call(self.svc.compiled)

    def stop(self) -> None:
        super().stop()
        with Store(self.home) as store:
            assert store.fsck() == []


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    made = Daemon(tmp_path)
    try:
        yield made
    finally:
        made.stop()


def venv_at(path: Path, python: str = sys.executable, *, pip: bool = True) -> Path:
    if pip and python == sys.executable:
        return make_venv(path).parent.parent
    run([python, "-m", "venv", "--without-pip", path])
    return path


def imports(venv: Path, statement: str, *flags: str) -> tuple[set[str], set[str]]:
    """Run `statement` with -v in the venv (Python free to write bytecode):
    (site-packages sources loaded from a cached pyc, sources compiled)."""
    env = clean_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run(
        [venv / "bin" / "python", *flags, "-v", "-c", statement],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    site = str(site_of(venv))
    cached = set(re.findall(r"^# \S+\.pyc matches (\S+\.py)$", done.stderr, re.MULTILINE))
    compiled = set(re.findall(r"^# code object from '?(\S+\.py)'?$", done.stderr, re.MULTILINE))
    return {p for p in cached if p.startswith(site)}, {p for p in compiled if p.startswith(site)}


def layer_pycs(daemon: Daemon, venv: Path) -> list[str]:
    """Bytecode files in the venv's copy-on-write layer: what Python wrote itself."""
    return [p for p in daemon.svc.envs[str(venv)].layer.entries if bytecode.is_bytecode(p)]


def test_levels_setting() -> None:
    assert bytecode.parse_levels(None) == (0,)
    assert bytecode.parse_levels("1,0") == (0, 1)
    assert bytecode.parse_levels("off") == ()
    for bad in ("3", "x", "0,,9"):
        with pytest.raises(ValueError, match="NWCACHE_BYTECODE"):
            bytecode.parse_levels(bad)
    assert bytecode.pyc_path("a/b/mod.py", "cpython-311", 1) == "a/b/__pycache__/mod.cpython-311.opt-1.pyc"
    assert bytecode.is_bytecode("a/__pycache__/mod.cpython-311.pyc")
    assert not bytecode.is_bytecode("a/mod.pyc")
    assert not bytecode.compilable("pkg-1.0.dist-info/x.py")


def test_every_module_loads_from_a_shared_pyc_and_a_second_venv_adds_nothing(
    daemon: Daemon, tmp_path: Path, built_wheels: dict[str, Path]
) -> None:
    a = venv_at(tmp_path / "a")
    daemon.install(a, built_wheels["pure"])
    statement = (
        "import nwdemo_pure.core, nwdemo_pure.cli, nwdemo_pure.sub_a.alpha, nwdemo_pure.sub_b.beta, pip"
    )
    cached, compiled = imports(a, statement)
    package = {p for p in (site_of(a) / "nwdemo_pure").rglob("*.py")}
    assert len(package) == 7
    assert {str(p) for p in package} <= cached
    assert compiled == set(), compiled
    assert any("/pip/" in p for p in cached)  # adopted at registration, compiled too
    # Python wrote nothing: every pyc it wanted was there, in the store.
    assert layer_pycs(daemon, a) == []

    before = daemon.svc.store.stats()
    workers = daemon.svc.bytecode_counts.workers
    b = venv_at(tmp_path / "b")
    daemon.install(b, built_wheels["pure"])
    after = daemon.svc.store.stats()
    assert daemon.svc.bytecode_counts.workers == workers  # nothing compiled
    # No new pyc blob (the new blobs are this venv's own scripts and RECORD,
    # which name its interpreter).
    assert after["bytecode_blobs"] == before["bytecode_blobs"] > 0
    assert after["bytecode_bytes"] == before["bytecode_bytes"]
    cached_b, compiled_b = imports(b, statement)
    assert compiled_b == set()
    assert {p.replace(str(site_of(b)), str(site_of(a))) for p in cached_b} == cached
    # One pyc inode for both venvs, with the mtime and size Python checks.
    pyc = f"nwdemo_pure/__pycache__/core.{CACHE_TAG}.pyc"
    assert os.stat(site_of(a) / pyc).st_ino == os.stat(site_of(b) / pyc).st_ino
    source = os.stat(site_of(a) / "nwdemo_pure" / "core.py")
    header = (site_of(a) / pyc).read_bytes()[:16]
    assert header[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(header[8:12], "little") == int(source.st_mtime) & 0xFFFFFFFF
    assert int.from_bytes(header[12:16], "little") == source.st_size

    # Unregistered, the venv keeps valid pycs in its real directory.
    daemon.thread.call(daemon.svc.unregister, b)
    assert not site_of(b).is_symlink()
    cached_b, compiled_b = imports(b, statement)
    assert compiled_b == set()
    assert str(site_of(b) / "nwdemo_pure" / "core.py") in cached_b

    # GC: the package's bytecode goes with it once no generation keeps it.
    daemon.thread.call(daemon.svc.uninstall, a, ["nwdemo-pure"])
    daemon.thread.call(daemon.svc.gc, 1)
    left = daemon.svc.store.stats()
    assert 0 < left["bytecode_blobs"] < after["bytecode_blobs"]
    assert daemon.svc.store.fsck() == []


def test_same_source_is_one_pyc_and_sources_that_do_not_compile_are_skipped(
    daemon: Daemon, tmp_path: Path
) -> None:
    wheel = build_classic_wheel(
        tmp_path / "wheels",
        [
            ("hypo/__init__.py", b"", False),
            ("hypo/a.py", b"VALUE = 42\n", False),
            ("hypo/b.py", b"VALUE = 42\n", False),
            ("hypo/sub/__init__.py", b"", False),
            ("hypo/broken.py", b"def broken(:\n", False),
            ("hypo/legacy.py", b"print 'python 2'\n", False),
        ],
    )
    assert wheel.name == HYPO_FILENAME
    venv = venv_at(tmp_path / "v", pip=False)
    daemon.install(venv, wheel)
    site = site_of(venv)
    cache = site / "hypo" / "__pycache__"
    assert os.stat(cache / f"a.{CACHE_TAG}.pyc").st_ino == os.stat(cache / f"b.{CACHE_TAG}.pyc").st_ino
    assert (
        os.stat(cache / f"__init__.{CACHE_TAG}.pyc").st_ino
        == os.stat(site / "hypo" / "sub" / "__pycache__" / f"__init__.{CACHE_TAG}.pyc").st_ino
    )
    assert not (cache / f"broken.{CACHE_TAG}.pyc").exists()
    assert not (cache / f"legacy.{CACHE_TAG}.pyc").exists()
    assert daemon.svc.bytecode_counts.failed == 2
    cached, compiled = imports(venv, "import hypo.a, hypo.b, hypo.sub")
    assert compiled == set()
    assert len(cached) == 4
    failing = subprocess.run(
        [venv / "bin" / "python", "-c", "import hypo.broken"], capture_output=True, text=True, check=False
    )
    assert "SyntaxError" in failing.stderr
    # Remembered: a refresh does not try again.
    workers = daemon.svc.bytecode_counts.workers
    daemon.thread.call(daemon.svc.rollback, venv)
    daemon.thread.call(daemon.svc.rollback, venv, 2)
    daemon.compiled()
    assert daemon.svc.bytecode_counts.workers == workers


def test_optimization_levels_and_a_level_added_later(tmp_path: Path, built_wheels: dict[str, Path]) -> None:
    daemon = Daemon(tmp_path, levels=(0,))
    venv = venv_at(tmp_path / "v", pip=False)
    cache = site_of(venv) / "nwdemo_pure" / "__pycache__"
    try:
        daemon.install(venv, built_wheels["pure"])
        plain = os.stat(cache / f"core.{CACHE_TAG}.pyc").st_ino
        assert not (cache / f"core.{CACHE_TAG}.opt-1.pyc").exists()
    finally:
        daemon.stop()
    daemon = Daemon(tmp_path, levels=(0, 1))
    try:
        # Start-up serves what is stored; the next change compiles level 1 only.
        assert not (cache / f"core.{CACHE_TAG}.opt-1.pyc").exists()
        daemon.thread.call(daemon.svc.rollback, venv)
        assert not (site_of(venv) / "nwdemo_pure").exists()  # generation 1: before the install
        daemon.thread.call(daemon.svc.rollback, venv, 2)
        daemon.compiled()
        assert os.stat(cache / f"core.{CACHE_TAG}.pyc").st_ino == plain
        assert (cache / f"core.{CACHE_TAG}.opt-1.pyc").is_file()
        cached, compiled = imports(venv, "import nwdemo_pure.core", "-O")
        assert compiled == set()
        assert str(site_of(venv) / "nwdemo_pure" / "core.py") in cached
    finally:
        daemon.stop()


def test_a_module_written_inside_the_venv_gets_a_shared_pyc_once_folded(
    daemon: Daemon, tmp_path: Path
) -> None:
    venv = venv_at(tmp_path / "v", pip=False)
    daemon.thread.call(daemon.svc.register, venv)
    daemon.compiled()
    generations = len(daemon.svc.store.history(venv))
    site = site_of(venv)
    (site / "written_here.py").write_text("ANSWER = 42\n")
    # Python compiles it and writes its pyc into the layer.
    _cached, compiled = imports(venv, "import written_here")
    assert compiled == {str(site / "written_here.py")}
    assert layer_pycs(daemon, venv) == [f"__pycache__/written_here.{CACHE_TAG}.pyc"]

    assert daemon.thread.call(daemon.svc.fold, venv) is not None
    daemon.compiled()
    assert len(daemon.svc.store.history(venv)) == generations + 1
    tree = daemon.svc.store.tree(venv)
    assert "written_here.py" in tree
    assert not any(bytecode.is_bytecode(p) for p in tree)  # bytecode is never adopted
    # The pyc Python wrote left the layer with its folded source; the
    # shared one serves the module now.
    assert layer_pycs(daemon, venv) == []
    cached, compiled = imports(venv, "import written_here")
    assert compiled == set()
    assert cached == {str(site / "written_here.py")}

    # A layer holding only a pyc makes no generation.
    (site / "__pycache__" / f"stray.{CACHE_TAG}.pyc").write_bytes(b"not really a pyc")
    assert daemon.thread.call(daemon.svc.fold, venv) is None
    assert len(daemon.svc.store.history(venv)) == generations + 1


@pytest.mark.parametrize("version", ["3.9", "3.12", "3.13"])
def test_each_interpreter_compiles_its_own(
    version: str, daemon: Daemon, tmp_path: Path, built_wheels: dict[str, Path]
) -> None:
    python = find_python(version)
    if python is None:
        pytest.skip(f"no CPython {version} on this machine")
    magic = subprocess.run(
        [python, "-c", "import importlib.util; print(importlib.util.MAGIC_NUMBER.hex())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    venv = venv_at(tmp_path / f"v{version}", python, pip=False)
    daemon.install(venv, built_wheels["pure"])
    tag = f"cpython-{version.replace('.', '')}"
    pyc = site_of(venv) / "nwdemo_pure" / "__pycache__" / f"core.{tag}.pyc"
    assert pyc.read_bytes()[:4].hex() == magic
    cached, compiled = imports(venv, "import nwdemo_pure.core, nwdemo_pure.sub_a.alpha")
    assert compiled == set()
    assert str(site_of(venv) / "nwdemo_pure" / "core.py") in cached


def test_reads_go_on_while_a_package_compiles(daemon: Daemon, tmp_path: Path) -> None:
    # 800 modules of about 6 KB: seconds of compiling on 2 cores.
    body = "".join(f"def f{i}(x):\n    return [x * {i} for _ in range(3)]\n\n" for i in range(120))
    files = [(f"hypo/m{i:04d}.py", f"# {i}\n{body}".encode(), False) for i in range(800)]
    wheel = build_classic_wheel(tmp_path / "wheels", [("hypo/__init__.py", b"", False), *files])
    venv = venv_at(tmp_path / "v", pip=False)
    (site_of(venv) / "reader.py").write_text("X = 1\n" * 100)
    daemon.thread.call(daemon.svc.register, venv)
    target = site_of(venv) / "reader.py"
    counts = daemon.svc.bytecode_counts
    latencies: list[float] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            if counts.running:
                began = time.monotonic()
                with open(target, "rb") as fh:
                    fh.read()
                latencies.append(time.monotonic() - began)
            else:
                stop.wait(0.001)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        daemon.install(venv, wheel)
    finally:
        stop.set()
        reader.join(POLL_TIMEOUT)
    assert counts.sources >= 800
    assert len(latencies) >= 20, f"only {len(latencies)} reads while compiling"
    # Each read is an open, a read and a release through the daemon: it waits
    # for no compile. The bound is loose for loaded machines.
    assert max(latencies) < 1.0, sorted(latencies)[-5:]


def test_a_pyc_an_archive_ships_stays_the_packages(daemon: Daemon, tmp_path: Path) -> None:
    shipped = f"hypo/__pycache__/a.{CACHE_TAG}.pyc"
    wheel = build_classic_wheel(
        tmp_path / "wheels",
        [("hypo/__init__.py", b"", False), ("hypo/a.py", b"A = 1\n", False), (shipped, b"stale", False)],
    )
    venv = venv_at(tmp_path / "v", pip=False)
    daemon.install(venv, wheel)
    site = site_of(venv)
    # The view serves the store's pyc, which matches the source's mtime.
    assert (site / shipped).read_bytes()[:4] == importlib.util.MAGIC_NUMBER
    installed = {p.name: p.package for p in daemon.svc.store.generation(venv).packages}
    (site / "other.py").write_text("B = 2\n")
    assert daemon.thread.call(daemon.svc.fold, venv) is not None
    after = {p.name: p.package for p in daemon.svc.store.generation(venv).packages}
    assert after["hypo-pkg"] == installed["hypo-pkg"]  # unchanged, not adopted again
    assert daemon.svc.store.tree(venv)[shipped].size == len(b"stale")


def test_a_worker_that_goes_silent_is_killed_and_its_verdicts_kept(tmp_path: Path) -> None:
    # Stand-ins for an interpreter stuck on a hostile source, and for one
    # that dies on it: the daemon must not wait for either.
    stuck = tmp_path / "stuck"
    stuck.write_text("#!/bin/sh\necho 'ok 0'\necho 'fail 1 SyntaxError'\nexec sleep 600\n")
    dying = tmp_path / "dying"
    dying.write_text("#!/bin/sh\necho 'ok 0'\necho 'bad things' >&2\nkill -SEGV $$\n")
    for script in (stuck, dying):
        script.chmod(0o755)
    listing = str(tmp_path / "jobs")
    began = time.monotonic()
    run = trio.run(partial(bytecode.run_worker, str(stuck), listing, str(tmp_path / "out-"), silence=0.5))
    assert time.monotonic() - began < 30
    assert run.timed_out
    assert run.outcome == {"0": True, "1": False}
    assert run.returncode == -9
    run = trio.run(partial(bytecode.run_worker, str(dying), listing, str(tmp_path / "out-")))
    assert not run.timed_out
    assert run.outcome == {"0": True}
    assert run.returncode == -11
    assert "bad things" in run.stderr


def many_modules(folder: Path, count: int = 800) -> Path:
    """A wheel of `count` modules of about 6 KB: seconds of compiling on 2 cores."""
    body = "".join(f"def f{i}(x):\n    return [x * {i} for _ in range(3)]\n\n" for i in range(120))
    files = [(f"hypo/m{i:04d}.py", f"# {i}\n{body}".encode(), False) for i in range(count)]
    return build_classic_wheel(folder, [("hypo/__init__.py", b"", False), *files])


def test_an_install_returns_before_its_bytecode_and_python_writes_no_pyc_of_its_own(
    daemon: Daemon, tmp_path: Path
) -> None:
    wheel = many_modules(tmp_path / "wheels")
    venv = venv_at(tmp_path / "v", pip=False)
    daemon.thread.call(daemon.svc.register, venv)
    daemon.compiled()
    service = daemon.svc

    async def install_and_ask() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        await service.install(venv, [wheel])
        return await service.bytecode_of(venv), await service.bytecode_pending()

    state, pending = daemon.thread.call(install_and_ask)
    # Served before compiled: the answer says how much is left.
    assert state["error"] is None
    assert 0 < state["pending"] <= 801
    assert [(e["path"], e["error"]) for e in pending] == [(str(venv), None)]
    site = site_of(venv)
    # Python importing meanwhile compiles for itself but may not write its
    # pycs into the layer; a pyc for a source written inside the venv it may.
    imports(venv, "import hypo.m0799, hypo.m0001")
    (site / "hypo" / "__pycache__").mkdir(exist_ok=True)
    with pytest.raises(PermissionError):
        (site / "hypo" / "__pycache__" / f"m0799.{CACHE_TAG}.pyc.123").write_bytes(b"x")
    assert layer_pycs(daemon, venv) == []

    daemon.compiled()
    assert daemon.thread.call(service.bytecode_pending) == []
    assert daemon.thread.call(service.bytecode_of, venv) == {"pending": 0, "error": None}
    for source in (site / "hypo").glob("*.py"):
        assert (source.parent / "__pycache__" / f"{source.stem}.{CACHE_TAG}.pyc").is_file(), source
    cached, compiled = imports(venv, "import hypo.m0799, hypo.m0001")
    assert compiled == set()
    assert len(cached) == 3
    assert layer_pycs(daemon, venv) == []


@pytest.mark.parametrize("in_worker", [False, True], ids=["in-daemon", "worker"])
def test_a_pyc_asked_for_before_the_background_compiler_reached_it_is_compiled_at_once(
    daemon: Daemon, tmp_path: Path, in_worker: bool
) -> None:
    """The background compiler held before its first batch: Python's
    lookups of the pycs it needs compile them on demand (in the daemon,
    whose interpreter is the venv's, or in a worker of the venv's
    interpreter), the import loads every module from a shared pyc, and
    nothing lands in the venv's layer."""
    wheel = build_classic_wheel(
        tmp_path / "wheels",
        [
            ("demand/__init__.py", b"from . import sub\n", False),
            ("demand/sub.py", b"VALUE = 42\n", False),
            ("demand/broken.py", b"def (:\n", False),
            ("demand/unused.py", b"X = 1\n", False),
        ],
    )
    venv = venv_at(tmp_path / "v", pip=False)
    daemon.thread.call(daemon.svc.register, venv)
    daemon.compiled()
    service = daemon.svc
    service.demand_in_worker = in_worker
    release = trio.Event()
    original = service._compile

    async def held(*args: Any) -> Any:
        await release.wait()
        return await original(*args)

    async def set_release() -> None:
        release.set()

    service._compile = held  # type: ignore[method-assign,assignment]
    try:
        daemon.thread.call(service.install, venv, [wheel])
        cached, compiled = imports(venv, "import demand; assert demand.sub.VALUE == 42")
        site = site_of(venv)
        assert cached == {str(site / "demand" / "__init__.py"), str(site / "demand" / "sub.py")}
        assert compiled == set()
        assert daemon.svc.bytecode_counts.on_demand == 2
        assert bool(service._demand) == in_worker  # a worker process only where asked for
        # A source that does not compile is remembered, and Python's own
        # compile of it fails as usual; an unused module has no pyc yet.
        done = subprocess.run(
            [venv / "bin" / "python", "-c", "import demand.broken"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert "SyntaxError" in done.stderr
        pycache = site / "demand" / "__pycache__"
        assert sorted(p.name for p in pycache.iterdir()) == [
            f"__init__.{CACHE_TAG}.pyc",
            f"sub.{CACHE_TAG}.pyc",
        ]
        assert layer_pycs(daemon, venv) == []
        assert daemon.thread.call(service.bytecode_pending) != []
    finally:
        daemon.thread.call(set_release)
        service._compile = original  # type: ignore[method-assign]
    daemon.compiled()
    assert (site / "demand" / "__pycache__" / f"unused.{CACHE_TAG}.pyc").is_file()
    cached, compiled = imports(venv, "import demand.unused")
    assert compiled == set()
    assert layer_pycs(daemon, venv) == []


# A worker that cannot write its pyc (a full disk): it says so and stops.
FULL_DISK_WORKER = r"""
import json, sys
with open(sys.argv[1], "rb") as listing:
    job = json.loads(listing.readline())
print("error", job["id"], "[Errno 28] No space left on device", flush=True)
sys.exit(3)
"""


def test_a_failure_to_compile_is_reported_and_compiled_at_the_next_change(
    daemon: Daemon, tmp_path: Path, built_wheels: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = venv_at(tmp_path / "v", pip=False)
    service = daemon.svc
    monkeypatch.setattr(bytecode, "WORKER", FULL_DISK_WORKER)
    daemon.install(venv, built_wheels["pure"])
    state = daemon.thread.call(service.bytecode_of, venv)
    assert "No space left on device" in state["error"]
    (entry,) = daemon.thread.call(service.bytecode_pending)
    assert entry["path"] == str(venv)
    assert "No space left on device" in entry["error"]
    assert service.bytecode_counts.errors >= 1
    # Not the sources' fault: none is remembered as not compiling.
    tree = service.store.tree(venv)
    known = service.store.bytecode_known(venv_interpreter(service, venv), tree.values(), (0,))
    assert all(pyc is not None for pyc in known.values())
    assert not (site_of(venv) / "nwdemo_pure" / "__pycache__" / f"core.{CACHE_TAG}.pyc").exists()

    monkeypatch.undo()
    daemon.thread.call(service.rollback, venv)
    daemon.thread.call(service.rollback, venv, 2)
    daemon.compiled()
    assert daemon.thread.call(service.bytecode_pending) == []
    assert (site_of(venv) / "nwdemo_pure" / "__pycache__" / f"core.{CACHE_TAG}.pyc").is_file()


def venv_interpreter(service: Service, venv: Path) -> str:
    return service.store.get_env(venv).interpreter


def test_a_worker_reports_a_failure_that_is_not_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listing = tmp_path / "jobs"
    listing.write_text('{"id": "7"}\n')
    monkeypatch.setattr(bytecode, "WORKER", FULL_DISK_WORKER)
    run = trio.run(partial(bytecode.run_worker, sys.executable, str(listing), str(tmp_path / "out-")))
    assert run.error == "[Errno 28] No space left on device"
    assert run.outcome == {}
    assert run.returncode == 3


def test_compiling_resumes_after_the_daemon_is_killed(tmp_path: Path) -> None:
    from tests.daemon_process import Daemon as DaemonProcess

    wheel = many_modules(tmp_path / "wheels")
    venv = venv_at(tmp_path / "v", pip=False)
    (tmp_path / "d").mkdir()
    process = DaemonProcess(tmp_path / "d")
    process.env["NWCACHE_BYTECODE"] = "0"
    process.env["NWCACHE_CRASH_AT"] = "bytecode-batch"  # SIGKILL after the first batch is served
    try:
        process.start()
        code, out, err = process.cli("install", wheel, "--env", venv)
        assert code == 0, err
        assert process.process is not None
        assert process.process.wait(timeout=120) == -signal.SIGKILL
        process.stop()  # clears the mount the killed daemon left
        del process.env["NWCACHE_CRASH_AT"]
        with Store(process.home) as store:
            env = store.get_env(venv)
            assert env.id in store.compile_pending()
            tree = store.tree(venv)
            done = store.bytecode_known(env.interpreter, bytecode.sources(tree).values(), (0,))
            assert 0 < len(done) < len(bytecode.sources(tree))  # killed mid-compile

        process.start()
        deadline = time.monotonic() + POLL_TIMEOUT
        while True:
            code, out, err = process.cli("stats", "--json")
            assert code == 0, err
            if json.loads(out)["bytecode_pending"] == []:
                break
            assert time.monotonic() < deadline, f"bytecode still pending after {POLL_TIMEOUT} s: {out}"
            time.sleep(0.2)  # polling the daemon, bounded by the deadline
        site = site_of(venv)
        for source in (site / "hypo").glob("*.py"):
            assert (source.parent / "__pycache__" / f"{source.stem}.{CACHE_TAG}.pyc").is_file(), source
        cached, compiled = imports(venv, "import hypo.m0799, hypo.m0001")
        assert compiled == set()
        assert len(cached) == 3
    finally:
        process.stop()
