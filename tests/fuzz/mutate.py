"""Seed models and the mutations the fuzzer applies to them.

Every function here draws from one `random.Random`, so a (seed, worker,
execution) triple always yields the same archive. Mutations work at each
stage of `model.build`: the model (paths, contents, modes, metadata), RECORD
rows and bytes, the classic WHEEL and the 2.0 fields, the tar stream, the zstd
frame, the zip member list and, last, the finished archive's raw bytes.
"""

from __future__ import annotations

import random
import stat
import struct
from collections.abc import Callable
from functools import cache
from pathlib import Path

from nwcache.archive import tarfmt
from tests.vectors.generate import EPOCH

from .model import WHEEL, Entry, Members, Model, Rows, compress, row

CONTROL = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))]
SCRIPT_NAMES = [
    "python",
    "python3",
    "python3.11",
    "python3.12",
    "../escape",
    "a/b",
    "",
    ".",
    "..",
    "tool\x00x",
    "tool\nx",
    " ",
    "tool",
    "demo-cli",
    "x" * 300,
    "\u202etool",
]
INTERESTING32 = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFFE]
TYPEFLAGS = [b"0", b"\0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"g", b"x", b"L", b"K", b"A", b"S"]


def random_bytes(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def content(rng: random.Random) -> bytes:
    kind = rng.randrange(7)
    if kind == 0:
        return b""
    if kind == 1:
        return random_bytes(rng, rng.randrange(1, 2048))
    if kind == 2 and rng.random() < 0.2:  # compressible and larger: several zstd blocks
        unit = random_bytes(rng, rng.randrange(1, 64))
        return unit * rng.randrange(1, (300 << 10) // len(unit) + 2)
    if kind == 3:
        return b"\0" * rng.choice([1, 511, 512, 513, 4096, 131073])
    return f"def f{rng.randrange(1000)}():\n    return {rng.randrange(1 << 30)}\n".encode()


def seed(rng: random.Random) -> Model:
    """A valid model: a few kinds of real-looking wheels."""
    kind = rng.randrange(5)
    model = Model(form=rng.choice([1, 2, 2, 2]), window_log=rng.choice([17, 20, 23]))
    model.frame_window_log = model.window_log
    stem = model.stem
    files = [Entry("demo/__init__.py", b""), Entry("demo/core.py", b"def answer():\n    return 42\n")]
    meta = [Entry("METADATA", b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")]
    if kind == 1:  # content links, scripts, entry points, headers, data
        lib = random_bytes(rng, 3000)
        files += [
            Entry("demo/lib/libfoo.so.1.2", lib, True),
            Entry("demo/lib/libfoo.so.1", lib, True),
            Entry(f"{stem}.data/scripts/demo-tool", b"#!python\nprint('tool')\n", True),
            Entry(f"{stem}.data/headers/demo.h", b"#define DEMO 1\n"),
            Entry(f"{stem}.data/data/share/demo/readme.txt", b"shared\n"),
            Entry(f"{stem}.data/purelib/demo_extra.py", b"x = 1\n"),
        ]
        meta.append(Entry("entry_points.txt", b"[console_scripts]\ndemo-cli = demo.core:answer\n"))
    elif kind == 2:  # pax paths
        files += [
            Entry("demo/" + "deep/" * rng.randrange(20, 60) + "m.py", b"x = 1\n"),
            Entry("demo/donn\u00e9es/\u6587\u5b57.py", "y = '\u00e9'\n".encode()),
        ]
    elif kind == 3:  # many files, some large
        files += [Entry(f"demo/m{i}.py", content(rng)) for i in range(rng.randrange(3, 20))]
    elif kind == 4:
        big = content(rng) + random_bytes(rng, 100)
        if rng.randrange(3) == 0:
            # Past one decoded chunk (1 MiB): its data is decoded inside the
            # consumer's own reads; past PARALLEL_MIN (4 MiB): on worker threads.
            big = random_bytes(rng, 4096) * rng.choice([300, 1300])
        files.append(Entry("demo/big.bin", big))
    model.files = files
    model.meta = meta
    return model


def hostile_path(rng: random.Random, model: Model) -> str:
    base = rng.choice(model.files).path if model.files else "demo/x.py"
    stem, dist_info = model.stem, model.dist_info
    pool: list[Callable[[], str]] = [
        lambda: "../evil.py",
        lambda: "demo/../../evil.py",
        lambda: "/etc/evil.py",
        lambda: "C:/evil.py",
        lambda: "demo\\evil.py",
        lambda: "demo//evil.py",
        lambda: "demo/./evil.py",
        lambda: "demo/evil/",
        lambda: "",
        lambda: f"demo/ev{rng.choice(CONTROL)}il.py",
        lambda: "demo/" + "a" * rng.choice([100, 101, 155, 255, 256, 4090, 4100]),
        lambda: base.upper(),
        lambda: base.replace("k", "\u212a").replace("e", "E"),
        lambda: base + "/child.py",
        lambda: base.rsplit("/", 1)[0],
        lambda: f"{stem}.data/scripts/{rng.choice(SCRIPT_NAMES[:4])}",
        lambda: f"{stem}.data/data/pyvenv.cfg",
        lambda: f"{stem}.data/data/bin/python",
        lambda: f"{stem}.data/data/lib/python3.11/site-packages/evil.py",
        lambda: f"{stem}.data/data/lib64/python3.11/site-packages/evil.py",
        lambda: f"{stem}.data/data/{rng.choice(['lib', 'bin', 'include', 'lib64'])}",
        lambda: f"{stem}.data/{rng.choice(['evil', 'purelib', 'scripts', 'data', 'headers'])}",
        lambda: f"{stem}.data/evil/x.py",
        lambda: f"{stem}.data/headers/x.h",
        lambda: f"{dist_info}/METADATA",
        lambda: f"{dist_info}/extra.txt",
        lambda: "other-1.0.dist-info/METADATA",
        lambda: "d\u00e9mo/\u00fc.py",
        lambda: "demo/\u202eyp.evil",
        lambda: "demo/\ufeffx.py",
        lambda: "demo/\u2028x.py",
        lambda: f"demo/{rng.randrange(1 << 30)}.py",
    ]
    return rng.choice(pool)()


# -- operators on the model ------------------------------------------------------


def op_path(rng: random.Random, m: Model) -> None:
    if m.files:
        rng.choice(m.files).path = hostile_path(rng, m)


def op_add_file(rng: random.Random, m: Model) -> None:
    path = hostile_path(rng, m) if rng.random() < 0.7 else f"demo/new{rng.randrange(99)}.py"
    m.files.append(Entry(path, content(rng), rng.random() < 0.2))


def op_remove_file(rng: random.Random, m: Model) -> None:
    if m.files:
        m.files.pop(rng.randrange(len(m.files)))


def op_content(rng: random.Random, m: Model) -> None:
    if not m.files:
        return
    target = rng.choice(m.files)
    target.data = rng.choice(m.files).data if rng.random() < 0.3 else content(rng)


def op_exec(rng: random.Random, m: Model) -> None:
    if m.files:
        target = rng.choice(m.files)
        target.executable = not target.executable


def op_meta(rng: random.Random, m: Model) -> None:
    choice = rng.randrange(5)
    if choice == 0:
        names = [rng.choice(SCRIPT_NAMES) for _ in range(rng.randrange(1, 4))]
        section = rng.choice(["console_scripts", "gui_scripts", "other"])
        body = "".join(f"{n} = demo.core:answer\n" for n in names)
        m.meta.append(Entry("entry_points.txt", f"[{section}]\n{body}".encode()))
    elif choice == 1:
        broken = [b"[console_scripts\nx = y\n", b"\xff\xfe[console_scripts]\n", b"x = y\n", b"[a]\n[a]\n"]
        m.meta.append(Entry("entry_points.txt", rng.choice(broken)))
    elif choice == 2:
        m.meta.append(Entry(hostile_path(rng, m).rsplit("/", 1)[-1] or "x", content(rng), rng.random() < 0.2))
    elif choice == 3 and m.meta:
        m.meta.pop(rng.randrange(len(m.meta)))
    else:
        m.meta.append(Entry(rng.choice(["RECORD.jws", "RECORD.p7s", "INSTALLER", "sub/x.txt"]), content(rng)))


def op_wheel(rng: random.Random, m: Model) -> None:
    edits: list[Callable[[bytes], bytes]] = [
        lambda w: w.replace(b"1.0", rng.choice([b"0.9", b"2.0", b"3.0", b"1.9", b"1.0x"]), 1),
        lambda w: w.replace(b"Wheel-Version: 1.0\n", b""),
        lambda w: w + b"Wheel-Version: 1.0\n",
        lambda w: (
            w + rng.choice([b"Payload-Size: 1\n", b"Executable: demo/core.py\n", b"Content-Digest: x\n"])
        ),
        lambda w: w.replace(b"\n", b"\r\n"),
        lambda w: w + b"\xff\xfe\n",
        lambda w: w + b"no colon here\n",
        lambda w: w + b" continuation\n",
        lambda w: w.replace(b"Tag: py3-none-any\n", b""),
        lambda w: b"",
    ]
    m.wheel = rng.choice(edits)(m.wheel or WHEEL)


def op_v2(rng: random.Random, m: Model) -> None:
    choice = rng.randrange(9)
    if choice == 0:
        m.window_log = rng.choice([9, 10, 11, 23, 27, 28, 30, 31, 32])
    elif choice == 1:
        m.frame_window_log = rng.choice([10, 17, 20, 24, 25])
    elif choice == 2:
        m.payload_size_delta = rng.choice([-1024, -513, -512, -1, 1, 511, 512, 1 << 20, 1 << 40])
    elif choice == 3:
        m.digest = rng.choice(["sha256:" + rng.randbytes(32).hex(), "sha256:" + "A" * 64, "md5:00", ""])
    elif choice == 4:
        paths = [f.path for f in m.files]
        m.executables = tuple(rng.choice([*paths, "demo/ghost.py", ""]) for _ in range(rng.randrange(3)))
    elif choice == 5:
        m.form = 3 - m.form
    elif choice == 6:
        m.filename = rng.choice(
            [
                "other-1.0-py3-none-any.whl",
                "demo-2.0-py3-none-any.whl",
                "demo.whl",
                "demo-1.0-py3-none-any.zip",
            ]
        )
    elif choice == 7:
        m.dist_info_name = rng.choice(["other-1.0.dist-info", "demo.dist-info", "Demo-1.0.dist-info"])
    else:
        m.level = rng.choice([1, 3, 6])


# -- operators on later stages (hooks) --------------------------------------------------


def op_record(rng: random.Random, m: Model) -> None:
    def change(rows: Rows) -> Rows:
        rows = [list(r) for r in rows]
        if not rows:
            return rows
        i = rng.randrange(len(rows))
        choice = rng.randrange(10)
        if choice == 0:
            rows.pop(i)
        elif choice == 1:
            rows.append(list(rows[i]))
        elif choice == 2 and len(rows[i]) == 3:
            rows[i][2] = rng.choice(
                ["\u00b2", "-1", "1e3", " 5", "", "0x10", "1_0", "٣", str(rng.randrange(1 << 40))]
            )
        elif choice == 3 and len(rows[i]) == 3:
            rows[i][1] = rng.choice(
                ["md5=1B2M2Y8AsgTpgAmY7PhCfg", "sha512=AAAA", "SHA256=x", "sha256", "=", "blake2s="]
            )
        elif choice == 4 and len(rows[i]) == 3 and len(rows[i][1]) > 10:
            h = rows[i][1]
            rows[i][1] = h[:-3] + rng.choice(["+", "/", "=", "A"]) + h[-2:]
        elif choice == 5:
            rows.insert(rng.randrange(len(rows) + 1), row(hostile_path(rng, m), content(rng)))
        elif choice == 6:
            rows[i] = rows[i] + ["extra"]
        elif choice == 7:
            rows[i] = rows[i][:2]
        elif choice == 8:
            rows = [r for r in rows if not r[0].endswith("/RECORD")]
        else:
            rows.insert(0, row("demo/ghost.py", b"boo\n"))
        return rows

    m.hooks.record.append(change)


def op_record_bytes(rng: random.Random, m: Model) -> None:
    def change(data: bytes) -> bytes:
        at = rng.randrange(len(data) + 1)
        insert = rng.choice([b"\0", b"\xff", b'"', b"\r", b"\n", b",", b'"a,b",', b"\xc3"])
        return data[:at] + insert + data[at:] if rng.random() < 0.8 else data[:at]

    m.hooks.record_bytes.append(change)


def _headers(tar: bytes) -> list[int]:
    """Offsets of the ustar headers of a well-formed tar (stops at trouble)."""
    out, pos = [], 0
    while pos + 512 <= len(tar) and tar[pos : pos + 512] != b"\0" * 512:
        out.append(pos)
        try:
            size = int(tar[pos + 124 : pos + 136].rstrip(b"\0 ") or b"0", 8)
        except ValueError:
            break
        pos += 512 + size + (-size % 512)
    return out


def _fix_checksum(header: bytearray) -> None:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)


def op_tar(rng: random.Random, m: Model) -> None:
    def change(tar: bytes) -> bytes:
        headers = _headers(tar)
        out = bytearray(tar)
        choice = rng.randrange(8)
        if choice <= 2 and headers:
            at = rng.choice(headers)
            header = bytearray(out[at : at + 512])
            field = rng.randrange(6)
            if field == 0:
                header[156:157] = rng.choice(TYPEFLAGS)
            elif field == 1:
                header[100:108] = rng.choice(
                    [b"0000777\0", b"0100755\0", b"zzzzzzz\0", b"-000001\0", b"       \0"]
                )
            elif field == 2:
                header[124:136] = rng.choice(
                    [
                        b"77777777777\0",
                        b"00000000000\0",
                        b"-0000000001\0",
                        b"0000000_001\0",
                        b"%011o\0" % rng.randrange(1 << 20),
                    ]
                )
            elif field == 3:
                name = hostile_path(rng, m).encode()[:100]
                header[0:100] = name + b"\0" * (100 - len(name))
            elif field == 4:
                prefix = rng.choice([b"demo", b"..", b"/etc", b"\xff\xfe"])
                header[345 : 345 + len(prefix)] = prefix
            else:
                header[257:265] = rng.choice([b"ustar  \0", b"\0" * 8, b"ustar\x0001"])
            if rng.random() < 0.9:
                _fix_checksum(header)
            out[at : at + 512] = header
            return bytes(out)
        if choice == 3:  # a pax header in front of a member
            records = rng.choice(
                [
                    b"%d path=%s\n" % (len(hostile_path(rng, m)) + 11, hostile_path(rng, m).encode()),
                    b"13 size=9999\n",
                    b"12 size=-10\n",
                    b"18 linkpath=/etc\n",
                    b"99 path=x\n",
                    b"11 path=x\n11 path=y\n",
                    b"x path=y\n",
                    b"10 mtime=1\n",
                ]
            )
            pax = bytearray(tarfmt.member_header("././@PaxHeader", len(records), 0o644, EPOCH))
            pax[156:157] = b"x"
            _fix_checksum(pax)
            at = rng.choice(headers) if headers else 0
            return bytes(out[:at]) + bytes(pax) + records + tarfmt.padding(len(records)) + bytes(out[at:])
        if choice == 4:  # an extra member before the end marker
            data = content(rng)
            path = (
                hostile_path(rng, m) if rng.random() < 0.7 else rng.choice(m.files).path if m.files else "x"
            )
            member = tarfmt.member_header(path, len(data), 0o644, EPOCH)
            end = len(out) - 1024
            return bytes(out[:end]) + member + data + tarfmt.padding(len(data)) + bytes(out[end:])
        if choice == 5:
            return bytes(out[: rng.randrange(len(out) + 1)])
        if choice == 6:
            return bytes(out) + rng.choice([b"\0" * 512, b"junk", random_bytes(rng, 600)])
        for _ in range(rng.randrange(1, 4)):
            if out:
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)

    m.hooks.tar.append(change)


def _fcs_field(frame: bytes) -> tuple[int, int]:
    """(offset, width) of the Frame_Content_Size field; width 0 when there is none."""
    if len(frame) < 5:  # an earlier mutation cut the frame
        return 0, 0
    descriptor = frame[4]
    single = bool(descriptor & 0x20)
    width = {0: 1 if single else 0, 1: 2, 2: 4, 3: 8}[descriptor >> 6]
    return 4 + 1 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3], width


def rle_bomb(size: int, blocks: int) -> bytes:
    """A frame of RLE blocks of 128 KiB each that declares `size` bytes."""
    frame = bytearray(b"\x28\xb5\x2f\xfd")
    frame.append(0b1110_0100)  # FCS 8 bytes, single segment, checksum
    frame += size.to_bytes(8, "little")
    for i in range(blocks):
        last = int(i == blocks - 1)
        header = last | (1 << 1) | ((128 << 10) << 3)
        frame += header.to_bytes(3, "little") + b"\0"
    return bytes(frame) + b"\0\0\0\0"


def op_frame(rng: random.Random, m: Model) -> None:
    def change(frame: bytes) -> bytes:
        out = bytearray(frame)
        choice = rng.randrange(8)
        at, width = _fcs_field(frame)
        if choice == 0 and width:
            (old,) = struct.unpack("<Q", bytes(out[at : at + width]).ljust(8, b"\0"))
            new = max(0, old + rng.choice([-1024, -512, -1, 1, 512, 1 << 20]))
            out[at : at + width] = (new % (1 << (8 * width))).to_bytes(width, "little")
        elif choice == 1:
            out[4] ^= rng.choice([0x04, 0x03, 0x20, 0x08])
        elif choice == 2:
            return bytes(out) + rng.choice([b"\0" * 8, b"\x28\xb5\x2f\xfd\x00", b"\x50\x2a\x4d\x18\0\0\0\0"])
        elif choice == 3:
            return bytes(out[: rng.randrange(len(out) + 1)])
        elif choice == 4:
            return rle_bomb(rng.choice([0, 1024, 1 << 20]), rng.randrange(1, 64))
        elif choice == 5 and width:  # a compressed bomb: decodes to far more than it declares
            (declared,) = struct.unpack("<Q", bytes(out[at : at + width]).ljust(8, b"\0"))
            if width == 2:
                declared += 256
            packed = bytearray(compress(rng.randbytes(16) * 65536, level=1, window_log=20))
            at, width = _fcs_field(bytes(packed))
            if width and (256 if width == 2 else 0) <= declared < 1 << (8 * width):
                packed[at : at + width] = (declared - (256 if width == 2 else 0)).to_bytes(width, "little")
            return bytes(packed)
        else:
            for _ in range(rng.randrange(1, 4)):
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)

    m.hooks.frame.append(change)


def op_members(rng: random.Random, m: Model) -> None:
    def change(members: Members) -> Members:
        members = list(members)
        choice = rng.randrange(9)
        i = rng.randrange(len(members)) if members else 0
        if choice == 0 and members:
            name, data, _mode, method = members[i]
            kind = rng.choice(
                [stat.S_IFLNK, stat.S_IFCHR, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFDIR, stat.S_IFBLK]
            )
            members[i] = (name, data, kind | 0o777, method)
        elif choice == 1:
            members.insert(rng.randrange(len(members) + 1), ("demo/dir/", b"", stat.S_IFDIR | 0o755, 0))
        elif choice == 2 and members:
            members.append(members[i])
        elif choice == 3 and len(members) > 1:
            members.append(members.pop(0))
        elif choice == 4 and members:
            name, data, mode, _method = members[i]
            members[i] = (name, data, mode, 8 - _method if _method in (0, 8) else 0)
        elif choice == 5:
            members.insert(
                rng.randrange(len(members) + 1), (hostile_path(rng, m) or "x", content(rng), 0o644, 8)
            )
        elif choice == 6 and members:
            members.pop(i)
        elif choice == 7:
            members.append((f"{m.dist_info}/RECORD.jws", content(rng), 0o644, 8))
        else:
            rng.shuffle(members)
        return members

    m.hooks.members.append(change)


def op_raw(rng: random.Random, m: Model) -> None:
    def change(data: bytes) -> bytes:
        out = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            if not out:
                break
            choice = rng.randrange(7)
            at = rng.randrange(len(out))
            if choice == 0:
                out[at] ^= 1 << rng.randrange(8)
            elif choice == 1:
                out[at] = rng.choice([0, 0xFF, 0x7F, 0x80, 0x01])
            elif choice == 2:
                out[at:at] = random_bytes(rng, rng.randrange(1, 32))
            elif choice == 3:
                del out[at : at + rng.randrange(1, 64)]
            elif choice == 4:
                del out[at:]
            elif choice == 5:  # an integer field of a zip header
                signatures = [b"PK\x01\x02", b"PK\x03\x04", b"PK\x05\x06", b"PK\x06\x06", b"PK\x07\x08"]
                spots = [i for sig in signatures for i in _find_all(out, sig)]
                if spots:
                    where = rng.choice(spots) + rng.randrange(4, 46)
                    value = rng.choice(INTERESTING32)
                    width = rng.choice([2, 4])
                    out[where : where + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
            else:
                start = rng.randrange(len(out))
                out[at:at] = out[start : start + rng.randrange(1, 256)]
        return bytes(out)

    m.hooks.final.append(change)


def _find_all(data: bytearray, sig: bytes) -> list[int]:
    out, pos = [], data.find(sig)
    while pos >= 0:
        out.append(pos)
        pos = data.find(sig, pos + 1)
    return out


STRUCTURE = [
    op_path,
    op_add_file,
    op_remove_file,
    op_content,
    op_exec,
    op_meta,
    op_wheel,
    op_v2,
    op_record,
    op_record_bytes,
    op_tar,
    op_tar,
    op_frame,
    op_members,
]


VECTORS = sorted((Path(__file__).parent.parent / "vectors").glob("*/*.whl"))


@cache
def vector(path: Path) -> bytes:
    return path.read_bytes()


def generate(rng: random.Random) -> Model:
    """A seed with 0 to 5 structural mutations, and raw ones a quarter of
    the time; one time in ten, a test vector with raw mutations."""
    if VECTORS and rng.random() < 0.1:
        model = Model(raw=vector(rng.choice(VECTORS)))
        op_raw(rng, model)
        return model
    model = seed(rng)
    for _ in range(rng.choice([0, 1, 1, 1, 2, 2, 3, 5])):
        rng.choice(STRUCTURE)(rng, model)
    if rng.random() < 0.25:
        op_raw(rng, model)
    return model
