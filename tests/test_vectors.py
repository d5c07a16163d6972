"""The shared test vectors (tests/vectors/manifest.json): what every
implementation must accept, with which digest, and what it must refuse, by
which rule. Refusals go through the real CLI too, checking nothing is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nwcache.archive import Archive, ArchiveError, content_digest
from nwcache.client.cli import main
from tests.vectors import generate

ROOT = Path(__file__).parent / "vectors"
MANIFEST = json.loads((ROOT / "manifest.json").read_text())
VECTORS: dict[str, dict[str, Any]] = {v["name"]: v for v in MANIFEST["vectors"]}
ACCEPT = [name for name, v in VECTORS.items() if v["expect"] == "accept"]
REJECT = [name for name, v in VECTORS.items() if v["expect"] == "reject"]


def archive_of(name: str) -> Path:
    return ROOT / name / str(MANIFEST["archive"])


def read_everything(path: Path) -> tuple[Archive, int, int]:
    """Open and stream every file; returns the archive, files and links seen."""
    with Archive.open(path) as archive:
        files = links = 0
        for data in archive.iter_files():
            files += 1
            if data.link_to is not None:
                links += 1
            else:
                for _ in data.chunks():
                    pass
        return archive, files, links


def test_manifest_covers_every_directory() -> None:
    on_disk = {p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert on_disk == set(VECTORS)
    assert len(REJECT) >= 40


def test_vectors_regenerate_byte_for_byte(tmp_path: Path) -> None:
    generate.write(tmp_path)
    for name in VECTORS:
        assert (tmp_path / name / MANIFEST["archive"]).read_bytes() == archive_of(name).read_bytes(), name
    assert (tmp_path / "manifest.json").read_text() == (ROOT / "manifest.json").read_text()


@pytest.mark.parametrize("name", ACCEPT)
def test_accepted_vector(name: str) -> None:
    vector = VECTORS[name]
    archive, files, links = read_everything(archive_of(name))
    assert archive.verified_digest == vector["content_digest"]
    assert archive.metadata_digest() == vector["content_digest"]
    assert files == vector["files"]
    assert links == vector["content_links"]


def test_classic_and_v2_forms_share_a_digest() -> None:
    assert VECTORS["ok-classic-minimal"]["content_digest"] == VECTORS["ok-v2-minimal"]["content_digest"]


@pytest.mark.parametrize("name", REJECT)
def test_rejected_vector(name: str) -> None:
    with pytest.raises(ArchiveError) as caught:
        read_everything(archive_of(name))
    assert caught.value.rule == VECTORS[name]["rule"]
    message = str(caught.value)
    assert str(archive_of(name)) in message
    assert f"[{VECTORS[name]['rule']}]" in message


@pytest.mark.parametrize("name", REJECT)
def test_cli_refuses_and_writes_nothing(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = archive_of(name)
    before = path.read_bytes()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["verify", str(path)]) == 1
    assert main(["unpack", str(path), str(tmp_path / "tree")]) == 1
    assert main(["convert", str(path), "-o", str(out_dir), "--level", "3"]) == 1
    assert main(["convert", str(path), "-o", str(out_dir), "--to", "1"]) == 1
    assert not (tmp_path / "tree").exists()
    assert list(out_dir.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert path.read_bytes() == before
    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 4
    assert all(VECTORS[name]["rule"] in line for line in errors)
    assert sum(line.startswith("hint: ") for line in err) == 4


def test_digest_definition_is_the_spec() -> None:
    """docs/FORMAT.md section 7, computed by hand for one file."""
    import hashlib

    from nwcache.archive.digest import DigestItem

    sha = hashlib.sha256(b"x").digest()
    expected = hashlib.sha256(
        b"wheel-content-digest/1\n" + b"a/b.py\x00644\x00" + sha.hex().encode() + b"\x001\n"
    ).hexdigest()
    assert content_digest([DigestItem("a/b.py", False, sha, 1)]) == "sha256:" + expected
