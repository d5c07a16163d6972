"""The project as packaged: the wheel and the sdist built from the tracked
files, and the development venv's imports. The repository keeps archive/,
daemon/, client/ and systemd/ at its top level; installed, they are
nwcache.archive, nwcache.daemon, nwcache.client and nwcache.systemd, and
nothing else (no second copy of a module under another name, no symlinks)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = {"archive": "archive", "daemon": "daemon", "client": "client", "systemd": "systemd"}


def _tracked_copy(dest: Path) -> Path:
    """The tracked files of this checkout (what a clone has), copied."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / os.fsdecode(name)
        if not source.is_file():  # deleted in the work tree, not yet committed
            continue
        target = dest / os.fsdecode(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(wheel, sdist, source tree): built offline by this venv's setuptools."""
    tree = _tracked_copy(tmp_path_factory.mktemp("checkout"))
    out = tmp_path_factory.mktemp("dist")
    built = []
    for kind in ("sdist", "wheel"):  # one process each (setuptools keeps state between them)
        script = f"import sys\nfrom setuptools import build_meta\nprint('built:', build_meta.build_{kind}(sys.argv[1]))"
        done = subprocess.run(
            [sys.executable, "-c", script, str(out)], cwd=tree, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr[-3000:]
        built.append(out / done.stdout.rpartition("built: ")[2].strip())
    sdist_path, wheel_path = built
    return wheel_path, sdist_path, tree


def test_the_wheel_holds_nwcache_and_nothing_else(built: tuple[Path, Path, Path]) -> None:
    wheel, _, tree = built
    with zipfile.ZipFile(wheel) as archive:
        entries = archive.infolist()
    names = {entry.filename for entry in entries}
    tops = {name.split("/")[0] for name in names}
    assert tops == {"nwcache", "nwcache-0.1.0.dist-info"}, tops
    assert not [e.filename for e in entries if stat.S_ISLNK(e.external_attr >> 16)]
    for folder, package in PARTS.items():
        files = sorted(p.name for p in (tree / folder).iterdir() if p.suffix in (".py", ".service"))
        assert files, folder
        for name in files:
            assert f"nwcache/{package}/{name}" in names, (folder, name)
    assert "nwcache/py.typed" in names
    assert "nwcache/protocol.py" in names


def test_the_sdist_has_the_top_level_folders_and_no_links(built: tuple[Path, Path, Path]) -> None:
    _, sdist, _ = built
    with tarfile.open(sdist) as archive:
        members = archive.getmembers()
    assert not [m.name for m in members if m.issym() or m.islnk()]
    names = {m.name.split("/", 1)[1] for m in members if "/" in m.name}
    for expected in (
        "daemon/service.py",
        "client/remote.py",
        "archive/sources.py",
        "systemd/nwcache.service",
    ):
        assert expected in names, expected
    assert not [n for n in names if n.startswith("nwcache/") and n.split("/")[1] in PARTS]


def test_the_development_venv_imports_each_module_once_by_its_nwcache_name(tmp_path: Path) -> None:
    """From outside the checkout (python -c puts the current directory on
    sys.path, so not from its root): nwcache.daemon is daemon/ of this
    checkout, the unit template is found, and `daemon`, `client` and
    `archive` are not importable at all."""
    script = (
        "import importlib.util, os, sys\n"
        "import nwcache.daemon.errors as e, nwcache.client.service as s\n"
        "print(os.path.realpath(e.__file__))\n"
        "print(s.template().splitlines()[0])\n"
        "print([n for n in ('daemon', 'client', 'archive') if importlib.util.find_spec(n)])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    errors_file, unit_first_line, importable = done.stdout.splitlines()
    assert errors_file == str(ROOT / "daemon" / "errors.py")
    assert unit_first_line == (ROOT / "systemd" / "nwcache.service").read_text().splitlines()[0]
    assert importable == "[]"


def test_no_module_imports_a_folder_by_its_top_level_name() -> None:
    """`import daemon...` would load a second copy of every module (two
    StoreError classes, two stores): nwcache.* is the only name."""
    import ast

    found = []
    for folder in ("src", "archive", "daemon", "client", "tests", "bench", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and node.level == 0
                    else []
                )
                where = f"{path}:{getattr(node, 'lineno', 0)}"
                found += [where for n in names if n.split(".")[0] in PARTS]
    assert not found
