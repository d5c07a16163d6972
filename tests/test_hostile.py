"""The hostile-archive corpus (tests/hostile/) installed through the CLI into a
real venv served by a real daemon: every case exits 1 with one `error:` line
naming its refusal and one `hint:` line, and the store, every file under
NWCACHE_HOME, the venv and what the view shows are exactly as before.

One daemon and one venv serve every case (module scope); a bystander package
is installed first so the view has content and one case can collide with it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nwcache.client.cli import main as nwcache
from nwcache.daemon.linking import is_mount_point
from tests.daemon_process import Daemon
from tests.fuzz.model import Entry, Model, build
from tests.helpers import new_venv
from tests.hostile import cases
from tests.hostile.snapshot import differences, snapshot

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")
CASES = cases.all_cases()
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass
class Installed:
    daemon: Daemon
    venv: Path
    site_packages: Path
    before: dict[str, dict[str, str]]


def bystander() -> tuple[str, bytes]:
    model = Model(
        name="bystander",
        form=2,
        files=[
            Entry(cases.BYSTANDER_FILE, b"X = 1\n"),
            Entry("bystander-1.0.data/data/share/bystander/readme.txt", b"shared\n"),
            Entry("bystander-1.0.data/scripts/bystander-tool", b"#!python\nprint('tool')\n", True),
        ],
        meta=[
            Entry("METADATA", b"Metadata-Version: 2.1\nName: bystander\nVersion: 1.0\n"),
            Entry("entry_points.txt", b"[console_scripts]\nbystander-cli = bystander:X\n"),
        ],
    )
    return model.wheel_filename(), build(model)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("hostile")
    daemon = Daemon(root)
    try:
        daemon.start()
        venv = root / "venv"
        new_venv(venv)
        name, data = bystander()
        (root / name).write_bytes(data)
        code, _, err = daemon.cli("install", root / name, "--env", venv)
        assert code == 0, err
        site = next(venv.glob("lib/python*/site-packages"))
        assert venv.is_symlink()  # the view serves the whole venv
        assert (site / cases.BYSTANDER_FILE).read_bytes() == b"X = 1\n"
        yield Installed(daemon, venv, site, snapshot(daemon.home, venv, site))
    finally:
        daemon.stop()
        assert not is_mount_point(daemon.home / "view")


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else []) for c in CASES]
)
def test_refused_and_nothing_changed(
    case: cases.Case,
    installed: Installed,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, data = case.build()
    archive = tmp_path / name
    archive.write_bytes(data)
    monkeypatch.setenv("NWCACHE_SOCKET", str(installed.daemon.socket))
    code = nwcache(["install", str(archive), "--env", str(installed.venv)])
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("error: ")
    assert lines[1].startswith("hint: ")
    assert re.search(case.expect, lines[0]), lines[0]
    assert not _CONTROL.search(err), repr(err)
    after = snapshot(installed.daemon.home, installed.venv, installed.site_packages)
    assert differences(installed.before, after) == []


def test_a_hostile_second_archive_stores_nothing(
    installed: Installed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`install good.whl evil.whl`: the evil one's metadata refusal comes
    before the good one is stored."""
    good = Model(
        name="good",
        files=[Entry("good/__init__.py", b"")],
        meta=[Entry("METADATA", b"Metadata-Version: 2.1\nName: good\nVersion: 1.0\n")],
    )
    first = tmp_path / good.wheel_filename()
    first.write_bytes(build(good))
    name, data = next(c for c in CASES if c.name == "script-python3-v2").build()
    second = tmp_path / name
    second.write_bytes(data)
    monkeypatch.setenv("NWCACHE_SOCKET", str(installed.daemon.socket))
    assert nwcache(["install", str(first), str(second), "--env", str(installed.venv)]) == 1
    assert "interpreter" in capsys.readouterr().err
    after = snapshot(installed.daemon.home, installed.venv, installed.site_packages)
    assert differences(installed.before, after) == []


@pytest.mark.parametrize("refused", ["record-hash-v2", "payload-corrupt-v2"])
def test_a_second_archive_refused_while_read_takes_the_first_back(
    refused: str,
    installed: Installed,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`install good.whl bad.whl` where bad's metadata passes and its payload
    fails once read: good was stored by then (packages, inline blobs and a
    body file), and the failed install takes all of it back."""
    dist = "taken_back_" + refused.replace("-", "_")
    good = Model(
        name=dist,
        files=[
            Entry("taken_back/__init__.py", f"NAME = {refused!r}\n".encode()),
            Entry("taken_back/big.bin", os.urandom(256 * 1024)),
        ],
        meta=[
            Entry("METADATA", f"Metadata-Version: 2.1\nName: taken-back-{refused}\nVersion: 1.0\n".encode())
        ],
    )
    first = tmp_path / good.wheel_filename()
    first.write_bytes(build(good))
    case = next(c for c in CASES if c.name == refused)
    name, data = case.build()
    second = tmp_path / name
    second.write_bytes(data)
    monkeypatch.setenv("NWCACHE_SOCKET", str(installed.daemon.socket))
    assert nwcache(["install", str(first), str(second), "--env", str(installed.venv)]) == 1
    assert re.search(case.expect, capsys.readouterr().err)
    after = snapshot(installed.daemon.home, installed.venv, installed.site_packages)
    # Two transactions ran (the store, then the take-back), so the index's
    # file is not the same bytes; every key and value in it is (the "lmdb" part).
    changed = differences(installed.before, after)
    assert [line for line in changed if not line.startswith("home: index/data.mdb:")] == []
    code, out, err = installed.daemon.cli("fsck")
    assert code == 0, (out, err)


def test_the_comparison_sees_a_real_install(installed: Installed, tmp_path: Path) -> None:
    """The check above can fail: an install that is not refused shows in
    every part of the snapshot. Runs after the corpus (it changes the state)."""
    model = Model(
        name="visible",
        files=[
            Entry("visible/__init__.py", b""),
            Entry("visible-1.0.data/scripts/visible-tool", b"#!python\n", True),
        ],
        meta=[Entry("METADATA", b"Metadata-Version: 2.1\nName: visible\nVersion: 1.0\n")],
    )
    archive = tmp_path / model.wheel_filename()
    archive.write_bytes(build(model))
    code, _, err = installed.daemon.cli("install", archive, "--env", installed.venv)
    assert code == 0, err
    changed = differences(
        installed.before, snapshot(installed.daemon.home, installed.venv, installed.site_packages)
    )
    for part in ("lmdb", "home", "venv", "view"):
        assert any(line.startswith(f"{part}: ") for line in changed), (part, changed)


def test_corpus_covers_the_issue() -> None:
    """Each kind the issue names has cases, in both forms where both apply,
    and every refusal rule of docs/FORMAT.md section 9 appears."""
    names = {c.name for c in CASES}
    assert len(CASES) >= 200
    for kind in (
        "zip-slip",
        "symlink",
        "bomb-ratio",
        "bomb-overlapping",
        "bomb-compressed",
        "larger-than",
        "record-outside-tree",
        "script-python",
        "entry-point",
        "control-name",
        "many-",
    ):
        assert any(kind in n for n in names), kind
    spec = (Path(__file__).parent.parent / "docs" / "FORMAT.md").read_text()
    section = spec[spec.index("## 9.") : spec.index("## 10.")]
    named = set(re.findall(r"`([a-z0-9-]+)`", section)) - {"path-*", "tar-*", "record-*", "zip-*"}
    everywhere = set(re.findall(r"\[`([a-z0-9-]+)`", spec)) | set(re.findall(r"`([a-z0-9-]+)`\]", spec))
    everywhere |= set(re.findall(r"^\| `([a-z0-9-]+)` \|", spec, re.MULTILINE))  # section 3's table
    rules = {r for r in named | everywhere if not r.endswith("-")}
    covered = {m for c in CASES for m in re.findall(r"\\\[([a-z0-9\\-]+)\\\]", c.expect)}
    covered = {r.replace("\\", "") for r in covered}
    assert len(rules) >= 70
    assert rules - covered == set()
