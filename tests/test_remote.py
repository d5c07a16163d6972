"""The console script's fast path (nwcache.client.remote): which command lines
it reads itself and which go to argparse, the JSON it speaks without the json
package, and what it imports."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from nwcache import protocol
from nwcache.client import remote
from tests.conftest import clean_env


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["install", "a.whl", "--env", "v"], (["a.whl"], "v", False)),
        (["install", "a.whl", "b.whl", "--env", "v", "--json"], (["a.whl", "b.whl"], "v", True)),
        (["install", "--env", "v", "a.whl"], (["a.whl"], "v", False)),
        (["install", "--json", "a.whl", "--env=v"], (["a.whl"], "v", True)),
    ],
)
def test_plain_install_lines(argv: list[str], expected: tuple[list[str], str, bool]) -> None:
    assert remote.plain_install(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--version"],
        ["list", "--env", "v"],
        ["install"],
        ["install", "a.whl"],  # no --env
        ["install", "--env", "v"],  # no archive
        ["install", "a.whl", "--env"],
        ["install", "a.whl", "--env", "--json"],
        ["install", "a.whl", "--env="],
        ["install", "a.whl", "--env", "v", "--env", "w"],
        ["install", "a.whl", "--env", "v", "--json", "--json"],
        ["install", "-h"],
        ["install", "a.whl", "--env", "v", "--help"],
        ["install", "--", "a.whl", "--env", "v"],
        ["install", "a.whl", "--js", "--env", "v"],  # argparse's abbreviations are argparse's business
        ["install", "a.whl", "-", "--env", "v"],
        ["install", "", "--env", "v"],
        ["install", "a.whl", "--env", "v", "--bind"],
    ],
)
def test_other_lines_go_to_argparse(argv: list[str]) -> None:
    assert remote.plain_install(argv) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["install", "a.whl"], "the following arguments are required: --env"),
        (["install", "--env", "v"], "nothing to install"),
        (["install", "a.whl", "--env", "v", "--bind"], "unrecognized arguments: --bind"),
        (["install", "a.whl", "--env"], "argument --env: expected one argument"),
    ],
)
def test_malformed_install_lines_get_argparse_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert remote.main(argv) == protocol.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"error: {message}" in err
    assert "hint: " in err


def test_both_paths_end_in_the_same_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NWCACHE_SOCKET", str(tmp_path / "none.sock"))
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    missing = tmp_path / "missing.whl"
    for line in (
        ["install", str(missing), "--env", str(tmp_path)],  # the fast path
        ["install", str(missing), "--env", str(tmp_path), "--j"],  # argparse (abbreviated --json)
    ):
        assert remote.main(line) == protocol.EXIT_FAILED
        assert capsys.readouterr().err.splitlines() == [
            f"error: {missing}: no such file",
            "hint: pass paths of .whl archives (classic or 2.0)",
        ]
    for line in (
        ["install", str(wheel), "--env", str(tmp_path)],
        ["install", str(wheel), "--env", str(tmp_path), "--j"],
    ):
        assert remote.main(line) == protocol.EXIT_NO_DAEMON
        err = capsys.readouterr().err.splitlines()
        assert err[0] == f"error: no nwcache daemon at {tmp_path / 'none.sock'} (No such file or directory)"
        assert err[1].startswith("hint: start it with 'nwcache daemon'")


VALUES: list[object] = [
    {"protocol": 1, "op": "install", "args": {"env": "/v", "archives": ["/a b.whl", '/ü\n"x\\.whl']}},
    {"a": None, "b": True, "c": False, "d": -12345678901234567890, "e": [], "f": {}},
    ["\x00\x1f\u2028", "\U0001f600", ""],
]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_is_compact_json(value: object) -> None:
    assert remote.dumps(value) == json.dumps(value, separators=(",", ":"))


@pytest.mark.parametrize(
    "value",
    [*VALUES, {"x": 1.5, "y": [1e300, -0.0]}, {"event": "result", "result": {"n": [1, {"k": "v"}]}}],
)
def test_loads_reads_what_json_writes(value: object) -> None:
    assert remote.loads(json.dumps(value)) == value
    assert remote.loads(json.dumps(value, indent=2)) == value


def test_loads_refuses_what_json_refuses() -> None:
    assert math.isnan(remote.loads("NaN"))
    assert remote.loads("[-Infinity]") == [-math.inf]
    for text in ("", "{", '{"a": 1} x', "[1,]", "{'a': 1}"):
        with pytest.raises(ValueError):  # noqa: PT011 (json's own error is a ValueError too)
            remote.loads(text)
    with pytest.raises(TypeError):
        remote.dumps({"x": 1.5})


def _imported(code: str, tmp_path: Path) -> set[str]:
    env = clean_env({"NWCACHE_SOCKET": str(tmp_path / "none.sock")})
    done = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(done.stdout.split())


def test_the_fast_path_imports_only_c_parts(tmp_path: Path) -> None:
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    modules = _imported(
        f"from nwcache.client.remote import main\nmain(['install', {str(wheel)!r}, '--env', {str(tmp_path)!r}])",
        tmp_path,
    )
    assert "_socket" in modules  # it did try the daemon
    heavy = {"argparse", "pathlib", "typing", "json", "socket", "re", "enum", "shutil", "nwcache.client.cli"}
    assert modules & heavy == set()


def test_argparse_path_imports_no_typing_shutil_or_compressors(tmp_path: Path) -> None:
    modules = _imported(
        f"from nwcache.client.remote import main\nmain(['list', '--env', {str(tmp_path)!r}])", tmp_path
    )
    assert "argparse" in modules
    assert modules & {"typing", "shutil", "bz2", "lzma", "trio", "lmdb", "zstandard"} == set()
