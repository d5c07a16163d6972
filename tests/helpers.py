"""Plain helpers of the tests, benchmarks and fault campaigns: the demo
projects, a clean environment for subprocesses (the machine's global pip
configuration and PIP_* variables left out), venvs and their site-packages.

Nothing here changes the process's environment: importing tests.conftest
turns bytecode off for the suite, importing this module does not, so that
`make faults` and `make bench-load` run the product as it ships.
"""

from __future__ import annotations

import ensurepip
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

PROJECTS_DIR = Path(__file__).parent / "projects"
# kind -> (project directory, distribution name as it appears in the wheel file name)
PROJECTS: dict[str, tuple[str, str]] = {
    "pure": ("purepkg", "nwdemo_pure"),
    "ext": ("extpkg", "nwdemo_ext"),
    "sharedlib": ("sharedlib", "nwdemo_sharedlib"),
}
SOURCE_DATE_EPOCH = "1700000000"
_SUBPROCESS_TIMEOUT = 240


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without any PIP_* setting, pip pointed at no config file,
    never prompting, and a fixed SOURCE_DATE_EPOCH."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INPUT="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH,
    )
    if extra:
        env.update(extra)
    return env


def run(
    argv: list[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command with the clean environment, capturing text output; on
    failure (with check) the assertion message carries the output."""
    result = subprocess.run(
        [os.fspath(arg) for arg in argv],
        env=clean_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=_SUBPROCESS_TIMEOUT,
        check=False,
    )
    if check:
        assert result.returncode == 0, (
            f"{argv} exited with {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def pip_wheel_command(project: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        str(out),
        str(project),
    ]


def make_venv(path: Path) -> Path:
    """A new virtual environment with pip at `path`; returns its python.

    `python -m venv --without-pip`, then pip installed offline from the wheel
    that ensurepip bundles, without byte-compiling: that is what `python -m
    venv` itself does, minus setuptools and the compile step, which take most
    of its 10+ seconds here. Without a bundled wheel, plain `python -m venv`."""
    bundled = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    if not bundled:
        run([sys.executable, "-m", "venv", path])
    else:
        run([sys.executable, "-m", "venv", "--without-pip", path])
        pip_wheel = bundled[-1]
        run(
            [
                path / "bin" / "python",
                pip_wheel / "pip",
                "install",
                "--no-index",
                "--no-compile",
                "-q",
                pip_wheel,
            ]
        )
    python = path / "bin" / "python"
    assert (path / "lib").is_dir()
    assert python.exists()
    return python


def new_venv(path: Path, python: str | os.PathLike[str] = sys.executable) -> Path:
    """A new venv without pip at `path` (faster than make_venv); returns `path`."""
    subprocess.run(
        [os.fspath(python), "-m", "venv", "--without-pip", str(path)],
        env=clean_env(),
        capture_output=True,
        check=True,
        timeout=_SUBPROCESS_TIMEOUT,
    )
    return path


def site_of(venv: Path) -> Path:
    """The venv's site-packages (of whichever Python 3 made it)."""
    found = sorted((venv / "lib").glob("python3.*/site-packages"))
    if found:
        return found[0]
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
