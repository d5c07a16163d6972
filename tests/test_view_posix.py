"""What programs notice through the mounted view, in both modes: truncating
opens, directory times (Python's import and metadata caches key on them),
cached listings after an install, long names, editors rewriting installed
modules, gc while a process holds a file, and in kernel-cached mode no FUSE
request at all on a warm import."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nwcache.daemon.service import Service
from nwcache.daemon.view import KERNEL_CACHED
from tests.helpers import new_venv, site_of
from tests.mounted import View, py
from tests.vectors import generate

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def bare_venv(path: Path) -> Path:
    new_venv(path)
    return path


def service_of(view: View) -> Service:
    service = view.service.service
    assert service is not None
    return service


def wheel(tmp_path: Path, name: str, version: int, files: dict[str, bytes]) -> Path:
    spec = generate.Spec(
        dist_info=f"{name}-{version}.0.dist-info",
        files=[generate.F(path, body) for path, body in files.items()],
    )
    path = tmp_path / f"{name}-{version}.0-py3-none-any.whl"
    path.write_bytes(generate.v2(spec))
    return path


def registered(view: View, tmp_path: Path) -> tuple[Path, Path]:
    venv = bare_venv(tmp_path / "venv")
    view.service.call(service_of(view).register, venv)
    return venv, site_of(venv)


def test_truncating_open_of_a_layer_file(view: View, tmp_path: Path) -> None:
    """`echo hello > g; echo x > g; cat g` prints x (it printed x, then llo)."""
    _, site = registered(view, tmp_path)
    g = site / "g"
    subprocess.run(["sh", "-c", f"echo hello > {g}; echo x > {g}"], check=True)
    assert g.read_bytes() == b"x\n"
    g.write_text("a much longer content\n")
    with open(g, "w") as fh:  # Python's open(p, 'w') truncates too
        fh.write("y\n")
    assert g.read_bytes() == b"y\n"
    other = tmp_path / "other"
    other.write_text("z\n")
    subprocess.run(["cp", str(other), str(g)], check=True)  # cp onto an existing file
    assert g.read_bytes() == b"z\n"
    assert os.stat(g).st_size == 2
    os.utime(g, ns=(0, 5_000_000_000))  # the epoch is a time like any other
    assert (os.stat(g).st_atime_ns, os.stat(g).st_mtime_ns) == (0, 5_000_000_000)


def test_directory_times_move_with_changes(view: View, tmp_path: Path) -> None:
    venv, site = registered(view, tmp_path)
    before = os.stat(site)
    time.sleep(0.01)  # a clock tick apart: times must differ, not merely be rewritten
    (site / "new.py").write_text("N = 1\n")
    created = os.stat(site)
    assert created.st_mtime_ns > before.st_mtime_ns
    assert created.st_ctime_ns > before.st_ctime_ns
    time.sleep(0.01)
    os.unlink(site / "new.py")
    assert os.stat(site).st_mtime_ns > created.st_mtime_ns
    # utimensat on a directory and a symlink sets their times; chmod moves ctime.
    os.mkdir(site / "d")
    os.utime(site / "d", ns=(1_000_000_000, 2_000_000_000))
    assert os.stat(site / "d").st_mtime_ns == 2_000_000_000
    os.symlink("d", site / "link")
    os.utime(site / "link", ns=(3_000_000_000, 4_000_000_000), follow_symlinks=False)
    assert os.lstat(site / "link").st_mtime_ns == 4_000_000_000
    ctime = os.stat(site / "d").st_ctime_ns
    time.sleep(0.01)
    os.chmod(site / "d", 0o700)
    assert os.stat(site / "d").st_ctime_ns > ctime
    # An install moves the times of the directories whose names it changed.
    ahead = os.stat(site).st_mtime_ns
    time.sleep(0.01)
    view.service.call(service_of(view).install, venv, [wheel(tmp_path, "timed", 1, {"timed.py": b"T = 1\n"})])
    assert os.stat(site).st_mtime_ns > ahead


def test_a_running_interpreter_sees_what_is_installed_meanwhile(view: View, tmp_path: Path) -> None:
    """The Jupyter pattern (`%pip install six`, then `import six` in the same
    kernel): Python's finder caches a directory's names until its mtime
    moves. Once through the layer (a file written inside the venv), once
    through a generation flip (nwcache install)."""
    venv, site = registered(view, tmp_path)
    session = subprocess.Popen(
        [venv / "bin" / "python", "-u", "-c", "import sys\nfor line in sys.stdin: exec(line)"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONDONTWRITEBYTECODE": "1", "PATH": os.environ["PATH"]},
    )
    assert session.stdin is not None
    assert session.stdout is not None

    def ask(line: str) -> str:
        assert session.stdin is not None
        assert session.stdout is not None
        session.stdin.write(line + "\n")
        session.stdin.flush()
        return session.stdout.readline().strip()

    try:
        probe = "try:\n import {0}; print({0}.X)\nexcept ImportError: print('missing')"
        assert ask(f"exec({probe.format('written')!r})") == "missing"
        assert ask(f"exec({probe.format('installed')!r})") == "missing"
        (site / "written.py").write_text("X = 'written'\n")
        assert ask(f"exec({probe.format('written')!r})") == "written"
        view.service.call(
            service_of(view).install,
            venv,
            [wheel(tmp_path, "installed", 1, {"installed.py": b"X = 'flip'\n"})],
        )
        assert ask(f"exec({probe.format('installed')!r})") == "flip"
    finally:
        session.stdin.close()
        session.wait(30)
        session.stdout.close()
        assert session.stderr is not None
        session.stderr.close()


def test_cached_listing_shows_an_install_the_moment_it_returns(view: View, tmp_path: Path) -> None:
    venv, site = registered(view, tmp_path)
    service = service_of(view)
    view.service.call(
        service.install, venv, [wheel(tmp_path, "pkg", 1, {"pkg/__init__.py": b"", "pkg/a.py": b"A"})]
    )
    for _ in range(2):  # the second listing comes from the kernel's cache, if it keeps one
        assert sorted(os.listdir(site / "pkg")) == ["__init__.py", "a.py"]
    view.service.call(
        service.install,
        venv,
        [wheel(tmp_path, "pkg", 2, {"pkg/__init__.py": b"", "pkg/b.py": b"B", "pkg/c.py": b"C"})],
    )
    assert sorted(os.listdir(site / "pkg")) == ["__init__.py", "b.py", "c.py"]
    view.service.call(service.uninstall, venv, ["pkg"])
    assert not (site / "pkg").exists()
    assert "pkg" not in os.listdir(site)


def test_names_longer_than_255_bytes_are_refused(view: View, tmp_path: Path) -> None:
    venv, site = registered(view, tmp_path)
    for make in (lambda p: p.write_text("x"), lambda p: p.mkdir(), lambda p: os.symlink("x", p)):
        with pytest.raises(OSError, match="File name too long") as raised:
            make(site / ("n" * 256))
        assert raised.value.errno == errno.ENAMETOOLONG
    (site / ("n" * 255)).write_text("x")  # the longest name there is
    with pytest.raises(OSError, match="File name too long") as raised:
        os.stat(site / ("n" * 256))
    assert raised.value.errno == errno.ENAMETOOLONG
    view.service.call(service_of(view).unregister, venv)
    assert not site.is_symlink()
    assert (site / ("n" * 255)).read_text() == "x"
    assert not list(site.parent.glob("*nwcache-restore*"))


def test_editing_an_installed_module_changes_only_that_venv(view: View, tmp_path: Path) -> None:
    """sed -i and editors that write a new file and rename it over work in the
    layer; one that truncates and rewrites in place fails before anything
    changes (the content is shared with every venv holding it)."""
    service = service_of(view)
    a, site_a = registered(view, tmp_path)
    b = bare_venv(tmp_path / "b")
    view.service.call(service.register, b)
    shared = wheel(tmp_path, "edited", 1, {"edited.py": b"X = 1\n"})
    for venv in (a, b):
        view.service.call(service.install, venv, [shared])
    module = site_a / "edited.py"
    assert os.stat(module).st_nlink == 1  # vim's backupcopy=auto renames such files
    subprocess.run(["sed", "-i", "s/X = 1/X = 2/", str(module)], check=True)
    assert module.read_text() == "X = 2\n"
    assert (site_of(b) / "edited.py").read_text() == "X = 1\n"
    assert py(a, "import edited; print(edited.X)").stdout.strip() == "2"
    assert py(b, "import edited; print(edited.X)").stdout.strip() == "1"
    untouched = site_of(b) / "edited.py"
    # Truncating is refused before anything changes.
    with pytest.raises(OSError, match="Read-only file system") as raised, open(untouched, "w") as fh:
        fh.write("X = 3\n")
    assert raised.value.errno == errno.EROFS
    assert untouched.read_text() == "X = 1\n"
    # Writing in place without truncating: refused (at open with handles, at
    # the write in kernel-cached mode), and the cached pages stay true.
    with (
        pytest.raises(OSError, match="Read-only file system") as raised,
        open(untouched, "r+b", buffering=0) as raw,
    ):
        raw.write(b"Y")
    assert raised.value.errno == errno.EROFS
    assert untouched.read_text() == "X = 1\n"
    assert py(b, "import edited; print(edited.X)").stdout.strip() == "1"


def test_gc_keeps_what_a_process_holds_open(view: View, tmp_path: Path) -> None:
    venv, site = registered(view, tmp_path)
    service = service_of(view)
    body = b"held = True\n" * 50_000
    view.service.call(service.install, venv, [wheel(tmp_path, "held", 1, {"held/data.bin": body})])
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            f"f = open({str(site / 'held' / 'data.bin')!r}, 'rb')\n"
            "print('open', flush=True)\nsys.stdin.readline()\n"
            "import hashlib; print(len(f.read()), flush=True)",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "open"
        view.service.call(service.uninstall, venv, ["held"])
        view.service.call(service.gc, 1)
        subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=False)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == str(len(body))
    finally:
        holder.stdin.close()
        holder.wait(30)
        holder.stdout.close()


def test_a_warm_import_makes_no_open_or_opendir(
    view: View, view_mode: str, tmp_path: Path, built_wheels: dict[str, Path]
) -> None:
    venv, _ = registered(view, tmp_path)
    service = service_of(view)
    view.service.call(service.install, venv, [built_wheels["pure"], built_wheels["ext"]])
    code = "import nwdemo_pure, nwdemo_ext, json, email.parser"
    py(venv, code)  # cold: lookups, first reads
    requests = service.view.stats.requests
    before = dict(requests)
    py(venv, code)
    made = {op: n - before.get(op, 0) for op, n in requests.items() if n != before.get(op, 0)}
    if view_mode == KERNEL_CACHED:
        for op in ("open", "release", "opendir", "readdir", "releasedir"):
            assert made.get(op, 0) == 0, made
    else:
        assert made.get("open", 0) > 0, made  # the other mode pays a round trip per open
