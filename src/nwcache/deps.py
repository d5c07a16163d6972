"""The dependency check shared by the client and the daemon
(docs/INSTALL-BY-NAME.md): missing or conflicting requirements among a
set of distributions, and whether a venv already satisfies requirements
(then an install by name has nothing to do, as `uv pip install` answers
at once). Pure functions over names, versions and Requires-Dist; each side
brings its distributions (the client from the venv, the daemon from the
store) and the markers of the venv's interpreter.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name


@dataclass
class Dist:
    """One installed (or about to be installed) distribution."""

    name: str
    version: str
    requires: list[str] = field(default_factory=list)  # Requires-Dist, as written


@functools.lru_cache(maxsize=8192)
def _parsed(text: str) -> Requirement | None:
    """A Requires-Dist line parsed once per process (packaging's parser was
    a third of a warm 33-wheel install's check in the daemon); None for a
    broken line in someone's METADATA, which is not ours to judge."""
    try:
        return Requirement(text)
    except InvalidRequirement:
        return None


def _requirements(texts: Iterable[str]) -> Iterable[Requirement]:
    for text in texts:
        req = _parsed(text)
        if req is not None:
            yield req


def problems(dists: Mapping[str, Dist], involved: Collection[str], markers: Mapping[str, str]) -> list[str]:
    """Missing or conflicting requirements in `dists` (by canonical name)
    that involve `involved` (canonical names installed, replaced or
    removed): their own requirements, and the others' on them (as pip and
    uv check). Markers are evaluated for `markers` with no extra."""
    environment = {**markers, "extra": ""}
    found = []
    for key, dist in sorted(dists.items()):
        for req in _requirements(dist.requires):
            target = canonicalize_name(req.name)
            if key not in involved and target not in involved:
                continue
            if req.marker is not None and not req.marker.evaluate(environment):
                continue
            have = dists.get(target)
            if have is None:
                found.append(f"{dist.name} {dist.version} requires {req}, which is not installed")
            elif req.specifier and not req.specifier.contains(have.version, prereleases=True):
                found.append(
                    f"{dist.name} {dist.version} requires {req}, but {have.name} {have.version} is installed"
                )
    return found


def satisfied(requirements: Iterable[str], dists: Mapping[str, Dist], markers: Mapping[str, str]) -> bool:
    """Whether the distributions already satisfy every requirement and,
    recursively, the requirements of what satisfies them (with the extras
    asked for): what `uv pip install` checks before it resolves. A
    requirement with a URL is never satisfied here (the resolver decides)."""
    todo: list[tuple[Requirement, str]] = []
    for text in requirements:
        try:
            todo.append((Requirement(text), ""))
        except InvalidRequirement:
            return False
    seen: set[tuple[str, str]] = set()
    while todo:
        req, extra = todo.pop()
        if req.url is not None:
            return False
        if req.marker is not None and not req.marker.evaluate({**markers, "extra": extra}):
            continue
        key = canonicalize_name(req.name)
        have = dists.get(key)
        if have is None or not req.specifier.contains(have.version, prereleases=True):
            return False
        for wanted in ["", *sorted(canonicalize_name(e) for e in req.extras)]:
            if (key, wanted) in seen:
                continue
            seen.add((key, wanted))
            todo += [(r, wanted) for r in _requirements(have.requires)]
    return True
