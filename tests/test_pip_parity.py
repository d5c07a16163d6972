"""What nwcache writes into a venv matches what pip writes for the same
wheel (docs/VIEW.md, "What installing writes"). Each test installs the same
wheels twice at the same venv path: first with pip into a plain venv, then,
in a new venv made at that same path, with a real nwcache service into a
registered one; both trees are walked through every link (site-packages and
whatever else is served from the view) and compared file by file: names,
modes, contents.

Set aside, and only these: each INSTALLER file ("pip" against "nwcache") and
its row in RECORD (whose hash and size follow from it). With bytecode,
exactly the differences docs/VIEW.md lists; installing a wheel's 2.0 form,
also direct_url.json, which names the file installed. Using one venv path for
both keeps shebangs, RECORD's paths and hashes, and direct_url.json
comparable byte for byte, with nothing else to set aside.

pip is the project's own (the dev venv's, run with --python against the
plain venv), with no configuration, no index and the umask pip's modes
follow set to 022."""

from __future__ import annotations

import csv
import ensurepip
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from nwcache.daemon.store import Store
from tests.conftest import run
from tests.helpers import site_of
from tests.mounted import View
from tests.vectors import generate

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")

VECTORS = Path(__file__).parent / "vectors"


@dataclass(frozen=True)
class Entry:
    kind: str  # "dir", "file" or "link" (the venv's interpreter links, compared by target)
    mode: int
    content: bytes


Tree = dict[str, Entry]


def snapshot(root: Path) -> Tree:
    """Every directory and file under `root`, through every symlink (the
    venv's own links to its interpreter compared by their target)."""
    tree: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.stat(full)
            if os.path.islink(full) and os.path.basename(dirpath) == "bin" and name.startswith("python"):
                tree[rel] = Entry("link", 0, os.readlink(full).encode())
            elif stat.S_ISDIR(st.st_mode):
                tree[rel] = Entry("dir", stat.S_IMODE(st.st_mode), b"")
            else:
                tree[rel] = Entry("file", stat.S_IMODE(st.st_mode), Path(full).read_bytes())
    return tree


def installer_aside(tree: Tree) -> Tree:
    """The tree with INSTALLER set aside: the files themselves, and their
    rows in each RECORD (the rest of RECORD byte for byte)."""
    out: Tree = {}
    for rel, entry in tree.items():
        if rel.endswith(".dist-info/INSTALLER"):
            continue
        if rel.endswith(".dist-info/RECORD"):
            lines = entry.content.decode().splitlines(keepends=True)
            kept = [
                line for line in lines if not next(csv.reader([line]))[0].endswith(".dist-info/INSTALLER")
            ]
            entry = Entry(entry.kind, entry.mode, "".join(kept).encode())
        out[rel] = entry
    return out


def differences(pip: Tree, ours: Tree) -> list[str]:
    out = [f"only pip wrote {rel}" for rel in sorted(pip.keys() - ours.keys())]
    out += [f"only nwcache wrote {rel}" for rel in sorted(ours.keys() - pip.keys())]
    for rel in sorted(pip.keys() & ours.keys()):
        a, b = pip[rel], ours[rel]
        if a.kind != b.kind:
            out.append(f"{rel}: a {a.kind} from pip, a {b.kind} from nwcache")
        elif a.mode != b.mode:
            out.append(f"{rel}: mode {a.mode:o} from pip, {b.mode:o} from nwcache")
        elif a.content != b.content:
            out.append(
                f"{rel}: content differs\n  pip:     {a.content[:300]!r}\n  nwcache: {b.content[:300]!r}"
            )
    return out


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def plain_venv(path: Path) -> None:
    run([sys.executable, "-m", "venv", "--without-pip", path])


def pip_install(venv: Path, wheels: list[Path], *, compile_bytecode: bool) -> None:
    """The dev venv's pip installs `wheels` into `venv` (whose interpreter
    runs it: --python), as a user would install local files."""
    with umask(0o022):
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                venv / "bin" / "python",
                "install",
                "--no-deps",
                "--compile" if compile_bytecode else "--no-compile",
                *wheels,
            ],
            env={"PIP_NO_INDEX": "1"},
        )


@dataclass
class Named(generate.Spec):
    """A vector spec with its own METADATA (name and version)."""

    metadata: bytes = b""

    def dist_info_files(self) -> list[generate.F]:
        return [
            generate.F(f"{self.dist_info}/METADATA", self.metadata),
            generate.F(f"{self.dist_info}/WHEEL", self.wheel),
        ]


def fancy_wheel(out: Path) -> Path:
    """A wheel with every feature an installer handles, built here the way
    pypa/installer's test suite builds its sample ("fancy") wheel, with more:
    a name whose spelling pip changes (Fancy_Pkg), zip directory entries and
    RECORD directory rows, purelib and platlib, headers, data (one landing in
    bin/ with a '#!python' line, which is not a script's), scripts (a
    '#!python' one, a '#!pythonw' one without a newline, a '#!python' one
    with CRLF line ends in a subdirectory, an executable shell one, a
    non-executable one, and an entry point wrapper setuptools would have
    shipped, which pip skips), console and gui entry points, files with and
    without the exec bit."""
    dist_info = "Fancy_Pkg-1.0.0.dist-info"
    data = "Fancy_Pkg-1.0.0.data"
    f = generate.F
    files = [
        f("fancy/__init__.py", b'def main():\n    print("I\'m fancy.")\n'),
        f("fancy/__main__.py", b"from . import main\n\nmain()\n"),
        f("fancy/tool.sh", b"#!/bin/sh\necho tool\n", True),
        f(f"{data}/purelib/fancy_purelib.py", b"PURE = True\n"),
        f(f"{data}/platlib/fancy_platlib.py", b"PLAT = True\n"),
        f(f"{data}/headers/fancy.h", b"int fancy(void);\n"),
        f(f"{data}/headers/sub/inner.h", b"#define INNER 1\n"),
        f(f"{data}/data/share/fancy/data.py", b"# put me in data\n"),
        f(f"{data}/data/share/fancy/run.sh", b"#!/bin/sh\n", True),
        f(
            f"{data}/data/bin/fancy-data-tool",
            b"#!python\n# a data file, not a script: kept as it is\n",
            True,
        ),
        f(f"{data}/scripts/fancy-python", b"#!python\nprint('from a .data script')\n", True),
        f(f"{data}/scripts/fancy-pythonw", b"#!pythonw -E", True),
        f(f"{data}/scripts/fancy-shell", b"#!/bin/sh\necho shell\n", True),
        f(f"{data}/scripts/fancy-plain", b"not executable in the archive\n"),
        f(f"{data}/scripts/fancy.exe", b"MZ pretend launcher", True),
        f(f"{data}/scripts/sub/fancy-nested", b"#!python\r\nprint('nested')\r\n", True),
        f(
            f"{dist_info}/entry_points.txt",
            b"[console_scripts]\nfancy = fancy:main\n\n[gui_scripts]\nfancy-gui = fancy:main\n",
        ),
        f(f"{dist_info}/top_level.txt", b"fancy\nfancy_platlib\nfancy_purelib\n"),
    ]
    directories = ["fancy/", f"{data}/data/share/fancy/", "empty/"]

    spec = Named(
        metadata=b"Metadata-Version: 2.1\nName: Fancy-Pkg\nVersion: 1.0.0\nSummary: A fancy package\n",
        files=files,
        dist_info=dist_info,
        extra_record_rows=[f"{d},," for d in directories],
        extra_members=[(d, b"", 0o755) for d in directories],
    )
    path = out / "Fancy_Pkg-1.0.0-py3-none-any.whl"
    path.write_bytes(generate.classic(spec))
    return path


def versioned_wheel(out: Path) -> Path:
    """Entry points named like pip's and easy_install's, versioned for
    another Python: pip writes them for the interpreter it installs into."""
    dist_info = "versioned-1.0.dist-info"
    f = generate.F
    entry_points = (
        b"[console_scripts]\npip = versioned:main\npip3 = versioned:main\npip3.99 = versioned:main\n"
        b"easy_install = versioned:main\neasy_install-3.99 = versioned:main\nother = versioned.cli:run\n"
    )
    spec = Named(
        metadata=b"Metadata-Version: 2.1\nName: versioned\nVersion: 1.0\n",
        files=[
            f("versioned/__init__.py", b"def main():\n    return 0\n"),
            f(f"{dist_info}/entry_points.txt", entry_points),
        ],
        dist_info=dist_info,
    )
    path = out / "versioned-1.0-py3-none-any.whl"
    path.write_bytes(generate.classic(spec))
    return path


def test_fancy_wheel_is_what_the_tests_claim(tmp_path: Path) -> None:
    """The sample wheel carries what its docstring lists (a guard for the
    builder: a feature lost here would make the parity tests weaker)."""
    import zipfile

    with zipfile.ZipFile(fancy_wheel(tmp_path)) as archive:
        names = archive.namelist()
        modes = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
        record = archive.read("Fancy_Pkg-1.0.0.dist-info/RECORD").decode()
    assert "fancy/" in names
    assert "empty/,," in record
    assert "fancy/,," in record
    for category in ("purelib", "platlib", "headers", "data", "scripts"):
        assert any(n.startswith(f"Fancy_Pkg-1.0.0.data/{category}/") for n in names), category
    assert modes["Fancy_Pkg-1.0.0.data/scripts/fancy-shell"] & 0o111
    assert not modes["Fancy_Pkg-1.0.0.data/scripts/fancy-plain"] & 0o111


@pytest.fixture
def wheels(tmp_path: Path, built_wheels: dict[str, Path]) -> list[Path]:
    """The project's test wheels, the record-directories vector, the fancy
    and the versioned wheels, each copied beside the test: direct_url.json
    names the file."""
    here = tmp_path / "wheels"
    here.mkdir()
    sources = [
        built_wheels["pure"],
        built_wheels["ext"],
        built_wheels["sharedlib"],
        VECTORS / "ok-classic-record-directories" / "demo-1.0-py3-none-any.whl",
    ]
    copies = [Path(shutil.copy(source, here / source.name)) for source in sources]
    return [*copies, fancy_wheel(here), versioned_wheel(here)]


def installed_by_pip(venv: Path, wheels: list[Path], *, compile_bytecode: bool) -> Tree:
    """pip's tree at `venv`, which is then removed for nwcache's."""
    plain_venv(venv)
    pip_install(venv, wheels, compile_bytecode=compile_bytecode)
    tree = snapshot(venv)
    shutil.rmtree(venv)
    return tree


def installed_by_nwcache(view: View, venv: Path, wheels: list[Path]) -> Tree:
    plain_venv(venv)
    service = view.service.service
    assert service is not None
    view.service.call(service.register, venv)
    view.service.call(service.install, venv, wheels)
    view.service.call(service.compiled, venv)  # the shared bytecode, compiled after the install returns
    return snapshot(venv)


def test_the_same_tree_as_pip(view: View, tmp_path: Path, wheels: list[Path]) -> None:
    venv = tmp_path / "venv"
    pip = installed_by_pip(venv, wheels, compile_bytecode=False)
    ours = installed_by_nwcache(view, venv, wheels)
    assert site_of(venv).is_symlink() or site_of(venv).resolve() != site_of(venv)  # served by the view
    assert differences(installer_aside(pip), installer_aside(ours)) == []
    # What was set aside is what each installer says of itself.
    installers = {rel: entry.content for rel, entry in ours.items() if rel.endswith("/INSTALLER")}
    assert set(installers.values()) == {b"nwcache\n"}
    assert {rel: pip[rel].content for rel in installers} == dict.fromkeys(installers, b"pip\n")
    # The trees are not trivially equal: the features compared are there.
    site = os.path.relpath(site_of(venv), venv)
    for rel in (
        "include/site/python{}.{}/fancy-pkg/sub/inner.h".format(*sys.version_info[:2]),
        "share/fancy/data.py",
        "bin/fancy",
        "bin/fancy-gui",
        "bin/fancy-python",
        "bin/nwdemo-pure",
        "bin/nwdemo-pure-script",
        f"{site}/Fancy_Pkg-1.0.0.dist-info/direct_url.json",
        f"{site}/fancy_platlib.py",
    ):
        assert rel in ours, rel
    assert ours["bin/fancy-plain"].mode == 0o644
    assert ours["bin/fancy-shell"].mode == 0o755
    assert "bin/fancy.exe" not in ours
    short = "{}.{}".format(*sys.version_info[:2])
    assert {rel for rel in ours if rel.startswith(("bin/pip", "bin/easy"))} == {
        "bin/pip",
        "bin/pip3",
        f"bin/pip{short}",
        "bin/easy_install",
        f"bin/easy_install-{short}",
    }
    assert ours["bin/fancy-data-tool"].content.startswith(b"#!python\n")
    assert ours["bin/fancy-python"].content.startswith(f"#!{venv}/bin/python\n".encode())
    record = ours[f"{site}/Fancy_Pkg-1.0.0.dist-info/RECORD"].content
    assert b"\r\nempty/,,\r\n" in record
    assert b"Fancy_Pkg-1.0.0.data/scripts/fancy.exe,sha256=" in record
    # And each installed interpreter runs what was installed.
    done = subprocess.run([venv / "bin" / "fancy"], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout == "I'm fancy.\n"


@pytest.mark.slow
def test_the_same_tree_as_pip_for_pips_own_wheel(view: View, tmp_path: Path) -> None:
    """pip's wheel as CPython bundles it: a large real wheel, and the entry
    points pip rewrites for the interpreter it installs into (pip, pip3,
    pip3.N, whatever versioned names the wheel carries)."""
    bundled = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    if not bundled:
        pytest.skip("this CPython bundles no pip wheel")
    wheel = Path(shutil.copy(bundled[-1], tmp_path / bundled[-1].name))
    venv = tmp_path / "venv"
    pip = installed_by_pip(venv, [wheel], compile_bytecode=False)
    ours = installed_by_nwcache(view, venv, [wheel])
    assert differences(installer_aside(pip), installer_aside(ours)) == []
    short = "{}.{}".format(*sys.version_info[:2])
    assert {rel for rel in ours if rel.startswith("bin/pip")} == {"bin/pip", "bin/pip3", f"bin/pip{short}"}


@pytest.mark.slow
def test_the_same_tree_as_pip_with_bytecode(
    tmp_path: Path, wheels: list[Path], view_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip compiling at install against nwcache's shared bytecode: the pycs
    of site-packages have the same names; pip also lists them in RECORD (as
    `path,,`) and compiles the .py files it places outside site-packages;
    the pycs' bytes differ (docs/BYTECODE.md: the view's mtimes, one code
    object for every path). Nothing else differs."""
    venv = tmp_path / "venv"
    pip = installed_by_pip(venv, wheels, compile_bytecode=True)
    monkeypatch.setenv("NWCACHE_BYTECODE", "0")
    view = View(tmp_path / "nwcache")
    view.start()
    try:
        ours = installed_by_nwcache(view, venv, wheels)
    finally:
        view.stop()
        with Store(view.home) as store:
            assert store.fsck() == []
    site = os.path.relpath(site_of(venv), venv)
    pycs = {rel for rel in pip if rel.endswith(".pyc")}
    site_pycs = {rel for rel in pycs if rel.startswith(site + os.sep) or rel.startswith("lib64" + os.sep)}
    assert site_pycs
    assert site_pycs <= ours.keys()
    assert {rel for rel in ours if rel.endswith(".pyc")} == site_pycs
    # pip compiles the .py it wrote outside site-packages (.data/data) too.
    assert pycs - site_pycs == {"share/fancy/__pycache__/data.cpython-{}{}.pyc".format(*sys.version_info[:2])}
    caches = {rel for rel, entry in pip.items() if os.path.basename(rel) == "__pycache__"}
    assert caches - {"share/fancy/__pycache__"} == {
        rel for rel in ours if os.path.basename(rel) == "__pycache__"
    }

    def aside(tree: Tree) -> Tree:
        out = installer_aside(tree)
        for rel, entry in list(out.items()):
            if rel.endswith(".pyc") or os.path.basename(rel) == "__pycache__":
                del out[rel]
            elif rel.endswith(".dist-info/RECORD"):
                lines = entry.content.decode().splitlines(keepends=True)
                kept = [line for line in lines if not next(csv.reader([line]))[0].endswith(".pyc")]
                out[rel] = Entry(entry.kind, entry.mode, "".join(kept).encode())
        return out

    assert differences(aside(pip), aside(ours)) == []


def test_scripts_as_pip_writes_them_in_a_long_path_with_a_space(view: View, tmp_path: Path) -> None:
    """Where the interpreter's path has a space or makes a shebang line
    longer than Linux reads (127 bytes), pip's wrappers start with a /bin/sh
    line that execs it; a '#!python' script gets the path as it is. The
    wheel is there too: direct_url.json quotes the space in its URL."""
    venv = tmp_path / ("a long directory name with spaces " * 3).strip() / "venv"
    venv.parent.mkdir()
    wheel = fancy_wheel(venv.parent)
    assert len(f"#!{venv}/bin/python\n") > 127
    pip = installed_by_pip(venv, [wheel], compile_bytecode=False)
    ours = installed_by_nwcache(view, venv, [wheel])
    assert differences(installer_aside(pip), installer_aside(ours)) == []
    site = os.path.relpath(site_of(venv), venv)
    assert b"/a%20long%20directory" in ours[f"{site}/Fancy_Pkg-1.0.0.dist-info/direct_url.json"].content
    assert ours["bin/fancy"].content.startswith(f"#!/bin/sh\n'''exec' \"{venv}/bin/python\" ".encode())
    done = subprocess.run([venv / "bin" / "fancy"], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout == "I'm fancy.\n"


def test_a_v2_archive_installs_what_pip_installs_from_the_classic_one(view: View, tmp_path: Path) -> None:
    """The Wheel 2.0 form of a wheel installs the tree pip installs from the
    classic form; direct_url.json names the file installed, so it (and its
    RECORD row) is set aside too."""
    from nwcache.archive.convert import convert

    classic = fancy_wheel(tmp_path)
    v2 = tmp_path / "v2" / classic.name
    v2.parent.mkdir()
    convert(classic, v2, to=2)
    venv = tmp_path / "venv"
    pip = installed_by_pip(venv, [classic], compile_bytecode=False)
    ours = installed_by_nwcache(view, venv, [v2])

    def aside(tree: Tree) -> Tree:
        out = installer_aside(tree)
        for rel, entry in list(out.items()):
            if rel.endswith(".dist-info/direct_url.json"):
                del out[rel]
            elif rel.endswith(".dist-info/RECORD"):
                lines = entry.content.decode().splitlines(keepends=True)
                kept = [line for line in lines if "/direct_url.json," not in line]
                out[rel] = Entry(entry.kind, entry.mode, "".join(kept).encode())
        return out

    assert differences(aside(pip), aside(ours)) == []
    site = os.path.relpath(site_of(venv), venv)
    document = ours[f"{site}/Fancy_Pkg-1.0.0.dist-info/direct_url.json"].content
    assert v2.as_uri().encode() in document
