"""The files of a venv outside site-packages that installing writes (console
and GUI scripts, headers, data; daemon/layout.py says which): what a change
of generation writes and removes there, and what start-up repairs after a
daemon was killed between a flip and those writes. A file the user changed
since nwcache wrote it is left alone (and logged).

Where they go depends on the link mode: in bind mode the venv's root is a
real directory (`RealRoot`, written atomically by rename); in symlink mode it
is the venv's root layer, which the view owns (`LayerRoot` reads it, and the
service has the view place the files: the daemon never goes through its own
mount, daemon/view.py).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .errors import StoreError
from .schema import FileRef
from .venvs import sha256_file

log = logging.getLogger("nwcache.daemon")

Content = tuple[str, int]  # sha256 hex, size


class Root(Protocol):
    def found(self, rel: str) -> Content | None:
        """The content of the regular file at `rel`, None if there is none."""

    def occupied(self, rel: str) -> bool:
        """Whether anything (a file, a link, a directory) is at `rel`."""


@dataclass
class Plan:
    put: dict[str, FileRef] = field(default_factory=dict)  # write (or replace) these
    drop: list[str] = field(default_factory=list)  # remove these


def refuse_escape(rel: str, site_packages: str) -> None:
    """A path outside site-packages and inside the venv, or StoreError (a
    hostile archive's data path)."""
    parts = rel.split("/")
    if (
        rel.startswith("/")
        or any(part in ("", ".", "..") for part in parts)
        or rel == site_packages
        or rel.startswith(site_packages + "/")
    ):
        raise StoreError(
            f"{rel} would be written outside the venv's root",
            hint="the archive is hostile; nothing more was written",
        )


def plan_change(old: Mapping[str, FileRef], new: Mapping[str, FileRef], root: Root) -> Plan:
    """From one generation's files to the next's: write what is new or
    changed, remove what went unless the user changed it since."""
    plan = Plan()
    for rel, ref in sorted(new.items()):
        if old.get(rel) == ref and root.found(rel) is not None:
            continue
        plan.put[rel] = ref
    for rel, ref in sorted(old.items()):
        if rel in new:
            continue
        if root.found(rel) == (ref.blob, ref.size):
            plan.drop.append(rel)
        elif root.occupied(rel):
            log.warning("left %s in place: it changed since nwcache wrote it", rel)
    return plan


def plan_settle(
    current: Mapping[str, FileRef], kept: Mapping[str, set[Content]], root: Root, generation: int
) -> Plan:
    """At start-up: bring the files to the current generation's, writing
    what is missing or still holds another kept generation's content and
    removing what only other generations name (unless the user changed it)."""
    plan = Plan()
    for rel in sorted(current.keys() | kept.keys()):
        found = root.found(rel)
        wanted = current.get(rel)
        if wanted is not None and found != (wanted.blob, wanted.size):
            if found is None and root.occupied(rel):
                log.warning("left %s in place: it is not a file nwcache wrote", rel)
            elif found is None or found in kept.get(rel, set()):
                log.warning("%s was at another generation; brought to generation %d", rel, generation)
                plan.put[rel] = wanted
            else:
                log.warning("left %s in place: it changed since nwcache wrote it", rel)
        elif wanted is None and found is not None and found in kept[rel]:
            log.warning("removed %s: generation %d does not hold it", rel, generation)
            plan.drop.append(rel)
    return plan


class LayerRoot:
    """A venv's root layer as `Root`: its regular files' bodies and every
    path it holds, as the view gave them (read on a worker thread)."""

    def __init__(self, files: Mapping[str, Path], paths: set[str]) -> None:
        self.files = files
        self.paths = paths

    def found(self, rel: str) -> Content | None:
        body = self.files.get(rel)
        return sha256_file(body) if body is not None else None

    def occupied(self, rel: str) -> bool:
        return rel in self.paths


class RealRoot:
    """A venv's root as a real directory (bind mode)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, rel: str) -> Path:
        """`root/rel`, refusing a path that would land outside the root (by
        `..`, an absolute path or a symlink on the way)."""
        target = self.root / rel
        real_parent = os.path.realpath(target.parent)
        if os.path.isabs(rel) or not (
            real_parent == str(self.root) or real_parent.startswith(str(self.root) + os.sep)
        ):
            raise StoreError(
                f"{rel} would be written outside {self.root}",
                hint="the archive is hostile; nothing more was written",
            )
        return target

    @staticmethod
    def temp_of(target: Path) -> Path:
        """Where a file is written before it is renamed into place."""
        return target.with_name(f".{target.name}.nwcache-new")

    def found(self, rel: str) -> Content | None:
        target = self.path(rel)
        return sha256_file(target) if target.is_file() and not target.is_symlink() else None

    def occupied(self, rel: str) -> bool:
        target = self.path(rel)
        return target.exists() or target.is_symlink()

    def clean(self, rels: list[str]) -> None:
        """Half-written files of a daemon killed while writing them."""
        for rel in rels:
            self.temp_of(self.path(rel)).unlink(missing_ok=True)

    def apply(self, plan: Plan, copy_blob: Callable[[FileRef, Path], None]) -> None:
        for rel, ref in sorted(plan.put.items()):
            target = self.path(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = self.temp_of(target)
            copy_blob(ref, temp)
            os.chmod(temp, 0o755 if ref.executable else 0o644)
            os.replace(temp, target)
        for rel in plan.drop:
            self.path(rel).unlink()


def copy_body(source: bytes | Path, out: Path) -> None:
    """A blob's bytes (inline, or its body file) as a new file `out`."""
    if isinstance(source, bytes):
        out.write_bytes(source)
    else:
        shutil.copyfile(source, out)
