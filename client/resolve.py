"""Install by name, the client's half (docs/INSTALL-BY-NAME.md): what the
venv's interpreter is and holds, uv's resolution to a PEP 751 lock, the
lock read with packaging.pylock, and the plan sent to the daemon.

The client resolves because it runs as the user, with the user's uv
configuration and credentials; the daemon downloads (it owns the store).
Nothing here writes outside a temporary directory; errors are ResolveError
(one message, one hint, an exit code).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import packaging
from packaging.pylock import (
    PackageArchive,
    PackageSdist,
    PackageWheel,
    Pylock,
    PylockSelectError,
    PylockUnsupportedVersionError,
    PylockValidationError,
)
from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, parse_tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from nwcache.deps import Dist, problems, satisfied
from nwcache.errors import NwcacheError

UV_TIMEOUT = 600

# Runs in the venv's own interpreter (CPython 3.9+), with nwcache's packaging
# appended to sys.path (as daemon/venvs.py probes): its marker environment,
# its tags, most preferred first, and the distributions it holds.
_PROBE = r"""
import json, sys
from importlib import metadata
installed = {}
path = list(sys.path)
for dist in metadata.distributions():  # before nwcache's packaging joins sys.path
    name = dist.metadata["Name"]
    if name:
        installed.setdefault(name, {"version": dist.version, "requires": list(dist.requires or [])})
sys.path.append(sys.argv[1])
from packaging import markers, tags
import sysconfig
print(json.dumps({
    "markers": markers.default_environment(),
    "tags": [str(t) for t in tags.sys_tags()],
    "installed": installed,
    "purelib": sysconfig.get_paths()["purelib"],
    "path": path,
}))
"""


class ResolveError(NwcacheError):
    """Resolving or building failed; its kind says how (NoSolution exits 4)."""

    def __init__(self, kind: str, message: str, hint: str) -> None:
        super().__init__(message, hint=hint, kind=kind)


@dataclass
class Facts:
    """What the venv's interpreter said of itself."""

    python: str
    markers: dict[str, str]
    tags: list[str]
    installed: dict[str, Dist]  # by canonical name


@dataclass
class Options:
    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    no_deps: bool = False
    upgrade: bool = False
    pre: bool = False
    offline: bool = False
    refresh: bool = False  # resolve again, whatever the resolution cache holds


@dataclass
class Chosen:
    """One distribution of the resolution: a file to download, or a local one."""

    name: str
    version: str
    filename: str
    url: str | None = None  # to download
    path: str | None = None  # a local file
    sha256: str | None = None
    size: int | None = None
    sdist: bool = False

    def download(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "filename": self.filename,
            "url": self.url,
            "sha256": self.sha256,
            "size": self.size,
        }


@dataclass
class Plan:
    chosen: list[Chosen]  # what to install (changed or new)
    kept: list[Chosen]  # resolved, already installed at that version
    remove: list[str]  # sync: installed, not locked

    def describe(self, facts: Facts) -> list[str]:
        lines = []
        for c in self.chosen:
            old = facts.installed.get(canonicalize_name(c.name))
            change = f"{c.name} {old.version} -> {c.version}" if old else f"+{c.name} {c.version}"
            where = c.path or (public(c.url) if c.url else "")
            lines.append(f"{change}  ({where})")
        lines += [f"-{facts.installed[n].name} {facts.installed[n].version}" for n in self.remove]
        return lines


def public(text: str) -> str:
    """A URL (or a requirement holding one) without userinfo: what messages,
    plans and the history may show."""
    import re

    return re.sub(r"//[^/@\s]*@", "//", text)


def _cache_file(venv: Path, python: Path) -> Path | None:
    """Where the interpreter's markers and tags are kept between runs: by
    what makes two runs answer alike (the interpreter binary unchanged, the
    venv's configuration apart from its `command` line, packaging's version,
    the kernel the markers name), in the user's cache. None: not cacheable
    (a venv that sees the system's site-packages)."""
    import hashlib
    import platform

    try:
        config = (venv / "pyvenv.cfg").read_text(encoding="utf-8", errors="replace")
        real = os.path.realpath(python)
        st = os.stat(real)
    except OSError:
        return None
    settings = sorted(
        line.strip() for line in config.splitlines() if line.strip() and not line.startswith("command")
    )
    if any(s.replace(" ", "").lower() == "include-system-site-packages=true" for s in settings):
        return None
    key = json.dumps(
        [
            real,
            st.st_ino,
            st.st_size,
            st.st_mtime_ns,
            settings,
            packaging.__version__,
            platform.release(),
            platform.version(),
        ]
    )
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nwcache" / "interpreters" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def _scan(site_packages: Path) -> dict[str, Dist]:
    """The distributions in site-packages, from their .dist-info (what
    importlib.metadata finds there, without running the interpreter)."""
    from email.parser import HeaderParser

    found: dict[str, Dist] = {}
    parser = HeaderParser()
    for info in sorted(site_packages.glob("*.dist-info")) + sorted(site_packages.glob("*.egg-info")):
        name_file = info / ("METADATA" if info.suffix == ".dist-info" else "PKG-INFO")
        try:
            headers = parser.parsestr(name_file.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        name, version = headers.get("Name"), headers.get("Version")
        if name and version:
            found.setdefault(
                canonicalize_name(name),
                Dist(str(name), str(version), list(headers.get_all("Requires-Dist") or [])),
            )
    return found


def probe(venv: Path) -> Facts:
    """The venv's markers, tags and distributions. The first time, its
    interpreter answers (and says where its site-packages is); later, the
    markers and tags come from the user's cache and the distributions from
    reading site-packages (~150 ms less, most of a warm install's client)."""
    python = venv / "bin" / "python"
    cache = _cache_file(venv, python) if (venv / "pyvenv.cfg").is_file() else None
    if cache is not None:
        try:
            known = json.loads(cache.read_text())
            site = venv / known["site_packages"]
            if site.is_dir():
                return Facts(str(python), known["markers"], known["tags"], _scan(site))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    facts, purelib, path = _run_probe(venv, python)
    root = os.path.realpath(venv)
    real_site = os.path.realpath(purelib)
    # Cached only when the venv's own site-packages is all the interpreter adds.
    others = [
        p
        for p in path
        if p and os.path.realpath(p).startswith(root + os.sep) and os.path.realpath(p) != real_site
    ]
    if cache is not None and real_site.startswith(root + os.sep) and not others:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            temp = cache.with_suffix(f".{os.getpid()}")
            temp.write_text(
                json.dumps(
                    {
                        "markers": facts.markers,
                        "tags": facts.tags,
                        "site_packages": os.path.relpath(real_site, root),
                    }
                )
            )
            os.replace(temp, cache)
        except OSError:
            pass  # an unwritable cache costs time, nothing else
    return facts


def _run_probe(venv: Path, python: Path) -> tuple[Facts, str, list[str]]:
    if not (venv / "pyvenv.cfg").is_file() or not python.exists():
        raise ResolveError(
            "NotAVenv",
            f"{venv} is not a virtual environment (no pyvenv.cfg or bin/python)",
            "pass the root of a virtual environment (the directory holding pyvenv.cfg)",
        )
    try:
        done = subprocess.run(
            [str(python), "-I", "-B", "-c", _PROBE, str(Path(packaging.__file__).parent.parent)],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ResolveError(
            "InterpreterError", f"{python} did not run: {exc}", "check the venv's interpreter"
        ) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ResolveError(
            "InterpreterError",
            f"{python} failed to describe itself: {last}",
            "check that the environment's python runs (CPython 3.9 or newer)",
        )
    info = json.loads(done.stdout)
    installed: dict[str, Dist] = {
        canonicalize_name(name): Dist(name, d["version"], d["requires"])
        for name, d in info["installed"].items()
    }
    return Facts(str(python), info["markers"], info["tags"], installed), info["purelib"], info["path"]


def uv_bin() -> str:
    import uv

    return uv.find_uv_bin()


def _pins(facts: Facts) -> str:
    """The venv's distributions as a PEP 751 lock holding only names and
    versions: written as uv's output file, they are its preferences (uv keeps
    a pinned version that still satisfies the request; --upgrade drops them)."""
    lines = ['lock-version = "1.0"', 'created-by = "nwcache"', ""]
    for dist in facts.installed.values():
        lines += [
            "[[packages]]",
            f"name = {json.dumps(str(canonicalize_name(dist.name)))}",
            f"version = {json.dumps(dist.version)}",
            "",
        ]
    return "\n".join(lines)


def index_args(options: Options) -> list[str]:
    """uv's arguments for where packages come from (resolving and building)."""
    argv: list[str] = []
    if options.index_url:
        argv += ["--index-url", options.index_url]
    for url in options.extra_index_urls:
        argv += ["--extra-index-url", url]
    for link in options.find_links:
        argv += ["--find-links", link]
    if options.offline:
        argv.append("--offline")
    return argv


def compile_lock(
    requirements: Sequence[str],
    requirement_files: Sequence[str],
    constraint_files: Sequence[str],
    options: Options,
    facts: Facts,
    out: Path,
) -> None:
    """`uv pip compile ... -p VENV/bin/python -o out` (PEP 751)."""
    inputs = []
    if requirements:
        spec = out.parent / "requirements.in"
        spec.write_text("".join(r + "\n" for r in requirements))
        inputs.append(str(spec))
    inputs += requirement_files
    if not options.upgrade and facts.installed:  # (uv refuses a lock without packages)
        out.write_text(_pins(facts))
    argv = [uv_bin(), "pip", "compile", "--quiet", "--color", "never", "--no-progress", *inputs]
    for constraints in constraint_files:
        argv += ["-c", constraints]
    argv += ["--python", facts.python, "--output-file", str(out), "--format", "pylock.toml", "--no-header"]
    argv += index_args(options)
    if options.no_deps:
        argv.append("--no-deps")
    if options.upgrade:
        argv.append("--upgrade")
    if options.pre:
        argv += ["--prerelease", "allow"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=UV_TIMEOUT, check=False)
    except OSError as exc:
        raise ResolveError(
            "ResolverMissing", f"cannot run uv ({exc})", "reinstall nwcache (it depends on uv)"
        ) from None
    except subprocess.TimeoutExpired:
        raise ResolveError(
            "ResolverTimeout", f"uv did not resolve within {UV_TIMEOUT} s", "check the index and the network"
        ) from None
    if done.returncode != 0:
        raise uv_error(done.stderr)


def cached_compile(
    requirements: Sequence[str],
    requirement_files: Sequence[str],
    constraint_files: Sequence[str],
    options: Options,
    facts: Facts,
    out: Path,
) -> bool:
    """compile_lock, or the lock a resolution of the same inputs wrote
    within the freshness window (client/lockcache.py); True when cached."""
    from nwcache.client import lockcache

    window = lockcache.ttl()
    if window is None:
        raise ResolveError(
            "UsageError",
            f"NWCACHE_RESOLVE_TTL={os.environ.get('NWCACHE_RESOLVE_TTL')!r} is not a number of seconds",
            "set it to the seconds a resolution stays fresh (0: resolve every time), or unset it",
        )
    digest = None
    if not any(Requirement(r).url for r in requirements if not r.endswith(".whl")) and not any(
        r.endswith(".whl") for r in requirements
    ):
        digest = lockcache.key(
            requirements=requirements,
            files=[*requirement_files, *constraint_files],
            options={
                "index_url": options.index_url,
                "extra_index_urls": options.extra_index_urls,
                "no_deps": options.no_deps,
                "upgrade": options.upgrade,
                "pre": options.pre,
                "constraints": len(constraint_files),
            },
            find_links=options.find_links,
            markers=facts.markers,
            tags=facts.tags,
            installed=[(key, dist.version) for key, dist in facts.installed.items()],
            uv=uv_bin(),
        )
    if digest is not None and not options.refresh and (window > 0 or options.offline):
        text = lockcache.load(digest, None if options.offline else window)
        if text is not None:
            out.write_text(text)
            return True
    compile_lock(requirements, requirement_files, constraint_files, options, facts, out)
    if digest is not None and not options.offline:  # (an offline resolution may be older than the index)
        lockcache.save(digest, out.read_text())
    return False


def uv_error(stderr: str) -> ResolveError:
    """uv's failure as one readable line and a hint."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    text = " ".join(lines)
    for prefix in ("error: ", "\u00d7 ", "\u2570\u2500\u25b6 "):  # uv's "x" and arrow marks
        text = text.replace(prefix, "")
    lowered = stderr.lower()
    if "no solution found" in lowered:
        explanation = " ".join(
            line.removeprefix("cause:").strip()
            for line in lines
            if not line.lower().startswith(("error:", "hint:", "help:"))
            and "no solution found" not in line.lower()
        )
        return ResolveError(
            "NoSolution",
            f"no set of versions satisfies the requirements: {explanation or text}",
            "loosen or change the requirements (or add --pre for pre-releases); nothing was changed",
        )
    if any(
        word in lowered
        for word in (
            "failed to fetch",
            "error sending request",
            "connection refused",
            "dns error",
            "failed to connect",
            "timed out",
            "network",
        )
    ):
        return ResolveError(
            "IndexUnreachable",
            f"the resolver could not read the index: {text}",
            "check --index-url and the network (or use --offline with what uv has cached); nothing was changed",
        )
    return ResolveError(
        "ResolveFailed",
        f"uv could not resolve: {text}",
        "fix the requirement named above; nothing was changed",
    )


def _filename(url: str | None, path: str | None, name: str | None) -> str:
    if name:
        return name
    where = path or urlsplit(url or "").path
    return unquote(where.rsplit("/", 1)[-1])


def read_lock(
    path: Path, facts: Facts, *, extras: Iterable[str] = (), base: Path | None = None
) -> list[Chosen]:
    """The packages of a PEP 751 lock selected for the venv (its markers and tags)."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
        lock = Pylock.from_dict(data)
        tags: list[Tag] = [t for text in facts.tags for t in parse_tag(text)]
        selected = list(lock.select(environment=facts.markers, tags=tags, extras=list(extras)))  # type: ignore[arg-type]
    except OSError as exc:
        raise ResolveError("LockUnreadable", f"{path}: {exc.strerror or exc}", "check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ResolveError(
            "LockUnreadable", f"{path} is not TOML: {exc}", "pass a pylock.toml (PEP 751)"
        ) from None
    except PylockUnsupportedVersionError as exc:
        raise ResolveError(
            "LockUnsupported", f"{path}: {exc}", "produce the lock with a current uv or pip"
        ) from None
    except PylockValidationError as exc:
        raise ResolveError(
            "LockInvalid", f"{path} is not a valid PEP 751 lock: {exc}", "produce it with uv or pip"
        ) from None
    except PylockSelectError as exc:
        raise ResolveError(
            "IncompatibleTags",
            f"the lock has nothing this environment can install: {exc}",
            "no wheel of it fits this interpreter and platform; resolve for this venv "
            "('nwcache install' resolves for it)",
        ) from None
    base = base or path.parent
    chosen = []
    for package, dist in selected:
        version = str(package.version) if package.version is not None else ""
        if isinstance(dist, PackageWheel | PackageSdist | PackageArchive):
            filename = _filename(dist.url, dist.path, getattr(dist, "name", None))
            local = str((base / dist.path).resolve()) if dist.path else None
            sha256 = dist.hashes.get("sha256")
            if local is None and dist.url is None:
                raise ResolveError(
                    "LockInvalid", f"{path}: {package.name} has no URL or path", "produce it with uv or pip"
                )
            if local is None and not sha256:
                raise ResolveError(
                    "NoHash",
                    f"{path}: {package.name} {version} lists no sha256 for {filename}",
                    "nwcache downloads only files it can verify: produce the lock with hashes",
                )
            chosen.append(
                Chosen(
                    str(package.name),
                    version,
                    filename,
                    url=None if local else dist.url,
                    path=local,
                    sha256=sha256,
                    size=dist.size,
                    sdist=isinstance(dist, PackageSdist) or filename.endswith((".tar.gz", ".zip")),
                )
            )
        else:
            raise ResolveError(
                "Unsupported",
                f"{package.name} comes from a {type(dist).__name__.removeprefix('Package').lower()} source",
                "nwcache installs wheels (and builds sdists); install this one with pip inside the venv",
            )
    return chosen


def local_wheel(spec: str) -> str | None:
    """The absolute path when a spec names a wheel file."""
    if not spec.endswith(".whl"):
        return None
    if not os.path.isfile(spec):
        raise ResolveError(
            "NotAFile",
            f"{os.path.abspath(spec)}: no such file",
            "pass paths of .whl archives (classic or 2.0)",
        )
    try:
        parse_wheel_filename(os.path.basename(spec))
    except InvalidWheelFilename as exc:
        raise ResolveError(
            "NotAWheel", f"{spec}: {exc}", "a wheel's file name says its name, version and tags"
        ) from None
    return os.path.abspath(spec)


def check_spec(spec: str) -> None:
    try:
        Requirement(spec)
    except InvalidRequirement as exc:
        raise ResolveError(
            "BadRequirement",
            f"{spec!r} is not a requirement: {exc}",
            "write NAME, NAME==VERSION or NAME[extra]>=VERSION",
        ) from None


def plan(chosen: list[Chosen], facts: Facts, local: list[str], *, reinstall_local: bool = True) -> Plan:
    """What changes: a locked version already installed stays; local wheels
    replace their distribution's lock entry (their file is what was asked)."""
    by_name = {canonicalize_name(parse_wheel_filename(os.path.basename(p))[0]): p for p in local}
    todo, kept = [], []
    for c in chosen:
        key = canonicalize_name(c.name)
        if key in by_name:
            path = by_name.pop(key)
            todo.append(Chosen(c.name, c.version, os.path.basename(path), path=path))
            continue
        old = facts.installed.get(key)
        if old is not None and old.version == c.version:
            kept.append(c)
        else:
            todo.append(c)
    for key, path in by_name.items():  # not in the lock (--no-deps resolution skipped it)
        _, version, _, _ = parse_wheel_filename(os.path.basename(path))
        todo.append(Chosen(str(key), str(version), os.path.basename(path), path=path))
    return Plan(todo, kept, [])


def with_credentials(chosen: list[Chosen], options: Options) -> None:
    """uv writes file URLs without the userinfo of the index URL they came
    from: the userinfo given with --index-url, --extra-index-url or
    --find-links goes back onto the file URLs of the same scheme, host and
    port (the daemon sends it as HTTP basic auth and shows URLs without it)."""
    known: dict[tuple[str, str | None, int | None], str] = {}
    for url in [options.index_url or "", *options.extra_index_urls, *options.find_links]:
        parts = urlsplit(url)
        if parts.username is not None and parts.hostname:
            known.setdefault((parts.scheme, parts.hostname, parts.port), parts.netloc.rpartition("@")[0])
    if not known:
        return
    for c in chosen:
        if c.url is None:
            continue
        parts = urlsplit(c.url)
        userinfo = known.get((parts.scheme, parts.hostname, parts.port))
        if userinfo and parts.username is None:
            c.url = parts._replace(netloc=f"{userinfo}@{parts.netloc}").geturl()


def resolve(
    venv: Path,
    specs: Sequence[str],
    requirement_files: Sequence[str],
    constraint_files: Sequence[str],
    options: Options,
) -> tuple[Facts, Plan]:
    local = [p for p in (local_wheel(s) for s in specs) if p is not None]
    names = [s for s in specs if not s.endswith(".whl")]
    for spec in names:
        check_spec(spec)
    if not names and not requirement_files:
        # Local wheels only: installed as given, no resolution (as before).
        # A path that is no venv is the daemon's to refuse (it says so as
        # every store command does); there is then nothing to check against.
        try:
            facts = probe(venv)
        except ResolveError:
            facts = Facts("", {}, [], {})
        return facts, plan([], facts, local)
    facts = probe(venv)
    if (
        not local
        and not requirement_files
        and not constraint_files
        and not options.upgrade
        and satisfied(names, facts.installed, facts.markers)
    ):
        # What uv checks first: every requirement (and, recursively, what
        # it requires) is installed already, so there is nothing to resolve.
        keys = [canonicalize_name(Requirement(n).name) for n in names]
        kept = [facts.installed[k] for k in keys if k in facts.installed]  # (not: a false marker)
        return facts, Plan([], [Chosen(d.name, d.version, "") for d in kept], [])
    with tempfile.TemporaryDirectory(prefix="nwcache-resolve-") as scratch:
        out = Path(scratch) / "pylock.toml"
        cached_compile([*names, *local], requirement_files, constraint_files, options, facts, out)
        chosen = read_lock(out, facts)
    with_credentials(chosen, options)
    return facts, plan(chosen, facts, local)


def lock(
    venv: Path,
    specs: Sequence[str],
    requirement_files: Sequence[str],
    constraint_files: Sequence[str],
    options: Options,
) -> tuple[str, list[Chosen]]:
    """`nwcache lock`: a PEP 751 lock for the venv's interpreter, as text,
    and its packages selected for the venv. With requirements, their
    resolution (the venv's installed versions preferred, as install keeps
    them); without, the venv's current distributions, each pinned to its
    installed version and resolved to the index's files (--no-deps), so
    that `nwcache sync` of the lock makes another venv the same."""
    for spec in specs:
        if spec.endswith(".whl"):
            raise ResolveError(
                "UsageError",
                f"{spec}: a lock names index files, not local wheels",
                "lock requirements (NAME, NAME==VERSION, -r FILE); install wheel files directly",
            )
        check_spec(spec)
    facts = probe(venv)
    requirements = list(specs)
    if not specs and not requirement_files:
        requirements = [f"{d.name}=={d.version}" for _, d in sorted(facts.installed.items())]
        if not requirements:
            raise ResolveError(
                "NothingToLock",
                f"{venv} holds no distributions",
                "name requirements to lock, or lock a venv that has its packages installed",
            )
        options = Options(**{**options.__dict__, "no_deps": True, "upgrade": True})
    with tempfile.TemporaryDirectory(prefix="nwcache-resolve-") as scratch:
        out = Path(scratch) / "pylock.toml"
        cached_compile(requirements, requirement_files, constraint_files, options, facts, out)
        chosen = read_lock(out, facts)  # refuses a lock without hashes, or with nothing for this venv
        return out.read_text(), chosen


def sync_plan(venv: Path, lock: Path, options: Options) -> tuple[Facts, Plan]:
    """`nwcache sync`: exactly the locked set. A pylock.toml is read as it
    is; a requirements file must pin every requirement (==), and uv turns it
    into a lock without adding anything (--no-deps)."""
    facts = probe(venv)
    if lock.name == "pylock.toml" or (lock.name.startswith("pylock.") and lock.name.endswith(".toml")):
        chosen = read_lock(lock, facts)
    else:
        unpinned = _unpinned(lock)
        if unpinned:
            raise ResolveError(
                "NotPinned",
                f"{lock}: {unpinned} is not pinned to one version (==)",
                "sync takes a lock: a pylock.toml, or a requirements file with every line NAME==VERSION "
                "('uv pip compile' writes one)",
            )
        with tempfile.TemporaryDirectory(prefix="nwcache-resolve-") as scratch:
            out = Path(scratch) / "pylock.toml"
            pinned = Options(**{**options.__dict__, "no_deps": True, "upgrade": True})
            cached_compile([], [str(lock)], [], pinned, facts, out)
            chosen = read_lock(out, facts)
        with_credentials(chosen, options)
    result = plan(chosen, facts, [])
    locked = {canonicalize_name(c.name) for c in chosen}
    result.remove = sorted(n for n in facts.installed if n not in locked)
    return facts, result


def requested_names(specs: Sequence[str], requirement_files: Sequence[str]) -> list[str]:
    """The canonical names the user asked for: the requirements and wheel
    files named, and the requirements in -r files (pip marks these
    REQUESTED, and not what they pull in)."""
    names = set()
    for spec in specs:
        if spec.endswith(".whl"):
            names.add(canonicalize_name(parse_wheel_filename(os.path.basename(spec))[0]))
        else:
            names.add(canonicalize_name(Requirement(spec).name))
    for path in requirement_files:
        try:
            text = Path(path).read_text()
        except OSError:
            continue  # uv said why already
        for line in _lines(text):
            try:
                names.add(canonicalize_name(Requirement(line).name))
            except InvalidRequirement:
                continue  # a path or URL line: uv resolved it; its name is not ours to guess
    return sorted(names)


def _lines(text: str) -> Iterable[str]:
    """The requirement lines of a requirements file (no options, comments or hashes)."""
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        yield line.split(" --hash", 1)[0].strip()


def _unpinned(path: Path) -> str | None:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ResolveError("LockUnreadable", f"{path}: {exc.strerror or exc}", "check the path") from None
    for line in _lines(text):
        try:
            req = Requirement(line)
        except InvalidRequirement:
            return line
        if req.url is None and not any(
            s.operator in ("==", "===") and "*" not in s.version for s in req.specifier
        ):
            return line
    return None


def dependency_problems(facts: Facts, new: dict[str, Dist], removed: Iterable[str] = ()) -> list[str]:
    """Missing or conflicting requirements once `new` (by canonical name)
    replaces what the venv holds (nwcache/deps.py, the daemon's check too)."""
    gone = set(removed)
    final = {k: v for k, v in facts.installed.items() if k not in gone}
    final.update(new)
    return problems(final, new.keys() | gone, facts.markers)


def wheel_requires(path: str) -> Dist:
    """A wheel file's name, version and Requires-Dist (its METADATA)."""
    import zipfile
    from email.parser import HeaderParser

    name, version, _, _ = parse_wheel_filename(os.path.basename(path))
    try:
        with zipfile.ZipFile(path) as archive:
            member = next(
                (n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")),
                None,
            )
            text = archive.read(member).decode("utf-8", "replace") if member else ""
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, NotImplementedError):
        text = ""  # a broken or hostile archive: the daemon refuses it with the reason
    headers = HeaderParser().parsestr(text)
    return Dist(str(headers.get("Name") or name), str(version), list(headers.get_all("Requires-Dist") or []))


def main_check(plan_: Plan, facts: Facts) -> list[str]:
    """The dependency problems the plan's local wheels bring, and those of a
    --no-deps or sync result: requirements of what is installed, checked."""
    if not facts.python:
        return []  # not a venv: the daemon refuses the install
    new: dict[str, Dist] = {}
    for c in plan_.chosen:
        if c.path and c.path.endswith(".whl"):
            dist = wheel_requires(c.path)
            new[canonicalize_name(dist.name)] = dist
        else:  # resolved by uv: its version counts, its own requirements uv saw to
            new[canonicalize_name(c.name)] = Dist(c.name, c.version, [])
    return dependency_problems(facts, new, plan_.remove)


def warn(lines: Iterable[str]) -> None:
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)
