"""Resolutions kept between runs (docs/INSTALL-BY-NAME.md, "The resolution
cache"): the PEP 751 lock `uv pip compile` wrote, keyed by everything that
decides it, reused while it is fresh.

The key is a sha256 over: the requirements as given and the bytes of every
requirement and constraint file; the index options (credentials included,
hashed only) and a listing of local --find-links directories; --no-deps,
--upgrade, --pre; the interpreter's markers and tags; the venv's installed
names and versions (uv keeps them as preferences); the uv binary (path,
size, mtime); the working directory, the UV_* environment variables and the
uv.toml/pyproject.toml files uv would read (their size and mtime).

Freshness is a window, as an HTTP cache's max-age: a lock younger than
NWCACHE_RESOLVE_TTL seconds (default 600, the max-age PyPI gives its simple
pages) is used without running uv; `--refresh` (or NWCACHE_RESOLVE_TTL=0)
resolves again, `--offline` takes a cached lock of any age. A release or a
yank published inside the window is seen once the window ends. The lock
holds no credential (uv writes URLs without userinfo).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_TTL = 600.0
VERSION = 1  # of the key's layout


def directory() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nwcache" / "resolutions"


def _stat(path: str | Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _configs() -> list[Any]:
    """The uv configuration files uv may read for `uv pip compile` here."""
    found: list[Any] = []
    here = Path.cwd()
    for folder in [here, *here.parents]:
        for name in ("uv.toml", "pyproject.toml"):
            st = _stat(folder / name)
            if st is not None:
                found.append([str(folder / name), st])
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    for path in (os.path.join(config, "uv", "uv.toml"), "/etc/uv/uv.toml", "/etc/xdg/uv/uv.toml"):
        st = _stat(path)
        if st is not None:
            found.append([path, st])
    return found


def _listing(link: str) -> Any:
    """A local --find-links directory's files (name, size, mtime); a URL as it is."""
    if "://" in link and not link.startswith("file://"):
        return link
    folder = link.removeprefix("file://")
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return [link, None]
    return [link, [[n, _stat(os.path.join(folder, n))] for n in names]]


def key(
    *,
    requirements: Sequence[str],
    files: Sequence[str],
    options: dict[str, Any],
    find_links: Sequence[str],
    markers: dict[str, str],
    tags: Sequence[str],
    installed: Sequence[tuple[str, str]],
    uv: str,
) -> str | None:
    """The key of one resolution; None when a file it depends on cannot be
    read (uv then says why)."""
    contents = []
    for path in files:
        try:
            contents.append(hashlib.sha256(Path(path).read_bytes()).hexdigest())
        except OSError:
            return None
    data = [
        VERSION,
        list(requirements),
        list(files),
        contents,
        options,
        [_listing(link) for link in find_links],
        markers,
        list(tags),
        sorted(installed),
        [uv, _stat(uv)],
        os.getcwd(),
        sorted((k, v) for k, v in os.environ.items() if k.startswith("UV_")),
        _configs(),
    ]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def ttl() -> float | None:
    """NWCACHE_RESOLVE_TTL in seconds; None when it is not a number."""
    text = os.environ.get("NWCACHE_RESOLVE_TTL")
    if text is None or not text.strip():
        return DEFAULT_TTL
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 else None


def load(digest: str, max_age: float | None) -> str | None:
    """The cached lock, when it is younger than max_age (None: any age)."""
    path = directory() / f"{digest}.toml"
    try:
        age = time.time() - path.stat().st_mtime
        if max_age is not None and not 0 <= age < max_age:
            return None
        return path.read_text()
    except OSError:
        return None


def save(digest: str, lock: str) -> None:
    """Keep a lock (written whole, then renamed into place); a cache that
    cannot be written costs time, nothing else."""
    folder = directory()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temp = folder / f".{digest}.{os.getpid()}"
        temp.write_text(lock)
        os.replace(temp, folder / f"{digest}.toml")
    except OSError:
        pass
