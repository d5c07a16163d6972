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
from dataclasses import dataclass

from installer.scripts import Script
from installer.utils import parse_entrypoints

from .errors import StoreError
from .schema import EnvRecord, FileRef, Installed, PackageRecord

INSTALLER_NAME = b"nwcache\n"


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
    if path == f"{pkg.dist_info}/RECORD" or path.startswith(f"{pkg.dist_info}/RECORD."):
        return None
    data_dir = pkg.dist_info.removesuffix(".dist-info") + ".data/"
    if not path.startswith(data_dir):
        return Placement("site", path)
    category, _, rest = path[len(data_dir) :].partition("/")
    if category in ("purelib", "platlib"):
        return Placement("site", rest)
    if env is None:
        raise ValueError(f"{path} is placed per environment")
    if category == "scripts":
        return Placement("outside", f"{env.scripts}/{rest}")
    if category == "headers":
        return Placement("outside", f"{env.include}/{pkg.name}/{rest}")
    if category == "data":
        return Placement("outside", rest)
    raise ValueError(f"unknown .data category {category!r} in {path}")


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
    entry_points = pkg.files.get(f"{pkg.dist_info}/entry_points.txt")
    if entry_points is not None:
        text = read_blob(entry_points.blob).decode("utf-8")
        for name, module, attr, section in parse_entrypoints(text):
            _, content = Script(name, module, attr, section).generate(env.python, "posix")
            outside[f"{env.scripts}/{name}"] = put_blob(content, True)
    interpreter = {
        f"{env.scripts}/{n}" for n in ("python", "python3", f"python{'.'.join(env.version.split('.')[:2])}")
    }
    clobbering = sorted(interpreter.intersection(outside))
    if clobbering:
        raise StoreError(
            f"{pkg.name} {pkg.version} would overwrite the environment's interpreter ({', '.join(clobbering)})",
            hint="the archive is hostile or broken; nothing was installed",
        )
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
