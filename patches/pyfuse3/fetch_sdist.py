"""Fetch the pinned pyfuse3 sdist that the patch applies to.

The URL and the sha256 come from uv.lock (the project's pin); the download is
refused unless its sha256 matches, and unless the locked version is the one the
patch was written against. Standard library only: this runs before the
project's venv holds anything.

    python3 patches/pyfuse3/fetch_sdist.py VERSION OUT_DIR
"""

from __future__ import annotations

import hashlib
import sys
import tomllib
import urllib.request
from pathlib import Path


def locked_sdist(lock: Path, name: str) -> tuple[str, str, str]:
    for package in tomllib.loads(lock.read_text())["package"]:
        if package["name"] == name:
            sdist = package["sdist"]
            return package["version"], sdist["url"], sdist["hash"].removeprefix("sha256:")
    raise SystemExit(f"error: {name} is not in {lock}")


def main(argv: list[str]) -> int:
    version, out = argv[0], Path(argv[1])
    locked, url, sha256 = locked_sdist(Path(__file__).parents[2] / "uv.lock", "pyfuse3")
    if locked != version:
        raise SystemExit(
            f"error: uv.lock pins pyfuse3 {locked}, the patch is for {version}\n"
            "hint: rebase patches/pyfuse3 onto the locked release (see its README)"
        )
    target = out / url.rsplit("/", 1)[1]
    if not target.exists() or hashlib.sha256(target.read_bytes()).hexdigest() != sha256:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise SystemExit(f"error: {url} does not match the sha256 in uv.lock")
        out.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
