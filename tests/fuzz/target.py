"""One fuzz execution: what the daemon does with an archive before and while
storing it, without the daemon. Open (container and metadata checks), the
install-time checks into an environment, every file read and verified, then
the install planned (scripts generated, shebangs rewritten, installed RECORD).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from nwcache.archive import Archive, ArchiveError
from nwcache.daemon.errors import StoreError
from nwcache.daemon.layout import check_installable, plan_install
from nwcache.daemon.schema import EnvRecord, FileRef, PackageRecord

PYTHON_VERSION = "3.11.7"


def make_env(root: Path) -> EnvRecord:
    """A venv's skeleton, enough for the layout checks (which look at the
    file system: lib64 -> lib, an existing bin/python, site-packages)."""
    site = root / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    (root / "bin").mkdir(exist_ok=True)
    (root / "include").mkdir(exist_ok=True)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\n")
    python = root / "bin" / "python"
    if not python.exists():
        python.write_text("#!/bin/sh\n")
    if not (root / "lib64").exists():
        os.symlink("lib", root / "lib64")
    return EnvRecord(
        path=str(root),
        python=str(python),
        version=PYTHON_VERSION,
        cache_tag="cpython-311",
        tags=["py3-none-any"],
        site_packages="lib/python3.11/site-packages",
        scripts="bin",
        include="include/site/python3.11",
        current=1,
        next=2,
        created=0.0,
    )


@dataclass(frozen=True)
class Outcome:
    """ "accepted", or the rule / store error class that refused the input."""

    verdict: str


def execute(path: Path, env: EnvRecord) -> Outcome:
    """Raises anything that is neither an ArchiveError nor a StoreError."""
    try:
        with Archive.open(path) as archive:
            entry_points = next(
                (f for f in archive.files if f.path == f"{archive.dist_info}/entry_points.txt"), None
            )
            text = b"".join(archive.open_file(entry_points).chunks()) if entry_points is not None else None
            name = str(archive.wheel_name.name)
            label = f"{name} {archive.version}"
            check_installable(label, archive.dist_info, name, (f.path for f in archive.files), text, env)
            blobs: dict[str, bytes] = {}
            files: dict[str, FileRef] = {}
            produced = []
            for data in archive.iter_files():
                produced.append(data)
                if data.link_to is None:
                    content = b"".join(data.chunks())
                    blobs[hashlib.sha256(content).hexdigest()] = content
            for data in produced:
                assert data.sha256 is not None
                files[data.path] = FileRef(data.sha256.hex(), data.info.size, data.info.executable)
            package = PackageRecord(
                name=name,
                version=archive.version,
                digest=archive.verified_digest,
                tags=["py3-none-any"],
                filename=path.name,
                source="archive",
                dist_info=archive.dist_info,
                files=files,
            )

            def put(content: bytes, executable: bool) -> FileRef:
                blob = hashlib.sha256(content).hexdigest()
                blobs[blob] = content
                return FileRef(blob, len(content), executable)

            plan_install(package, env, requested=True, read_blob=blobs.__getitem__, put_blob=put)
    except ArchiveError as exc:
        return Outcome(exc.rule)
    except StoreError as exc:
        return Outcome(f"store:{type(exc).__name__}")
    return Outcome("accepted")
