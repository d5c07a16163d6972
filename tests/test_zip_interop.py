"""Zip archives written by other tools (stdlib zipfile): zip64 extra fields,
data descriptors, members stored by a non-Unix creator, zip64 end records
before an end record with real values, RECORD rows for directories."""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import sys
import zipfile
from pathlib import Path

import pytest
from installer.sources import WheelFile

from nwcache.archive import Archive, convert, unpack
from tests.conftest import run

FILES = {"pkg/__init__.py": b"", "pkg/mod.py": b"print('hi')\n" * 50}


def build(
    path: Path,
    *,
    force_zip64: bool = False,
    streaming: bool = False,
    payload: dict[str, bytes] = FILES,
    directories: tuple[str, ...] = (),
) -> None:
    """A wheel written by zipfile; `directories` get a zip directory entry
    and a RECORD row each (`pkg/,,`), as some builders write them."""
    files = dict(payload)
    files["pkg-1.0.dist-info/METADATA"] = b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n"
    files["pkg-1.0.dist-info/WHEEL"] = b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    rows = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    rows[:0] = [f"{directory},," for directory in directories]
    files["pkg-1.0.dist-info/RECORD"] = ("\n".join([*rows, "pkg-1.0.dist-info/RECORD,,"]) + "\n").encode()

    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.buffer = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, data: bytes) -> int:  # type: ignore[override]
            self.buffer += data
            return len(data)

    unseekable = Unseekable()
    seekable = io.BytesIO()
    with zipfile.ZipFile(unseekable if streaming else seekable, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for directory in directories:
            zf.mkdir(directory.rstrip("/"))
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=force_zip64) as fh:
                fh.write(data)
    path.write_bytes(bytes(unseekable.buffer) if streaming else seekable.getvalue())


@pytest.mark.parametrize(("force_zip64", "streaming"), [(False, False), (True, False), (False, True)])
def test_reads_zipfile_output(tmp_path: Path, force_zip64: bool, streaming: bool) -> None:
    src = tmp_path / "pkg-1.0-py3-none-any.whl"
    build(src, force_zip64=force_zip64, streaming=streaming)
    if streaming:
        assert any(i.flag_bits & 0x08 for i in zipfile.ZipFile(src).infolist())
    with Archive.open(src) as archive:
        assert {f.path for f in archive.files} >= set(FILES)
        digest = archive.metadata_digest()
    out = convert(src, tmp_path / "v2" / src.name, level=3)
    assert out.content_digest == digest
    back = convert(out.path, tmp_path / "v1" / src.name, to=1)
    assert back.content_digest == digest
    with zipfile.ZipFile(back.path) as zf:
        assert zf.testzip() is None
        for name, data in FILES.items():
            assert zf.read(name) == data


def test_zip64_end_records_with_real_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As CPython's zipfile tests build their zip64 archives (ZIP64_LIMIT and
    ZIP_FILECOUNT_LIMIT made small): zipfile then writes the zip64 end record
    and locator, and keeps the real count, size and offset in the end record
    (the zip specification says they SHOULD be 0xFFFF.., not MUST). Refused
    once with zip-trailing-data."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1000)
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 9)
    payload = {f"pkg/m{i}.py": b"x = %d\n" % i * 40 for i in range(12)}
    src = tmp_path / "pkg-1.0-py3-none-any.whl"
    build(src, payload=payload)
    data = src.read_bytes()
    eocd = struct.unpack("<4s4H2LH", data[-22:])
    assert data[-42:-38] == b"PK\x06\x07"  # the zip64 locator precedes the end record...
    assert eocd[4] == len(payload) + 3  # ...which holds the real count
    assert eocd[6] < 0xFFFFFFFF  # and offset
    monkeypatch.undo()
    with Archive.open(src) as archive:
        assert len(archive.files) == len(payload) + 3
        digest = archive.metadata_digest()
    out = convert(src, tmp_path / "v2" / src.name, level=3)
    back = convert(out.path, tmp_path / "v1" / src.name, to=1)
    assert out.content_digest == back.content_digest == digest
    with zipfile.ZipFile(back.path) as zf:
        for name, data in payload.items():
            assert zf.read(name) == data


def test_record_rows_for_directories(tmp_path: Path) -> None:
    """pip and installer install a wheel whose RECORD lists directories
    (`pkg/,,`); refused once with path-directory. The rows are ignored, and
    RECORD survives both conversions byte for byte."""
    src = tmp_path / "pkg-1.0-py3-none-any.whl"
    build(src, payload={**FILES, "pkg/sub/m.py": b"y = 2\n"}, directories=("pkg/", "pkg/sub/"))
    with zipfile.ZipFile(src) as zf:
        assert zf.getinfo("pkg/sub/").is_dir()
        record = zf.read("pkg-1.0.dist-info/RECORD")
    assert record.startswith(b"pkg/,,\npkg/sub/,,\n")
    target = tmp_path / "pip-target"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", target, src])
    assert (target / "pkg" / "sub" / "m.py").read_bytes() == b"y = 2\n"
    with WheelFile.open(src) as source:
        source.validate_record(validate_contents=True)  # installer accepts it too
    with Archive.open(src) as archive:
        assert sorted(f.path for f in archive.files if not f.path.startswith("pkg-1.0.dist-info/")) == [
            "pkg/__init__.py",
            "pkg/mod.py",
            "pkg/sub/m.py",
        ]
    out = convert(src, tmp_path / "v2" / src.name, level=3)
    back = convert(out.path, tmp_path / "v1" / src.name, to=1)
    assert out.content_digest == back.content_digest
    for path in (out.path, back.path):
        with Archive.open(path) as archive:
            assert archive.record_bytes == record
    tree = tmp_path / "tree"
    with Archive.open(out.path) as archive:
        unpack(archive, tree)
    assert (tree / "pkg-1.0.dist-info" / "RECORD").read_bytes() == record
    assert (tree / "pkg" / "sub" / "m.py").read_bytes() == b"y = 2\n"
