"""Everything a refused install must leave as it was, as one comparable dict:
every key and value of every LMDB database, every file under NWCACHE_HOME
(the index's data file included; its reader lock table, the owner lock and
the view's mount point excepted), and the venv's whole tree with what the
view shows in its site-packages."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import lmdb

from nwcache.daemon import schema

# Change with every reader (LMDB's lock table) or are not state (the lock file).
SKIP_HOME = frozenset({"index/lock.mdb", "owner.lock"})


def _file(path: Path) -> str:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return f"link -> {os.readlink(path)}"
    if stat.S_ISDIR(st.st_mode):
        return f"dir {stat.S_IMODE(st.st_mode):o}"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"file {stat.S_IMODE(st.st_mode):o} {st.st_size} {digest}"


def tree(
    root: Path, *, skip: frozenset[str] = frozenset(), prune: frozenset[str] = frozenset()
) -> dict[str, str]:
    """relative path -> type, mode, size and sha256 (or link target); does
    not follow symlinks except the root itself."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(d for d in dirnames if os.path.normpath(os.path.join(rel_dir, d)) not in prune)
        for name in sorted(dirnames + filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel not in skip:
                out[rel] = _file(Path(dirpath) / name)
    return out


def lmdb_dump(index: Path) -> dict[str, str]:
    """Every key and value of every database, hashed, read from another
    process than the daemon's (LMDB's own multi-process readers)."""
    out: dict[str, str] = {}
    env = lmdb.open(str(index), readonly=True, lock=True, max_dbs=len(schema.DATABASES), subdir=True)
    try:
        with env.begin() as txn:
            for name in schema.DATABASES:
                db = env.open_db(name.encode(), txn=txn, create=False)
                for key, value in txn.cursor(db=db):
                    out[f"{name}/{bytes(key).hex()}"] = hashlib.sha256(bytes(value)).hexdigest()
    finally:
        env.close()
    return out


def snapshot(home: Path, venv: Path, site_packages: Path) -> dict[str, dict[str, str]]:
    return {
        "lmdb": lmdb_dump(home / "index"),
        "home": tree(home, skip=SKIP_HOME, prune=frozenset({"view"})),
        "venv": tree(venv),
        "view": tree(site_packages),  # through the venv's symlink: what the view serves
    }


def differences(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> list[str]:
    out = []
    for part in before:
        old, new = before[part], after[part]
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                out.append(f"{part}: {key}: {old.get(key)} -> {new.get(key)}")
    return out
