"""The dependency check of a plain `nwcache install FILE.whl --env V`
(docs/INSTALL-BY-NAME.md): after the install, the requirements of what it
installed, and those of the other distributions on what it replaced, are
checked against the generation, from the METADATA the store holds. The
client prints each problem as a `warning:` line (the full command line,
`--strict` included, checks before installing, client/resolve.py).

Markers are evaluated for the venv: its interpreter's version (recorded at
registration) over this machine's platform (the venv runs here).
"""

from __future__ import annotations

from collections.abc import Collection
from email.parser import HeaderParser

from packaging.markers import default_environment
from packaging.utils import canonicalize_name

from nwcache import deps
from nwcache.deps import Dist

from .schema import EnvRecord, GenerationRecord
from .store import Store

_requires: dict[str, list[str]] = {}  # package id hex -> Requires-Dist (a package never changes)


def requires(store: Store, package: str) -> list[str]:
    known = _requires.get(package)
    if known is not None:
        return known
    pkg = store.get_package(package)
    found: list[str] = []
    if pkg is not None:
        ref = pkg.files.get(f"{pkg.dist_info}/METADATA")
        if ref is not None:
            text = store.read_blob(ref.blob).decode("utf-8", "replace")
            found = list(HeaderParser().parsestr(text).get_all("Requires-Dist") or [])
    _requires[package] = found
    return found


def environment(env: EnvRecord) -> dict[str, str]:
    markers = {key: str(value) for key, value in default_environment().items()}
    major_minor = ".".join(env.version.split(".")[:2])
    markers.update(
        python_version=major_minor,
        python_full_version=env.version,
        implementation_version=env.version,
        implementation_name="cpython",
        platform_python_implementation="CPython",
        extra="",
    )
    return markers


def problems(store: Store, env: EnvRecord, gen: GenerationRecord, changed: Collection[str]) -> list[str]:
    """Missing or conflicting requirements in `gen` that involve `changed`
    (canonical names): theirs, and the others' on them (nwcache/deps.py,
    the client's check too)."""
    have: dict[str, Dist] = {
        canonicalize_name(i.name): Dist(i.name, i.version, requires(store, i.package)) for i in gen.packages
    }
    return deps.problems(have, changed, environment(env))
