"""The shared blob tier (issue 17, docs/REMOTE.md) against a real registry:
Debian's docker-registry on 127.0.0.1 (tests/oci_registry.py), two
NWCACHE_HOMEs as two machines, each with its own daemon and venv: push from
one, install and import from the other, bodies fetched at their first read;
the registry killed, a blob corrupted on its disk, basic auth.

(tests/test_remote.py is about the console script's plain install, not this.)
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nwcache import remotes
from nwcache.daemon import artifact
from nwcache.daemon.registry import BadAnswer
from nwcache.daemon.schema import FileRef, PackageRecord
from tests.conftest import make_venv
from tests.daemon_process import Daemon
from tests.oci_registry import CuttingProxy, OCIRegistry
from tests.vectors import generate

T = TypeVar("T")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[OCIRegistry]:
    served = OCIRegistry(tmp_path / "registry")
    served.start()
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon]]:
    """Two machines: a daemon and a home each (started by the test)."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    made = (Daemon(tmp_path / "a"), Daemon(tmp_path / "b"))
    for daemon in made:
        daemon.env["NWCACHE_REMOTE_WAIT"] = "3"  # the bound on a read's wait for a body
        daemon.env["NWCACHE_BYTECODE"] = "off"  # so that nothing but reads fetches bodies
        daemon.env["UV_OFFLINE"] = "1"
    try:
        yield made
    finally:
        for daemon in made:
            daemon.stop()


def ok(daemon: Daemon, *argv: str | Path) -> Any:
    code, out, err = daemon.cli(*argv, "--json")
    assert code == 0, f"{argv}: exit {code}\n{out}\n{err}"
    return json.loads(out)


def stats(daemon: Daemon) -> dict[str, Any]:
    result: dict[str, Any] = ok(daemon, "stats")
    return result


def python(venv: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def pushed_machine(
    a: Daemon, registry: OCIRegistry, wheels: list[Path], tmp_path: Path
) -> tuple[Path, dict[str, Any]]:
    """Machine A: the wheels installed into a venv and pushed; (venv, push result)."""
    a.start()
    ok(a, "remote", "add", "shared", registry.url, "--repository", "team/nwcache")
    venv = tmp_path / "venv-a"
    make_venv(venv)
    ok(a, "install", *wheels, "--env", venv)
    return venv, ok(a, "push", "--env", venv)


def second_machine(b: Daemon, url: str, tmp_path: Path) -> Path:
    b.start()
    ok(b, "remote", "add", "shared", url, "--repository", "team/nwcache")
    venv = tmp_path / "venv-b"
    make_venv(venv)
    return venv


@pytest.mark.slow
def test_push_then_install_elsewhere_fetches_bodies_at_first_read(
    registry: OCIRegistry, machines: tuple[Daemon, Daemon], built_wheels: dict[str, Path], tmp_path: Path
) -> None:
    a, b = machines
    # A package with a source and a data file above the pack's 2000 bytes.
    spec = generate.Spec(
        files=[
            generate.F("demo/__init__.py", b"VALUE = 42\n" + b"# padding of a large module\n" * 200),
            generate.F("demo/data.bin", bytes(range(256)) * 200),
        ]
    )
    demo = tmp_path / generate.FILENAME
    demo.write_bytes(generate.v2(spec))
    venv_a, first = pushed_machine(a, registry, [built_wheels["ext"], built_wheels["pure"], demo], tmp_path)
    assert first["packages"] == 3
    assert first["manifests"] == 3
    assert first["uploaded"] > 3
    # Pushing again uploads nothing, as the registry's own disk shows.
    held = _files(registry.storage)
    again = ok(a, "push", "--env", venv_a)
    assert (again["manifests"], again["uploaded"], again["bytes"]) == (0, 0, 0)
    assert _files(registry.storage) == held
    ok(a, "push", "nwdemo-ext==0.1.0")  # by name and version too
    assert any(t.startswith("nwdemo-ext-0.1.0-") for t in _tags(registry))

    del b.env["NWCACHE_BYTECODE"]  # machine B compiles, as by default
    venv_b = second_machine(b, registry.url, tmp_path)
    done = ok(b, "install", "nwdemo-ext==0.1.0", "nwdemo-pure==0.1.0", "demo==1.0", "--env", venv_b)
    assert sorted(c["name"] for c in done["changes"]) == ["demo", "nwdemo-ext", "nwdemo-pure"]
    assert len(done["from_remote"]) == 3
    # The background compiler fetched the large source it compiled; the
    # extension module and the data file wait for their first read.
    compiled = _poll(lambda: _compiled(b))
    assert compiled["bytecode_blobs"] >= 1
    assert compiled["remote"]["fetched"] == 1
    assert compiled["remote_only_blobs"] == 2
    assert ok(b, "fsck")["problems"] == []  # remote-only blobs are no damage
    shown = b.cli("stats")[1]
    assert "2 bodies" in shown, shown
    assert "not fetched yet" in shown, shown

    # The console script (fetched at install) and the imports work; the
    # extension's body came at its first read, verified, and stays.
    imported = python(venv_b, "import demo, nwdemo_ext, nwdemo_pure; print(demo.VALUE)")
    assert imported.stdout.strip() == "42", imported.stderr
    after = stats(b)
    assert after["remote"]["fetched"] == 2
    assert after["remote"]["bytes"] > 0
    assert after["remote_only_blobs"] == 1
    assert (venv_b / "bin" / "nwdemo-pure-script").exists()

    # gc keeps what the environment references, local or remote-only.
    ok(b, "gc", "--keep", "1")
    assert ok(b, "fsck")["problems"] == []
    assert ok(b, "prefetch", "--env", venv_b)["fetched"] == 1
    assert stats(b)["remote_only_blobs"] == 0
    registry.stop()  # everything is local now: the registry is not needed
    code = "import demo, nwdemo_ext, nwdemo_pure.sub_b.beta, pathlib; print(len(pathlib.Path(demo.__file__).with_name('data.bin').read_bytes()))"
    again_b = python(venv_b, code)
    assert again_b.stdout.strip() == str(256 * 200), again_b.stderr


@pytest.mark.slow
def test_registry_gone_or_lying(
    registry: OCIRegistry, machines: tuple[Daemon, Daemon], built_wheels: dict[str, Path], tmp_path: Path
) -> None:
    a, b = machines
    _venv_a, _ = pushed_machine(a, registry, [built_wheels["ext"], built_wheels["sharedlib"]], tmp_path)
    proxy = CuttingProxy(registry.port)  # machine B reaches the registry through it
    try:
        _gone_or_lying(registry, proxy, b, built_wheels, tmp_path)
    finally:
        proxy.close()


def _gone_or_lying(
    registry: OCIRegistry, proxy: CuttingProxy, b: Daemon, built_wheels: dict[str, Path], tmp_path: Path
) -> None:
    venv_b = second_machine(b, proxy.url, tmp_path)
    ok(b, "install", "nwdemo-ext==0.1.0", "nwdemo-sharedlib==0.1.0", "--env", venv_b)
    site = Path(python(venv_b, "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())
    remote_only = _large_files(built_wheels["ext"], built_wheels["sharedlib"])
    assert len(remote_only) >= 2, remote_only
    assert stats(b)["remote_only_blobs"] == len({blob for _, blob in remote_only})
    first, second = remote_only[0], next(f for f in remote_only if f[1] != remote_only[0][1])

    def read(path: str) -> tuple[subprocess.CompletedProcess[str], float]:
        began = time.monotonic()
        done = python(venv_b, f"open({str(site / path)!r}, 'rb').read()")
        return done, time.monotonic() - began

    def fails_with_eio(path: str) -> float:
        done, took = read(path)
        assert done.returncode != 0, done.stdout
        assert "Input/output error" in done.stderr, done.stderr
        assert not list((b.home / "tmp").iterdir())  # nothing half-fetched is left
        return took

    # A blob whose bytes on the registry's disk do not match its digest:
    # refused (EIO), never stored; the next read asks again.
    blob = first[1]
    data = registry.blob_data(blob)
    corrupt = bytearray(data.read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    data.write_bytes(bytes(corrupt))
    fails_with_eio(first[0])
    assert not (b.home / "blobs" / blob[:2] / blob).exists()
    assert stats(b)["remote"]["refused"] >= 1
    assert ok(b, "fsck")["problems"] == []

    # The connection breaks in the middle of a body (a registry killed
    # mid-transfer), then the registry hangs after part of it: EIO within
    # the bound (NWCACHE_REMOTE_WAIT=3, retries included), nothing kept.
    proxy.cut("close", after=4096)
    fails_with_eio(second[0])
    proxy.cut("stall", after=4096)
    assert fails_with_eio(second[0]) < 3 + 5
    assert not (b.home / "blobs" / second[1][:2] / second[1]).exists()
    assert stats(b)["remote"]["failures"] >= 3
    proxy.cut(None)  # it answers again: the body comes, whole and verified
    done, _ = read(second[0])
    assert done.returncode == 0, done.stderr

    # The registry killed: a body not yet local fails with EIO within the
    # bound, counted; what is local keeps working.
    registry.kill()
    fails_with_eio(first[0])
    assert stats(b)["remote"]["failures"] >= 4
    metadata = python(venv_b, "import importlib.metadata as m; print(m.version('nwdemo-ext'))")
    assert metadata.stdout.strip() == "0.1.0", metadata.stderr
    assert python(venv_b, f"open({str(site / second[0])!r}, 'rb').read()").returncode == 0
    # An install that needs the remote: one error line, nothing changed.
    history = ok(b, "history", "--env", venv_b)
    code, out, err = b.cli("install", "nwdemo-pure==0.1.0", "--env", venv_b)
    assert code == 1, (out, err)
    assert err.count("error:") == 1
    assert "hint:" in err
    assert "Traceback" not in err
    assert ok(b, "history", "--env", venv_b) == history
    # The remote's failures were logged once until it answered again, then
    # once more; retries are not logged.
    log = b.log.read_text()
    assert log.count("further failures of remote shared are counted") == 2, log
    assert log.count("remote shared answers again") == 1, log
    assert "retry" not in log, log


def test_basic_auth_and_private_credentials(
    machines: tuple[Daemon, Daemon], built_wheels: dict[str, Path], tmp_path: Path
) -> None:
    htpasswd = tmp_path / "htpasswd"
    made = subprocess.run(
        ["htpasswd", "-Bbn", "ci", "s3cret-word"], capture_output=True, text=True, check=True
    )
    htpasswd.write_text(made.stdout)
    served = OCIRegistry(tmp_path / "registry", htpasswd=htpasswd)
    served.start()
    a, _b = machines
    try:
        a.start()
        credentials = tmp_path / "credentials"
        credentials.write_text("ci:s3cret-word\n")
        credentials.chmod(0o644)
        code, _out, err = a.cli("remote", "add", "private", served.url, "--credentials", credentials)
        assert code == 1, err
        assert "readable by others" in err, err
        assert "chmod 600" in err, err
        credentials.chmod(0o600)
        ok(a, "remote", "add", "private", served.url, "--credentials", credentials)
        listed = a.cli("remote", "list")[1]
        assert str(credentials) in listed
        assert "s3cret" not in listed
        venv = tmp_path / "venv"
        make_venv(venv)
        ok(a, "install", built_wheels["pure"], "--env", venv)
        pushed = ok(a, "push", "--env", venv)
        assert pushed["manifests"] == 1
        # The wrong password: refused, with one error line that names no secret.
        credentials.write_text("ci:wrong\n")
        ok(a, "remote", "remove", "private")
        ok(a, "remote", "add", "private", served.url, "--credentials", credentials)
        code, _out, err = a.cli("push", "--env", venv)
        assert code == 1, err
        assert "refused" in err, err
        assert "wrong" not in err, err
        assert "s3cret" not in a.log.read_text()
        assert "wrong" not in a.log.read_text()
    finally:
        served.stop()


def _compiled(daemon: Daemon) -> dict[str, Any] | None:
    """The daemon's stats once no bytecode is pending, else None."""
    now = stats(daemon)
    return None if now["bytecode_pending"] else now


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _poll(probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"nothing came within {timeout} s"
        time.sleep(0.1)  # polling, bounded by the deadline


def _tags(registry: OCIRegistry) -> list[str]:
    import httpx

    answer = httpx.get(f"{registry.url}/v2/team/nwcache/tags/list", timeout=5).json()
    return list(answer["tags"])


def _large_files(*wheels: Path) -> list[tuple[str, str]]:
    """(path in site-packages, sha256) of the wheels' files that are neither
    packed (over 2000 bytes) nor read by installing (outside .dist-info and
    .data): those a remote install leaves on the remote until a read."""
    out = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                top = info.filename.split("/")[0]
                if info.file_size > 2000 and not top.endswith((".dist-info", ".data")):
                    out.append((info.filename, hashlib.sha256(archive.read(info)).hexdigest()))
    return sorted(out)


# -- without a registry: the artifact's encoding and what is refused -----------------------


def _record(**changes: Any) -> PackageRecord:
    from nwcache.archive.digest import DigestItem, content_digest

    files = {
        "demo/__init__.py": FileRef("a" * 64, 10, False),
        "demo/big.so": FileRef("b" * 64, 50_000, True),
        "demo-1.0+local.dist-info/RECORD": FileRef("c" * 64, 100, False),
    }
    files.update(changes.pop("files", {}))
    digest = content_digest(
        DigestItem(p, r.executable, bytes.fromhex(r.blob), r.size) for p, r in files.items()
    )
    fields: dict[str, Any] = dict(
        name="Demo_Pkg",
        version="1.0+local",
        digest=digest,
        tags=["py3-none-any"],
        filename="demo_pkg-1.0+local-py3-none-any.whl",
        source="archive",
        dist_info="demo-1.0+local.dist-info",
        files=files,
    )
    fields.update(changes)
    return PackageRecord(**fields)


def test_tags_name_a_package_build_and_follow_the_grammar() -> None:
    pkg = _record()
    tag = artifact.tag_of(pkg)
    assert tag.startswith(artifact.tag_prefix("demo-pkg", "1.0+local"))
    assert tag == f"demo-pkg-1.0_local-{pkg.digest[7:19]}"
    other = _record(files={"demo/extra.py": FileRef("d" * 64, 5, False)})
    assert artifact.tag_of(other) != tag  # two builds of one version: two tags
    with pytest.raises(BadAnswer):
        artifact.tag_of(_record(name="x" * 130))


def test_config_round_trip_and_refusals() -> None:
    pkg = _record()
    pack = b"".join(
        b"x" * s for _, s in sorted({r.blob: r.size for r in pkg.files.values() if r.size <= 2000}.items())
    )
    art = artifact.build(pkg, pack)
    assert [layer.media_type for layer in art.layers] == [artifact.PACK_TYPE, artifact.BLOB_TYPE]
    manifest = artifact.read_manifest(art.manifest(), "t")
    back = artifact.read_config(art.config, manifest, "t")
    assert back.package == pkg
    assert back.pack == art.pack
    assert artifact.build(pkg, pack).config == art.config  # a stable encoding
    for garbage in (b"<html>", b"[]", b'{"artifactType": "other"}'):
        with pytest.raises(BadAnswer):
            artifact.read_manifest(garbage, "t")
    tampered = json.loads(art.config)
    tampered["package"]["files"]["../escape.py"] = ["e" * 64, 1, False]
    with pytest.raises(BadAnswer):
        artifact.read_config(json.dumps(tampered).encode(), manifest, "t")
    tampered = json.loads(art.config)
    tampered["package"]["files"]["demo/__init__.py"][1] = 11  # not its content digest any more
    with pytest.raises(BadAnswer):
        artifact.read_config(json.dumps(tampered).encode(), manifest, "t")
    with pytest.raises(BadAnswer):
        artifact.split_pack(pack[:-1] + b"y", art.pack, "t")


def test_credentials_file_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("me:pw\n")
    for mode in (0o644, 0o640, 0o604):
        secret.chmod(mode)
        with pytest.raises(remotes.CredentialsError, match="readable by others"):
            remotes.read_credentials(str(secret))
    secret.chmod(0o600)
    assert remotes.read_credentials(str(secret)).username == "me"
    assert "pw" not in repr(remotes.read_credentials(str(secret)))
    secret.write_text("no colon\n")
    with pytest.raises(remotes.CredentialsError):
        remotes.read_credentials(str(secret))
    home = tmp_path / "home"
    remotes.add(home, "one", "http://127.0.0.1:5000/", None, None)
    with pytest.raises(remotes.RemoteError):
        remotes.add(home, "one", "http://127.0.0.1:5001", None, None)
    for bad_url in ("ftp://x", "http://user:pw@host", "http://host/path"):
        with pytest.raises(remotes.RemoteError):
            remotes.add(home, "two", bad_url, None, None)
    with pytest.raises(remotes.RemoteError):
        remotes.add(home, "two", "http://h", "Upper/Case", None)
    assert list(remotes.load(home)) == ["one"]
    assert remotes.load(home)["one"].url == "http://127.0.0.1:5000"
    remotes.remove(home, "one")
    assert remotes.load(home) == {}
    assert os.stat(home / remotes.CONFIG).st_size > 0


class _TokenRegistry(http.server.BaseHTTPRequestHandler):
    """A registry's bearer-token flow, and nothing else: /v2/team/repo/tags/list
    answers 401 with a Bearer challenge unless the token is sent; /token
    issues it (to USER:PASSWORD in basic auth, or to anyone when `anonymous`);
    /v2/team/repo/manifests/html answers a web page."""

    anonymous = False
    port = 0
    seen: list[str] = []  # noqa: RUF012 (the test resets it)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        auth = self.headers.get("authorization", "")
        self.seen.append(f"{self.path.split('?')[0]} {auth.split(' ')[0] or 'none'}")
        if self.path.startswith("/token"):
            good = "Basic " + base64.b64encode(b"USER:PASSWORD").decode()
            if auth != good and not self.anonymous:
                self._answer(401, b"{}")
            elif "scope=repository%3Ateam%2Frepo%3Apull" not in self.path:
                self._answer(400, b"{}")
            else:
                self._answer(200, b'{"token": "T0KEN"}')
        elif auth != "Bearer T0KEN":
            realm = f"http://127.0.0.1:{self.port}/token"
            self._answer(
                401,
                b"{}",
                {
                    "WWW-Authenticate": f'Bearer realm="{realm}",service="test",scope="repository:team/repo:pull"'
                },
            )
        elif self.path.endswith("/manifests/html"):
            self._answer(200, b"<html>sign in</html>", {"Content-Type": "text/html"})
        else:
            self._answer(200, b'{"name": "team/repo", "tags": ["a-1.0-0123456789ab"]}')

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize("anonymous", [False, True])
def test_bearer_token_flow(anonymous: bool) -> None:
    import httpx
    import trio

    from nwcache.daemon.registry import Refused, Registry

    _TokenRegistry.anonymous = anonymous
    _TokenRegistry.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _TokenRegistry.port = server.server_port
    url = f"http://127.0.0.1:{server.server_port}"
    credentials = None if anonymous else remotes.Credentials("USER", "PASSWORD")

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            registry = Registry(remotes.Remote("t", url, "team/repo"), client, credentials)
            assert await registry.tags() == ["a-1.0-0123456789ab"]
            assert await registry.tags() == ["a-1.0-0123456789ab"]  # the token is kept
            with pytest.raises(BadAnswer):
                await registry.get_manifest("html")
            if not anonymous:
                wrong = Registry(
                    remotes.Remote("t", url, "team/repo"), client, remotes.Credentials("USER", "x")
                )
                with pytest.raises(Refused):
                    await wrong.tags()

    try:
        trio.run(main)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    # Asked without auth, challenged; the token asked for with the credentials
    # (or none); the request again with the token, which the next one reuses.
    assert _TokenRegistry.seen[:4] == [
        "/v2/team/repo/tags/list none",
        f"/token {'none' if anonymous else 'Basic'}",
        "/v2/team/repo/tags/list Bearer",
        "/v2/team/repo/tags/list Bearer",
    ]
