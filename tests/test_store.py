"""The content-addressed store on real LMDB, real venvs and real wheels.
Every test that opens a store ends with fsck (the `store` fixture)."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nwcache.archive import ArchiveError, convert
from nwcache.daemon import schema
from nwcache.daemon.errors import (
    IncompatibleTags,
    NoSuchGeneration,
    NotAVenv,
    PathConflict,
    UnknownEnv,
    UnknownPackage,
)
from nwcache.daemon.store import Store
from tests.helpers import new_venv
from tests.vectors.generate import FILENAME

VECTORS = Path(__file__).parent / "vectors"


def find_python(version: str) -> str | None:
    """A real interpreter of that version that runs (pyenv shims may not)."""
    import glob

    candidates = [
        f"/usr/bin/python{version}",
        *sorted(glob.glob(f"/root/.pyenv/versions/{version}*/bin/python{version}")),
    ]
    for candidate in candidates:
        if (
            os.access(candidate, os.X_OK)
            and subprocess.run([candidate, "-c", "pass"], capture_output=True, check=False).returncode == 0
        ):
            return candidate
    return None


PY39 = find_python("3.9")


def snapshot(home: Path) -> dict[str, bytes]:
    """Every file under NWCACHE_HOME but LMDB's lock file, with its bytes."""
    return {
        str(p.relative_to(home)): p.read_bytes()
        for p in sorted(home.rglob("*"))
        if p.is_file() and p.name != "lock.mdb"
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "home") as opened:
        yield opened
        assert opened.fsck() == []


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    return new_venv(tmp_path / "venv")


def test_register_adopts_site_packages(store: Store, fresh_venv: Path, tmp_path: Path) -> None:
    root = fresh_venv.parent.parent
    env = store.register(root)
    assert env.path == str(root)
    assert env.version == ".".join(map(str, sys.version_info[:3]))
    assert env.tags[0].startswith(f"cp{sys.version_info[0]}{sys.version_info[1]}-")
    assert store.register(root) == env  # a second registration is a no-op
    gen = store.generation(root)
    assert gen.number == 1
    assert [p.name for p in gen.packages if p.name != "(unowned)"] == ["pip"]
    site = root / env.site_packages
    tree = store.tree(root)
    on_disk = {str(p.relative_to(site)) for p in site.rglob("*") if p.is_file()}
    assert set(tree) == on_disk
    for path in ("pip/__init__.py", next(p for p in tree if p.endswith(".dist-info/RECORD"))):
        assert store.read_blob(tree[path].blob) == (site / path).read_bytes()


@pytest.mark.skipif(PY39 is None, reason="needs a CPython 3.9 interpreter")
def test_register_reads_the_venvs_own_interpreter(store: Store, tmp_path: Path) -> None:
    assert PY39 is not None
    root = new_venv(tmp_path / "venv39", PY39)
    env = store.register(root)
    assert env.version.startswith("3.9.")
    assert env.cache_tag == "cpython-39"
    assert env.site_packages == "lib/python3.9/site-packages"
    assert env.tags[0].startswith("cp39-cp39-")
    assert not any(t.startswith("cp311") for t in env.tags)


def test_register_refuses_what_is_not_a_venv(store: Store, tmp_path: Path, venv: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotAVenv, match=r"no pyvenv\.cfg"):
        store.register(tmp_path / "plain")
    with pytest.raises(NotAVenv, match="does not exist"):
        store.register(tmp_path / "missing")
    (tmp_path / "link").symlink_to(venv)
    with pytest.raises(NotAVenv, match="symlink"):
        store.register(tmp_path / "link")
    assert store.envs() == []


def installed_record(store: Store, root: Path, dist_info: str) -> dict[str, tuple[str, str]]:
    tree = store.tree(root)
    rows = csv.reader(io.StringIO(store.read_blob(tree[f"{dist_info}/RECORD"].blob).decode()))
    return {row[0]: (row[1], row[2]) for row in rows}


def b64(blob: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(blob)).rstrip(b"=").decode()


def test_install_lays_files_out_as_pip_would(store: Store, venv: Path, built_wheels: dict[str, Path]) -> None:
    env = store.register(venv)
    gen = store.install(venv, [built_wheels["pure"]])
    assert gen.number == 2
    assert gen.parent == 1
    tree = store.tree(venv)
    dist_info = next(p.split("/")[0] for p in tree if p.endswith(".dist-info/METADATA") and "nwdemo" in p)
    assert store.read_blob(tree[f"{dist_info}/INSTALLER"].blob) == b"nwcache\n"
    assert f"{dist_info}/REQUESTED" in tree
    assert not any(".data/" in p for p in tree)
    # The installed RECORD lists every file with its real hash, scripts included.
    record = installed_record(store, venv, dist_info)
    for path, ref in tree.items():
        if path.startswith(dist_info) and not path.endswith("RECORD"):
            assert record[path] == (f"sha256={b64(ref.blob)}", str(ref.size))
    installed = gen.packages[-1]
    scripts = {p: r for p, r in installed.outside.items() if p.startswith(env.scripts + "/")}
    assert len(scripts) >= 2  # a console entry point and a .data/scripts file
    for path, ref in scripts.items():
        content = store.read_blob(ref.blob)
        assert ref.executable
        assert content.startswith(f"#!{env.python}\n".encode())
        rel = os.path.relpath(venv / path, venv / env.site_packages)
        assert record[rel] == (f"sha256={b64(ref.blob)}", str(ref.size))


def test_classic_and_v2_are_one_package(
    store: Store, venv: Path, built_wheels: dict[str, Path], tmp_path: Path
) -> None:
    store.register(venv)
    classic = built_wheels["sharedlib"]
    v2 = convert(classic, tmp_path / "v2" / classic.name, level=3).path
    a = store.ingest(classic)
    before = snapshot(store.home)
    b = store.ingest(v2)
    assert a.id == b.id
    assert snapshot(store.home) == before
    libs = {p: r for p, r in b.files.items() if "libnwfoo" in p}
    assert len(libs) == 3
    assert len({r.blob for r in libs.values()}) == 1


def test_stored_blobs_mean_no_payload_is_read(
    store: Store, venv: Path, built_wheels: dict[str, Path], tmp_path: Path
) -> None:
    classic = built_wheels["pure"]
    store.ingest(classic)
    v2 = convert(classic, tmp_path / "v2" / classic.name, level=3).path
    # Ruin every payload byte after the frame header: a reader that touches
    # the payload fails; ingest must not need to.
    data = bytearray(v2.read_bytes())
    start = data.index(b"\x28\xb5\x2f\xfd") + 32
    end = data.index(b"PK\x03\x04", start)
    data[start:end] = b"\xff" * (end - start)
    v2.write_bytes(bytes(data))
    with pytest.raises(ArchiveError):
        convert(v2, tmp_path / "x" / classic.name, to=1)
    pkg = store.ingest(v2)  # every blob stored: metadata is enough
    assert pkg.name == "nwdemo-pure" or pkg.name == "nwdemo_pure"
    gc = store.gc(keep=1)
    assert gc.packages == 1  # never installed: garbage


def test_hostile_archives_change_nothing(store: Store, venv: Path) -> None:
    store.register(venv)
    before = snapshot(store.home)
    for name in ("record-hash-payload", "window-log-exceeded", "payload-decodes-past-size", "tar-symlink"):
        with pytest.raises(ArchiveError):
            store.install(venv, [VECTORS / name / FILENAME])
    assert snapshot(store.home) == before
    assert store.generation(venv).number == 1


def test_incompatible_tags_are_refused_before_reading(
    store: Store, venv: Path, built_wheels: dict[str, Path], tmp_path: Path
) -> None:
    store.register(venv)
    wheel = built_wheels["ext"]
    alien = tmp_path / wheel.name.replace("linux_x86_64", "win_amd64")
    shutil.copy(wheel, alien)
    before = snapshot(store.home)
    with pytest.raises(IncompatibleTags, match="win_amd64"):
        store.install(venv, [alien])
    assert snapshot(store.home) == before


def test_two_distributions_claiming_one_path(store: Store, venv: Path, tmp_path: Path) -> None:
    store.register(venv)
    ok = VECTORS / "ok-v2-minimal" / FILENAME
    store.install(venv, [ok])
    # Another distribution ("other") shipping demo/core.py as well.
    from tests.vectors import generate

    spec = generate.Spec(dist_info="other-1.0.dist-info", files=[generate.F("demo/core.py", b"x = 1\n")])
    clash = tmp_path / "other-1.0-py3-none-any.whl"
    clash.write_bytes(generate.v2(spec))
    current = store.generation(venv).number
    packages = store.packages()
    blobs = store.stats()["blobs"]
    with pytest.raises(PathConflict, match=r"demo 1\.0 and other 1\.0 both install demo/core\.py"):
        store.install(venv, [clash])
    assert store.generation(venv).number == current
    # Stored before the conflict showed, then taken back.
    assert store.packages() == packages
    assert store.stats()["blobs"] == blobs


def test_a_failed_install_takes_back_only_its_own(store: Store, venv: Path, tmp_path: Path) -> None:
    """A later archive fails while its payload is read: the earlier one's
    package and new blobs go; a blob it shares with a stored package stays
    (fsck, run by the fixture, checks that every package's blobs exist)."""
    from tests.vectors import generate

    store.register(venv)
    first = tmp_path / "first-1.0-py3-none-any.whl"
    shared = b"SHARED = True\n"
    first.write_bytes(
        generate.v2(
            generate.Spec(dist_info="first-1.0.dist-info", files=[generate.F("first/core.py", shared)])
        )
    )
    store.install(venv, [first])
    packages = store.packages()
    blobs = store.stats()["blobs"]
    spec = generate.Spec(
        dist_info="other-1.0.dist-info",
        files=[
            generate.F("other/core.py", shared),
            generate.F("other/new.py", b"NEW = 1\n"),
            generate.F("other/big.bin", os.urandom(64 * 1024)),  # a body file, not inline
        ],
    )
    other = tmp_path / "other-1.0-py3-none-any.whl"
    other.write_bytes(generate.v2(spec))
    with pytest.raises(ArchiveError, match="record-hash"):
        store.install(venv, [other, VECTORS / "record-hash-payload" / FILENAME])
    assert store.packages() == packages
    assert store.stats()["blobs"] == blobs
    assert store.generation(venv).number == 2
    # Taken back, not wedged: the same file installs on its own.
    store.install(venv, [other])
    assert {p.name for p in store.packages()} == {"first", "other"}
    # What a failed install wrote but a concurrent one has come to hold by the
    # time of the take-back stays (simulated: the take-back told so directly).
    from nwcache.daemon.store import _Created

    shared_blob = hashlib.sha256(shared).hexdigest()
    other_package = next(p for p in store.packages() if p.name == "other")
    store._take_back(_Created(packages={other_package.id}, blobs={shared_blob}))
    assert store.has_blob(shared_blob)
    assert other_package in store.packages()  # its generation reaches it


def test_upgrade_uninstall_rollback_history(store: Store, venv: Path, tmp_path: Path) -> None:
    from tests.vectors import generate

    store.register(venv)
    v1 = VECTORS / "ok-v2-minimal" / FILENAME
    newer = tmp_path / "demo-2.0-py3-none-any.whl"
    spec = generate.Spec(
        dist_info="demo-2.0.dist-info", files=[generate.F("demo/__init__.py", b"VERSION = 2\n")]
    )
    newer.write_bytes(generate.v2(spec))
    g2 = store.install(venv, [v1])
    g3 = store.install(venv, [newer])
    tree = store.tree(venv)
    assert "demo/core.py" not in tree
    assert store.read_blob(tree["demo/__init__.py"].blob) == b"VERSION = 2\n"
    assert [p.version for p in g3.packages if p.name == "demo"] == ["2.0"]
    with pytest.raises(UnknownPackage, match="nosuch"):
        store.uninstall(venv, ["nosuch"])
    g4 = store.uninstall(venv, ["DEMO"])
    assert not any(p.startswith("demo") for p in store.tree(venv))
    assert g3.changes == [("demo", "1.0", "2.0")]
    assert g4.changes == [("demo", "2.0", None)]
    back = store.rollback(venv, to=g2.number)
    assert back.number == g2.number
    assert back.changes == [("demo", None, "1.0")]  # against generation 4, which it left
    assert "demo/core.py" in store.tree(venv)
    # A plain rollback goes back to where the venv was (4), not to 2's parent (1);
    # another one returns to 2: each rollback is undone by the next.
    assert store.rollback(venv).number == g4.number
    assert store.rollback(venv).number == g2.number
    assert store.rollback(venv, to=g3.number).changes == [("demo", "1.0", "2.0")]
    with pytest.raises(NoSuchGeneration, match=r"has no generation 99; it keeps 1-4$"):
        store.rollback(venv, to=99)
    assert [g.number for g in store.history(venv)] == [1, 2, 3, 4]
    assert g4.action == "uninstall demo"
    g5 = store.install(venv, [v1])
    assert g5.number == 5
    assert g5.parent == 3
    assert g5.changes == [("demo", "2.0", "1.0")]  # a downgrade
    store.gc(keep=1)
    with pytest.raises(NoSuchGeneration, match=r"generation 3, where it was before, is no longer kept"):
        store.rollback(venv)
    with pytest.raises(NoSuchGeneration, match=r"generation 2 is no longer kept; it keeps 5$"):
        store.rollback(venv, to=2)


def test_records_of_the_previous_version_still_read(store: Store, venv: Path) -> None:
    """An environment and generations written before `previous` and
    `changes` existed: a plain rollback goes to the parent, history and
    gc read them."""
    import json

    from nwcache.daemon import schema

    store.register(venv)
    g2 = store.install(venv, [VECTORS / "ok-v2-minimal" / FILENAME])
    env = store.get_env(venv)
    with store.env.begin(write=True) as txn:
        for number in (1, 2):
            key = schema.generation_key(env.id, number)
            data = json.loads(txn.get(key, db=store.db["generations"]) or b"")
            data.pop("changes", None)
            txn.put(key, json.dumps(data).encode(), db=store.db["generations"])
        data = json.loads(txn.get(env.id, db=store.db["envs"]) or b"")
        del data["previous"]
        txn.put(env.id, json.dumps(data).encode(), db=store.db["envs"])
    assert store.get_env(venv).previous is None
    assert [g.changes for g in store.history(venv)] == [None, None]
    assert store.rollback(venv).number == 1  # g2's parent, as before
    assert store.get_env(venv).previous == g2.number
    assert store.rollback(venv).number == g2.number


def test_gc_keeps_what_generations_reach(
    store: Store, venv: Path, built_wheels: dict[str, Path], tmp_path: Path
) -> None:
    store.register(venv)
    store.install(venv, [built_wheels["sharedlib"]])
    lib_blobs = {r.blob for p, r in store.tree(venv).items() if "libnwfoo" in p}
    store.install(venv, [built_wheels["pure"]])
    # As an install by name records them: wheel file sha256 -> package.
    ids = {i.name: bytes.fromhex(i.package) for i in store.generation(venv).packages}
    store.remember_wheels({"1" * 64: ids["nwdemo-sharedlib"], "2" * 64: ids["nwdemo-pure"]})
    store.uninstall(venv, ["nwdemo-sharedlib"])
    report = store.gc(keep=5)
    assert report.blobs == 0  # older generations still reach it
    assert all(store.has_blob(b) for b in lib_blobs)
    report = store.gc(keep=1)
    assert report.generations == 3
    assert report.packages == 1
    assert report.bytes_freed > 0
    assert not any(store.has_blob(b) for b in lib_blobs)
    assert all(not store.bodies.exists(b) for b in lib_blobs)
    assert [g.number for g in store.history(venv)] == [4]
    assert "nwdemo_pure/__init__.py" in store.tree(venv)
    # The collected package's wheel entry went with it; the kept one's stays.
    with store.index.env.begin() as txn:
        wheels = {bytes(k): bytes(v) for k, v in txn.cursor(db=store.index.db["wheels"])}
    assert wheels == {schema.wheel_key("2" * 64): ids["nwdemo-pure"]}


def test_fsck_finds_damage_and_sweep_repairs_debris(
    tmp_path: Path, venv: Path, built_wheels: dict[str, Path]
) -> None:
    home = tmp_path / "home"
    with Store(home) as store:
        store.register(venv)
        store.install(venv, [built_wheels["sharedlib"]])
        big = next(r for p, r in store.tree(venv).items() if "libnwfoo" in p)
        body = store.bodies.path(big.blob)
        assert store.fsck() == []
        body.chmod(0o644)
        body.write_bytes(b"garbage")
        running = store.bodies.tmp / "body-being-written"
        running.write_bytes(b"x")  # an operation's, begun since the store was opened: not damage
        leftover = store.bodies.tmp / "body-leftover"
        leftover.write_bytes(b"x")
        os.utime(leftover, ns=(store.upkeep.opened_ns - 10**9,) * 2)  # from before the opening
        orphan = store.bodies.path("ab" * 32)
        orphan.parent.mkdir(exist_ok=True)
        orphan.write_bytes(b"y")
        problems = store.fsck()
        assert {p.kind for p in problems} == {"bad-blob", "temporary-files", "orphan-body"}
        assert "1 files in" in next(str(p) for p in problems if p.kind == "temporary-files")
        running.unlink()
        body.unlink()
        assert "missing-body" in {p.kind for p in store.fsck()}
        assert store.sweep() == (1, 1)
        assert {p.kind for p in store.fsck()} == {"missing-body"}


def test_unregister_and_unknown_env(store: Store, venv: Path, tmp_path: Path) -> None:
    store.register(venv)
    store.unregister(venv)
    assert store.envs() == []
    with pytest.raises(UnknownEnv):
        store.tree(venv)
    with pytest.raises(UnknownEnv):
        store.install(tmp_path / "elsewhere", [VECTORS / "ok-v2-minimal" / FILENAME])


def test_stats_count_dedup(store: Store, tmp_path: Path) -> None:
    roots = [new_venv(tmp_path / f"v{i}") for i in range(3)]
    for root in roots:
        store.register(root)
        store.install(root, [VECTORS / "ok-v2-content-links" / FILENAME])
    stats = store.stats()
    assert stats["logical_bytes"] > stats["stored_bytes"]
    one = sum(r.size for r in store.tree(roots[0]).values())
    assert stats["logical_bytes"] == 3 * one
    assert hashlib.sha256(b"").hexdigest() in {r.blob for r in store.tree(roots[0]).values()}


def test_one_process_owns_a_store(store: Store) -> None:
    from nwcache.daemon.errors import StoreBusy

    code = f"from nwcache.daemon.store import Store; Store({str(store.home)!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "StoreBusy" in done.stderr
    assert "another process has the store" in done.stderr
    with pytest.raises(StoreBusy):  # a second owner in this process too
        Store(store.home)
