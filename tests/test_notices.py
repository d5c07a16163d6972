"""The notices beneath the mount point (daemon/notices.py), in a plain
directory: what a daemon killed while writing them leaves must not keep the
next daemon from mounting (found by `make faults` run as shipped: a stub
truncated by the kill made the mount point "not empty" for good)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nwcache.daemon.mount import MountError, prepare_mountpoint
from nwcache.daemon.notices import NOTICE, STUB_MARK, TEMP_SUFFIX, DownNotices

SITE = "lib/python3.11/site-packages"


@pytest.fixture
def notices(tmp_path: Path) -> DownNotices:
    made = DownNotices(tmp_path / "view")
    made.prepare()
    return made


def test_a_stub_is_replaced_whole_never_rewritten_in_place(notices: DownNotices, tmp_path: Path) -> None:
    notices.write("venv-1", SITE, "/v/one", "bin", ["python", "tool"])
    stub = tmp_path / "view" / "venv-1" / "bin" / "tool"
    before = os.stat(stub)
    assert STUB_MARK in stub.read_text()
    notices.write("venv-1", SITE, "/v/two", "bin", ["python", "tool"])  # another venv path: new text
    after = os.stat(stub)
    assert after.st_ino != before.st_ino  # renamed into place: a running stub keeps its old file
    assert "/v/two" in stub.read_text()
    assert not [p for p in (tmp_path / "view").rglob("*") if p.name.endswith(TEMP_SUFFIX)]


def test_what_a_kill_during_a_write_leaves_does_not_block_the_mount(
    notices: DownNotices, tmp_path: Path
) -> None:
    notices.write("venv-1", SITE, "/v/one", "bin", ["python"])
    view = tmp_path / "view"
    # The daemon was killed after creating the next stub's temporary file,
    # before writing a byte of it.
    leftover = view / "venv-1" / "bin" / f".tool{TEMP_SUFFIX}"
    leftover.write_bytes(b"")
    (view / "venv-1" / SITE / f".{NOTICE}{TEMP_SUFFIX}").write_bytes(b"")
    notices.close()
    prepare_mountpoint(view, DownNotices.holds_only_notices)  # raises MountError if refused
    # Anything else beneath the mount point is still refused.
    (view / "venv-1" / "bin" / "other").write_text("not a stub\n")
    with pytest.raises(MountError, match="not empty"):
        prepare_mountpoint(view, DownNotices.holds_only_notices)
    (view / "venv-1" / "bin" / "other").unlink()
    # The next write of that venv's notices clears the leftover.
    again = DownNotices(view)
    again.prepare()
    again.write("venv-1", SITE, "/v/one", "bin", ["python", "tool"])
    assert not leftover.exists()
    assert STUB_MARK in (view / "venv-1" / "bin" / "tool").read_text()
    again.close()
