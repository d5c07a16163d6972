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

import functools
from collections.abc import Collection
from email.parser import HeaderParser

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

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


@functools.lru_cache(maxsize=8192)
def _parsed(text: str) -> Requirement | None:
    """A Requires-Dist line parsed once per daemon run (packaging's parser
    was a third of a warm 33-wheel install's check)."""
    try:
        return Requirement(text)
    except InvalidRequirement:
        return None


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
    (canonical names): theirs, and the others' on them."""
    have = {canonicalize_name(i.name): i for i in gen.packages}
    markers = environment(env)
    found = []
    for key, installed in sorted(have.items()):
        for text in requires(store, installed.package):
            req = _parsed(text)
            if req is None:
                continue
            target = canonicalize_name(req.name)
            if key not in changed and target not in changed:
                continue
            if req.marker is not None and not req.marker.evaluate(markers):
                continue
            other = have.get(target)
            if other is None:
                found.append(f"{installed.name} {installed.version} requires {req}, which is not installed")
            elif req.specifier and not req.specifier.contains(other.version, prereleases=True):
                found.append(
                    f"{installed.name} {installed.version} requires {req}, but {other.name} {other.version} is installed"
                )
    return found
