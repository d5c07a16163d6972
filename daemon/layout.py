"""Where a package's files go in an environment, as pip would put them.

Archive paths map to site-packages (the root, `.data/purelib`, `.data/platlib`)
or outside it (`.data/scripts` -> bin, `.data/headers` -> include/site/...,
`.data/data` -> the venv root). Installing also generates files for one
environment: console and gui scripts (with `installer`, for the venv's
interpreter), `#!python` shebangs rewritten, INSTALLER, REQUESTED and an
installed RECORD that lists everything with paths relative to site-packages.
"""

from __future__ import annotations

import base64
import csv
import heapq
import io
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from installer.scripts import Script
from installer.utils import parse_entrypoints

from nwcache.archive import ArchiveError
from nwcache.archive.paths import check_path

from .errors import NotInstallable
from .schema import EnvRecord, FileRef, Installed, PackageRecord

if TYPE_CHECKING:
    from installer.scripts import ScriptSection

INSTALLER_NAME = b"nwcache\n"
NAME_MAX = 255  # bytes in one file name component (Linux)
PATH_MAX = 4096  # bytes in a whole path, the terminating NUL included


@dataclass(frozen=True)
class Placement:
    """An archive path's destination: ("site", path) or ("outside", path)."""

    where: str
    path: str


def place(pkg: PackageRecord, env: EnvRecord | None, path: str) -> Placement | None:
    """None for files installing replaces (the archive's RECORD). Only
    placements outside site-packages need `env`."""
    if pkg.source == "adopted":
        return Placement("site", path)
    return place_path(pkg.dist_info, pkg.name, env, path)


def place_path(dist_info: str, name: str, env: EnvRecord | None, path: str) -> Placement | None:
    if path == f"{dist_info}/RECORD" or path.startswith(f"{dist_info}/RECORD."):
        return None
    data_dir = dist_info.removesuffix(".dist-info") + ".data/"
    if not path.startswith(data_dir):
        return Placement("site", path)
    category, _, rest = path[len(data_dir) :].partition("/")
    if not rest:
        raise NotInstallable(f"{path} names no file inside its .data category")
    if category in ("purelib", "platlib"):
        return Placement("site", rest)
    if env is None:
        raise ValueError(f"{path} is placed per environment")
    if category == "scripts":
        return Placement("outside", f"{env.scripts}/{rest}")
    if category == "headers":
        return Placement("outside", f"{env.include}/{name}/{rest}")
    if category == "data":
        return Placement("outside", rest)
    raise NotInstallable(f"unknown .data category {category!r} in {path}")


def interpreter_names(env: EnvRecord) -> set[str]:
    """The venv's interpreter as its scripts directory names it."""
    short = ".".join(env.version.split(".")[:2])
    return {f"{env.scripts}/{n}" for n in ("python", "python3", f"python{short}")}


def console_scripts(label: str, entry_points: bytes) -> list[tuple[str, str, str, ScriptSection]]:
    """(name, module, attribute, section) of every console and gui script,
    each name a single safe file name."""
    try:
        scripts = list(parse_entrypoints(entry_points.decode("utf-8")))
    except Exception as exc:  # configparser and decoding errors alike: the file is malformed
        raise NotInstallable(f"{label}: entry_points.txt is malformed ({type(exc).__name__})") from None
    for name, _module, _attr, _section in scripts:
        try:
            check_path(name)
        except ArchiveError:
            raise NotInstallable(f"{label}: entry point name {name!r} is not a file name") from None
        if "/" in name:
            raise NotInstallable(f"{label}: entry point name {name!r} is not a file name")
    return scripts


@dataclass
class Destinations:
    """Where a package's files would land: site-packages paths and venv-relative paths."""

    site: set[str] = field(default_factory=set)
    outside: set[str] = field(default_factory=set)


def check_installable(
    label: str, dist_info: str, name: str, paths: Iterable[str], entry_points: bytes | None, env: EnvRecord
) -> Destinations:
    """Refuse, before anything is stored, a package whose installation would
    harm the environment: an unknown .data category, a script or data file
    replacing the interpreter or pyvenv.cfg, a file landing outside the venv,
    inside site-packages by way of .data/data (the view serves that
    directory), or on a directory; an entry point that is not a file name."""
    out = Destinations()
    for path in paths:
        placement = place_path(dist_info, name, env, path)
        if placement is not None:
            (out.site if placement.where == "site" else out.outside).add(placement.path)
    if entry_points is not None:
        out.outside.update(f"{env.scripts}/{script[0]}" for script in console_scripts(label, entry_points))
    for dest in [*out.site, *out.outside]:
        if any(len(part.encode()) > NAME_MAX for part in dest.split("/")):
            raise NotInstallable(f"{label}: a component of {dest[:80]}... is longer than {NAME_MAX} bytes")
    interpreter = interpreter_names(env)
    protected = interpreter | {"pyvenv.cfg"}
    root = os.path.realpath(env.path)
    site = os.path.join(root, env.site_packages)
    real_site = os.path.realpath(site)
    for rel in sorted(out.outside):
        if rel in interpreter:
            raise NotInstallable(f"{label} would overwrite the environment's interpreter ({rel})")
        if rel in protected:
            raise NotInstallable(f"{label} would overwrite the environment's {rel}")
        lexical = os.path.normpath(os.path.join(root, rel))
        if len(lexical.encode()) >= PATH_MAX:
            raise NotInstallable(f"{label}: {rel[:80]}... is too long a path inside {root}")
        real = os.path.realpath(lexical)
        # site-packages may be a symlink to the view: compare with both its paths.
        if any(p.startswith(s + os.sep) for p in (lexical, real) for s in (site, real_site)):
            raise NotInstallable(f"{label} would write {rel} inside site-packages")
        if not real.startswith(root + os.sep):
            raise NotInstallable(f"{label} would write {rel} outside the environment")
        if real != lexical and os.path.relpath(real, root) in protected:
            raise NotInstallable(f"{label} would overwrite the environment's {rel}")
        if os.path.isdir(real):
            raise NotInstallable(f"{label} would replace the directory {rel} with a file")
    return out


def site_tree(pkg: PackageRecord, env: EnvRecord) -> dict[str, FileRef]:
    """The package's own files that land in site-packages."""
    tree: dict[str, FileRef] = {}
    for path, ref in pkg.files.items():
        placement = place(pkg, env, path)
        if placement is not None and placement.where == "site":
            tree[placement.path] = ref
    return tree


def _b64(hex_digest: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(hex_digest)).rstrip(b"=").decode()


def _record_lines(rows: dict[str, FileRef]) -> list[tuple[str, str]]:
    """(path, installed RECORD line) for each row, sorted by path."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    lines = []
    for path in sorted(rows):
        writer.writerow([path, f"sha256={_b64(rows[path].blob)}", rows[path].size])
        lines.append((path, out.getvalue()))
        out.seek(0)
        out.truncate()
    return lines


@dataclass(frozen=True)
class PackageLayout:
    """What of a package's placement depends on the package alone, worked out
    once per package (the store keeps it by package id): installing numpy into
    a new venv then walks none of its thousand files again. Never modified."""

    site: dict[str, FileRef]  # site_tree()
    data: tuple[str, ...]  # archive paths placed outside site-packages, per environment
    record_lines: tuple[tuple[str, str], ...]  # the installed RECORD's lines for `site`, sorted


def package_layout(pkg: PackageRecord) -> PackageLayout:
    site: dict[str, FileRef] = {}
    data: list[str] = []
    if pkg.source == "adopted":
        site = dict(pkg.files)
    else:
        data_dir = pkg.dist_info.removesuffix(".dist-info") + ".data/"
        for path, ref in pkg.files.items():
            if path.startswith(data_dir) and path[len(data_dir) :].partition("/")[0] not in (
                "purelib",
                "platlib",
            ):
                data.append(path)
                continue
            placement = place(pkg, None, path)
            if placement is not None:
                site[placement.path] = ref
    return PackageLayout(site, tuple(data), tuple(_record_lines(site)))


def plan_install(
    pkg: PackageRecord,
    env: EnvRecord,
    *,
    requested: bool,
    read_blob: Callable[[str], bytes],
    put_blob: Callable[[bytes, bool], FileRef],
    layout: PackageLayout | None = None,
) -> Installed:
    """The environment-specific files of installing `pkg` into `env`. Blobs
    of generated files are stored through `put_blob(content, executable)`.
    `layout` is package_layout(pkg), when the caller keeps it."""
    site_gen: dict[str, FileRef] = {}
    outside: dict[str, FileRef] = {}
    if pkg.source == "adopted":
        return Installed(
            pkg.digest.removeprefix("sha256:"), pkg.name, pkg.version, requested, site_gen, outside
        )
    entry_points = pkg.files.get(f"{pkg.dist_info}/entry_points.txt")
    label = f"{pkg.name} {pkg.version}"
    # The store may hold the package from an install into another environment.
    check_installable(
        label,
        pkg.dist_info,
        pkg.name,
        pkg.files,
        read_blob(entry_points.blob) if entry_points is not None else None,
        env,
    )
    if layout is None:
        layout = package_layout(pkg)
    for path in layout.data:
        ref = pkg.files[path]
        placement = place(pkg, env, path)
        if placement is None or placement.where != "outside":
            continue
        if placement.path.startswith(env.scripts + "/"):
            content = read_blob(ref.blob)
            if content.startswith(b"#!python"):
                # pip's rule: '#!python' or '#!pythonw' becomes the venv's interpreter.
                _, nl, rest = content.partition(b"\n")
                content = b"#!" + env.python.encode() + nl + rest
            outside[placement.path] = put_blob(content, True)
        else:
            outside[placement.path] = ref
    if entry_points is not None:
        for name, module, attr, section in console_scripts(label, read_blob(entry_points.blob)):
            _, content = Script(name, module, attr, section).generate(env.python, "posix")
            outside[f"{env.scripts}/{name}"] = put_blob(content, True)
    site_gen[f"{pkg.dist_info}/INSTALLER"] = put_blob(INSTALLER_NAME, False)
    if requested:
        site_gen[f"{pkg.dist_info}/REQUESTED"] = put_blob(b"", False)
    # The installed RECORD, as pip writes it: every file with its hash and
    # size, paths relative to site-packages, RECORD itself without either.
    # The package's own lines are the layout's; the few generated ones
    # (replacing a package file of the same path) are merged in by path.
    extra: dict[str, FileRef] = dict(site_gen)
    site_dir = os.path.join(env.path, env.site_packages)
    for path, ref in outside.items():
        extra[os.path.relpath(os.path.join(env.path, path), site_dir)] = ref
    own: Iterable[tuple[str, str]] = layout.record_lines
    if not extra.keys().isdisjoint(layout.site):
        own = [line for line in layout.record_lines if line[0] not in extra]
    record_path = f"{pkg.dist_info}/RECORD"
    out = io.StringIO()
    out.writelines(line for _, line in heapq.merge(own, _record_lines(extra)))
    csv.writer(out, lineterminator="\n").writerow([record_path, "", ""])
    site_gen[record_path] = put_blob(out.getvalue().encode(), False)
    return Installed(pkg.digest.removeprefix("sha256:"), pkg.name, pkg.version, requested, site_gen, outside)
