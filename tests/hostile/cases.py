"""Builders for every hostile case, in the classic and the 2.0 form where both
apply. Each case says which text its refusal shows: the rule in brackets for
archive errors (docs/FORMAT.md section 9), a phrase of the message for the
install-time refusals (daemon/layout.py check_installable).

Archives come from the fuzzer's model (tests/fuzz/model.py), whose hooks break
one stage and keep the others consistent, and from the shared test vectors.
"""

from __future__ import annotations

import json
import re
import stat
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nwcache.archive import tarfmt
from nwcache.archive.paths import MAX_FILES
from nwcache.archive.zipfmt import DEFLATED, STORED
from tests.fuzz.model import Entry, Members, Model, Rows, b64, build, compress, row
from tests.fuzz.mutate import _fcs_field, rle_bomb
from tests.vectors import generate

from . import zipedit

VECTORS = Path(__file__).parent.parent / "vectors"
# The venv under test is made by this interpreter: its own pythonX.Y name.
PY = f"python{sys.version_info.major}.{sys.version_info.minor}"
METADATA = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
BYSTANDER_FILE = "bystander/__init__.py"  # installed first; a case collides with it


@dataclass(frozen=True)
class Case:
    name: str
    expect: str  # a regular expression the `error:` line must match
    build: Callable[[], tuple[str, bytes]]  # -> (file name, archive bytes)
    slow: bool = False


@dataclass
class Spec:
    """What a model-based case changes: the model, then finished bytes."""

    change: Callable[[Model], None] = lambda m: None
    final: list[Callable[[bytes], bytes]] = field(default_factory=list)


def base(form: int) -> Model:
    return Model(
        form=form,
        files=[
            Entry("demo/__init__.py", b""),
            Entry("demo/core.py", b"def answer():\n    return 42\n"),
            Entry("demo/tool.py", b"print('tool')\n", True),
        ],
        meta=[Entry("METADATA", METADATA)],
    )


def rule(name: str) -> str:
    return re.escape(f"[{name}]")


def model_case(
    name: str, expect: str | dict[int, str], change: Callable[[Model], None], forms: tuple[int, ...] = (1, 2)
) -> list[Case]:
    out = []
    for form in forms:

        def make(form: int = form) -> tuple[str, bytes]:
            model = base(form)
            change(model)
            return model.wheel_filename(), build(model)

        wanted = expect if isinstance(expect, str) else expect[form]
        out.append(Case(f"{name}-{'classic' if form == 1 else 'v2'}", wanted, make))
    return out


# -- small helpers for the changes -------------------------------------------------


def add(path: str, data: bytes = b"x = 1\n", executable: bool = False) -> Callable[[Model], None]:
    return lambda m: m.files.append(Entry(path, data, executable))


CORE = b"def answer():\n    return 42\n"


def roomy(change: Callable[[Model], None]) -> Callable[[Model], None]:
    """A content-linked copy of demo/core.py first: RECORD's bound on
    Payload-Size then leaves room for one more small tar member, so that a
    hostile tar member reaches the rule it tests."""
    return both(add("demo/same.py", CORE), change)


def add_meta(path: str, data: bytes) -> Callable[[Model], None]:
    return lambda m: m.meta.append(Entry(path, data))


def on_rows(edit: Callable[[Rows], Rows]) -> Callable[[Model], None]:
    return lambda m: m.hooks.record.append(edit)


def on_members(edit: Callable[[Members], Members]) -> Callable[[Model], None]:
    return lambda m: m.hooks.members.append(edit)


def on_tar(edit: Callable[[bytes], bytes]) -> Callable[[Model], None]:
    return lambda m: m.hooks.tar.append(edit)


def on_frame(edit: Callable[[bytes], bytes]) -> Callable[[Model], None]:
    return lambda m: m.hooks.frame.append(edit)


def on_wheel(edit: Callable[[bytes], bytes]) -> Callable[[Model], None]:
    return lambda m: m.hooks.wheel.append(edit)


def on_final(edit: Callable[[bytes], bytes]) -> Callable[[Model], None]:
    return lambda m: m.hooks.final.append(edit)


def both(*changes: Callable[[Model], None]) -> Callable[[Model], None]:
    def change(m: Model) -> None:
        for c in changes:
            c(m)

    return change


def setattrs(**values: object) -> Callable[[Model], None]:
    def change(m: Model) -> None:
        for key, value in values.items():
            setattr(m, key, value)

    return change


def tar_header(tar: bytes, path: str) -> int:
    """Offset of `path`'s ustar header in a canonical tar."""
    pos = 0
    while pos + 512 <= len(tar):
        name = tar[pos : pos + 100].split(b"\0", 1)[0]
        size = int(tar[pos + 124 : pos + 136].rstrip(b"\0 ") or b"0", 8)
        if name == path.encode():
            return pos
        pos += 512 + size + (-size % 512)
    raise KeyError(path)


def edit_tar_header(
    path: str, at: slice, value: bytes, fix_checksum: bool = True
) -> Callable[[bytes], bytes]:
    def edit(tar: bytes) -> bytes:
        out = bytearray(tar)
        pos = tar_header(tar, path)
        header = out[pos : pos + 512]
        header[at] = value
        if fix_checksum:
            header[148:156] = b" " * 8
            header[148:156] = b"%06o\0 " % sum(header)
        out[pos : pos + 512] = header
        return bytes(out)

    return edit


def typeflag(flag: bytes, linkname: bytes = b"") -> Callable[[bytes], bytes]:
    """demo/core.py's header turned into another entry type, same size."""

    def edit(tar: bytes) -> bytes:
        out = bytearray(edit_tar_header("demo/core.py", slice(156, 157), flag, fix_checksum=False)(tar))
        pos = tar_header(tar, "demo/core.py")
        out[pos + 157 : pos + 157 + len(linkname)] = linkname
        header = out[pos : pos + 512]
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
        out[pos : pos + 512] = header
        return bytes(out)

    return edit


def pax_before(path: str, records: bytes) -> Callable[[bytes], bytes]:
    def edit(tar: bytes) -> bytes:
        pax = bytearray(tarfmt.member_header("././@PaxHeader", len(records), 0o644, generate.EPOCH))
        pax[156:157] = b"x"
        pax[148:156] = b" " * 8
        pax[148:156] = b"%06o\0 " % sum(pax)
        at = tar_header(tar, path)
        return tar[:at] + bytes(pax) + records + tarfmt.padding(len(records)) + tar[at:]

    return edit


def pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode() + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def replace_row(target: str, **fields: str) -> Callable[[Model], None]:
    def edit(rows: Rows) -> Rows:
        out = []
        for r in rows:
            if r[0] == target:
                r = [fields.get("path", r[0]), fields.get("hash", r[1]), fields.get("size", r[2])]
            out.append(r)
        return out

    return on_rows(edit)


def payload_member(m: Model) -> str:
    return f"{m.stem}.payload.tar.zst"


def member_field(
    name: str, fld: str, value: int, *, local: bool = True, central: bool = True
) -> Callable[[Model], None]:
    return on_final(lambda data: zipedit.set_field(data, name, fld, value, local=local, central=central))


def frame_with(frame_edit: Callable[[bytes], bytes]) -> Callable[[Model], None]:
    return on_frame(frame_edit)


def compressed_bomb(frame: bytes) -> bytes:
    """Blocks that decode to 4 MiB behind a header that declares the tar's size."""
    at, width = _fcs_field(frame)
    declared = int.from_bytes(frame[at : at + width], "little") + (256 if width == 2 else 0)
    packed = bytearray(compress(bytes(range(16)) * (1 << 18), level=1, window_log=20))
    new_at, new_width = _fcs_field(bytes(packed))
    packed[new_at : new_at + new_width] = (declared - (256 if new_width == 2 else 0)).to_bytes(
        new_width, "little"
    )
    return bytes(packed)


def declared_fcs(frame: bytes) -> int:
    at, width = _fcs_field(frame)
    return int.from_bytes(frame[at : at + width], "little") + (256 if width == 2 else 0)


# -- the corpus ---------------------------------------------------------------------------


def format_rules() -> list[Case]:
    """Every rule docs/FORMAT.md section 9 names that a change to one archive
    can break (window-log-exceeded and a few others come from the vectors)."""
    cases: list[Case] = []
    c = cases.extend
    big = b"\0" * ((64 << 20) + 1)
    # Paths (section 3), as zip members (classic) and tar members (2.0).
    c(model_case("path-empty", rule("path-empty"), add("")))
    c(model_case("path-control-char", rule("path-control-char"), add("demo/a\x01b.py")))
    c(model_case("path-backslash", rule("path-backslash"), add("demo\\evil.py")))
    c(model_case("path-absolute", rule("path-absolute"), add("/tmp/evil.py")))
    c(model_case("path-drive", rule("path-drive"), add("C:/evil.py")))
    c(model_case("path-directory", rule("path-directory"), add("demo/evil/")))
    c(model_case("path-too-long", rule("path-too-long"), add("demo/" + "a/" * 2100 + "x.py")))
    c(model_case("path-traversal", rule("path-traversal"), add("demo/../../evil.py")))
    c(model_case("path-component-empty", rule("path-component"), add("demo//evil.py")))
    c(model_case("path-component-dot", rule("path-component"), add("demo/./evil.py")))
    c(
        model_case(
            "path-encoding",
            rule("path-encoding"),
            both(add("demo/caf\u00e9.py"), on_final(lambda d: d.replace(b"caf\xc3\xa9", b"caf\xff\xfe"))),
            forms=(1,),
        )
    )
    c(
        model_case(
            "path-encoding",
            rule("path-encoding"),
            both(add("demo/caf\u00e9.py"), on_tar(lambda t: t.replace(b"caf\xc3\xa9", b"caf\xff\xfe"))),
            forms=(2,),
        )
    )
    c(model_case("case-collision", rule("case-collision"), add("demo/CORE.py")))
    c(model_case("file-dir-conflict", rule("file-dir-conflict"), add("demo/core.py/x.py")))
    c(
        model_case(
            "duplicate-name-zip", rule("duplicate-name"), on_members(lambda ms: [*ms, ms[0]]), forms=(1,)
        )
    )
    c(
        model_case(
            "duplicate-name-tar",
            rule("duplicate-name"),
            both(
                add("demo/same.py", b"def answer():\n    return 42\n"),  # a content link: room in the bound
                on_tar(
                    lambda t: (
                        t[:-1024]
                        + t[tar_header(t, "demo/core.py") : tar_header(t, "demo/tool.py")]
                        + t[-1024:]
                    )
                ),
            ),
            forms=(2,),
        )
    )
    # Names (section 4.3).
    c(
        model_case(
            "dist-info-count", rule("dist-info-count"), add("other-1.0.dist-info/METADATA", b"Name: other\n")
        )
    )
    c(
        model_case(
            "dist-info-missing-wheel",
            rule("dist-info-missing"),
            on_members(lambda ms: [x for x in ms if not x[0].endswith("/WHEEL")]),
        )
    )
    c(
        model_case(
            "dist-info-missing-record",
            rule("dist-info-missing"),
            on_members(lambda ms: [x for x in ms if not x[0].endswith("/RECORD")]),
        )
    )
    c(model_case("dist-info-name", rule("dist-info-name"), setattrs(dist_info_name="other-1.0.dist-info")))
    c(model_case("wheel-filename", rule("wheel-filename"), setattrs(filename="demo.whl")))
    # The 2.0 members (section 2.2).
    c(model_case("member-order", rule("member-order"), on_members(lambda ms: [*ms[1:], ms[0]]), forms=(2,)))
    c(
        model_case(
            "member-outside-dist-info",
            rule("member-outside-dist-info"),
            on_members(lambda ms: [*ms, ("evil.py", b"x", 0o644, DEFLATED)]),
            forms=(2,),
        )
    )
    c(model_case("payload-missing", rule("payload-missing"), on_members(lambda ms: ms[1:]), forms=(2,)))
    c(
        model_case(
            "payload-stored",
            rule("payload-stored"),
            on_members(lambda ms: [(*ms[0][:3], DEFLATED), *ms[1:]]),
            forms=(2,),
        )
    )
    c(
        model_case(
            "zip-directory",
            rule("zip-directory"),
            on_members(lambda ms: [*ms[:1], ("demo-1.0.dist-info/sub/", b"", 0o755, STORED), *ms[1:]]),
            forms=(2,),
        )
    )
    c(model_case("metadata-too-large", rule("metadata-too-large"), add_meta("huge.txt", big)))
    # WHEEL (section 4).
    c(
        model_case(
            "payload-compression",
            rule("payload-compression"),
            on_wheel(lambda w: w.replace(b"Payload-Compression: zstd", b"Payload-Compression: xz")),
            forms=(2,),
        )
    )
    c(
        model_case(
            "wheel-field-window",
            rule("wheel-field"),
            on_wheel(lambda w: w.replace(b"Payload-Window-Log: 20", b"Payload-Window-Log: 99")),
            forms=(2,),
        )
    )
    c(
        model_case(
            "wheel-field-executable",
            rule("wheel-field"),
            setattrs(executables=("demo/ghost.py",)),
            forms=(2,),
        )
    )
    c(
        model_case(
            "wheel-field-classic",
            rule("wheel-field"),
            setattrs(wheel=Model().wheel + b"Payload-Size: 1\n"),
            forms=(1,),
        )
    )
    c(
        model_case(
            "wheel-syntax", rule("wheel-syntax"), setattrs(wheel=Model().wheel + b"not a header line\n")
        )
    )
    c(
        model_case(
            "wheel-version",
            rule("wheel-version"),
            setattrs(wheel=Model().wheel.replace(b"1.0", b"3.0", 1)),
            forms=(1,),
        )
    )
    c(
        model_case(
            "wheel-version",
            rule("wheel-version"),
            on_wheel(lambda w: w.replace(b"Wheel-Version: 2.0", b"Wheel-Version: 3.0")),
            forms=(2,),
        )
    )
    c(
        model_case(
            "wheel-version-line",
            rule("wheel-version-line"),
            setattrs(wheel=Model().wheel.replace(b"Wheel-Version: 1.0\n", b"")),
        )
    )
    c(
        model_case(
            "window-log-limit",
            rule("window-log-limit"),
            setattrs(window_log=30, frame_window_log=20),
            forms=(2,),
        )
    )
    # The frame (section 5.1).
    c(
        model_case(
            "payload-corrupt",
            rule("payload-corrupt"),
            frame_with(lambda f: f[:-1] + bytes([f[-1] ^ 0xFF])),
            forms=(2,),
        )
    )
    c(
        model_case(
            "payload-frame-magic", rule("payload-frame"), frame_with(lambda f: b"\x29" + f[1:]), forms=(2,)
        )
    )
    c(
        model_case(
            "payload-frame-skippable",
            rule("payload-frame"),
            frame_with(lambda f: b"\x50\x2a\x4d\x18\0\0\0\0" + f),
            forms=(2,),
        )
    )
    c(model_case("payload-size", rule("payload-size"), setattrs(payload_size_delta=-512), forms=(2,)))
    c(
        model_case(
            "payload-trailing-data",
            rule("payload-trailing-data"),
            frame_with(lambda f: f + b"\0" * 8),
            forms=(2,),
        )
    )
    c(model_case("content-digest", rule("content-digest"), setattrs(digest="sha256:" + "0" * 64), forms=(2,)))
    # The tar (section 5.2).
    c(
        model_case(
            "payload-dist-info",
            rule("payload-dist-info"),
            both(
                add("demo/same.py", b"def answer():\n    return 42\n"),
                on_tar(
                    lambda t: (
                        t[:-1024]
                        + tarfmt.member_header("demo-1.0.dist-info/METADATA", 1, 0o644, 0)
                        + b"x"
                        + tarfmt.padding(1)
                        + t[-1024:]
                    )
                ),
            ),
            forms=(2,),
        )
    )
    c(model_case("payload-mode", rule("payload-mode"), setattrs(executables=()), forms=(2,)))
    c(
        model_case(
            "tar-format",
            rule("tar-format"),
            on_tar(edit_tar_header("demo/core.py", slice(257, 265), b"ustar  \0")),
            forms=(2,),
        )
    )
    c(
        model_case(
            "tar-checksum",
            rule("tar-checksum"),
            on_tar(edit_tar_header("demo/core.py", slice(0, 1), b"D", fix_checksum=False)),
            forms=(2,),
        )
    )
    c(
        model_case(
            "tar-pax-key",
            rule("tar-pax"),
            roomy(on_tar(pax_before("demo/core.py", pax_record("linkpath", b"/etc/passwd")))),
            forms=(2,),
        )
    )
    c(
        model_case(
            "tar-trailing-data", rule("tar-trailing-data"), roomy(on_tar(lambda t: t + b"junk")), forms=(2,)
        )
    )
    c(
        model_case(
            "tar-truncated",
            rule("tar-truncated"),
            on_tar(lambda t: t[: tar_header(t, "demo/core.py") + 520]),
            forms=(2,),
        )
    )
    c(model_case("tar-hardlink", rule("tar-hardlink"), on_tar(typeflag(b"1", b"demo/tool.py")), forms=(2,)))
    c(model_case("tar-symlink", rule("tar-symlink"), on_tar(typeflag(b"2", b"/etc/passwd")), forms=(2,)))
    c(model_case("tar-directory", rule("tar-directory"), on_tar(typeflag(b"5")), forms=(2,)))
    c(model_case("tar-special-file", rule("tar-special-file"), on_tar(typeflag(b"3")), forms=(2,)))
    c(model_case("tar-fifo", rule("tar-special-file"), on_tar(typeflag(b"6")), forms=(2,)))
    c(model_case("tar-type-gnu-longname", rule("tar-type"), on_tar(typeflag(b"L")), forms=(2,)))
    c(model_case("tar-type-global-pax", rule("tar-type"), on_tar(typeflag(b"g")), forms=(2,)))
    # RECORD (section 6).
    c(
        model_case(
            "record-syntax-fields",
            rule("record-syntax"),
            on_rows(lambda rs: [r[:2] if r[0] == "demo/core.py" else r for r in rs]),
        )
    )
    c(
        model_case(
            "record-syntax-utf8",
            rule("record-syntax"),
            lambda m: m.hooks.record_bytes.append(lambda b: b + b"\xff\n"),
        )
    )
    c(
        model_case(
            "record-syntax-no-self",
            rule("record-syntax"),
            on_rows(lambda rs: [r for r in rs if not r[0].endswith("/RECORD")]),
        )
    )
    c(model_case("record-duplicate", rule("record-duplicate"), on_rows(lambda rs: [rs[0], *rs])))
    c(
        model_case(
            "record-hash-algorithm",
            rule("record-hash-algorithm"),
            replace_row("demo/core.py", hash="md5=1B2M2Y8AsgTpgAmY7PhCfg"),
        )
    )
    c(model_case("record-missing-hash", rule("record-missing-hash"), replace_row("demo/core.py", hash="")))
    c(
        model_case(
            "record-unlisted",
            rule("record-unlisted"),
            on_members(
                lambda ms: [*ms[:-1], ("demo-1.0.dist-info/extra.txt", b"x", 0o644, DEFLATED), ms[-1]]
            ),
        )
    )
    c(
        model_case(
            "record-missing-file",
            rule("record-missing-file"),
            on_rows(lambda rs: [row("demo/ghost.py", b"boo\n"), *rs]),
        )
    )
    c(model_case("record-size", rule("record-size"), replace_row("demo/core.py", size="29")))
    c(
        model_case(
            "record-hash", rule("record-hash"), replace_row("demo/core.py", hash="sha256=" + b64(b"\0" * 32))
        )
    )
    # The zip container (section 2.1).
    c(model_case("zip-trailing-data", rule("zip-trailing-data"), on_final(lambda d: d + b"JUNK")))
    c(model_case("zip-truncated", rule("zip-truncated"), on_final(lambda d: d[: len(d) * 6 // 10])))
    c(model_case("zip-multi-disk", rule("zip-multi-disk"), on_final(lambda d: zipedit.set_eocd(d, disk=1))))
    c(
        model_case(
            "zip-structure",
            rule("zip-structure"),
            on_final(lambda d: zipedit.set_eocd(d, cd_signature=b"PK\x01\x03")),
        )
    )
    c(model_case("zip-gap", rule("zip-gap"), on_final(generate.with_gap)))
    c(
        model_case(
            "zip-inconsistent",
            rule("zip-inconsistent"),
            member_field("demo-1.0.dist-info/METADATA", "csize", 1, central=False),
        )
    )
    c(model_case("zip-method", rule("zip-method"), member_field("demo-1.0.dist-info/METADATA", "method", 12)))
    c(
        model_case(
            "zip-encrypted", rule("zip-encrypted"), member_field("demo-1.0.dist-info/METADATA", "flags", 1)
        )
    )
    c(
        model_case(
            "zip-corrupt", rule("zip-corrupt"), on_final(corrupt_deflate("demo-1.0.dist-info/METADATA"))
        )
    )
    c(
        model_case(
            "zip-size",
            rule("zip-size"),
            both(
                on_final(
                    lambda d: zipedit.set_field(d, "demo-1.0.dist-info/METADATA", "usize", len(METADATA) - 1)
                ),
                replace_row("demo-1.0.dist-info/METADATA", size=str(len(METADATA) - 1)),
            ),
        )
    )
    c(
        model_case(
            "zip-crc",
            rule("zip-crc"),
            on_final(
                lambda d: zipedit.set_field(
                    d,
                    "demo-1.0.dist-info/METADATA",
                    "crc",
                    zipedit.get_field(d, "demo-1.0.dist-info/METADATA", "crc") ^ 1,
                )
            ),
        )
    )
    c(
        model_case(
            "zip-symlink",
            rule("zip-symlink"),
            on_final(
                lambda d: zipedit.set_external_mode(d, "demo-1.0.dist-info/METADATA", stat.S_IFLNK | 0o777)
            ),
        )
    )
    c(
        model_case(
            "zip-special-file",
            rule("zip-special-file"),
            on_final(
                lambda d: zipedit.set_external_mode(d, "demo-1.0.dist-info/METADATA", stat.S_IFIFO | 0o644)
            ),
        )
    )
    return cases


def corrupt_deflate(name: str) -> Callable[[bytes], bytes]:
    """A deflate stream whose first block has the reserved type 3."""

    def edit(data: bytes) -> bytes:
        out = bytearray(data)
        cd = zipedit.central_entries(data)[zipedit.member_index(data, name)]
        (local,) = struct.unpack_from("<L", data, cd + 42)
        name_len, extra_len = struct.unpack_from("<2H", data, local + 26)
        body = local + 30 + name_len + extra_len
        out[body] = 0b111  # BFINAL=1, BTYPE=11 (reserved)
        return bytes(out)

    return edit


def traversal_and_links() -> list[Case]:
    """Zip-slip in every place a path lives, symlinks and hard links."""
    cases: list[Case] = []
    c = cases.extend
    for i, path in enumerate(["../evil.py", "demo/../../../etc/evil", "../../../../../../tmp/evil.py"]):
        c(model_case(f"zip-slip-{i}", rule("path-traversal"), add(path)))
    c(model_case("zip-slip-data", rule("path-traversal"), add("demo-1.0.data/data/../../../evil")))
    c(
        model_case(
            "zip-slip-scripts",
            rule("path-traversal"),
            add("demo-1.0.data/scripts/../../evil", b"#!/bin/sh\n", True),
        )
    )
    c(model_case("zip-slip-backslash", rule("path-backslash"), add("..\\..\\evil.py")))
    c(model_case("zip-slip-absolute-data", rule("path-absolute"), add("/demo-1.0.data/data/evil")))
    c(
        model_case(
            "record-outside-tree",
            rule("path-traversal"),
            on_rows(lambda rs: [row("../../etc/passwd", b"x"), *rs]),
        )
    )
    c(
        model_case(
            "record-absolute", rule("path-absolute"), on_rows(lambda rs: [row("/etc/passwd", b"x"), *rs])
        )
    )
    c(
        model_case(
            "record-renames-file", rule("path-traversal"), replace_row("demo/core.py", path="demo/../core.py")
        )
    )
    c(
        model_case(
            "tar-slip-pax",
            rule("path-traversal"),
            roomy(on_tar(pax_before("demo/core.py", pax_record("path", b"../../evil.py")))),
            forms=(2,),
        )
    )
    c(
        model_case(
            "tar-slip-prefix",
            rule("path-traversal"),
            on_tar(edit_tar_header("demo/core.py", slice(345, 350), b"../..")),
            forms=(2,),
        )
    )
    c(
        model_case(
            "zip-symlink-entry",
            rule("zip-symlink"),
            on_final(lambda d: zipedit.set_external_mode(d, "demo/core.py", stat.S_IFLNK | 0o777)),
            forms=(1,),
        )
    )
    c(
        model_case(
            "tar-symlink-entry",
            rule("tar-symlink"),
            on_tar(typeflag(b"2", b"../../../../etc/passwd")),
            forms=(2,),
        )
    )
    c(
        model_case(
            "tar-hardlink-entry", rule("tar-hardlink"), on_tar(typeflag(b"1", b"/etc/shadow")), forms=(2,)
        )
    )
    return cases


def bombs_and_sizes() -> list[Case]:
    """Zip bombs (high ratio, nested, overlapping entries) and payloads larger
    than declared."""
    cases: list[Case] = []
    c = cases.extend
    gib_zeros = b"\0" * (16 << 20)
    # High ratio, classic: a member that inflates far past the size its headers give.
    c(
        model_case(
            "bomb-ratio",
            rule("zip-size"),
            both(
                add("demo/zeros.bin", gib_zeros),
                on_final(lambda d: zipedit.set_field(d, "demo/zeros.bin", "usize", 1024)),
                replace_row("demo/zeros.bin", size="1024"),
            ),
            forms=(1,),
        )
    )
    # High ratio, 2.0: an RLE bomb refused from its block headers, a compressed bomb from the decoder.
    c(
        model_case(
            "bomb-rle", rule("payload-size"), on_frame(lambda f: rle_bomb(declared_fcs(f), 4096)), forms=(2,)
        )
    )
    c(model_case("bomb-compressed", rule("payload-size"), on_frame(compressed_bomb), forms=(2,)))
    # Nested: a zip inside the payload that claims little and inflates to much, and a
    # payload tar member larger than RECORD says.
    c(
        model_case(
            "bomb-nested-frame-size",
            rule("payload-size"),
            on_frame(lambda f: rle_bomb(declared_fcs(f) * 2, 1)),
            forms=(2,),
        )
    )
    c(
        model_case(
            "bomb-nested-tar-member",
            rule("record-size"),
            on_tar(edit_tar_header("demo/core.py", slice(124, 136), b"%011o\0" % 4096)),
            forms=(2,),
        )
    )
    # Overlapping entries: N central entries over one span.
    cases.append(
        Case(
            "bomb-overlapping",
            rule("zip-overlap"),
            lambda: (
                "demo-1.0-py3-none-any.whl",
                zipedit.overlapping_bomb(
                    [f"demo/f{i}.bin" for i in range(30)] + ["demo-1.0.dist-info/RECORD"], b"\0" * (1 << 20)
                ),
            ),
        )
    )
    cases.append(
        Case(
            "bomb-overlap-vector",
            rule("zip-overlap"),
            lambda: ("demo-1.0-py3-none-any.whl", generate.with_overlap(generate.Spec())),
        )
    )
    # Larger than declared.
    c(
        model_case(
            "larger-than-payload-size", rule("payload-size"), setattrs(payload_size_delta=-1024), forms=(2,)
        )
    )
    c(
        model_case(
            "larger-than-frame-header",
            rule("payload-size"),
            on_frame(lambda f: f if _fcs_field(f)[1] == 0 else shrink_fcs(f)),
            forms=(2,),
        )
    )
    c(model_case("larger-than-record", rule("record-size"), replace_row("demo/core.py", size="10")))
    c(
        model_case(
            "larger-than-zip-header",
            rule("zip-size"),
            both(
                on_final(lambda d: zipedit.set_field(d, "demo-1.0.dist-info/METADATA", "usize", 10)),
                replace_row("demo-1.0.dist-info/METADATA", size="10"),
            ),
        )
    )
    c(
        model_case(
            "payload-size-bound", rule("payload-size"), setattrs(payload_size_delta=1 << 30), forms=(2,)
        )
    )
    # Damaged bytes in a payload large enough that the daemon hashes and
    # writes its files on worker threads: the frame's checksum fails in the
    # read of the large file's last chunk (once a traceback, not an error).
    c(
        model_case(
            "payload-damaged-checksum",
            rule("payload-corrupt"),
            both(add("demo/~big.bin", large_content()), on_frame(damage_checksum)),
            forms=(2,),
        )
    )
    return cases


def large_content(size: int = 6 << 20) -> bytes:
    """Bytes that compress a little, fast, and span several decoded chunks."""
    block = bytes(range(256)) * 16 + b"nwcache" * 64
    return (block * (size // len(block) + 1))[:size]


def damage_checksum(frame: bytes) -> bytes:
    """The frame with its content checksum (the last 4 bytes) flipped."""
    return frame[:-4] + bytes(b ^ 0xFF for b in frame[-4:])


def shrink_fcs(frame: bytes) -> bytes:
    at, width = _fcs_field(frame)
    out = bytearray(frame)
    value = int.from_bytes(frame[at : at + width], "little")
    out[at : at + width] = max(0, value - 512).to_bytes(width, "little")
    return bytes(out)


def installation() -> list[Case]:
    """Valid archives whose installation would harm the venv: refused by
    check_installable before anything is stored."""
    cases: list[Case] = []
    c = cases.extend
    scripts = "demo-1.0.data/scripts"
    for name in ("python", "python3", PY):
        c(
            model_case(
                f"script-{name}", "interpreter", add(f"{scripts}/{name}", b"#!/bin/sh\necho owned\n", True)
            )
        )
        c(
            model_case(
                f"data-bin-{name}", "interpreter", add(f"demo-1.0.data/data/bin/{name}", b"owned\n", True)
            )
        )
        c(
            model_case(
                f"entry-point-{name}",
                "interpreter",
                add_meta("entry_points.txt", f"[console_scripts]\n{name} = demo.core:answer\n".encode()),
            )
        )
    c(
        model_case(
            "gui-entry-point-python",
            "interpreter",
            add_meta("entry_points.txt", b"[gui_scripts]\npython = demo.core:answer\n"),
        )
    )
    c(
        model_case(
            "entry-point-traversal",
            "not a file name",
            add_meta("entry_points.txt", b"[console_scripts]\n../../evil = demo.core:answer\n"),
        )
    )
    c(
        model_case(
            "entry-point-slash",
            "not a file name",
            add_meta("entry_points.txt", b"[console_scripts]\nsub/evil = demo.core:answer\n"),
        )
    )
    c(
        model_case(
            "entry-point-control",
            "not a file name",
            add_meta("entry_points.txt", b"[console_scripts]\nev\x1bil = demo.core:answer\n"),
        )
    )
    c(
        model_case(
            "entry-point-long",
            "longer than 255",
            add_meta("entry_points.txt", b"[console_scripts]\n" + b"e" * 300 + b" = demo.core:answer\n"),
        )
    )
    c(
        model_case(
            "entry-points-malformed", "malformed", add_meta("entry_points.txt", b"[console_scripts\nx = y\n")
        )
    )
    c(
        model_case(
            "entry-points-not-utf8",
            "malformed",
            add_meta("entry_points.txt", b"[console_scripts]\n\xff = demo:x\n"),
        )
    )
    c(
        model_case(
            "data-pyvenv-cfg", "pyvenv.cfg", add("demo-1.0.data/data/pyvenv.cfg", b"home = /tmp/evil\n")
        )
    )
    c(
        model_case(
            "data-into-site-packages",
            "inside site-packages",
            add(f"demo-1.0.data/data/lib/{PY}/site-packages/evil.pth", b"import os\n"),
        )
    )
    c(
        model_case(
            "data-into-site-packages-lib64",
            "inside site-packages",
            add(f"demo-1.0.data/data/lib64/{PY}/site-packages/evil.py", b"x = 1\n"),
        )
    )
    c(model_case("data-onto-directory", "replace the directory", add("demo-1.0.data/data/bin", b"x")))
    c(model_case("data-unknown-category", "unknown .data category", add("demo-1.0.data/evil/x.py")))
    c(model_case("data-category-as-file", "names no file", add("demo-1.0.data/purelib")))
    c(model_case("conflict-with-installed", "both install", add(BYSTANDER_FILE, b"owned = True\n")))
    return cases


def control_names() -> list[Case]:
    """Names with control characters or NUL, wherever names live."""
    cases: list[Case] = []
    c = cases.extend
    for i, char in enumerate(["\x00", "\n", "\x1b", "\x7f", "\x85", "\t"]):
        c(model_case(f"control-name-{i}", rule("path-control-char"), add(f"demo/ev{char}il.py")))
    # csv (pip's writer too) leaves a lone CR unquoted: RECORD no longer parses.
    c(model_case("control-name-cr", rule("record-syntax"), add("demo/ev\ril.py")))
    c(
        model_case(
            "control-name-record",
            rule("path-control-char"),
            on_rows(lambda rs: [row("demo/\x1b[2Jx.py", b"x"), *rs]),
        )
    )
    c(
        model_case(
            "control-name-pax",
            rule("path-control-char"),
            roomy(on_tar(pax_before("demo/core.py", pax_record("path", b"demo/ev\nil.py")))),
            forms=(2,),
        )
    )
    # Not a control character, but a line break to str.splitlines: the error
    # line escapes it (found by the fuzzer's command-line runs).
    c(
        model_case(
            "line-separator-name",
            r"demo/\\u2028x\.py: file is not listed in RECORD \[record-unlisted\]",
            both(
                add("demo/\u2028x.py", b"1"), on_rows(lambda rs: [r for r in rs if r[0] != "demo/\u2028x.py"])
            ),
            forms=(1,),
        )
    )
    c(
        model_case(
            "nul-in-zip-name",
            "path-control-char|zip-inconsistent|record-unlisted",
            on_final(lambda d: d.replace(b"demo/tool.py", b"demo/t\0ol.py")),
            forms=(1,),
        )
    )
    return cases


def many_entries() -> list[Case]:
    """100,000 tiny entries: zip members (classic), content links (2.0)."""
    count = 100_000
    assert count > MAX_FILES

    def classic() -> tuple[str, bytes]:
        model = base(1)
        model.files += [Entry(f"demo/t/{i}.py", b"") for i in range(count)]
        model.hooks.members.append(lambda ms: [(n, d, m, STORED) for n, d, m, _ in ms])
        return model.wheel_filename(), build(model)

    def links() -> tuple[str, bytes]:
        model = base(2)
        model.files += [Entry(f"demo/t/{i}.py", b"x") for i in range(count)]
        return model.wheel_filename(), build(model)

    return [
        Case("many-members-classic", rule("zip-too-many-members"), classic, slow=True),
        Case("many-content-links-v2", rule("record-too-many-rows"), links, slow=True),
    ]


def vectors() -> list[Case]:
    """Every refused test vector of tests/vectors/, as shipped."""
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    out = []
    for vector in manifest["vectors"]:
        if vector["expect"] != "reject":
            continue
        path = VECTORS / vector["name"] / manifest["archive"]

        def make(path: Path = path) -> tuple[str, bytes]:
            return path.name, path.read_bytes()

        out.append(Case(f"vector-{vector['name']}", rule(vector["rule"]), make))
    return out


def all_cases() -> list[Case]:
    cases = [
        *format_rules(),
        *traversal_and_links(),
        *bombs_and_sizes(),
        *installation(),
        *control_names(),
        *many_entries(),
        *vectors(),
    ]
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    return cases
