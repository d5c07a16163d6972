"""The FUSE view, mounted for real: registered venvs import, list, install and
uninstall through it. Every test stops its view (and checks nothing stays
mounted) and ends with fsck."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from nwcache.daemon.environment import view_name
from nwcache.daemon.errors import NotAVenv
from nwcache.daemon.schema import GenerationRecord
from nwcache.daemon.store import Store
from tests.conftest import make_venv, run
from tests.helpers import new_venv, site_of
from tests.mounted import View, py
from tests.vectors import generate

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def test_two_venvs_share_inodes_and_import(view: View, tmp_path: Path, built_wheels: dict[str, Path]) -> None:
    a, b = make_venv(tmp_path / "a").parent.parent, make_venv(tmp_path / "b").parent.parent
    for venv in (a, b):
        env = view.service.call(view.service.service.register, venv)  # type: ignore[union-attr]
        # The venv itself links to its directory in the view, so that the
        # real path of sys.prefix holds site-packages (pip compares real paths).
        assert venv.is_symlink()
        assert Path(os.readlink(venv)) == view.mountpoint / view_name(env)
        assert os.path.realpath(site_of(venv)).startswith(os.path.realpath(venv) + os.sep)
        assert os.path.samefile(site_of(venv) / ".." / ".." / ".." / "bin", venv / "bin")
        view.service.call(
            view.service.service.install,  # type: ignore[union-attr]
            venv,
            [built_wheels["pure"], built_wheels["ext"], built_wheels["sharedlib"]],
        )
    for venv in (a, b):
        done = py(
            venv,
            "import nwdemo_pure, nwdemo_ext, nwdemo_sharedlib, pip;"
            "print(nwdemo_ext.__file__); print(nwdemo_ext._speedups.__file__)",
        )
        assert str(view.mountpoint) not in done.stdout  # imported through the venv's own path
        listed = run([venv / "bin" / "python", "-m", "pip", "list", "--format=freeze"]).stdout
        assert "nwdemo-pure==0.1.0" in listed.replace("_", "-")
        shown = run([venv / "bin" / "python", "-m", "pip", "show", "-f", "nwdemo_ext"]).stdout
        assert "Version: 0.1.0" in shown
    # The same content in two environments is one inode (one link per path:
    # editors write in place into files with several).
    init_a = os.stat(site_of(a) / "nwdemo_pure" / "__init__.py")
    init_b = os.stat(site_of(b) / "nwdemo_pure" / "__init__.py")
    assert init_a.st_ino == init_b.st_ino
    assert init_a.st_nlink == 1
    # pip's own files too (adopted at registration: same wheel, same bytes).
    pip_a = os.stat(site_of(a) / "pip" / "__init__.py")
    assert pip_a.st_ino == os.stat(site_of(b) / "pip" / "__init__.py").st_ino
    # Per-environment files (the installed RECORD names the venv's paths) differ.
    dist = next(p.name for p in site_of(a).iterdir() if p.name.startswith("nwdemo_pure-"))
    assert os.stat(site_of(a) / dist / "RECORD").st_ino != os.stat(site_of(b) / dist / "RECORD").st_ino
    # readdir agrees with the tree; read and mmap of a shared library.
    names = sorted(os.listdir(site_of(a) / "nwdemo_sharedlib"))
    assert any(n.startswith("libnwfoo.so") for n in names)
    lib = next(site_of(a).glob("nwdemo_sharedlib/libnwfoo.so.1.2.3"))
    data = lib.read_bytes()
    assert data[:4] == b"\x7fELF"
    # mmap and dlopen in another process: this one serves the view, and a
    # page fault taken while holding the GIL would wait for itself.
    mapped = py(
        a,
        "import ctypes, hashlib, mmap, sys\n"
        f"f = open({str(lib)!r}, 'rb')\n"
        "m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n"
        "print(hashlib.sha256(m[:]).hexdigest())\n"
        f"ctypes.CDLL({str(lib.with_name('libnwfoo.so.1'))!r})\n",
    )
    assert mapped.stdout.strip() == hashlib.sha256(data).hexdigest()
    assert os.stat(lib).st_ino == os.stat(lib.with_name("libnwfoo.so.1")).st_ino


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_pip_inside_a_registered_venv_survives_restart(
    view: View, tmp_path: Path, built_wheels: dict[str, Path]
) -> None:
    a = make_venv(tmp_path / "a").parent.parent
    b = make_venv(tmp_path / "b").parent.parent
    # pip refuses to uninstall from a site-packages whose real path is
    # outside sys.prefix ("outside environment"), so this venv is bound.
    view.service.call(view.service.service.register, a, "bind")  # type: ignore[union-attr]
    view.service.call(view.service.service.register, b)  # type: ignore[union-attr]
    pip: list[str | os.PathLike[str]] = [a / "bin" / "python", "-m", "pip"]
    run([*pip, "install", "--no-index", "--no-deps", built_wheels["pure"]])
    assert (site_of(a) / "nwdemo_pure" / "core.py").is_file()
    assert not (site_of(b) / "nwdemo_pure").exists()  # the other environment sees nothing
    py(a, "import nwdemo_pure.core")
    # Uninstalling pip itself from the copy-on-write layer hides store files
    # in this environment only.
    pip_init = site_of(b) / "pip" / "__init__.py"
    before = pip_init.read_bytes()
    view.stop()
    view.start()
    assert (site_of(a) / "nwdemo_pure" / "core.py").is_file()
    py(a, "import nwdemo_pure.core")
    run([*pip, "uninstall", "-y", "nwdemo_pure"])
    assert not (site_of(a) / "nwdemo_pure").exists()
    run([a / "bin" / "python", "-m", "pip", "--version"])
    # Upgrading pip in place (uninstall = renames of store directories, then
    # deletes) leaves the other environment's pip untouched.
    run([*pip, "uninstall", "-y", "pip"], check=True)
    assert not (site_of(a) / "pip").exists()
    assert pip_init.read_bytes() == before
    view.stop()
    view.start()
    assert not (site_of(a) / "pip").exists()
    assert pip_init.read_bytes() == before


def test_writes_inside_an_environment(view: View, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    new_venv(venv)
    view.service.call(view.service.service.register, venv)  # type: ignore[union-attr]
    site = site_of(venv)
    (site / "pkg").mkdir()
    (site / "pkg" / "mod.py").write_text("X = 1\n")
    with open(site / "pkg" / "mod.py", "r+b") as fh:
        fh.seek(4)
        fh.write(b"2")
    assert (site / "pkg" / "mod.py").read_text() == "X = 2\n"
    os.truncate(site / "pkg" / "mod.py", 2)
    assert (site / "pkg" / "mod.py").read_bytes() == b"X "
    (site / "pkg" / "mod.py").write_text("X = 3\n")
    os.chmod(site / "pkg" / "mod.py", 0o755)
    assert os.stat(site / "pkg" / "mod.py").st_mode & 0o777 == 0o755
    os.symlink("mod.py", site / "pkg" / "alias.py")
    assert os.readlink(site / "pkg" / "alias.py") == "mod.py"
    os.rename(site / "pkg", site / "renamed")
    assert sorted(os.listdir(site / "renamed")) == ["alias.py", "mod.py"]
    assert (site / "renamed" / "alias.py").read_text() == "X = 3\n"
    py(venv, "import renamed.mod as m; assert m.X == 3")
    os.unlink(site / "renamed" / "alias.py")
    os.unlink(site / "renamed" / "mod.py")
    os.rmdir(site / "renamed")
    assert not (site / "renamed").exists()
    # A store file cannot be changed in place: it is shared.
    shared = next(site.glob("_distutils_hack/*.py"), None) or next(site.rglob("*.py"), None)
    if shared is not None:
        with pytest.raises(OSError, match="Read-only file system"):
            open(shared, "ab").close()


def test_readers_during_install_and_open_files_keep_their_content(view: View, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    new_venv(venv)
    service = view.service.service
    assert service is not None
    view.service.call(service.register, venv)
    site = site_of(venv)

    def wheel(version: int, body: bytes) -> Path:
        spec = generate.Spec(
            dist_info=f"demo-{version}.0.dist-info",
            files=[generate.F("demo/__init__.py", body), generate.F("demo/data.bin", body * 1000)],
        )
        path = tmp_path / f"demo-{version}.0-py3-none-any.whl"
        path.write_bytes(generate.v2(spec))
        return path

    one, two = wheel(1, b"VERSION = 1\n"), wheel(2, b"VERSION = 22\n")
    view.service.call(service.install, venv, [one])
    held = open(site / "demo" / "__init__.py", "rb")  # noqa: SIM115 (kept open across the upgrade)
    seen: set[bytes] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                try:
                    seen.add((site / "demo" / "__init__.py").read_bytes())
                    (site / "demo" / "data.bin").read_bytes()
                except FileNotFoundError:
                    seen.add(b"<absent>")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            view.service.call(service.install, venv, [two])
            # Visible the moment install returns, to every process.
            assert (site / "demo" / "__init__.py").read_bytes() == b"VERSION = 22\n"
            assert py(venv, "import demo; print(demo.VERSION)").stdout.strip() == "22"
            view.service.call(service.install, venv, [one])
            assert (site / "demo" / "__init__.py").read_bytes() == b"VERSION = 1\n"
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors
    assert seen <= {b"VERSION = 1\n", b"VERSION = 22\n", b"<absent>"}
    view.service.call(service.install, venv, [two])
    assert held.read() == b"VERSION = 1\n"
    held.close()


def test_unregister_puts_a_real_directory_back(
    view: View, tmp_path: Path, built_wheels: dict[str, Path]
) -> None:
    venv = make_venv(tmp_path / "venv").parent.parent
    service = view.service.service
    assert service is not None
    view.service.call(service.register, venv)
    view.service.call(service.install, venv, [built_wheels["pure"]])
    (site_of(venv) / "extra.py").write_text("EXTRA = True\n")
    view.service.call(service.unregister, venv)
    site = site_of(venv)
    assert site.is_dir()
    assert not site.is_symlink()
    assert (site / "extra.py").read_text() == "EXTRA = True\n"
    assert not list(site.parent.glob("site-packages.nwcache-*"))
    view.stop()  # the venv no longer needs the daemon
    py(venv, "import nwdemo_pure, extra, pip")
    view.start()


def test_refuses_what_is_not_a_venv(view: View, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    service = view.service.service
    assert service is not None
    with pytest.raises(NotAVenv, match=r"no pyvenv\.cfg"):
        view.service.call(service.register, plain)
    assert list(plain.iterdir()) == []


def test_interrupted_switch_leaves_the_venv_usable(view: View, tmp_path: Path) -> None:
    """A daemon that died after the store registered the venv but before the
    switch (or after unregister's switch but before the store forgot it)
    finds a real site-packages at its next start: the registration goes,
    the venv keeps its directory."""
    venv = tmp_path / "venv"
    new_venv(venv)
    (site_of(venv) / "mine.py").write_text("MINE = 1\n")
    view.stop()
    with Store(view.home) as store:
        store.register(venv)
    leftover = site_of(venv).with_name("site-packages.nwcache-link")
    os.symlink("/nonexistent", leftover)
    view.start()
    service = view.service.service
    assert service is not None
    assert not leftover.is_symlink()
    assert not site_of(venv).is_symlink()
    py(venv, "import mine")


def test_changes_made_inside_become_a_generation(
    view: View, tmp_path: Path, built_wheels: dict[str, Path]
) -> None:
    """pip's work inside the venv is folded into a generation before the next
    store operation: history shows it, nwcache can uninstall what pip
    installed, rollback undoes it, and the layer is left empty."""
    venv = make_venv(tmp_path / "venv").parent.parent
    service = view.service.service
    assert service is not None
    view.service.call(service.register, venv)
    run([venv / "bin" / "python", "-m", "pip", "install", "--no-index", "--no-deps", built_wheels["pure"]])
    py(venv, "import nwdemo_pure.core")
    overlay = service.envs[str(venv)].layer
    assert not overlay.is_empty()
    view.service.call(service.install, venv, [built_wheels["ext"]])
    history = view.service.call(_history, service, venv)
    assert [g.action for g in history][-2:] == [
        "adopt changes made inside the venv",
        "install nwdemo-ext==0.1.0",
    ]
    assert "nwdemo_pure" in {p.name.replace("-", "_") for p in history[-1].packages}
    assert overlay.is_empty()
    py(venv, "import nwdemo_pure.core, nwdemo_ext")
    view.service.call(service.uninstall, venv, ["nwdemo-pure"])
    assert not (site_of(venv) / "nwdemo_pure").exists()
    assert py(venv, "import nwdemo_pure", check=False).returncode != 0
    view.service.call(service.rollback, venv)
    py(venv, "import nwdemo_pure.core, nwdemo_ext")


async def _history(service: object, venv: Path) -> list[GenerationRecord]:
    from nwcache.daemon.service import Service

    assert isinstance(service, Service)
    return service.store.history(venv)


def test_an_unregister_asked_during_a_first_install_comes_after_it(
    view: View, tmp_path: Path, built_wheels: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registering a new venv and installing into it are one hold of its
    lock: an unregister asked once the venv is served waits for the install
    (it used to come in between, and the install's fold failed with KeyError)."""
    import trio

    venv = make_venv(tmp_path / "venv").parent.parent
    service = view.service.service
    assert service is not None
    done: list[str] = []

    async def race() -> None:
        served = trio.Event()
        add_env = service.view.add_env

        async def add_env_and_tell(*args: Any, **kwargs: Any) -> None:
            await add_env(*args, **kwargs)
            served.set()  # registered and served; the install has not begun

        monkeypatch.setattr(service.view, "add_env", add_env_and_tell)

        async def install() -> None:
            await service.install(venv, [built_wheels["pure"]])
            done.append("installed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(install)
            with trio.fail_after(60):
                await served.wait()
            assert not done
            await service.unregister(venv)
            done.append("unregistered")

    view.service.call(race)
    assert done == ["installed", "unregistered"]
    assert not venv.is_symlink()  # a plain venv again, holding what was installed
    assert py(venv, "import nwdemo_pure; print('ok')").stdout.strip() == "ok"


def test_the_daemon_writes_a_venvs_scripts_without_going_through_its_own_mount(
    view: View, tmp_path: Path, built_wheels: dict[str, Path]
) -> None:
    """Installing writes the venv's console scripts into its root layer
    directly: a daemon thread waiting on its own mount when the loop that
    answers it stops (SIGTERM) or dies (SIGKILL) would wait for ever and keep
    the process and the mount alive (`make faults` hung so)."""
    venv = new_venv(tmp_path / "venv")
    service = view.service.service
    assert service is not None
    view.service.call(service.register, venv)
    requests = service.view.stats.requests
    before = dict(requests)
    view.service.call(service.install, venv, [built_wheels["pure"]])
    script = venv / "bin" / "nwdemo-pure"
    assert script.is_file()
    assert os.access(script, os.X_OK)
    view.service.call(service.uninstall, venv, ["nwdemo-pure"])
    assert not script.exists()
    writing = ("create", "write", "rename", "unlink", "mkdir", "setattr", "symlink", "rmdir")
    assert {op: requests[op] - before.get(op, 0) for op in writing} == dict.fromkeys(writing, 0)
    assert run([venv / "bin" / "python", "-c", "print('ok')"]).stdout.strip() == "ok"
