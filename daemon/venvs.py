"""Virtual environments: asking a venv's own interpreter what it is, and
reading what its site-packages already holds (adoption)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import packaging

from .bytecode import is_bytecode
from .errors import InterpreterError, NotAVenv

# Runs inside the venv's interpreter (CPython 3.9+): the version, tags and
# paths must come from that interpreter, never from the daemon's. packaging is
# pure Python and supports 3.9; it is appended to sys.path so that nothing of
# the daemon's environment shadows the venv's own modules.
_PROBE = r"""
import importlib.util, json, platform, sys, sysconfig
sys.path.append(sys.argv[1])
from packaging import tags
paths = sysconfig.get_paths()
print(json.dumps({
    "implementation": sys.implementation.name,
    "version": platform.python_version(),
    "version_info": list(sys.version_info[:2]),
    "cache_tag": sys.implementation.cache_tag,
    "magic": importlib.util.MAGIC_NUMBER.hex(),
    "prefix": sys.prefix,
    "base_prefix": sys.base_prefix,
    "purelib": paths["purelib"],
    "platlib": paths["platlib"],
    "scripts": paths["scripts"],
    "tags": [str(t) for t in tags.sys_tags()],
}))
"""
PROBE_TIMEOUT = 60


@dataclass(frozen=True)
class Interpreter:
    python: str
    version: str
    cache_tag: str
    magic: str  # importlib.util.MAGIC_NUMBER, hex
    tags: list[str]
    site_packages: str  # relative to the venv root
    scripts: str
    include: str


def venv_of_interpreter(path: Path) -> Path | None:
    """The venv whose bin/ holds `path` (its python, or any file there), by
    the path as given: venv/bin/python is a symlink to the base interpreter."""
    if path.is_dir() or not (path.is_file() or path.is_symlink()):
        return None
    folder = Path(os.path.abspath(path)).parent
    if folder.name in ("bin", "Scripts") and (folder.parent / "pyvenv.cfg").is_file():
        return folder.parent
    return None


def venv_path(path: str | os.PathLike[str]) -> str:
    """Where a venv is, as its record names it: the real path of its parent
    and its own name. A venv registered in symlink mode is itself a symlink
    into the view (docs/VIEW.md): resolving it would name the view."""
    absolute = os.path.abspath(path)
    parent, name = os.path.split(absolute)
    return os.path.join(os.path.realpath(parent), name) if name else absolute


def venv_root(path: str | os.PathLike[str]) -> Path:
    """The venv's canonical root; refuses anything that is not a venv, and a
    path that is itself a symlink (it could point anywhere later)."""
    given = Path(path)
    inside = venv_of_interpreter(given)
    if inside is not None:
        raise NotAVenv(
            f"{given} is the interpreter of the virtual environment {inside}, not the environment",
            hint=f"pass the venv's directory instead: {inside}",
        )
    if given.is_symlink():
        raise NotAVenv(f"{given} is a symlink; pass the real directory ({given.resolve()})")
    root = given.resolve()
    if not root.is_dir():
        raise NotAVenv(f"{given} does not exist or is not a directory")
    if not (root / "pyvenv.cfg").is_file():
        raise NotAVenv(f"{given} is not a virtual environment (no pyvenv.cfg)")
    return root


_probed: dict[tuple[object, ...], Interpreter] = {}
_probed_lock = threading.Lock()


def _probe_key(root: Path, python: Path) -> tuple[object, ...] | None:
    """What makes two venvs' interpreters answer the same: the same
    interpreter binary (resolved, unchanged) and the same pyvenv.cfg apart
    from its `command` line (which names the venv)."""
    try:
        real = os.path.realpath(python)
        st = os.stat(real)
        config = (root / "pyvenv.cfg").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    settings = tuple(
        sorted(
            line.strip() for line in config.splitlines() if line.strip() and not line.startswith("command")
        )
    )
    return real, st.st_ino, st.st_size, st.st_mtime_ns, settings


def probe(root: Path) -> Interpreter:
    """Ask the venv's interpreter (once per interpreter binary and venv
    configuration: a new venv of an interpreter already asked reuses its
    answer, whose paths are relative to the venv root)."""
    python = root / "bin" / "python"
    if not python.exists():
        raise InterpreterError(f"{root} has no bin/python")
    key = _probe_key(root, python)
    with _probed_lock:
        known = _probed.get(key) if key is not None else None
    if known is not None:
        found = dataclasses.replace(known, python=str(python))  # everything else is relative to the root
    else:
        found = _probe(root, python)
        if key is not None:
            with _probed_lock:
                _probed[key] = found
    check_site_packages(root, found.site_packages)
    return found


def check_site_packages(root: Path, site_packages: str) -> None:
    """Refuse a site-packages outside the venv or reached through a symlink
    (`lib/` or site-packages itself): registering replaces site-packages, and
    that must never touch a directory outside the venv."""
    if os.path.isabs(site_packages) or site_packages.split(os.sep)[0] == os.pardir:
        raise NotAVenv(
            f"{root}'s site-packages resolves outside it ({os.path.normpath(root / site_packages)})",
            hint="make lib/ and site-packages real directories inside the venv",
        )
    here = root
    for part in Path(site_packages).parts:
        here = here / part
        if here.is_symlink():
            raise NotAVenv(
                f"{here} is a symlink; nwcache registers only a site-packages that is a real directory of the venv",
                hint="make lib/ and site-packages real directories inside the venv",
            )


def _probe(root: Path, python: Path) -> Interpreter:
    packaging_parent = str(Path(packaging.__file__).parent.parent)
    try:
        # -B: packaging is imported from nwcache's own environment, where the
        # probe must not write bytecode (nothing is written outside the store
        # and the registered venv).
        done = subprocess.run(
            [str(python), "-E", "-s", "-B", "-c", _PROBE, packaging_parent],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InterpreterError(f"{python} did not run: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InterpreterError(f"{python} failed to describe itself: {last}")
    info = json.loads(done.stdout)
    if info["implementation"] != "cpython" or tuple(info["version_info"]) < (3, 9):
        raise InterpreterError(
            f"{python} is {info['implementation']} {info['version']}; nwcache needs CPython 3.9+"
        )
    real_root = os.path.realpath(root)  # the view's directory once the venv links there
    if os.path.realpath(info["prefix"]) != real_root or info["prefix"] == info["base_prefix"]:
        raise NotAVenv(f"{python} does not run as a virtual environment rooted at {root}")
    if info["purelib"] != info["platlib"]:
        raise NotAVenv(
            f"{root} installs pure and platform libraries in different directories; nwcache serves one site-packages"
        )

    def rel(path: str) -> str:
        return os.path.relpath(os.path.realpath(path), real_root)

    major, minor = info["version_info"]
    return Interpreter(
        python=str(python),
        version=info["version"],
        cache_tag=info["cache_tag"],
        magic=info["magic"],
        tags=info["tags"],
        site_packages=rel(info["purelib"]),
        scripts=rel(info["scripts"]),
        include=f"include/site/python{major}.{minor}",
    )


@dataclass
class AdoptedDist:
    """A distribution found installed in site-packages."""

    name: str
    version: str
    dist_info: str
    files: dict[str, bool] = field(default_factory=dict)  # site-relative path -> executable
    external: list[str] = field(default_factory=list)


def _metadata_field(text: str, key: str) -> str:
    for line in text.splitlines():
        if not line.strip():
            break
        k, _, v = line.partition(":")
        if k.strip().lower() == key.lower():
            return v.strip()
    return ""


def scan_site_packages(site: Path) -> tuple[list[AdoptedDist], dict[str, bool]]:
    """Every regular file under site-packages, grouped by the distribution
    whose RECORD lists it; files no RECORD claims are returned apart.
    Symlinks and special files are refused: the view serves regular files.
    Cached bytecode is left out: the store compiles its own (daemon/bytecode.py)."""
    on_disk = {rel: executable for rel, executable in _walk(site) if not is_bytecode(rel)}

    def read_text(rel: str) -> str | None:
        full = site / rel
        return full.read_text(encoding="utf-8", errors="replace") if full.is_file() else None

    return group_distributions(on_disk, read_text)


def group_distributions(
    files: dict[str, bool], read_text: Callable[[str], str | None]
) -> tuple[list[AdoptedDist], dict[str, bool]]:
    """Group site-packages paths (path -> executable) by the .dist-info whose
    RECORD lists them (or that holds them); the rest is unowned."""
    dists: list[AdoptedDist] = []
    claimed: set[str] = set()
    dist_infos = sorted(
        {p.split("/", 1)[0] for p in files if "/" in p and p.split("/", 1)[0].endswith(".dist-info")}
    )
    for dist_info in dist_infos:
        text = read_text(f"{dist_info}/METADATA") or ""
        stem = dist_info.removesuffix(".dist-info")
        name = _metadata_field(text, "Name") or stem.rpartition("-")[0]
        version = _metadata_field(text, "Version") or stem.rpartition("-")[2]
        dist = AdoptedDist(name, version, dist_info)
        record = read_text(f"{dist_info}/RECORD")
        listed = [row[0] for row in csv.reader(io.StringIO(record)) if row] if record is not None else []
        for entry in listed:
            normal = os.path.normpath(entry)
            if normal.startswith(".."):
                dist.external.append(entry)
            elif normal in files and normal not in claimed:
                dist.files[normal] = files[normal]
                claimed.add(normal)
        # Whatever else sits in the .dist-info belongs to it too.
        for path, executable in files.items():
            if path.startswith(dist_info + "/") and path not in claimed:
                dist.files[path] = executable
                claimed.add(path)
        dists.append(dist)
    unowned = {p: x for p, x in files.items() if p not in claimed}
    return dists, unowned


def _walk(site: Path) -> Iterator[tuple[str, bool]]:
    for dirpath, dirnames, filenames in os.walk(site):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, site)
            if not os.path.isfile(full) or os.path.islink(full):
                raise NotAVenv(
                    f"{full} is not a regular file; nwcache adopts regular files only",
                    hint="remove it or replace it with a copy",
                )
            yield rel, bool(st.st_mode & 0o111)


def sha256_file(path: Path) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            hasher.update(block)
            size += len(block)
    return hasher.hexdigest(), size
