"""Where a package's files go in an environment, as pip would put them.

Archive paths map to site-packages (the root, `.data/purelib`, `.data/platlib`)
or outside it (`.data/scripts` -> bin, `.data/headers` -> include/site/...,
`.data/data` -> the venv root). Installing also generates files for one
environment: console and gui scripts (entry points read with `installer`,
wrappers written as pip writes them, for the venv's interpreter), `#!python`
shebangs rewritten, INSTALLER, REQUESTED, direct_url.json and an installed
RECORD that lists everything with paths relative to site-packages. What pip
does and nwcache follows, byte for byte, is in docs/VIEW.md ("What installing
writes"); tests/test_pip_parity.py compares the two trees.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import heapq
import io
import json
import os
import posixpath
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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


Row = tuple[str, str, str]  # (path, hash, size) as an installed RECORD writes them


def _row(path: str, ref: FileRef) -> Row:
    return path, f"sha256={_b64(ref.blob)}", str(ref.size)


def _lines(rows: Iterable[Row]) -> list[tuple[Row, str]]:
    """(row, its RECORD line) for each row, in the given order. pip writes
    RECORD with the csv module's defaults: minimal quoting, CRLF line ends."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    lines = []
    for row in rows:
        writer.writerow(row)
        lines.append((row, out.getvalue()))
        out.seek(0)
        out.truncate()
    return lines


@dataclass(frozen=True)
class ArchiveRows:
    """The archive's RECORD as pip carries it into the installed RECORD:
    rows of files placed in site-packages under their installed path, every
    other row (directories `dir/,,`, RECORD itself) as the archive wrote it,
    hash and size kept as written; the rows of `.data` files placed outside
    site-packages apart, by archive path, since their paths depend on the
    environment."""

    site: tuple[tuple[Row, str], ...]  # sorted, with their lines
    data: dict[str, tuple[str, str]]  # archive path -> (hash, size)


@dataclass(frozen=True)
class PackageLayout:
    """What of a package's placement depends on the package alone, worked out
    once per package (the store keeps it by package id): installing numpy into
    a new venv then walks none of its thousand files again. Never modified,
    but for `rows`, filled at the package's first install (archive_rows())."""

    site: dict[str, FileRef]  # site_tree()
    data: tuple[str, ...]  # archive paths placed outside site-packages, per environment
    rows: list[ArchiveRows] = field(default_factory=list, compare=False)


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
    return PackageLayout(site, tuple(data))


def archive_rows(pkg: PackageRecord, layout: PackageLayout, read_blob: Callable[[str], bytes]) -> ArchiveRows:
    """The archive's RECORD read and mapped (ArchiveRows), once per layout."""
    if layout.rows:
        return layout.rows[0]
    record_path = f"{pkg.dist_info}/RECORD"
    record = pkg.files.get(record_path)
    if record is not None:
        archived: Iterable[list[str]] = csv.reader(read_blob(record.blob).decode("utf-8").splitlines())
    else:  # never for a stored archive (the store keeps its RECORD); rows from the files, then
        archived = [list(_row(path, ref)) for path, ref in sorted(pkg.files.items())]
    data = set(layout.data)
    site: list[Row] = []
    by_data: dict[str, tuple[str, str]] = {}
    listed_record = False
    for fields in archived:
        if not fields:
            continue
        path, hash_, size = [*fields, "", ""][:3]
        if path in data:
            by_data[path] = (hash_, size)
            continue
        placement = None if path.endswith("/") else place(pkg, None, path)
        site.append((placement.path if placement is not None else path, hash_, size))
        listed_record = listed_record or path == record_path
    if not listed_record:  # pip lists every file it wrote; RECORD without hash or size
        site.append((record_path, "", ""))
    made = ArchiveRows(tuple(_lines(sorted(site))), by_data)
    layout.rows[:] = [made]  # the same value whichever thread gets here first
    return made


def _is_entry_point_wrapper(name: str, entry_points: set[str]) -> bool:
    """A `.data/scripts` file that setuptools wrote for an entry point (EP,
    EP.exe, EP-script.py, EP.pya): pip does not install it, it generates EP."""
    lower = name.lower()
    for suffix in (".exe", "-script.py", ".pya"):
        if lower.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name in entry_points


def script_specs(
    scripts: list[tuple[str, str, str, ScriptSection]], version: str
) -> list[tuple[str, str, str]]:
    """(file name, module, attribute) of each wrapper pip generates: the
    entry points' names, except pip's and easy_install's versioned names,
    which pip writes for the interpreter it installs into (pip, pip3,
    pip3.N; easy_install, easy_install-3.N) whatever the wheel says."""
    major, _, rest = version.partition(".")
    short = f"{major}.{rest.partition('.')[0]}"
    console = {name: (module, attr) for name, module, attr, section in scripts if section == "console"}
    gui = {name: (module, attr) for name, module, attr, section in scripts if section == "gui"}
    out: list[tuple[str, str, str]] = []
    pip = console.pop("pip", None)
    if pip is not None:
        out += [(name, *pip) for name in ("pip", f"pip{major}", f"pip{short}")]
        for name in [n for n in console if re.fullmatch(r"pip(\d+(\.\d+)?)?", n)]:
            del console[name]
    easy_install = console.pop("easy_install", None)
    if easy_install is not None:
        out += [(name, *easy_install) for name in ("easy_install", f"easy_install-{short}")]
        for name in [n for n in console if re.fullmatch(r"easy_install(-\d+\.\d+)?", n)]:
            del console[name]
    out += [(name, *target) for name, target in console.items()]
    out += [(name, *target) for name, target in gui.items()]
    return out


# The wrapper pip 26 writes for a console or gui entry point on POSIX.
_WRAPPER = """\
import sys
from {module} import {import_name}
if __name__ == '__main__':
    sys.argv[0] = sys.argv[0].removesuffix('.exe')
    sys.exit({func}())
"""
SHEBANG_MAX = 127  # bytes of a shebang line Linux reads, '#!' and the newline included


def wrapper(module: str, attr: str, python: str) -> bytes:
    """A console or gui script as pip writes it: a plain shebang naming the
    interpreter when it is short enough and has no space, otherwise a /bin/sh
    line that execs the interpreter (quoted when it has a space)."""
    code = _WRAPPER.format(module=module, import_name=attr.split(".")[0], func=attr).encode("utf-8")
    executable = python.encode("utf-8")
    if b" " not in executable and len(executable) + 3 <= SHEBANG_MAX:
        return b"#!" + executable + b"\n" + code
    quoted = b'"' + executable + b'"' if b" " in executable else executable
    return b"#!/bin/sh\n'''exec' " + quoted + b' "$0" "$@"\n' + b"' '''\n" + code


_archive_hashes: dict[tuple[str, int, int, int, int], str] = {}
_archive_hashes_lock = threading.Lock()


def direct_url(archive: str | os.PathLike[str]) -> bytes | None:
    """direct_url.json (PEP 610) for an install from a local archive, as pip
    writes it: the file's URL and sha256, keys sorted, no newline at the end.
    None when the archive can no longer be read (its content is stored by
    now, so the install goes on without it). The hash is kept by the file's
    identity: installing one file into many venvs reads it once."""
    path = os.path.normpath(os.path.abspath(archive))
    try:
        st = os.stat(path)
        key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with _archive_hashes_lock:
            digest = _archive_hashes.get(key)
        if digest is None:
            with open(path, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
            with _archive_hashes_lock:
                _archive_hashes[key] = digest
                while len(_archive_hashes) > 4096:
                    _archive_hashes.pop(next(iter(_archive_hashes)))
    except OSError:
        return None
    # pip's path_to_url. Imported here: urllib.request (http.client, email, ...)
    # would cost the daemon's start-up for one function.
    import urllib.parse
    import urllib.request

    url = urllib.parse.urljoin("file://", urllib.request.pathname2url(path))
    document = {"archive_info": {"hash": f"sha256={digest}", "hashes": {"sha256": digest}}, "url": url}
    return json.dumps(document, sort_keys=True).encode("utf-8")


def plan_install(
    pkg: PackageRecord,
    env: EnvRecord,
    *,
    requested: bool,
    read_blob: Callable[[str], bytes],
    put_blob: Callable[[bytes, bool], FileRef],
    layout: PackageLayout | None = None,
    archive: str | os.PathLike[str] | None = None,
) -> Installed:
    """The environment-specific files of installing `pkg` into `env`. Blobs
    of generated files are stored through `put_blob(content, executable)`.
    `layout` is package_layout(pkg), when the caller keeps it; `archive` the
    local file installed from (direct_url.json names it)."""
    site_gen: dict[str, FileRef] = {}
    outside: dict[str, FileRef] = {}
    if pkg.source == "adopted":
        return Installed(
            pkg.digest.removeprefix("sha256:"), pkg.name, pkg.version, requested, site_gen, outside
        )
    entry_points = pkg.files.get(f"{pkg.dist_info}/entry_points.txt")
    entry_text = read_blob(entry_points.blob) if entry_points is not None else None
    label = f"{pkg.name} {pkg.version}"
    # The store may hold the package from an install into another environment.
    check_installable(label, pkg.dist_info, pkg.name, pkg.files, entry_text, env)
    if layout is None:
        layout = package_layout(pkg)
    archived = archive_rows(pkg, layout, read_blob)
    scripts = console_scripts(label, entry_text) if entry_text is not None else []
    site_dir = os.path.join(env.path, env.site_packages)

    def from_site(rel: str) -> str:  # a venv-relative path as RECORD names it
        return os.path.relpath(os.path.join(env.path, rel), site_dir)

    # The installed RECORD, as pip writes it: the archive's rows, each file
    # under its installed path with the archive's hash and size (rehashed
    # where installing changed it), then the generated files, all sorted.
    rows: list[Row] = []
    wrappers = {name for name, _module, _attr, _section in scripts}
    scripts_dir = pkg.dist_info.removesuffix(".dist-info") + ".data/scripts/"
    for path in layout.data:
        ref = pkg.files[path]
        placement = place(pkg, env, path)
        if placement is None or placement.where != "outside":
            continue
        hash_, size = archived.data.get(path, ("", ""))
        if path.startswith(scripts_dir):  # not .data/data/bin/...: pip leaves that as it is
            if _is_entry_point_wrapper(posixpath.basename(path), wrappers):
                rows.append((path, hash_, size))  # not installed; pip keeps its row as it was
                continue
            content = read_blob(ref.blob)
            if content.startswith(b"#!python"):
                # pip's rule: a first line '#!python...' becomes the interpreter.
                _, _, rest = content.partition(b"\n")
                ref = put_blob(b"#!" + env.python.encode() + b"\n" + rest, ref.executable)
                _, hash_, size = _row(path, ref)
        outside[placement.path] = ref
        rows.append((from_site(placement.path), hash_, size))
    for name, module, attr in script_specs(scripts, env.version):
        ref = put_blob(wrapper(module, attr, env.python), True)
        outside[f"{env.scripts}/{name}"] = ref
        rows.append(_row(from_site(f"{env.scripts}/{name}"), ref))
    generated = {f"{pkg.dist_info}/INSTALLER": INSTALLER_NAME}
    document = direct_url(archive) if archive is not None else None
    if document is not None:
        generated[f"{pkg.dist_info}/direct_url.json"] = document
    if requested:
        generated[f"{pkg.dist_info}/REQUESTED"] = b""
    for path, content in generated.items():
        site_gen[path] = put_blob(content, False)
        rows.append(_row(path, site_gen[path]))
    out = io.StringIO()
    out.writelines(line for _, line in heapq.merge(archived.site, _lines(sorted(rows))))
    site_gen[f"{pkg.dist_info}/RECORD"] = put_blob(out.getvalue().encode(), False)
    return Installed(pkg.digest.removeprefix("sha256:"), pkg.name, pkg.version, requested, site_gen, outside)
