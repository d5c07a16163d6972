"""The local archive commands through main(argv), as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nwcache.client.cli import main
from tests.vectors.generate import FILENAME

VECTORS = Path(__file__).parent / "vectors"
V2 = VECTORS / "ok-v2-content-links" / FILENAME
CLASSIC = VECTORS / "ok-classic-minimal" / FILENAME


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["convert"],
        ["convert", "x.whl", "--to", "3"],
        ["convert", "x.whl", "--level", "23"],
        ["convert", "x.whl", "--level", "high"],
        ["convert", "x.whl", "--window-log", "9"],
        ["inspect", "x.whl", "--bogus"],
        ["unpack", "x.whl"],
        ["unpack", "x.whl", "d", "--links", "reflink"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: " in err
    assert "hint: " in err


def test_level_with_to_1_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(V2), "--to", "1", "--level", "5"]) == 2
    assert "--level and --window-log apply to --to 2 only" in capsys.readouterr().err


def test_missing_archive_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path / "nope-1.0-py3-none-any.whl")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: ")
    assert "No such file or directory" in err[0]
    assert err[1].startswith("hint: ")


def test_not_a_wheel_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    odd = tmp_path / "archive.zip"
    odd.write_bytes(CLASSIC.read_bytes())
    assert main(["verify", str(odd)]) == 1
    assert "[wheel-filename]" in capsys.readouterr().err


def test_inspect_json_reads_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(V2), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    expected = next(v for v in manifest["vectors"] if v["name"] == "ok-v2-content-links")
    assert info["name"] == "demo"
    assert info["version"] == "1.0"
    assert info["tags"] == ["py3-none-any"]
    assert info["format_version"] == "2.0"
    assert info["classic_wheel_version"] == "1.0"
    assert info["window_log"] == 23
    assert info["files"] == expected["files"]
    assert info["content_links"] == expected["content_links"] == 3
    assert info["executables"] == 4
    assert info["content_digest"] == expected["content_digest"]
    assert info["archive_size"] == V2.stat().st_size
    assert info["installed_size"] > info["payload_compressed_size"] > 0


def test_inspect_human(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(CLASSIC)]) == 0
    out = capsys.readouterr().out
    assert "format          1.0" in out
    assert "duplicate files 0" in out
    assert "content digest  sha256:" in out


def test_verify(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(V2), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is True
    assert result["files"] == 9


def test_convert_defaults_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["convert", str(CLASSIC), "--level", "3"]) == 0
    assert (tmp_path / FILENAME).exists()
    assert "format 2" in capsys.readouterr().out
    # Converting the file in place would destroy the input: refused.
    before = (tmp_path / FILENAME).read_bytes()
    assert main(["convert", FILENAME, "--to", "1"]) == 1
    assert "[destination-is-input]" in capsys.readouterr().err
    assert (tmp_path / FILENAME).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [FILENAME]


def test_convert_many_reports_each_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = VECTORS / "record-hash" / FILENAME
    out = tmp_path / "a"
    assert main(["convert", str(bad), str(V2), "-o", str(out), "--to", "1"]) == 1
    assert (out / FILENAME).exists()  # the good one was written (same name: the bad one left nothing)
    captured = capsys.readouterr()
    assert captured.err.count("error: ") == 1
    assert "[record-hash]" in captured.err


@pytest.mark.parametrize("links", ["copy", "hardlink", "symlink"])
def test_unpack_link_modes(links: str, tmp_path: Path) -> None:
    dest = tmp_path / "tree"
    assert main(["unpack", str(V2), str(dest), "--links", links]) == 0
    lib = dest / "demo/lib"
    real = lib / "libfoo.so"  # first in path order: stored
    for name in ("libfoo.so.1", "libfoo.so.1.2.3"):
        path = lib / name
        assert path.read_bytes() == real.read_bytes()
        assert os.access(path, os.X_OK)
        if links == "symlink":
            assert os.readlink(path) == "libfoo.so"
        elif links == "hardlink":
            assert path.stat().st_ino == real.stat().st_ino
        else:
            assert path.stat().st_ino != real.stat().st_ino
            assert not path.is_symlink()
    wheel = (dest / "demo-1.0.dist-info/WHEEL").read_bytes()
    assert wheel.startswith(b"Wheel-Version: 1.0\n")  # the classic form RECORD describes
    assert os.access(dest / "demo-1.0.data/scripts/demo-tool", os.X_OK)
    assert not os.access(
        dest / "demo/core.py" if (dest / "demo/core.py").exists() else dest / "demo/__init__.py", os.X_OK
    )


def test_unpack_refuses_a_non_empty_destination(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "keep").write_text("mine")
    assert main(["unpack", str(V2), str(tmp_path / "tree")]) == 1
    assert "[destination-exists]" in capsys.readouterr().err
    assert os.listdir(tmp_path / "tree") == ["keep"]


def test_console_script_and_module_entry_points() -> None:
    env = {**os.environ, "NO_COLOR": "1"}
    script = Path(sys.executable).parent / "nwcache"
    for argv in ([str(script), "--version"], [sys.executable, "-m", "nwcache", "--version"]):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("nwcache ")
    done = subprocess.run([str(script), "inspect"], capture_output=True, text=True, check=False)
    assert done.returncode == 2


def test_client_start_imports_nothing_heavy() -> None:
    code = "import sys, nwcache.client.cli; print(sorted(m for m in ('zstandard','trio','lmdb','pyfuse3') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def one_json_error(out: str, err: str, kind: str, code: int) -> dict[str, object]:
    """--json on an error path: one JSON document on stdout naming the error,
    and the same error as `error:` + `hint:` lines on stderr."""
    error = json.loads(out)["error"]
    assert (error["kind"], error["exit"]) == (kind, code), error
    assert f"error: {error['message']}" in err.splitlines()
    assert f"hint: {error['hint']}" in err.splitlines()
    return dict(error)


@pytest.mark.parametrize(
    ("argv", "kind", "code"),
    [
        (["rollback", "--env", "v", "--to", "0", "--json"], "UsageError", 2),
        (["install", "--json", "--env", "v"], "UsageError", 2),
        (["frobnicate", "--json"], "UsageError", 2),
        (["convert", str(V2), "--to", "1", "--level", "5", "--json"], "UsageError", 2),
        (["inspect", "missing-1.0-py3-none-any.whl", "--json"], "ArchiveError", 1),
        (["verify", str(VECTORS / "record-hash" / FILENAME), "--json"], "RecordMismatch", 1),
        (["unpack", "missing-1.0-py3-none-any.whl", "out", "--json"], "ArchiveError", 1),
        (["list", "--env", "v", "--json"], "NoDaemon", 3),
        (["install", "missing.whl", "--env", "v", "--json"], "NotAFile", 1),
        (["install", "missing.whl", "--env", "v", "--j"], "NotAFile", 1),
    ],
)
def test_json_errors_are_one_document_on_stdout(
    argv: list[str],
    kind: str,
    code: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from nwcache.client import remote

    monkeypatch.setenv("NWCACHE_SOCKET", str(tmp_path / "none.sock"))
    monkeypatch.chdir(tmp_path)
    assert remote.main(argv) == code
    out, err = capsys.readouterr()
    one_json_error(out, err, kind, code)


def test_convert_json_reports_each_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = VECTORS / "record-hash" / FILENAME
    assert main(["convert", str(CLASSIC), str(bad), "-o", str(tmp_path / "out"), "--json"]) == 1
    out, err = capsys.readouterr()
    assert f"{bad}: demo/core.py: content does not match its RECORD hash [record-hash]" in err
    document = json.loads(out)
    assert [c["file"] for c in document["converted"]] == [str(CLASSIC)]
    assert [f["file"] for f in document["failed"]] == [str(bad)]
    assert document["error"]["exit"] == 1
    assert document["error"]["message"].startswith("1 of 2 inputs failed; the first: ")
    assert main(["convert", str(CLASSIC), "-o", str(tmp_path / "out2"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["failed"] == []


def test_help_describes_every_positional_and_service_action() -> None:
    import argparse

    from nwcache.client.cli import build_parser

    def walk(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
        for action in parser._actions:
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                yield parser.prog, action
            if isinstance(action, argparse._SubParsersAction):
                assert action.help, parser.prog
                for sub in action.choices.values():
                    yield from walk(sub)

    found = list(walk(build_parser()))
    # convert 1, inspect/verify 2, unpack 2, env 3, install, sync, lock, uninstall, service, remote 3, push
    assert len(found) == 17
    for prog, action in found:
        assert action.help, f"{prog} {action.metavar or action.dest} has no help"
    wide = {**os.environ, "COLUMNS": "200"}
    service = subprocess.run(
        [sys.executable, "-m", "nwcache", "service", "--help"],
        env=wide,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("install", "uninstall", "status"):
        assert f"\n  {name} " in service
    top = subprocess.run(
        [sys.executable, "-m", "nwcache", "--help"], env=wide, capture_output=True, text=True, check=True
    )
    assert "install, uninstall or status" in top.stdout


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="needs systemctl")
def test_service_install_without_a_user_manager(tmp_path: Path) -> None:
    """No user manager to talk to (an empty runtime directory, no bus):
    one line saying so, a hint naming both ways out, nothing written."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    env.update(XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(tmp_path / "config"))
    done = subprocess.run(
        [sys.executable, "-m", "nwcache", "service", "install"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("error: no systemd user manager runs for ")
    assert "'nwcache daemon'" in lines[1]
    assert "'loginctl enable-linger " in lines[1]
    assert not (tmp_path / "config").exists()
