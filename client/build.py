"""Source distributions in an install by name: fetched (sha256 checked),
built to a wheel by `uv build --wheel` for the venv's interpreter in an
isolated temporary directory (uv makes the isolated build environment), and
the wheel kept in the user's cache by the sdist's sha256, so that the same
sdist is built once per interpreter and platform. The built wheel then goes
to the daemon as a local file (docs/INSTALL-BY-NAME.md says why the client,
not the daemon, does this).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.utils import parse_wheel_filename

from nwcache.client.resolve import Chosen, Facts, Options, Plan, ResolveError, index_args, uv_bin

BUILD_TIMEOUT = 1800


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nwcache" / "built"


def _fits(wheel: Path, facts: Facts) -> bool:
    tags = set(facts.tags)
    return any(str(tag) in tags for tag in parse_wheel_filename(wheel.name)[3])


def _fetch(chosen: Chosen, dest: Path) -> Path:
    """The sdist itself (httpx, verified against its sha256); a local one as it is."""
    if chosen.path is not None:
        return Path(chosen.path)
    import httpx

    assert chosen.url is not None
    target = dest / chosen.filename
    digest = hashlib.sha256()
    try:
        with httpx.stream("GET", chosen.url, follow_redirects=True, timeout=60.0) as response:
            if response.status_code != 200:
                raise ResolveError(
                    "DownloadRefused",
                    f"{chosen.filename}: HTTP {response.status_code} {response.reason_phrase}",
                    "the index lists a file it does not serve; nothing was changed",
                )
            with open(target, "xb") as out:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    out.write(chunk)
    except httpx.HTTPError as exc:
        raise ResolveError(
            "DownloadInterrupted",
            f"the download of {chosen.filename} failed: {type(exc).__name__}",
            "run it again",
        ) from None
    if digest.hexdigest() != chosen.sha256:
        raise ResolveError(
            "HashMismatch",
            f"{chosen.filename}: its sha256 is {digest.hexdigest()}, the index lists {chosen.sha256}",
            "the file differs from the one the index lists; nothing was changed",
        )
    return target


def build(chosen: Chosen, facts: Facts, options: Options) -> Path:
    """The wheel built from `chosen` (an sdist), from the cache when built before."""
    key = chosen.sha256 or hashlib.sha256(Path(chosen.path or "").read_bytes()).hexdigest()
    cached = cache_root() / key
    if cached.is_dir():
        for wheel in sorted(cached.glob("*.whl")):
            if _fits(wheel, facts):
                return wheel
    with tempfile.TemporaryDirectory(prefix="nwcache-build-") as scratch:
        sdist = _fetch(chosen, Path(scratch))
        out = Path(scratch) / "out"
        argv = [uv_bin(), "build", "--wheel", "--color", "never", "--no-progress"]
        argv += ["--python", facts.python, "--out-dir", str(out), str(sdist)]
        argv += index_args(options)
        if sys.stderr.isatty():
            print(f"building {chosen.name} {chosen.version} from its source distribution", file=sys.stderr)
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False, cwd=scratch
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ResolveError(
                "SdistBuildFailed", f"building {chosen.filename} failed: {exc}", "nothing was changed"
            ) from None
        wheels = sorted(out.glob("*.whl")) if out.is_dir() else []
        if done.returncode != 0 or len(wheels) != 1:
            tail = _build_failure(done.stderr)
            raise ResolveError(
                "SdistBuildFailed",
                f"{chosen.name} {chosen.version} did not build from its source distribution {chosen.filename}: {tail}",
                "it has no wheel for this environment and its build fails here (a compiler or library "
                "missing?); install a version that has wheels; nothing was changed",
            )
        cached.mkdir(parents=True, exist_ok=True)
        final = cached / wheels[0].name
        temp = cached / f".{wheels[0].name}.{os.getpid()}"
        shutil.copyfile(wheels[0], temp)
        os.replace(temp, final)
        return final


def _build_failure(stderr: str) -> str:
    """The backend's last words (the line before uv's own "error: Failed to
    build"), else uv's causes: what went wrong, on one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    ours = next((i for i, line in enumerate(lines) if line.startswith("error: Failed to build")), len(lines))
    backend = [line for line in lines[:ours] if not line.startswith(("Building ", "File ", "Traceback"))]
    if backend:
        return backend[-1]
    causes = [line.removeprefix("cause: ") for line in lines[ours:] if line.startswith("cause: ")]
    return "; ".join(causes) or "no wheel came out"


def build_sdists(plan: Plan, facts: Facts, options: Options) -> None:
    """Each sdist of the plan replaced by the local wheel built from it."""
    for index, chosen in enumerate(plan.chosen):
        if not chosen.sdist:
            continue
        wheel = build(chosen, facts, options)
        plan.chosen[index] = Chosen(chosen.name, chosen.version, wheel.name, path=str(wheel))
