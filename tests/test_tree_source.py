"""Writing a 2.0 archive from a directory laid out as a wheel's root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nwcache.archive import Archive, ArchiveError, TreeSource, unpack, write_v2

WHEEL = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def make_tree(root: Path) -> Path:
    (root / "demo" / "sub").mkdir(parents=True)
    (root / "demo" / "__init__.py").write_text("")
    (root / "demo" / "sub" / "__init__.py").write_text("")
    (root / "demo" / "core.py").write_text("x = 1\n")
    script = root / "demo-1.0.data" / "scripts" / "tool"
    script.parent.mkdir(parents=True)
    script.write_text("#!python\nprint('tool')\n")
    script.chmod(0o755)
    (root / "demo-1.0.dist-info").mkdir()
    (root / "demo-1.0.dist-info" / "METADATA").write_bytes(
        b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
    )
    (root / "demo-1.0.dist-info" / "WHEEL").write_bytes(WHEEL)
    return root


def test_a_tree_without_record_gets_one(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    source = TreeSource(tree)
    assert source.filename == "demo-1.0-py3-none-any.whl"
    result = write_v2(source, tmp_path / "out" / source.filename, level=3)
    assert result.content_links == 1  # the second empty __init__.py
    with Archive.open(result.path) as archive:
        assert archive.v2 is not None
        assert archive.v2.executables == ("demo-1.0.data/scripts/tool",)
        unpack(archive, tmp_path / "back")
    for path in ("demo/core.py", "demo/sub/__init__.py", "demo-1.0.data/scripts/tool"):
        assert (tmp_path / "back" / path).read_bytes() == (tree / path).read_bytes()
    assert os.access(tmp_path / "back" / "demo-1.0.data/scripts/tool", os.X_OK)
    # The unpacked tree has a RECORD now; packing it again gives the same bytes.
    again = write_v2(TreeSource(tmp_path / "back"), tmp_path / "again" / source.filename, level=3)
    assert again.path.read_bytes() == result.path.read_bytes()


def test_a_record_that_disagrees_is_refused(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    first = write_v2(TreeSource(tree), tmp_path / "demo-1.0-py3-none-any.whl", level=3).path
    with Archive.open(first) as archive:
        unpack(archive, tmp_path / "back")
    (tmp_path / "back" / "demo" / "core.py").write_text("x = 2\n")
    out = tmp_path / "out"
    with pytest.raises(ArchiveError) as caught:
        write_v2(TreeSource(tmp_path / "back"), out / "demo-1.0-py3-none-any.whl", level=3)
    assert caught.value.rule == "record-hash"
    assert not out.exists() or list(out.iterdir()) == []
    (tmp_path / "back" / "demo" / "extra.py").write_text("")
    with pytest.raises(ArchiveError) as unlisted:
        TreeSource(tmp_path / "back")
    assert unlisted.value.rule == "record-unlisted"


def test_symlinks_inside_the_tree_are_content_outside_are_refused(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    (tree / "demo" / "alias.py").symlink_to("core.py")
    source = TreeSource(tree)
    assert {f.path for f in source.files} >= {"demo/alias.py", "demo/core.py"}
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (tree / "demo" / "leak.txt").symlink_to(outside)
    with pytest.raises(ArchiveError) as caught:
        TreeSource(tree)
    assert caught.value.rule == "tree-symlink"
