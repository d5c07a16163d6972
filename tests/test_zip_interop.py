"""Zip archives written by other tools (stdlib zipfile): zip64 extra fields,
data descriptors, members stored by a non-Unix creator."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from nwcache.archive import Archive, convert

FILES = {"pkg/__init__.py": b"", "pkg/mod.py": b"print('hi')\n" * 50}


def build(path: Path, *, force_zip64: bool = False, streaming: bool = False) -> None:
    files = dict(FILES)
    files["pkg-1.0.dist-info/METADATA"] = b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n"
    files["pkg-1.0.dist-info/WHEEL"] = b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    rows = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
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
