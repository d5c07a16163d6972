"""The view's FUSE operations awaited directly, without a mount (as S3QL's
t3_fs_api does): the merged tree, inode sharing, the copy-on-write layer and
its journal, generation flips, and faults turning into EIO."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pyfuse3
import pytest
import trio

from nwcache.daemon.overlay import Overlay
from nwcache.daemon.schema import FileRef
from nwcache.daemon.tree import Dir, TreeBuilder
from nwcache.daemon.view import PATCHED_PYFUSE3, ViewOperations, content_mtime_ns

T = TypeVar("T")


class Blobs:
    """A blob source holding bodies in memory (what the store would serve)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.files: dict[str, Path] = {}
        self.broken = False

    def add(self, content: bytes, executable: bool = False) -> FileRef:
        blob = hashlib.sha256(content).hexdigest()
        self.data[blob] = content
        return FileRef(blob, len(content), executable)

    def blob_location(self, blob: str) -> tuple[int, bytes | Path]:
        if self.broken:
            raise RuntimeError("index unreadable")
        if blob in self.files:
            return len(self.data[blob]), self.files[blob]
        return len(self.data[blob]), self.data[blob]

    def body_path(self, blob: str) -> Path:
        return self.files.get(blob, Path("/nonexistent") / blob)

    def add_file(self, content: bytes, where: Path) -> FileRef:
        """A blob whose body is a file (the store's large blobs and pycs)."""
        ref = self.add(content)
        where.write_bytes(content)
        self.files[ref.blob] = where
        return ref


class Ctx:
    """What the kernel passes as a request context (only read for uid/umask)."""

    uid = os.getuid()
    gid = os.getgid()
    pid = os.getpid()
    umask = 0o022


CTX: Any = Ctx()


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return trio.run(fn)


@pytest.fixture
def blobs() -> Blobs:
    return Blobs()


@pytest.fixture(
    params=[
        False,
        pytest.param(True, marks=pytest.mark.skipif(not PATCHED_PYFUSE3, reason="pyfuse3 is not patched")),
    ],
    ids=["handles", "kernel-cached"],
)
def kernel_caching(request: pytest.FixtureRequest) -> bool:
    """Every test runs in both view modes (docs/VIEW.md, "Modes")."""
    return bool(request.param)


class Truncate:
    """The fields of a setattr that truncates (what the kernel sends for
    O_TRUNC in no-open mode)."""

    update_size = True
    update_mode = update_uid = update_gid = update_atime = update_mtime = update_ctime = False


def truncated() -> pyfuse3.EntryAttributes:
    attrs = pyfuse3.EntryAttributes()
    attrs.st_size = 0
    return attrs


async def open_file(ops: ViewOperations, ino: int, flags: int = os.O_RDONLY) -> int:
    """What open(2) makes the kernel send in the view's mode: OPEN, or
    nothing (no-open mode: a truncating open becomes a setattr)."""
    if not ops.kernel_caching:
        return (await ops.open(pyfuse3.InodeT(ino), flags, CTX)).fh
    if flags & os.O_TRUNC:
        await ops.setattr(pyfuse3.InodeT(ino), truncated(), Truncate(), None, CTX)  # type: ignore[arg-type]
    return 0


async def close_file(ops: ViewOperations, fh: int) -> None:
    if fh:
        await ops.release(pyfuse3.FileHandleT(fh))


async def read(ops: ViewOperations, fh: int, ino: int, size: int = 1 << 20, off: int = 0) -> bytes:
    return await ops.read(pyfuse3.FileHandleT(fh), off, size, inode=pyfuse3.InodeT(ino))


async def write(ops: ViewOperations, fh: int, ino: int, data: bytes, off: int = 0) -> int:
    return await ops.write(pyfuse3.FileHandleT(fh), off, data, inode=pyfuse3.InodeT(ino))


def build(blobs: Blobs, files: dict[str, bytes]) -> Dir:
    return TreeBuilder().build({p: blobs.add(c) for p, c in files.items()})


async def lookup_path(ops: ViewOperations, path: str) -> pyfuse3.EntryAttributes:
    ino = pyfuse3.ROOT_INODE
    attrs: pyfuse3.EntryAttributes | None = None
    for part in path.split("/"):
        attrs = await ops.lookup(ino, part.encode(), CTX)
        if attrs.st_ino == 0:
            raise FileNotFoundError(path)
        ino = attrs.st_ino
    assert attrs is not None
    return attrs


async def read_all(ops: ViewOperations, ino: int) -> bytes:
    fh = await open_file(ops, ino)
    try:
        return await read(ops, fh, ino)
    finally:
        await close_file(ops, fh)


async def listdir(ops: ViewOperations, ino: int) -> list[str]:
    names: list[str] = []

    def reply(token: object, name: bytes, attrs: pyfuse3.EntryAttributes, next_id: int) -> bool:
        names.append(name.decode())
        return True

    real, pyfuse3.readdir_reply = pyfuse3.readdir_reply, reply  # type: ignore[assignment]
    try:
        fh = await opendir(ops, ino)
        try:
            await ops.readdir(pyfuse3.FileHandleT(fh), 0, None, inode=pyfuse3.InodeT(ino))  # type: ignore[arg-type]
        finally:
            await closedir(ops, fh)
    finally:
        pyfuse3.readdir_reply = real
    return names


async def opendir(ops: ViewOperations, ino: int) -> int:
    return 0 if ops.kernel_caching else await ops.opendir(pyfuse3.InodeT(ino), CTX)


async def closedir(ops: ViewOperations, fh: int) -> None:
    if fh:
        await ops.releasedir(pyfuse3.FileHandleT(fh))


def test_same_content_same_inode_across_environments(
    blobs: Blobs, tmp_path: Path, kernel_caching: bool
) -> None:
    async def main() -> None:
        ops = ViewOperations(blobs, kernel_caching=kernel_caching)
        shared = {"pkg/__init__.py": b"X = 1\n", "pkg/lib.so": b"\x7fELF" + b"\0" * 100}
        await ops.add_env("a", build(blobs, shared), Overlay(tmp_path / "a"), venv=tmp_path)
        await ops.add_env(
            "b", build(blobs, {**shared, "own.py": b"B\n"}), Overlay(tmp_path / "b"), venv=tmp_path
        )
        a_init = await lookup_path(ops, "a/pkg/__init__.py")
        b_init = await lookup_path(ops, "b/pkg/__init__.py")
        assert a_init.st_ino == b_init.st_ino
        # One link per path: editors write in place into files with several.
        assert a_init.st_nlink == 1
        assert stat.S_ISREG(a_init.st_mode)
        assert a_init.st_mode & 0o777 == 0o644
        assert a_init.st_mtime_ns == content_mtime_ns(hashlib.sha256(b"X = 1\n").hexdigest())
        assert (await lookup_path(ops, "a/pkg")).st_ino != (await lookup_path(ops, "b/pkg")).st_ino
        assert await read_all(ops, a_init.st_ino) == b"X = 1\n"
        assert await listdir(ops, pyfuse3.ROOT_INODE) == ["a", "b"]
        assert await listdir(ops, (await lookup_path(ops, "b")).st_ino) == ["own.py", "pkg"]
        missing = await ops.lookup((await lookup_path(ops, "a")).st_ino, b"own.py", CTX)
        assert missing.st_ino == 0
        # Writing a shared file cannot be copied up for one env: refused at
        # open (handles) or at the first write (no-open mode), and truncating
        # it is refused before anything changes in both.
        with pytest.raises(pyfuse3.FUSEError) as raised:
            await write(ops, await open_file(ops, a_init.st_ino, os.O_WRONLY), a_init.st_ino, b"Y")
        assert raised.value.errno == errno.EROFS
        with pytest.raises(pyfuse3.FUSEError) as raised:
            await open_file(ops, a_init.st_ino, os.O_WRONLY | os.O_TRUNC)
        assert raised.value.errno == errno.EROFS
        assert await read_all(ops, a_init.st_ino) == b"X = 1\n"

    run(main)


def test_copy_on_write_layer_and_its_journal(blobs: Blobs, tmp_path: Path, kernel_caching: bool) -> None:
    tree = {"pkg/__init__.py": b"X = 1\n", "pkg/sub/mod.py": b"M\n", "other.py": b"O\n"}

    async def first() -> None:
        ops = ViewOperations(blobs, kernel_caching=kernel_caching)
        await ops.add_env("a", build(blobs, tree), Overlay(tmp_path / "a"), venv=tmp_path)
        await ops.add_env("b", build(blobs, tree), Overlay(tmp_path / "b"), venv=tmp_path)
        root = (await lookup_path(ops, "a")).st_ino
        info, attrs = await ops.create(root, b"new.py", stat.S_IFREG | 0o644, os.O_WRONLY, CTX)
        assert await write(ops, info.fh, attrs.st_ino, b"NEW\n") == 4
        await close_file(ops, info.fh)
        assert await read_all(ops, attrs.st_ino) == b"NEW\n"
        # Rename a generation directory: entries, not copies; same file inodes.
        mod = await lookup_path(ops, "a/pkg/sub/mod.py")
        await ops.rename(root, b"pkg", root, b"moved", 0, CTX)
        assert (await lookup_path(ops, "a/moved/sub/mod.py")).st_ino == mod.st_ino
        with pytest.raises(FileNotFoundError):
            await lookup_path(ops, "a/pkg")
        await ops.unlink(root, b"other.py", CTX)
        await ops.mkdir(root, b"pkg", stat.S_IFDIR | 0o755, CTX)  # over the whiteout: empty
        assert await listdir(ops, (await lookup_path(ops, "a/pkg")).st_ino) == []
        with pytest.raises(pyfuse3.FUSEError) as raised:
            await ops.rmdir(root, b"moved", CTX)
        assert raised.value.errno == errno.ENOTEMPTY
        await ops.symlink(root, b"link", b"new.py", CTX)
        # The other environment sees none of it.
        assert await listdir(ops, (await lookup_path(ops, "b")).st_ino) == ["other.py", "pkg"]
        assert await listdir(ops, root) == ["link", "moved", "new.py", "pkg"]
        for env in ops.envs.values():
            env.overlay.close()

    async def second() -> None:
        # A restart replays the journal.
        ops = ViewOperations(blobs, kernel_caching=kernel_caching)
        await ops.add_env("a", build(blobs, tree), Overlay(tmp_path / "a"), venv=tmp_path)
        root = (await lookup_path(ops, "a")).st_ino
        assert await listdir(ops, root) == ["link", "moved", "new.py", "pkg"]
        link = await lookup_path(ops, "a/link")
        assert await ops.readlink(link.st_ino, CTX) == b"new.py"
        assert await read_all(ops, (await lookup_path(ops, "a/new.py")).st_ino) == b"NEW\n"
        assert await read_all(ops, (await lookup_path(ops, "a/moved/sub/mod.py")).st_ino) == b"M\n"
        assert ops.pinned_blobs() >= {hashlib.sha256(b"M\n").hexdigest()}

    run(first)
    run(second)


def test_flip_changes_only_what_changed(blobs: Blobs, tmp_path: Path, kernel_caching: bool) -> None:
    async def main() -> None:
        ops = ViewOperations(blobs, kernel_caching=kernel_caching)
        builder = TreeBuilder()
        one = builder.build({"pkg/a.py": blobs.add(b"1"), "pkg/b.py": blobs.add(b"B")})
        two = builder.build({"pkg/a.py": blobs.add(b"2"), "pkg/b.py": blobs.add(b"B")})
        await ops.add_env("a", one, Overlay(tmp_path / "a"), venv=tmp_path)
        before_a = await lookup_path(ops, "a/pkg/a.py")
        before_b = await lookup_path(ops, "a/pkg/b.py")
        fh = await open_file(ops, before_a.st_ino)
        assert await ops.replace_tree("a", two) == 1
        after_a = await lookup_path(ops, "a/pkg/a.py")
        assert after_a.st_ino != before_a.st_ino  # new content, new inode
        assert (await lookup_path(ops, "a/pkg/b.py")).st_ino == before_b.st_ino
        assert await read(ops, fh, before_a.st_ino, 10) == b"1"  # an open file keeps its content
        await close_file(ops, fh)

    run(main)


def test_faults_become_eio_and_are_counted(blobs: Blobs, tmp_path: Path, kernel_caching: bool) -> None:
    async def main() -> None:
        ops = ViewOperations(blobs, kernel_caching=kernel_caching)
        await ops.add_env("a", build(blobs, {"x.py": b"x"}), Overlay(tmp_path / "a"), venv=tmp_path)
        attrs = await lookup_path(ops, "a/x.py")
        blobs.broken = True
        fh = await open_file(ops, attrs.st_ino)  # the body is opened by the first read
        with pytest.raises(pyfuse3.FUSEError) as raised:
            await read(ops, fh, attrs.st_ino, 10)
        assert raised.value.errno == errno.EIO
        await close_file(ops, fh)
        assert ops.stats.faults == 1
        assert "index unreadable" in ops.stats.fault_log[0]
        with pytest.raises(pyfuse3.FUSEError) as stale:
            await ops.getattr(pyfuse3.InodeT(999_999), CTX)
        assert stale.value.errno == errno.ESTALE
        assert ops.stats.faults == 1  # FUSEErrors are answers, not faults

    run(main)


def test_mirror_leads_back_into_the_venv(blobs: Blobs, tmp_path: Path, kernel_caching: bool) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)

    async def main() -> None:
        ops = ViewOperations(blobs, kernel_caching=kernel_caching)
        await ops.add_env(
            "a",
            build(blobs, {"m.py": b"m"}),
            Overlay(tmp_path / "a"),
            venv=venv,
            site_packages="lib/python3.11/site-packages",
        )
        assert await listdir(ops, (await lookup_path(ops, "a")).st_ino) == ["bin", "lib"]
        site = await lookup_path(ops, "a/lib/python3.11/site-packages")
        assert stat.S_ISDIR(site.st_mode)
        up = await ops.lookup(site.st_ino, b"..", CTX)
        assert up.st_ino == (await lookup_path(ops, "a/lib/python3.11")).st_ino
        bin_link = await lookup_path(ops, "a/bin")
        assert stat.S_ISLNK(bin_link.st_mode)
        assert await ops.readlink(bin_link.st_ino, CTX) == os.fsencode(venv / "bin")

    run(main)


Listed = tuple[str, int, int, int, int]  # name, inode, links, mode, size


async def readdir_from(
    ops: ViewOperations, fh: int, ino: int, monkeypatch: pytest.MonkeyPatch, room: int = 2
) -> list[Listed]:
    """Every entry readdir replies on an open listing, at most `room` per
    request as a small kernel buffer takes them, each request going on from
    the offset the last reply gave (as the kernel does)."""
    listed: list[Listed] = []
    next_ids: list[int] = []
    taken = 0

    def reply(token: object, name: bytes, attrs: pyfuse3.EntryAttributes, next_id: int) -> bool:
        nonlocal taken
        if taken == room:
            return False  # this request's buffer is full
        taken += 1
        listed.append((name.decode(), attrs.st_ino, attrs.st_nlink, attrs.st_mode, attrs.st_size))
        next_ids.append(next_id)
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)
    start = 0
    while True:
        taken = 0
        await ops.readdir(pyfuse3.FileHandleT(fh), start, None, inode=pyfuse3.InodeT(ino))  # type: ignore[arg-type]
        if taken == 0:
            return listed
        start = next_ids[-1]


async def readdir_all(
    ops: ViewOperations, ino: int, monkeypatch: pytest.MonkeyPatch, room: int = 2
) -> list[Listed]:
    fh = await opendir(ops, ino)
    try:
        return await readdir_from(ops, fh, ino, monkeypatch, room)
    finally:
        await closedir(ops, fh)


async def looked_up(ops: ViewOperations, path: str, names: list[str]) -> list[Listed]:
    found = []
    for name in names:
        attrs = await lookup_path(ops, f"{path}/{name}")
        found.append((name, attrs.st_ino, attrs.st_nlink, attrs.st_mode, attrs.st_size))
    return found


def test_readdir_answers_what_lookup_answers(
    blobs: Blobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_caching: bool
) -> None:
    """readdir resolves a directory the layer leaves alone once per request
    and reuses store files' attributes: its replies must still be exactly
    what lookup says, through layer changes, environments going and flips."""
    tree = {"pkg/__init__.py": b"I\n", "pkg/mod.py": b"M\n", "pkg/sub/x.py": b"X\n", "pkg/tool": b"T\n"}

    async def main() -> None:
        ops = ViewOperations(blobs, kernel_caching=kernel_caching)
        await ops.add_env("a", build(blobs, tree), Overlay(tmp_path / "a"), venv=tmp_path)
        await ops.add_env("b", build(blobs, tree), Overlay(tmp_path / "b"), venv=tmp_path)
        pkg = (await lookup_path(ops, "a/pkg")).st_ino
        listed = await readdir_all(ops, pkg, monkeypatch)
        assert [entry[0] for entry in listed] == ["__init__.py", "mod.py", "sub", "tool"]
        assert listed == await looked_up(ops, "a/pkg", ["__init__.py", "mod.py", "sub", "tool"])

        # The layer writes into pkg: a new file, a removal, a new directory.
        info, attrs = await ops.create(pkg, b"new.py", stat.S_IFREG | 0o644, os.O_WRONLY, CTX)
        await write(ops, info.fh, attrs.st_ino, b"NEW\n")
        await close_file(ops, info.fh)
        await ops.unlink(pkg, b"mod.py", CTX)
        await ops.mkdir(pkg, b"made", stat.S_IFDIR | 0o755, CTX)
        listed = await readdir_all(ops, pkg, monkeypatch, room=1)
        names = ["__init__.py", "made", "new.py", "sub", "tool"]
        assert [entry[0] for entry in listed] == names
        assert listed == await looked_up(ops, "a/pkg", names)

        # b's directory is still the generation's alone.
        b_pkg = (await lookup_path(ops, "b/pkg")).st_ino
        assert [e[0] for e in await readdir_all(ops, b_pkg, monkeypatch)] == [
            "__init__.py",
            "mod.py",
            "sub",
            "tool",
        ]

        # a goes: b's listing is unchanged.
        await ops.remove_env("a")
        listed = await readdir_all(ops, b_pkg, monkeypatch, room=3)
        assert listed == await looked_up(ops, "b/pkg", ["__init__.py", "mod.py", "sub", "tool"])
        assert listed[0][2] == 1

        # A flip between opendir and readdir: what went is skipped, what
        # changed is the new content.
        fh = await opendir(ops, b_pkg)
        assert (
            await ops.replace_tree("b", build(blobs, {"pkg/__init__.py": b"I2\n", "pkg/tool": b"T\n"})) >= 1
        )
        listed = await readdir_from(ops, fh, b_pkg, monkeypatch)
        await closedir(ops, fh)
        assert [entry[0] for entry in listed] == ["__init__.py", "tool"]
        assert listed[0][1] == (await lookup_path(ops, "b/pkg/__init__.py")).st_ino
        for env in ops.envs.values():
            env.overlay.close()

    run(main)


def test_the_mode_follows_the_patch_and_the_setting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Kernel-cached by default with the patched pyfuse3; handles, with a
    warning, without it; NWCACHE_VIEW_MODE chooses, and a choice the build
    cannot serve is refused with a hint."""
    from nwcache.daemon import runner
    from nwcache.daemon.errors import StoreError

    monkeypatch.delenv("NWCACHE_VIEW_MODE", raising=False)
    assert runner.view_mode() is PATCHED_PYFUSE3
    monkeypatch.setenv("NWCACHE_VIEW_MODE", "handles")
    assert runner.view_mode() is False
    monkeypatch.setenv("NWCACHE_VIEW_MODE", "fast")
    with pytest.raises(StoreError, match="not a view mode"):
        runner.view_mode()
    monkeypatch.setattr(runner, "PATCHED_PYFUSE3", False)
    monkeypatch.setenv("NWCACHE_VIEW_MODE", "kernel-cached")
    with pytest.raises(StoreError, match="needs pyfuse3 with the project's patch") as refused:
        runner.view_mode()
    assert "make setup" in refused.value.hint
    monkeypatch.delenv("NWCACHE_VIEW_MODE")
    with caplog.at_level("WARNING", logger="nwcache.view"):
        assert runner.view_mode() is False
    assert "lacks the project's patch" in caplog.text
    if not PATCHED_PYFUSE3:
        with pytest.raises(ValueError, match="needs the project's pyfuse3 patch"):
            ViewOperations(Blobs(), kernel_caching=True)


def test_pycs_with_file_bodies_are_symlinks_to_them(
    blobs: Blobs, tmp_path: Path, kernel_caching: bool
) -> None:
    """A shared pyc whose body is a file is a symlink to it (Python then reads
    it without any FUSE request); one kept inline is served as a file; both
    refuse changes like every store file."""
    body = tmp_path / "pyc-body"
    pyc = blobs.add_file(b"\xa7\r\r\n pyc bytes", body)
    inline = blobs.add(b"\xa7\r\r\n small")
    tree = TreeBuilder().build(
        {
            "pkg/__init__.py": blobs.add(b""),
            "pkg/__pycache__/__init__.cpython-311.pyc": pyc,
            "pkg/__pycache__/mod.cpython-311.pyc": inline,
            "pkg/not_a_pyc.pyc": pyc,
        }
    )

    async def main() -> None:
        ops = ViewOperations(blobs, kernel_caching=kernel_caching)
        await ops.add_env("a", tree, Overlay(tmp_path / "a"), venv=tmp_path)
        await ops.add_env("b", tree, Overlay(tmp_path / "b"), venv=tmp_path)
        linked = await lookup_path(ops, "a/pkg/__pycache__/__init__.cpython-311.pyc")
        assert stat.S_ISLNK(linked.st_mode)
        assert await ops.readlink(pyfuse3.InodeT(linked.st_ino), CTX) == os.fsencode(body)
        assert linked.st_ino == (await lookup_path(ops, "b/pkg/__pycache__/__init__.cpython-311.pyc")).st_ino
        assert hashlib.sha256(b"\xa7\r\r\n pyc bytes").hexdigest() in ops.pinned_blobs()
        kept = await lookup_path(ops, "a/pkg/__pycache__/mod.cpython-311.pyc")
        assert stat.S_ISREG(kept.st_mode)
        assert await read_all(ops, kept.st_ino) == b"\xa7\r\r\n small"
        # Only a __pycache__ entry is a pyc: the same content elsewhere is a file.
        elsewhere = await lookup_path(ops, "a/pkg/not_a_pyc.pyc")
        assert stat.S_ISREG(elsewhere.st_mode)
        pycache = (await lookup_path(ops, "a/pkg/__pycache__")).st_ino
        assert await listdir(ops, pycache) == ["__init__.cpython-311.pyc", "mod.cpython-311.pyc"]
        with pytest.raises(pyfuse3.FUSEError) as raised:
            await ops.setattr(pyfuse3.InodeT(linked.st_ino), truncated(), Truncate(), None, CTX)  # type: ignore[arg-type]
        assert raised.value.errno == errno.EROFS
        for env in ops.envs.values():
            env.overlay.close()

    run(main)


def test_replace_files_is_build_of_the_updated_files() -> None:
    """What start-up does for venvs holding the same packages: the first
    venv's tree with its generated files replaced is the very Dir a full
    build of the second venv's files gives, and shares every other node."""
    builder = TreeBuilder()

    def ref(text: str) -> FileRef:
        return FileRef(hashlib.sha256(text.encode()).hexdigest(), len(text), False)

    common = {f"pkg/sub{i}/m{j}.py": ref(f"{i}.{j}") for i in range(5) for j in range(20)}
    first = {
        **common,
        "pkg-1.0.dist-info/RECORD": ref("first"),
        "pkg-1.0.dist-info/INSTALLER": ref("nwcache"),
    }
    second = {
        **common,
        "pkg-1.0.dist-info/RECORD": ref("second"),
        "pkg-1.0.dist-info/INSTALLER": ref("nwcache"),
    }
    root = builder.build(first)
    replaced = builder.replace_files(root, {"pkg-1.0.dist-info/RECORD": ref("second")})
    assert replaced is builder.build(second)
    assert replaced.entries["pkg"] is root.entries["pkg"]
    assert dict(replaced.files()) == second
    with pytest.raises(ValueError, match="not a file of the tree"):
        builder.replace_files(root, {"pkg-1.0.dist-info/REQUESTED": ref("")})
    with pytest.raises(ValueError, match="not a directory of the tree"):
        builder.replace_files(root, {"other/RECORD": ref("")})


def test_add_files_is_build_of_the_files_added() -> None:
    """What the background compiler does with a batch of pycs: new files in
    new directories, a file replaced, every untouched directory shared."""
    builder = TreeBuilder()

    def ref(text: str) -> FileRef:
        return FileRef(hashlib.sha256(text.encode()).hexdigest(), len(text), False)

    files = {f"pkg/sub{i}/m{j}.py": ref(f"{i}.{j}") for i in range(5) for j in range(20)}
    files["pkg/__pycache__/shipped.pyc"] = ref("shipped")
    root = builder.build(files)
    added = {
        "pkg/sub0/__pycache__/m0.cpython-311.pyc": ref("pyc 0.0"),
        "pkg/sub0/__pycache__/m1.cpython-311.pyc": ref("pyc 0.1"),
        "pkg/__pycache__/shipped.pyc": ref("ours"),
    }
    grown = builder.add_files(root, added)
    assert grown is builder.build({**files, **added})
    assert grown.entries["pkg"].entries["sub1"] is root.entries["pkg"].entries["sub1"]  # type: ignore[union-attr]
    assert builder.add_files(root, {}) is root
    with pytest.raises(ValueError, match="not a directory of the tree"):
        builder.add_files(root, {"pkg/sub0/m0.py/x": ref("")})


def test_merge_is_build_of_the_files_together() -> None:
    """What a venv's tree is made of: each package's tree (kept between
    installs) merged with the files generated for the venv; the very Dir a
    build of all their files gives, each package's own directories shared."""
    builder = TreeBuilder()

    def ref(text: str) -> FileRef:
        return FileRef(hashlib.sha256(text.encode()).hexdigest(), len(text), False)

    first = {f"one/m{j}.py": ref(f"one {j}") for j in range(20)}
    first["ns/one/__init__.py"] = ref("ns one")
    second = {f"two/sub/m{j}.py": ref(f"two {j}") for j in range(20)}
    second["ns/two/__init__.py"] = ref("ns two")
    generated = {"two-1.0.dist-info/RECORD": ref("record"), "ns/two/__init__.py": ref("replaced")}
    trees = [builder.build(first), builder.build(second), builder.build(generated)]
    merged = builder.merge(trees)
    assert merged is builder.build({**first, **second, **generated})
    assert merged.entries["one"] is trees[0].entries["one"]
    assert merged.entries["two"] is trees[1].entries["two"]
    assert builder.merge(trees[:1]) is trees[0]
    with pytest.raises(ValueError, match="both a file and a directory"):
        builder.merge([trees[0], builder.build({"one": ref("a file")})])
