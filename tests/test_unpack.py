"""unpack on archives large enough for its writer threads (archive.parallel):
every file with its bytes and mode, content links in each link mode, and a
damaged file refused with nothing left behind, through the library and the
real command line."""

from __future__ import annotations

import importlib
import random
import subprocess
import sys
from pathlib import Path

import pytest

from nwcache.archive import Archive, ArchiveError, LinkMode, unpack
from nwcache.archive.parallel import PARALLEL_MIN, SMALL_FILE
from tests.fuzz.model import Entry, Model, build

unpack_module = importlib.import_module("nwcache.archive.unpack")
METADATA = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
# One large file's content, and the small file a damaged archive breaks.
LARGE = "demo/data/large.bin"
VICTIM = "demo/d17/sub0/m4.py"


def files() -> list[Entry]:
    """Over PARALLEL_MIN bytes: 300 small files in 60 directories (so many
    batches, spread over the writer threads), two files of several read
    chunks, and content shared between paths with and without the exec bit."""
    rng = random.Random(18)
    out = []
    for d in range(30):
        for f in range(10):
            size = rng.randrange(0, 16_000)
            out.append(Entry(f"demo/d{d:02}/sub{f % 2}/m{f}.py", rng.randbytes(size), executable=f == 3))
    large = rng.randbytes(SMALL_FILE * 2 + 12_345)
    out.append(Entry(LARGE, large))
    out.append(Entry("demo/data/large2.bin", large, executable=True))
    shared = rng.randbytes(3000)
    out += [
        Entry("demo/links/a.py", shared),
        Entry("demo/links/b/c.py", shared, executable=True),
        Entry("demo/links/d.py", shared),
        Entry("demo/links/empty1.py", b""),
        Entry("demo/links/deep/er/empty2.py", b"", executable=True),
    ]
    return out


def expected() -> dict[str, tuple[bytes, bool]]:
    return {e.path: (e.data, e.executable) for e in files()}


def archive_with(tmp_path: Path, damage: str | None = None) -> Path:
    model = Model(files=files(), meta=[Entry("METADATA", METADATA)], level=1)
    if damage is not None:
        content = {e.path: e.data for e in files()}[damage]

        def flip(tar: bytes) -> bytes:
            at = tar.index(content) + len(content) // 2
            return tar[:at] + bytes([tar[at] ^ 0xFF]) + tar[at + 1 :]

        model.hooks.tar.append(flip)
    path = tmp_path / "in" / model.wheel_filename()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(build(model))
    return path


def on_disk(root: Path) -> dict[str, tuple[bytes, bool]]:
    """Payload files under `root` (symlinks followed): bytes and exec bit."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), bool(p.stat().st_mode & 0o111))
        for p in root.rglob("*")
        if p.is_file() and not p.relative_to(root).as_posix().startswith("demo-1.0.dist-info/")
    }


def test_the_archive_is_large_enough_for_the_writer_threads(tmp_path: Path) -> None:
    with Archive.open(archive_with(tmp_path)) as archive:
        assert archive.installed_size > PARALLEL_MIN
        assert any(f.size > SMALL_FILE for f in archive.files)


@pytest.mark.parametrize("mode", list(LinkMode))
@pytest.mark.parametrize("workers", [2, 4])
def test_every_file_with_its_bytes_and_mode(mode: LinkMode, workers: int, tmp_path: Path) -> None:
    path = archive_with(tmp_path)
    dest = tmp_path / "tree"
    with Archive.open(path) as archive:
        count = unpack(archive, dest, links=mode, workers=workers)
        assert count == len(archive.files)
    assert on_disk(dest) == expected()
    assert (dest / "demo-1.0.dist-info" / "METADATA").read_bytes() == METADATA
    if mode is LinkMode.SYMLINK:
        assert (dest / "demo/links/d.py").is_symlink()
    if mode is LinkMode.HARDLINK:
        assert (dest / "demo/links/d.py").stat().st_ino == (dest / "demo/links/a.py").stat().st_ino


def test_copies_read_back_from_disk_past_the_kept_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past _KEEP_BYTES of link targets, a copy reads its target from disk."""
    monkeypatch.setattr(unpack_module, "_KEEP_BYTES", 0)
    dest = tmp_path / "tree"
    with Archive.open(archive_with(tmp_path)) as archive:
        unpack(archive, dest, links=LinkMode.COPY, workers=2)
    assert on_disk(dest) == expected()
    assert not (dest / "demo/links/d.py").is_symlink()


@pytest.mark.parametrize("victim", [VICTIM, LARGE], ids=["small-file", "large-file"])
def test_a_damaged_file_is_refused_and_nothing_is_left(victim: str, tmp_path: Path) -> None:
    """The frame and tar are intact; one file's bytes differ from RECORD. Its
    hash is checked on a writer thread, yet unpack refuses for that file and
    removes everything it wrote."""
    path = archive_with(tmp_path, damage=victim)
    out = tmp_path / "out"
    out.mkdir()
    with Archive.open(path) as archive, pytest.raises(ArchiveError) as refused:
        unpack(archive, out / "tree", workers=2)
    assert refused.value.rule == "record-hash"
    assert refused.value.member == victim
    assert list(out.iterdir()) == []


def test_the_command_line_refuses_with_one_error_line(tmp_path: Path) -> None:
    path = archive_with(tmp_path, damage=VICTIM)
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "nwcache", "unpack", str(path), str(out / "tree")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("error: ")
    assert lines[0].endswith(f"{VICTIM}: content does not match its RECORD hash [record-hash]")
    assert lines[1].startswith("hint: ")
    assert list(out.iterdir()) == []
