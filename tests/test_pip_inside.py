"""pip inside a registered venv behaves as in a plain venv (issue: "Inside a
registered venv, pip, Python and Jupyter behave exactly as in a plain venv").

The same pip commands run in a plain venv and in a registered one, step by
step: the exit codes, the output (paths aside) and the resulting metadata,
`pip list`, `importlib.metadata` and the files of site-packages and bin/ must
agree after every step. Both link modes: symlink (the venv's directory links
into the view) and bind (root only). pip runs with no configuration and no
index (PIP_CONFIG_FILE=/dev/null, --no-index), from wheels built here.
"""

from __future__ import annotations

import base64
import csv
import ensurepip
import hashlib
import io
import json
import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from nwcache.daemon.view import KERNEL_CACHED
from tests.conftest import make_venv, run
from tests.daemon_process import Daemon
from tests.helpers import site_of
from tests.mounted import View

pytestmark = [pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"), pytest.mark.slow]

BUNDLED = Path(ensurepip.__file__).parent / "_bundled"


def classic_wheel(
    folder: Path, name: str, version: str, files: dict[str, bytes], entry_points: str = ""
) -> Path:
    """A classic wheel as a build backend writes it (zip, RECORD with hashes)."""
    dist_info = f"{name}-{version}.dist-info"
    members = dict(files)
    members[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    members[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if entry_points:
        members[f"{dist_info}/entry_points.txt"] = entry_points.encode()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for path, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([path, f"sha256={digest}", len(data)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    members[f"{dist_info}/RECORD"] = out.getvalue().encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in members.items():
            zf.writestr(zipfile.ZipInfo(path, (1980, 1, 1, 0, 0, 0)), data)
    return wheel


def wheels(folder: Path) -> dict[str, Path]:
    """demo 1.0 (with a module and a script only it has) and 2.0."""
    return {
        "1.0": classic_wheel(
            folder,
            "demo",
            "1.0",
            {"demo/__init__.py": b"VERSION = '1.0'\n", "demo/old_only.py": b"OLD = True\n"},
            "[console_scripts]\ndemo-old = demo:main\n",
        ),
        "2.0": classic_wheel(
            folder,
            "demo",
            "2.0",
            {
                "demo/__init__.py": b"VERSION = '2.0'\ndef main():\n    print('two')\n",
                "demo/new_only.py": b"",
            },
            "[console_scripts]\ndemo-new = demo:main\n",
        ),
        "needs": classic_wheel(
            folder,
            "needy",
            "1.0",
            {"needy.py": b""},
        ),
    }


def editable_project(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "mine"\nversion = "0.1"\ndependencies = ["demo"]\n'
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    (folder / "src" / "mine").mkdir(parents=True)
    (folder / "src" / "mine" / "__init__.py").write_text("MINE = 1\n")
    return folder


def pip(venv: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return run(
        [venv / "bin" / "python", "-m", "pip", *args],
        env={
            "PYTHONDONTWRITEBYTECODE": "1",
            "PIP_NO_INDEX": "1",
            "PIP_NO_COLOR": "1",
            "PIP_PROGRESS_BAR": "off",
        },
        check=False,
    )


def normalised(text: str, venv: Path, elsewhere: list[Path]) -> str:
    """pip's output with the venv's paths (as given, resolved, in the view)
    and the test's folders replaced, and pip's temporary names made fixed."""
    for path in sorted({str(venv), os.path.realpath(venv)}, key=len, reverse=True):
        text = text.replace(path, "<venv>")
    for folder in elsewhere:
        text = text.replace(str(folder), "<tmp>")
    return re.sub(r"/tmp/pip-[\w-]+", "<pip-tmp>", text)


def state(venv: Path) -> dict[str, object]:
    """What a user can observe: pip's list, importlib.metadata, the files."""
    listed = json.loads(pip(venv, "list", "--format=json").stdout)
    versions = run(
        [
            venv / "bin" / "python",
            "-c",
            "import importlib.metadata as m, json;"
            "print(json.dumps(sorted((d.metadata['Name'], d.version) for d in m.distributions())))",
        ],
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    ).stdout
    site = site_of(venv)
    files = sorted(
        str(Path(root, name).relative_to(site))
        for root, dirs, names in os.walk(site)
        for name in names
        if "__pycache__" not in root
    )
    scripts = sorted(os.listdir(venv / "bin"))
    return {"pip list": listed, "metadata": json.loads(versions), "files": files, "bin": scripts}


@pytest.fixture(params=["symlink", "bind"])
def link_mode(request: pytest.FixtureRequest) -> str:
    if request.param == "bind" and os.geteuid() != 0:
        pytest.skip("bind mode needs root")
    return str(request.param)


# One view mode: the comparison is about pip and the venv's layout; the
# handlers of both modes are compared by test_view_ops and test_view_posix.
@pytest.mark.parametrize("view_mode", [KERNEL_CACHED], indirect=True)
def test_pip_behaves_as_in_a_plain_venv(view: View, link_mode: str, tmp_path: Path) -> None:
    built = wheels(tmp_path / "wheels")
    plain = make_venv(tmp_path / "plain").parent.parent
    mine = make_venv(tmp_path / "mine").parent.parent
    setuptools = sorted(BUNDLED.glob("setuptools-*.whl"))
    service = view.service.service
    assert service is not None
    view.service.call(service.register, mine, link_mode)
    project = editable_project(tmp_path / "project")
    steps: list[tuple[str, ...]] = [
        ("install", str(built["1.0"])),
        ("install", "--upgrade", str(built["2.0"])),
        ("check",),
        ("install", str(built["1.0"])),  # a downgrade
        ("install", "--force-reinstall", str(built["1.0"])),
        ("uninstall", "-y", "demo"),
        ("uninstall", "-y", "demo"),  # nothing to uninstall: a warning, exit 0
        ("install", str(built["2.0"]), str(built["needs"])),
    ]
    if setuptools:
        steps += [
            ("install", str(setuptools[-1])),
            ("install", "--no-build-isolation", "-e", str(project)),
            ("check",),
            ("uninstall", "-y", "mine"),
        ]
    for step in steps:
        theirs, ours = pip(plain, *step), pip(mine, *step)
        where = [tmp_path]
        said = (
            theirs.returncode,
            normalised(theirs.stdout, plain, where),
            normalised(theirs.stderr, plain, where),
        )
        assert (
            ours.returncode,
            normalised(ours.stdout, mine, where),
            normalised(ours.stderr, mine, where),
        ) == said, step
        assert state(mine) == state(plain), step
    # Every file of demo 1.0 that 2.0 does not have went with the upgrade.
    assert not (site_of(mine) / "demo" / "old_only.py").exists()
    assert not (mine / "bin" / "demo-old").exists()


def test_pip_changes_are_a_generation_rollback_undoes(view: View, tmp_path: Path) -> None:
    """What pip changed is a generation of its own as soon as nwcache looks
    (history, before any other operation); rolling back undoes it."""
    built = wheels(tmp_path / "wheels")
    venv = make_venv(tmp_path / "venv").parent.parent
    service = view.service.service
    assert service is not None
    view.service.call(service.install, venv, [built["1.0"]])
    assert pip(venv, "install", "--upgrade", built["2.0"]).returncode == 0
    folded = view.service.call(service.fold, venv)
    assert folded is not None
    gens = service.store.history(venv)
    assert gens[-1].number == folded.number
    assert [(p.name, p.version) for p in folded.packages if p.name == "demo"] == [("demo", "2.0")]
    view.service.call(service.rollback, venv)
    versions = state(venv)["metadata"]
    assert isinstance(versions, list)
    assert dict(versions)["demo"] == "1.0"
    assert (site_of(venv) / "demo" / "old_only.py").exists()
    assert (venv / "bin" / "demo-old").exists()
    assert not (venv / "bin" / "demo-new").exists()


_JUPYTER = """
import subprocess, sys
try:
    import demo
except ImportError:
    print("missing")
subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", sys.argv[1]], check=True)
import demo
import importlib.metadata
print(demo.VERSION, importlib.metadata.version("demo"))
"""


def test_install_then_import_in_one_interpreter(view: View, link_mode: str, tmp_path: Path) -> None:
    """Jupyter's `%pip install` then `import` in the same kernel: Python's
    finder and metadata caches key on the directory's mtime, which the
    install moves."""
    built = wheels(tmp_path / "wheels")
    venv = make_venv(tmp_path / "venv").parent.parent
    service = view.service.service
    assert service is not None
    view.service.call(service.register, venv, link_mode)
    done = run([venv / "bin" / "python", "-c", _JUPYTER, built["2.0"]], env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert done.stdout.split("\n")[:2] == ["missing", "2.0 2.0"]


def test_history_shows_what_pip_did_at_once(daemon: Daemon, tmp_path: Path) -> None:
    """`nwcache history` (a real daemon, the real CLI) shows pip's upgrade as
    a generation of its own before any other nwcache operation, `list`
    agrees, and `rollback` undoes it, scripts included."""
    built = wheels(tmp_path / "wheels")
    venv = make_venv(tmp_path / "venv").parent.parent
    daemon.start()
    code, _, err = daemon.cli("install", built["1.0"], "--env", venv)
    assert code == 0, err
    assert pip(venv, "install", "--upgrade", built["2.0"]).returncode == 0
    code, out, err = daemon.cli("history", "--env", venv, "--json")
    assert code == 0, err
    last = json.loads(out)[-1]
    assert last["current"]
    assert last["changes"] == [{"name": "demo", "old": "1.0", "new": "2.0"}]
    code, out, err = daemon.cli("list", "--env", venv, "--json")
    assert code == 0, err
    assert {"name": "demo", "version": "2.0"}.items() <= next(
        p for p in json.loads(out) if p["name"] == "demo"
    ).items()
    code, out, err = daemon.cli("rollback", "--env", venv)
    assert code == 0, err
    versions = state(venv)["metadata"]
    assert isinstance(versions, list)
    assert dict(versions)["demo"] == "1.0"
    assert (venv / "bin" / "demo-old").exists()
    assert not (venv / "bin" / "demo-new").exists()
