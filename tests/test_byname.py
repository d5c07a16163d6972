"""Install by name (issue 15, docs/INSTALL-BY-NAME.md): uv resolves against
a real package index served on 127.0.0.1 (tests/index_server.py), the
daemon downloads and verifies, one generation; sync; the error cases; the
dependency check of local wheels. Real daemon, real venvs, real CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_venv
from tests.daemon_process import Daemon
from tests.helpers import new_venv
from tests.index_server import PackageIndex, build_index_sdists, build_index_wheels, standard_index


@pytest.fixture(scope="module")
def index_wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The index's files: wheels, and two sdists (one does not build)."""
    root = tmp_path_factory.mktemp("index")
    return build_index_wheels(root) + build_index_sdists(root / "sdists")


@pytest.fixture
def index(index_wheels: list[Path]) -> Iterator[PackageIndex]:
    with standard_index(index_wheels).serve() as served:
        yield served


@pytest.fixture
def running(daemon: Daemon, tmp_path: Path) -> Daemon:
    """The daemon started, its CLI environment set for uv: a private cache,
    no uv or pip configuration, no inherited index."""
    for key in list(daemon.env):
        if key.startswith(("UV_", "PIP_INDEX", "PIP_EXTRA_INDEX", "PIP_FIND_LINKS")):
            del daemon.env[key]
    daemon.env.update(
        UV_CACHE_DIR=str(tmp_path / "uv-cache"),
        UV_NO_CONFIG="1",
        PIP_CONFIG_FILE=os.devnull,
        XDG_CACHE_HOME=str(tmp_path / "cache"),  # where built sdists are kept
    )
    daemon.start()
    return daemon


def installed(daemon: Daemon, venv: Path) -> dict[str, str]:
    code, out, err = daemon.cli("list", "--env", venv, "--json")
    assert code == 0, err
    return {p["name"].replace("_", "-").lower(): p["version"] for p in json.loads(out)}


def generations(daemon: Daemon, venv: Path) -> int:
    code, out, err = daemon.cli("history", "--env", venv, "--json")
    assert code == 0, err
    return len(json.loads(out))


def leftovers(daemon: Daemon) -> list[Path]:
    downloads = daemon.home / "downloads"
    return sorted(p for p in downloads.rglob("*") if p.is_file()) if downloads.exists() else []


def registered(running: Daemon, venv: Path) -> Path:
    """A new venv, registered through the CLI."""
    make_venv(venv)
    code, _, err = running.cli("env", "register", venv)
    assert code == 0, err
    return venv


def test_install_by_name_with_dependencies(running: Daemon, index: PackageIndex, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    make_venv(venv)
    code, out, err = running.cli("install", "nwidx-app[fast]", "--env", venv, "--index-url", index.simple)
    assert code == 0, err
    # The dependency, the extra, not the yanked 3.0, not the dependency whose marker is false.
    have = installed(running, venv)
    assert (have["nwidx-app"], have["nwidx-lib"], have["nwidx-fast"]) == ("1.0", "2.0", "1.0")
    assert "nwidx-never" not in have
    assert "3 downloaded" in out, out
    done = subprocess.run(
        [venv / "bin" / "python", "-c", "import nwidx_app, nwidx_lib, nwidx_fast; print(nwidx_lib.VERSION)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2.0"
    script = subprocess.run([venv / "bin" / "nwidx-app"], capture_output=True, text=True, check=False)
    assert script.stdout.strip() == "nwidx-app 1.0", script.stderr
    assert index.downloads("nwidx_lib-2.0-py3-none-any.whl") == 1
    assert leftovers(running) == []

    # The same again: nothing to do, no generation added.
    before = generations(running, venv)
    code, out, err = running.cli("install", "nwidx-app[fast]", "--env", venv, "--index-url", index.simple)
    assert code == 0, err
    assert "nothing to do" in out
    assert generations(running, venv) == before

    # A second venv, empty (no pip): every file's hash was ingested before, nothing is downloaded.
    other = tmp_path / "other"
    new_venv(other)
    code, out, err = running.cli("install", "nwidx-app[fast]", "--env", other, "--index-url", index.simple)
    assert code == 0, err
    assert "0 downloaded, 3 already stored" in out, out
    assert index.downloads("nwidx_lib-2.0-py3-none-any.whl") == 1
    assert index.downloads("nwidx_app-1.0-py3-none-any.whl") == 1


def test_installed_versions_stay_unless_upgrade(running: Daemon, index: PackageIndex, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    make_venv(venv)
    code, _, err = running.cli("install", "nwidx-lib==1.0", "--env", venv, "--index-url", index.simple)
    assert code == 0, err
    code, out, err = running.cli(
        "install", "nwidx-app", "--env", venv, "--index-url", index.simple, "--dry-run"
    )
    assert code == 0, err
    assert "+nwidx-app 1.0" in out
    assert "nwidx-lib" not in out  # satisfied by the installed 1.0: it stays
    assert "nwidx-app" not in installed(running, venv)  # dry run
    code, _, err = running.cli("install", "nwidx-app", "--env", venv, "--index-url", index.simple)
    assert code == 0, err
    versions = installed(running, venv)
    assert versions["nwidx-lib"] == "1.0"
    code, _, err = running.cli(
        "install", "nwidx-app", "--upgrade", "--env", venv, "--index-url", index.simple
    )
    assert code == 0, err
    versions = installed(running, venv)
    assert versions["nwidx-lib"] == "2.0"


def error_of(result: tuple[int, str, str]) -> tuple[int, str, str]:
    """(exit code, error line, hint line); one of each, no traceback."""
    code, _, err = result
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("error: ")]
    hints = [line for line in lines if line.startswith("hint: ")]
    assert len(errors) == 1, err
    assert len(hints) == 1, err
    return code, errors[0], hints[0]


def test_errors_change_nothing(running: Daemon, index: PackageIndex, tmp_path: Path) -> None:
    venv = registered(running, tmp_path / "venv")
    before = installed(running, venv)
    gens = generations(running, venv)

    def install(*argv: str) -> tuple[int, str, str]:
        return error_of(running.cli("install", *argv, "--env", venv, "--index-url", index.simple))

    code, line, _ = install("nwidx-lib>=5")
    assert code == 4
    code, out, _ = running.cli(
        "install", "nwidx-lib>=5", "--env", venv, "--index-url", index.simple, "--json"
    )
    assert code == 4
    assert json.loads(out)["error"]["kind"] == "NoSolution"
    assert json.loads(out)["error"]["exit"] == 4
    assert "no set of versions" in line
    assert "only nwidx-lib<=3.0 is available" in line

    code, line, hint = install("nwidx-bad")
    assert code == 1
    assert "sha256" in line, line
    assert "nwidx_bad-1.0" in line, line
    assert "tampered" in hint

    for fault, words in (("404", "404"), ("html", "HTML page"), ("truncate", "broke off")):
        index.faults["nwidx_fast-1.0-py3-none-any.whl"] = fault
        code, line, _ = install("nwidx-fast")
        assert code == 1
        assert words in line, (fault, line)
        assert leftovers(running) == [], fault
    index.faults.clear()

    # uv cannot read an index nobody serves.
    code, line, _ = error_of(
        running.cli("install", "nwidx-fast", "--env", venv, "--index-url", "http://127.0.0.1:9/simple")
    )
    assert code == 1
    assert "could not read the index" in line

    assert installed(running, venv) == before
    assert generations(running, venv) == gens
    assert leftovers(running) == []
    # Still installs once the index behaves.
    code, _, err = running.cli("install", "nwidx-fast", "--env", venv, "--index-url", index.simple)
    assert code == 0, err


def test_sync_is_exactly_the_lock(running: Daemon, index: PackageIndex, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    make_venv(venv)
    code, _, err = running.cli("install", "nwidx-app[fast]", "--env", venv, "--index-url", index.simple)
    assert code == 0, err
    lock = tmp_path / "requirements.txt"
    lock.write_text("nwidx-lib==1.0\nnwidx-old==1.0\n")
    gens = generations(running, venv)
    code, out, err = running.cli(
        "sync", lock, "--env", venv, "--index-url", index.simple, "--dry-run", "--json"
    )
    assert code == 0, err
    plan = json.loads(out)
    assert [p["name"] for p in plan["install"]] == ["nwidx-lib", "nwidx-old"]
    assert set(plan["remove"]) >= {"nwidx-app", "nwidx-fast", "pip"}
    assert generations(running, venv) == gens  # a dry run
    code, out, err = running.cli("sync", lock, "--env", venv, "--index-url", index.simple, "--json")
    assert code == 0, err
    changes = {c["name"]: (c["old"], c["new"]) for c in json.loads(out)["changes"]}
    assert changes["nwidx-lib"] == ("2.0", "1.0")
    assert changes["nwidx-app"] == ("1.0", None)
    versions = installed(running, venv)
    assert versions == {"nwidx-lib": "1.0", "nwidx-old": "1.0"}  # pip, app and fast removed
    assert generations(running, venv) == gens + 1
    code, out, err = running.cli("sync", lock, "--env", venv, "--index-url", index.simple)
    assert code == 0, err
    assert "nothing to do" in out
    loose = tmp_path / "loose.txt"
    loose.write_text("nwidx-lib>=1\n")
    code, line, _ = error_of(running.cli("sync", loose, "--env", venv, "--index-url", index.simple))
    assert code == 1
    assert "not pinned" in line


def test_local_wheel_dependency_check(
    running: Daemon, index: PackageIndex, index_wheels: list[Path], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    make_venv(venv)
    app = next(w for w in index_wheels if w.name.startswith("nwidx_app-"))
    code, line, _ = error_of(running.cli("install", app, "--env", venv, "--strict"))
    assert code == 1
    assert "requires nwidx-lib>=1.0, which is not installed" in line
    assert not (venv / "bin" / "nwidx-app").exists()
    code, out, err = running.cli("install", app, "--env", venv, "--no-deps")
    assert code == 0, err
    assert "warning: nwidx-app 1.0 requires nwidx-lib>=1.0, which is not installed" in err
    # The same file again: nothing to do.
    code, out, err = running.cli("install", app, "--env", venv)
    assert code == 0, err
    assert "nothing to do" in out
    # The plain line (read without argparse): the daemon checks after the install.
    plain = tmp_path / "plain"
    make_venv(plain)
    code, out, err = running.cli("install", app, "--env", plain)
    assert code == 0, err
    assert "warning: nwidx-app 1.0 requires nwidx-lib>=1.0, which is not installed" in err
    lib = next(w for w in index_wheels if w.name.startswith("nwidx_lib-1.0-"))
    code, out, err = running.cli("install", lib, "--env", plain)
    assert code == 0, err
    assert "warning" not in err  # now satisfied


def test_sdists_are_built_once(running: Daemon, index: PackageIndex, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    make_venv(venv)
    code, _, err = running.cli("install", "nwidx-src", "--env", venv, "--index-url", index.simple)
    assert code == 0, err
    assert installed(running, venv)["nwidx-src"] == "1.0"
    built = sorted((tmp_path / "cache" / "nwcache" / "built").rglob("*.whl"))
    assert [w.name for w in built] == ["nwidx_src-1.0-py3-none-any.whl"]
    stamp = built[0].stat().st_mtime_ns
    other = tmp_path / "other"
    make_venv(other)
    code, _, err = running.cli("install", "nwidx-src", "--env", other, "--index-url", index.simple)
    assert code == 0, err
    assert built[0].stat().st_mtime_ns == stamp  # from the cache, not built again

    code, line, hint = error_of(
        running.cli("install", "nwidx-broken", "--env", other, "--index-url", index.simple)
    )
    assert code == 1
    assert "did not build" in line
    assert "gcc" in line
    assert "nothing was changed" in hint
    assert "nwidx-broken" not in installed(running, other)


def test_credentials_from_the_index_url_are_never_shown(
    running: Daemon, index: PackageIndex, tmp_path: Path
) -> None:
    index.auth = ("alice", "s3cret-token")
    venv = tmp_path / "venv"
    make_venv(venv)
    with_userinfo = index.simple.replace("http://", "http://alice:s3cret-token@")
    code, out, err = running.cli("install", "nwidx-fast", "--env", venv, "--index-url", with_userinfo)
    assert code == 0, err
    assert installed(running, venv)["nwidx-fast"] == "1.0"
    # A failing download names the URL without them.
    index.faults["nwidx_lib-2.0-py3-none-any.whl"] = "404"
    code, line, _ = error_of(running.cli("install", "nwidx-lib", "--env", venv, "--index-url", with_userinfo))
    assert code == 1
    assert "404" in line
    code, history, _ = running.cli("history", "--env", venv, "--json")
    for text in (out, err, line, history, running.log.read_text()):
        assert "s3cret" not in text


def pylock(path: Path, packages: list[tuple[str, str, str, str]]) -> Path:
    """A PEP 751 lock of (name, version, url, sha256) wheels."""
    lines = ['lock-version = "1.0"', 'created-by = "tests"', ""]
    for name, version, url, sha256 in packages:
        lines += [
            "[[packages]]",
            f'name = "{name}"',
            f'version = "{version}"',
            f'wheels = [{{ url = "{url}", hashes = {{ sha256 = "{sha256}" }} }}]',
            "",
        ]
    path.write_text("\n".join(lines))
    return path


def test_sync_of_a_pylock(running: Daemon, index: PackageIndex, tmp_path: Path) -> None:
    venv = registered(running, tmp_path / "venv")
    before = installed(running, venv)
    lib = index.file("nwidx_lib-1.0-py3-none-any.whl")
    assert lib is not None
    (tmp_path / "good").mkdir()
    good = tmp_path / "good" / "pylock.toml"
    pylock(good, [("nwidx-lib", "1.0", f"{index.url}/files/{lib.filename}", lib.sha256)])

    # A wheel for other tags only: refused before anything is fetched.
    (tmp_path / "other").mkdir()
    other = tmp_path / "other" / "pylock.toml"
    pylock(
        other,
        [("nwidx-lib", "1.0", f"{index.url}/files/nwidx_lib-1.0-cp27-cp27m-win32.whl", lib.sha256)],
    )
    code, line, _ = error_of(running.cli("sync", other, "--env", venv))
    assert code == 1
    assert "nothing this environment can install" in line
    # A file on a host nobody serves: the daemon says so.
    (tmp_path / "gone").mkdir()
    gone = tmp_path / "gone" / "pylock.toml"
    pylock(gone, [("nwidx-lib", "1.0", f"http://127.0.0.1:9/files/{lib.filename}", lib.sha256)])
    code, line, hint = error_of(running.cli("sync", gone, "--env", venv))
    assert code == 1
    assert "cannot connect to 127.0.0.1" in line
    assert "network" in hint
    assert installed(running, venv) == before

    code, _, err = running.cli("sync", good, "--env", venv)
    assert code == 0, err
    assert installed(running, venv) == {"nwidx-lib": "1.0"}


def test_two_venvs_at_once_download_once(running: Daemon, index: PackageIndex, tmp_path: Path) -> None:
    import subprocess
    import sys

    venvs = [tmp_path / "a", tmp_path / "b"]
    for venv in venvs:
        registered(running, venv)
    index.faults["nwidx_lib-2.0-py3-none-any.whl"] = "slow"
    argv = [sys.executable, "-m", "nwcache", "install", "nwidx-app", "--index-url", index.simple, "--env"]
    clients = [
        subprocess.Popen(
            [*argv, str(v)], env=running.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for v in venvs
    ]
    try:
        outputs = [c.communicate(timeout=120) for c in clients]
    finally:
        index.paused.set()
        for c in clients:
            if c.poll() is None:
                c.kill()
                c.communicate()
    for client, (_, err) in zip(clients, outputs, strict=True):
        assert client.returncode == 0, err
    assert index.downloads("nwidx_lib-2.0-py3-none-any.whl") == 1
    assert index.downloads("nwidx_app-1.0-py3-none-any.whl") == 1
    for venv in venvs:
        assert installed(running, venv)["nwidx-lib"] == "2.0"
    assert leftovers(running) == []


@pytest.mark.skipif(not shutil.which("script"), reason="needs script(1) for a terminal")
def test_progress_per_file_on_a_terminal(running: Daemon, index: PackageIndex, tmp_path: Path) -> None:
    import sys

    venv = tmp_path / "venv"
    make_venv(venv)
    command = f"{sys.executable} -m nwcache install nwidx-app --index-url {index.simple} --env {venv}"
    done = subprocess.run(
        ["script", "-q", "-e", "-c", command, "/dev/null"],
        env={**running.env, "TERM": "xterm", "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    assert "downloading (" in done.stdout  # the overall bar
    assert "nwidx_lib-2.0-py3-none-any.whl" in done.stdout  # a bar of its own
    assert "2 downloaded" in done.stdout


def test_a_daemon_killed_mid_download_leaves_no_partial_file(
    running: Daemon, index: PackageIndex, tmp_path: Path
) -> None:
    import time

    from tests.test_life import kill_and_wait_unmounted

    venv = tmp_path / "venv"
    make_venv(venv)
    index.faults["nwidx_lib-2.0-py3-none-any.whl"] = "slow"
    argv = [
        sys.executable,
        "-m",
        "nwcache",
        "install",
        "nwidx-lib",
        "--index-url",
        index.simple,
        "--env",
        str(venv),
    ]
    client = subprocess.Popen(
        argv, env=running.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        partial = running.home / "downloads" / "tmp"
        deadline = time.monotonic() + 60
        while not (partial.is_dir() and any(partial.iterdir())):
            assert client.poll() is None, client.communicate()
            assert time.monotonic() < deadline, "no download started"
            time.sleep(0.02)  # polling for the half-written file, bounded by the deadline
        kill_and_wait_unmounted(running)
    finally:
        index.paused.set()
        client.communicate(timeout=120)
    running.process = None
    running.start()
    assert leftovers(running) == []
    assert not (running.home / "downloads").exists()
    index.faults.clear()
    code, _, err = running.cli("install", "nwidx-lib", "--index-url", index.simple, "--env", venv)
    assert code == 0, err
    assert installed(running, venv)["nwidx-lib"] == "2.0"


def test_local_wheels_and_names_resolve_together(
    running: Daemon, index: PackageIndex, index_wheels: list[Path], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    make_venv(venv)
    app = next(w for w in index_wheels if w.name.startswith("nwidx_app-"))
    code, _, err = running.cli("install", app, "nwidx-fast", "--env", venv, "--index-url", index.simple)
    assert code == 0, err
    have = installed(running, venv)
    # The local wheel's dependency came from the index.
    assert (have["nwidx-app"], have["nwidx-lib"], have["nwidx-fast"]) == ("1.0", "2.0", "1.0")
    assert "warning" not in err


def test_no_daemon_is_said_before_resolving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nwcache.client.cli import main

    monkeypatch.setenv("NWCACHE_SOCKET", str(tmp_path / "none.sock"))
    # An index nobody serves: had it resolved first, the error would be uv's.
    for argv in (
        ["install", "nwidx-app", "--index-url", "http://127.0.0.1:9/simple", "--env", str(tmp_path)],
        ["sync", str(tmp_path / "pylock.toml"), "--env", str(tmp_path)],
    ):
        assert main(argv) == 3
        err = capsys.readouterr().err.splitlines()
        assert err == [
            f"error: no nwcache daemon at {tmp_path / 'none.sock'}",
            "hint: start it with 'nwcache daemon' (foreground) or 'nwcache service install'",
        ]


def test_warm_installs_skip_the_resolver(running: Daemon, index: PackageIndex, tmp_path: Path) -> None:
    """A venv that satisfies the request resolves nothing (as uv); a request
    resolved within NWCACHE_RESOLVE_TTL reuses its lock (--refresh, TTL 0
    resolve again; --offline takes a lock of any age); REQUESTED marks what
    was asked for, not its dependencies (as pip)."""

    def pages() -> int:
        return sum(1 for p in index.requests if p.startswith("/simple/"))

    def bare(name: str) -> Path:
        venv = tmp_path / name
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
        return venv

    first = bare("first")
    code, out, err = running.cli("install", "nwidx-app[fast]", "--env", first, "--index-url", index.simple)
    assert code == 0, err
    site = next((first / "lib").glob("python3.*/site-packages"))
    assert (site / "nwidx_app-1.0.dist-info" / "REQUESTED").exists()
    assert not (site / "nwidx_lib-2.0.dist-info" / "REQUESTED").exists()
    assert not (site / "nwidx_fast-1.0.dist-info" / "REQUESTED").exists()
    assert (site / "nwidx_lib-2.0.dist-info" / "INSTALLER").exists()

    # Satisfied (with the extra's dependency): nothing to do, no page asked for.
    asked = pages()
    code, out, err = running.cli("install", "nwidx-app[fast]", "--env", first, "--index-url", index.simple)
    assert code == 0, err
    assert out.startswith("nothing to do: already installed (nwidx-app 1.0)"), out
    assert pages() == asked
    # A version the venv does not have is resolved.
    code, out, err = running.cli(
        "install", "nwidx-lib==1.0", "--env", first, "--index-url", index.simple, "--dry-run"
    )
    assert code == 0, err
    assert "nwidx-lib 2.0 -> 1.0" in out
    assert pages() > asked

    # A second bare venv, the same request: the lock is reused, no page asked for.
    asked = pages()
    second = bare("second")
    code, out, err = running.cli("install", "nwidx-app[fast]", "--env", second, "--index-url", index.simple)
    assert code == 0, err
    assert "0 downloaded, 3 already stored" in out, out
    assert pages() == asked
    assert installed(running, second) == installed(running, first)
    # --refresh, and a window of 0, resolve again.
    code, out, err = running.cli(
        "install", "nwidx-app[fast]", "--env", bare("third"), "--index-url", index.simple, "--refresh"
    )
    assert code == 0, err
    assert pages() > asked
    asked = pages()
    running.env["NWCACHE_RESOLVE_TTL"] = "0"
    code, _, err = running.cli(
        "install", "nwidx-app[fast]", "--env", bare("fourth"), "--index-url", index.simple
    )
    assert code == 0, err
    assert pages() > asked
    # ... except offline: a kept lock of any age.
    asked = pages()
    code, _, err = running.cli(
        "install", "nwidx-app[fast]", "--env", bare("fifth"), "--index-url", index.simple, "--offline"
    )
    assert code == 0, err
    assert pages() == asked
    running.env["NWCACHE_RESOLVE_TTL"] = "soon"
    code, line, hint = error_of(
        running.cli("install", "nwidx-app", "--env", bare("sixth"), "--index-url", index.simple)
    )
    assert code == 2
    assert "NWCACHE_RESOLVE_TTL='soon' is not a number of seconds" in line
    assert "0: resolve every time" in hint


def test_lock_resolves_for_a_venv_and_pins_what_it_holds(
    running: Daemon, index: PackageIndex, tmp_path: Path
) -> None:
    """`nwcache lock SPEC --env V` resolves for V's interpreter; `nwcache lock
    --env V` pins what V holds; sync of that lock makes a new venv the same."""
    venvs = tmp_path / "venvs"
    for name in ("source", "copy", "empty"):
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venvs / name], check=True)
    source = venvs / "source"
    code, _, err = running.cli("install", "nwidx-lib==1.0", "--env", source, "--index-url", index.simple)
    assert code == 0, err

    # Requirements: resolved for the venv, its installed nwidx-lib 1.0 preferred; nothing installed.
    code, out, err = running.cli("lock", "nwidx-app", "--env", source, "--index-url", index.simple)
    assert code == 0, err
    locked = tomllib.loads(out)
    assert locked["lock-version"] == "1.0"
    assert {(p["name"], p["version"]) for p in locked["packages"]} == {
        ("nwidx-app", "1.0"),
        ("nwidx-lib", "1.0"),
    }
    assert all(w["hashes"]["sha256"] for p in locked["packages"] for w in p["wheels"])
    assert "nwidx-app" not in installed(running, source)

    # What the venv holds, as a lock file; sync makes another venv exactly that.
    code, _, err = running.cli("install", "nwidx-app[fast]", "--env", source, "--index-url", index.simple)
    assert code == 0, err
    out_file = tmp_path / "pylock.toml"
    code, out, err = running.cli("lock", "--env", source, "--index-url", index.simple, "-o", out_file)
    assert code == 0, err
    assert out.strip() == f"locked 3 distributions in {out_file}"
    code, _, err = running.cli("sync", out_file, "--env", venvs / "copy")
    assert code == 0, err
    assert (
        installed(running, venvs / "copy")
        == installed(running, source)
        == {
            "nwidx-app": "1.0",
            "nwidx-lib": "1.0",
            "nwidx-fast": "1.0",
        }
    )

    # Refusals: a file name sync would not take, an empty venv, a wheel file.
    code, line, hint = error_of(running.cli("lock", "--env", source, "-o", tmp_path / "lock.toml"))
    assert code == 2
    assert "pylock.toml or pylock.NAME.toml" in line
    assert hint == f"hint: write it as {tmp_path / 'pylock.toml'}"
    code, line, _ = error_of(running.cli("lock", "--env", venvs / "empty", "--index-url", index.simple))
    assert code == 1
    assert "holds no distributions" in line
    code, line, _ = error_of(running.cli("lock", tmp_path / "x-1.0-py3-none-any.whl", "--env", source))
    assert code == 2
    assert "not local wheels" in line
    assert not (tmp_path / "lock.toml").exists()
