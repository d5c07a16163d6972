"""A real package index on 127.0.0.1 for the install-by-name tests.

The wheels are built offline from tests/projects/index/ (one `pip wheel`
run for all of them); the index serves them as a PEP 503 simple tree
(`/simple/<name>/`, links with `#sha256=` fragments, `data-requires-python`,
`data-yanked`) with PEP 658 metadata files (`<file>.metadata`, announced by
`data-dist-info-metadata` and `data-core-metadata`), so uv resolves from the
metadata alone and every wheel byte is fetched by the daemon. The standard
library's ThreadingHTTPServer serves it on an ephemeral port.

What a test can make go wrong, per file name (`faults`): "404", "html" (an
HTML error page with status 200), "truncate" (the headers promise the whole
file, half of it comes, the connection closes), "slow" (half, then the
rest once `paused` is set or after 2 s). A listed hash that does not
match the file (`bad_hashes`) and a yanked file (`yanked`) are set at build
time. `requests` records every path asked for, so a test can tell that a
wheel was not downloaded again; `auth` (user, password) makes every request
need HTTP basic authentication.
"""

from __future__ import annotations

import base64
import hashlib
import html
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from tests.conftest import PROJECTS_DIR, clean_env

INDEX_PROJECTS = PROJECTS_DIR / "index"


@dataclass
class IndexFile:
    filename: str
    path: Path
    sha256: str  # what the index lists (a bad hash when asked for)
    metadata: bytes  # the wheel's METADATA (PEP 658), empty for an sdist
    yanked: str | None = None


@dataclass
class PackageIndex:
    """The files by project (normalised name); serve() runs the server."""

    files: dict[str, list[IndexFile]] = field(default_factory=dict)
    faults: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    auth: tuple[str, str] | None = None
    url: str = ""
    paused: threading.Event = field(default_factory=threading.Event)  # set: "slow" files go on

    def add(self, path: Path, *, yanked: str | None = None, bad_hash: bool = False) -> IndexFile:
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if bad_hash:
            digest = hashlib.sha256(data + b"tampered").hexdigest()
        metadata = b""
        if path.name.endswith(".whl"):
            name = parse_wheel_filename(path.name)[0]
            with zipfile.ZipFile(path) as archive:
                member = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
                metadata = archive.read(member)
        else:
            name = canonicalize_name(path.name.rsplit("-", 1)[0])
        entry = IndexFile(path.name, path, digest, metadata, yanked)
        self.files.setdefault(str(name), []).append(entry)
        return entry

    def downloads(self, filename: str) -> int:
        """How often the file itself (not its metadata) was asked for."""
        return sum(1 for p in self.requests if p == f"/files/{filename}")

    @property
    def simple(self) -> str:
        return f"{self.url}/simple"

    def page(self, project: str) -> bytes | None:
        entries = self.files.get(project)
        if entries is None:
            return None
        links = []
        for entry in entries:
            attrs = ' data-requires-python="&gt;=3.9"'
            if entry.metadata:
                meta = hashlib.sha256(entry.metadata).hexdigest()
                attrs += f' data-dist-info-metadata="sha256={meta}" data-core-metadata="sha256={meta}"'
            if entry.yanked is not None:
                attrs += f' data-yanked="{html.escape(entry.yanked)}"'
            links.append(
                f'<a href="/files/{entry.filename}#sha256={entry.sha256}"{attrs}>{entry.filename}</a><br/>'
            )
        body = "<!DOCTYPE html>\n<html><body>\n" + "\n".join(links) + "\n</body></html>\n"
        return body.encode()

    def file(self, filename: str) -> IndexFile | None:
        for entries in self.files.values():
            for entry in entries:
                if entry.filename == filename:
                    return entry
        return None

    @contextmanager
    def serve(self) -> Iterator[PackageIndex]:
        index = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # the tests read `requests`

            def send(self, status: int, body: bytes, content_type: str, *, half: bool = False) -> bytes:
                """Answer with `body` (with `half`, its first half only, flushed,
                the whole length announced); returns what was not sent."""
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = len(body) // 2 if half else len(body)
                self.wfile.write(body[:cut])
                self.wfile.flush()
                return body[cut:]

            def send_half(self, body: bytes) -> bytes:
                return self.send(200, body, "application/octet-stream", half=True)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                index.requests.append(path)
                if index.auth is not None:
                    expected = base64.b64encode(f"{index.auth[0]}:{index.auth[1]}".encode()).decode()
                    if self.headers.get("Authorization") != f"Basic {expected}":
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="index"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                if path.startswith("/simple/"):
                    project = path[len("/simple/") :].strip("/")
                    page = index.page(str(canonicalize_name(project))) if project else None
                    if page is None:
                        self.send(404, b"not found", "text/plain")
                    else:
                        self.send(200, page, "text/html")
                    return
                if path.startswith("/files/"):
                    filename = path[len("/files/") :]
                    metadata = filename.endswith(".metadata")
                    entry = index.file(filename.removesuffix(".metadata"))
                    if entry is None:
                        self.send(404, b"not found", "text/plain")
                        return
                    if metadata:
                        self.send(200, entry.metadata, "application/octet-stream")
                        return
                    fault = index.faults.get(filename)
                    if fault == "404":
                        self.send(404, b"<html><body>404 Not Found</body></html>", "text/html")
                    elif fault == "html":
                        self.send(200, b"<!DOCTYPE html><html><body>Please log in</body></html>", "text/html")
                    elif fault == "slow":  # half, a pause, the rest: downloads of it overlap
                        rest = self.send_half(entry.path.read_bytes())
                        index.paused.wait(timeout=2.0)
                        self.wfile.write(rest)
                    elif fault == "truncate":
                        self.send_half(entry.path.read_bytes())
                        self.close_connection = True
                    else:
                        self.send(200, entry.path.read_bytes(), "application/octet-stream")
                    return
                self.send(404, b"not found", "text/plain")

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="package-index", daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


def build_index_wheels(out: Path) -> list[Path]:
    """Every project of tests/projects/index/ built to a wheel in `out`,
    offline (copies, so the checkout gains no build/). pip builds one version
    of a name per run: the projects go in rounds, which run at once."""
    sources = out / "src"
    shutil.copytree(
        INDEX_PROJECTS, sources, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    wheels = out / "wheels"
    projects = sorted(p for p in sources.iterdir() if (p / "pyproject.toml").is_file())
    rounds: list[list[Path]] = []
    for project in projects:
        name = project.name.rsplit("-", 1)[0]
        free = next((r for r in rounds if all(p.name.rsplit("-", 1)[0] != name for p in r)), None)
        if free is None:
            free = []
            rounds.append(free)
        free.append(project)
    runs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"),
                *("-q", "-w", str(wheels), *map(str, group)),
            ],
            env=clean_env(),
            cwd=out,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for group in rounds
    ]
    try:
        for run in runs:
            output, _ = run.communicate(timeout=300)
            assert run.returncode == 0, f"building the index's wheels failed:\n{output}"
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.communicate()
    built = sorted(wheels.glob("*.whl"))
    assert len(built) == len(projects), built
    return built


def build_index_sdists(out: Path) -> list[Path]:
    """The sdists of tests/projects/index-sdist/ (an in-tree PEP 517 backend,
    backend.py, that needs nothing from an index), as .tar.gz files in `out`."""
    import tarfile

    root = PROJECTS_DIR / "index-sdist"
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for project in sorted(p for p in root.iterdir() if p.is_dir()):
        target = out / f"{project.name}.tar.gz"
        with tarfile.open(target, "w:gz") as archive:
            for path in sorted(project.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    archive.add(path, f"{project.name}/{path.relative_to(project)}")
            archive.add(root / "backend.py", f"{project.name}/backend.py")
        made.append(target)
    return made


def standard_index(wheels: list[Path]) -> PackageIndex:
    """The index the tests use: nwidx-lib 3.0 yanked, nwidx-bad listed with
    a hash its file does not have."""
    index = PackageIndex()
    for wheel in wheels:
        if not wheel.name.endswith(".whl"):
            index.add(wheel)  # an sdist
            continue
        name, version, _, _ = parse_wheel_filename(wheel.name)
        index.add(
            wheel,
            yanked="broken release" if (name, str(version)) == ("nwidx-lib", "3.0") else None,
            bad_hash=name == "nwidx-bad",
        )
    return index
