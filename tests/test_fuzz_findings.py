"""Regression tests, one per fuzzer finding (docs/RELIABILITY.md, "Fuzzing"):
each input once escaped as an exception other than ArchiveError / StoreError,
or was refused for the wrong rule, or was stored before it was refused."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import zstandard

from nwcache.archive import Archive, ArchiveError, unpack
from nwcache.archive.paths import MAX_FILES
from nwcache.archive.zipfmt import ZipWriter
from nwcache.daemon.errors import NotInstallable
from nwcache.daemon.layout import check_installable
from nwcache.daemon.store import Store
from tests.fuzz.model import Entry, Model, build, canonical_tar, compress, format_rows, row
from tests.fuzz.mutate import _fcs_field, rle_bomb
from tests.fuzz.target import make_env
from tests.hostile import cases, zipedit
from tests.vectors import generate


def read_all(path: Path) -> None:
    with Archive.open(path) as archive:
        for item in archive.iter_files():
            if item.link_to is None:
                for _ in item.chunks():
                    pass


def refusal(tmp_path: Path, data: bytes, name: str = "demo-1.0-py3-none-any.whl") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ArchiveError) as caught:
        read_all(path)
    return caught.value.rule


METADATA = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"


def cli_refusal(argv: list[str]) -> str:
    """Run the real command line on an input it must refuse: exit 1, one
    `error:` line and one `hint:` line, no traceback. Returns the error line."""
    done = subprocess.run(
        [sys.executable, "-m", "nwcache", *argv], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[1].startswith("hint: "), done.stderr
    return lines[0]


def model(**changes: object) -> Model:
    made = Model(
        files=[Entry("demo/__init__.py", b""), Entry("demo/core.py", b"x = 1\n")],
        meta=[Entry("METADATA", METADATA)],
    )
    for key, value in changes.items():
        setattr(made, key, value)
    return made


@pytest.mark.parametrize("form", [1, 2])
def test_record_size_with_a_non_ascii_digit(tmp_path: Path, form: int) -> None:
    """'²'.isdigit() is True and int('²') raises ValueError."""
    broken = model(form=form)
    broken.hooks.record.append(
        lambda rows: [[*r[:2], "\u00b2"] if r[0] == "demo/core.py" else r for r in rows]
    )
    assert refusal(tmp_path, build(broken)) == "record-syntax"


def test_payload_size_with_a_non_ascii_digit(tmp_path: Path) -> None:
    broken = model()
    broken.hooks.wheel.append(lambda w: w.replace(b"Payload-Size: ", b"Payload-Size: \xc2\xb2"))
    assert refusal(tmp_path, build(broken)) == "wheel-field"


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [(slice(124, 136), b"-0000000001\0", "tar-format"), (slice(124, 136), b"0000000_006\0", "tar-format")],
)
def test_tar_numbers_are_octal_digits_only(tmp_path: Path, field: slice, value: bytes, rule: str) -> None:
    """int(x, 8) takes a sign and underscores: a tar size of -1 or 0_6."""

    def change(tar: bytes) -> bytes:
        out = bytearray(tar)
        header = out[512 : 512 * 2]  # demo/core.py follows the empty __init__.py's header
        header[field] = value
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
        out[512:1024] = header
        return bytes(out)

    broken = model()
    broken.hooks.tar.append(change)
    assert refusal(tmp_path, build(broken)) == rule


def test_local_header_offset_past_the_end(tmp_path: Path) -> None:
    """A central directory entry pointing past the end made pread read a
    negative length (ValueError)."""
    data = bytearray(generate.classic(generate.Spec()))
    cd = data.index(b"PK\x01\x02")
    struct.pack_into("<L", data, cd + 42, len(data) + 100)
    assert refusal(tmp_path, bytes(data)) == "zip-truncated"


def test_too_many_record_rows(tmp_path: Path) -> None:
    rows = "".join(
        f"demo/f{i}.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\n" for i in range(MAX_FILES)
    )
    spec = generate.Spec(record=(rows + "demo-1.0.dist-info/RECORD,,\n").encode())
    assert refusal(tmp_path, generate.classic(spec)) == "record-too-many-rows"


def test_every_dist_info_file_is_bounded(tmp_path: Path) -> None:
    """metadata-too-large held for WHEEL and RECORD only."""
    big = b"\0" * ((64 << 20) + 1)
    spec = generate.Spec(files=[*generate.BASE])
    spec.extra_members.append(("demo-1.0.dist-info/huge.txt", big, 0o644))
    spec.extra_record_rows.append(generate.record_row("demo-1.0.dist-info/huge.txt", big))
    assert refusal(tmp_path, generate.classic(spec)) == "metadata-too-large"


def test_compressed_bomb_is_a_size_refusal(tmp_path: Path) -> None:
    """A frame whose header declares the tar's size but whose blocks decode to
    far more: libzstd stops it, and that was reported as payload-corrupt."""

    def bomb(frame: bytes) -> bytes:
        at, width = _fcs_field(frame)
        declared = frame[at : at + width]
        packed = bytearray(compress(bytes(range(16)) * 65536 * 4, level=1, window_log=20))
        new_at, new_width = _fcs_field(bytes(packed))
        assert new_width == width == 2 or new_width >= width
        packed[new_at : new_at + new_width] = int.from_bytes(declared, "little").to_bytes(new_width, "little")
        if width == 2 and new_width != 2:  # the 2-byte field is stored minus 256
            value = int.from_bytes(declared, "little") + 256
            packed[new_at : new_at + new_width] = value.to_bytes(new_width, "little")
        return bytes(packed)

    broken = model()
    broken.hooks.frame.append(bomb)
    assert refusal(tmp_path, build(broken)) == "payload-size"
    with pytest.raises(ArchiveError, match="decompresses past its declared"):
        read_all(tmp_path / "demo-1.0-py3-none-any.whl")


def test_rle_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    """64 RLE blocks of 128 KiB in a frame that declares the tar's size."""
    tar_size = len(canonical_tar(model().files))

    broken = model()
    broken.hooks.frame.append(lambda _frame: rle_bomb(tar_size, 64))
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    path.write_bytes(build(broken))
    with pytest.raises(ArchiveError) as caught:
        read_all(path)
    assert caught.value.rule == "payload-size"
    assert "at least 8388608 bytes" in caught.value.message
    assert zstandard.get_frame_parameters(rle_bomb(tar_size, 64)[:18]).content_size == tar_size


def test_payload_cannot_add_a_second_dist_info(tmp_path: Path) -> None:
    """Found by the hostile corpus: refused in a classic wheel, installed from a 2.0 payload."""
    for form in (1, 2):
        extra = model(form=form)
        extra.files.append(Entry("other-1.0.dist-info/METADATA", b"Name: other\n"))
        assert refusal(tmp_path, build(extra)) == "dist-info-count"


def test_error_lines_carry_no_control_characters(tmp_path: Path) -> None:
    """Found by the hostile corpus: a member name reached the terminal raw."""
    data = generate.classic(generate.Spec())
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    path.write_bytes(
        zipedit.set_external_mode(
            data.replace(b"demo/core.py", b"demo/\x1b[2J.py"), "demo/\x1b[2J.py", 0o120777
        )
    )
    with pytest.raises(ArchiveError) as caught:
        read_all(path)
    assert caught.value.rule == "zip-symlink"
    assert "\x1b" not in str(caught.value)
    assert "demo/\\x1b[2J.py" in str(caught.value)


@pytest.mark.parametrize(
    ("path", "entry_points", "says"),
    [
        ("demo/__init__.py", b"[console_scripts]\n" + b"x" * 300 + b" = demo:main\n", "longer than 255"),
        ("demo/__init__.py", b"[console_scripts]\n../escape = demo:main\n", "not a file name"),
        ("demo/__init__.py", b"\xff[console_scripts\n", "malformed"),
        ("demo-1.0.data/evil/x.py", None, "unknown .data category"),
        ("demo-1.0.data/purelib", None, "names no file"),
        ("demo-1.0.data/data/lib64/python3.11/site-packages/evil.py", None, "inside site-packages"),
        ("demo-1.0.data/data/pyvenv.cfg", None, "pyvenv.cfg"),
        ("demo-1.0.data/data/bin", None, "replace the directory"),
        ("demo-1.0.data/scripts/python3.11", None, "interpreter"),
    ],
)
def test_install_checks_refuse(tmp_path: Path, path: str, entry_points: bytes | None, says: str) -> None:
    """The checks that once ran after the package was stored, or raised
    OSError and ValueError; check_installable runs them first."""
    env = make_env(tmp_path / "venv")
    with pytest.raises(NotInstallable, match=says):
        check_installable("demo 1.0", "demo-1.0.dist-info", "demo", [path], entry_points, env)


def damaged_large_payload(tmp_path: Path) -> Path:
    """A 2.0 archive whose frame checksum fails, with a 6 MiB file last in
    the tar: the failure surfaces while that file's data is read by whoever
    consumes it (unpack's and ingest's workers included), not in the tar
    reader's own loop."""
    broken = model(files=[*model().files, Entry("demo/~big.bin", cases.large_content())])
    broken.hooks.frame.append(cases.damage_checksum)
    tmp_path.mkdir()
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    path.write_bytes(build(broken))
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["verify"],
        ["unpack", "{out}/tree"],
        ["convert", "--to", "1", "-o", "{out}"],
        ["convert", "-o", "{out}"],
    ],
    ids=["verify", "unpack", "convert-to-1", "convert-to-2"],
)
def test_damaged_payload_is_an_error_not_a_traceback(tmp_path: Path, command: list[str]) -> None:
    """`nwcache unpack` printed zstandard.ZstdError's traceback ("Restored
    data doesn't match checksum") before its error line."""
    archive = damaged_large_payload(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    argv = [command[0], str(archive), *(arg.format(out=out) for arg in command[1:])]
    error = cli_refusal(argv)
    assert error.startswith(f"error: {archive}: demo-1.0.payload.tar.zst: payload does not decompress")
    assert error.endswith("[payload-corrupt]")
    assert os.listdir(out) == []


def test_damaged_payload_stores_nothing(tmp_path: Path) -> None:
    archive = damaged_large_payload(tmp_path / "in")
    with Store(tmp_path / "home") as store:
        before = sorted(p.relative_to(store.home) for p in store.home.rglob("*") if p.is_file())
        with pytest.raises(ArchiveError) as caught:
            store.ingest(archive)
        assert caught.value.rule == "payload-corrupt"
        after = sorted(p.relative_to(store.home) for p in store.home.rglob("*") if p.is_file())
        assert after == before
        assert store.packages() == []
        assert store.fsck() == []


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_not_a_regular_file_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    """Opening a fifo waited for a writer forever; a directory raised
    IsADirectoryError."""
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    with pytest.raises(ArchiveError) as caught:
        Archive.open(path)
    assert caught.value.rule == "io"
    assert "not a regular file" in str(caught.value)


@pytest.mark.parametrize("form", [1, 2])
def test_a_name_the_file_system_refuses_is_a_destination_error(tmp_path: Path, form: int) -> None:
    """A 300-byte path component (the format limits whole paths to 4096
    bytes) made unpack and convert raise OSError ENAMETOOLONG."""
    long_name = "demo/" + "x" * 300 + ".py"
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    path.write_bytes(build(model(form=form, files=[*model().files, Entry(long_name, b"y = 2\n")])))
    commands = [["unpack", str(path), str(tmp_path / "out" / "tree")]]
    if form == 2:  # 2 -> 2 goes through a scratch tree
        commands.append(["convert", str(path), "-o", str(tmp_path / "out"), "--level", "1"])
    for argv in commands:
        (tmp_path / "out").mkdir()
        error = cli_refusal(argv)
        assert error.startswith(f"error: {path}: ")
        assert "File name too long" in error, error
        assert error.endswith("[destination-io]"), error
        assert os.listdir(tmp_path / "out") == []
        (tmp_path / "out").rmdir()


def test_unpack_names_the_first_fault_as_reading_does(tmp_path: Path) -> None:
    """Found by the fuzzer once it drove unpack: a classic wheel whose
    demo/core.py breaks its RECORD hash and whose METADATA (read later)
    breaks its zip size. verify said record-hash; unpack said zip-size, as a
    failed job run inline surfaced only at the end."""
    broken = model(form=1)
    other = row("demo/core.py", b"other")[1]
    metadata = "demo-1.0.dist-info/METADATA"

    def change(rows: list[list[str]]) -> list[list[str]]:
        changed = {"demo/core.py": [other, "6"], metadata: [row(metadata, METADATA)[1], "50"]}
        return [[r[0], *changed[r[0]]] if r[0] in changed else r for r in rows]

    broken.hooks.record.append(change)
    broken.hooks.final.append(lambda d: zipedit.set_field(d, metadata, "usize", 50))
    assert refusal(tmp_path, build(broken)) == "record-hash"
    archive = tmp_path / "demo-1.0-py3-none-any.whl"
    with Archive.open(archive) as opened, pytest.raises(ArchiveError) as caught:
        unpack(opened, tmp_path / "tree")
    assert caught.value.rule == "record-hash"
    assert sorted(os.listdir(tmp_path)) == [archive.name]


class _DeflateThenJunk:
    """Deflate, then bytes after the end of the deflate stream, inside the
    member: what the zip headers say stays true of the content."""

    def __init__(self) -> None:
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)

    def compress(self, data: bytes, /) -> bytes:
        return self.deflate.compress(data)

    def flush(self) -> bytes:
        return self.deflate.flush() + b"junk after the stream" * 500


@pytest.mark.timeout(60)
def test_bytes_after_a_deflate_stream_are_refused_not_a_hang(tmp_path: Path) -> None:
    """Found by the fuzzer's large-file seed (a hang): when a deflate stream
    ends while zlib still holds an unconsumed tail, every further decompress
    call moved the tail to unused_data and kept it, forever."""
    big = cases.large_content(3 << 20)
    out = io.BytesIO()
    writer = ZipWriter(out, timestamp=generate.EPOCH)
    writer.add_bytes("demo/__init__.py", b"")
    writer.add_stream("demo/big.bin", [big], size_bound=len(big), compressor=_DeflateThenJunk())
    dist_info = "demo-1.0.dist-info"
    writer.add_bytes(f"{dist_info}/METADATA", METADATA)
    writer.add_bytes(f"{dist_info}/WHEEL", generate.WHEEL)
    rows = [
        row("demo/__init__.py", b""),
        row("demo/big.bin", big),
        row(f"{dist_info}/METADATA", METADATA),
        row(f"{dist_info}/WHEEL", generate.WHEEL),
    ]
    writer.add_bytes(f"{dist_info}/RECORD", format_rows([*rows, [f"{dist_info}/RECORD", "", ""]]))
    writer.close()
    assert refusal(tmp_path, out.getvalue()) == "zip-corrupt"
