"""`nwcache service install|uninstall|status`: the systemd user unit.

The unit in systemd/nwcache.service is the template; installing writes it to
$XDG_CONFIG_HOME/systemd/user/nwcache.service with ExecStart naming this
interpreter (and NWCACHE_HOME / NWCACHE_SOCKET when they are set), reloads
systemd and enables the unit with --now."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

UNIT_NAME = "nwcache.service"
TEMPLATE = Path(__file__).resolve().parent.parent / "systemd" / UNIT_NAME


def unit_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "systemd" / "user" / UNIT_NAME


def render_unit(template: str) -> str:
    lines = []
    for line in template.splitlines():
        if line.startswith("ExecStart="):
            line = f"ExecStart={sys.executable} -m nwcache daemon"
            lines.append(line)
            for name in ("NWCACHE_HOME", "NWCACHE_SOCKET"):
                if name in os.environ:
                    lines.append(f"Environment={name}={os.environ[name]}")
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def _template() -> str:
    if TEMPLATE.is_file():
        return TEMPLATE.read_text()
    from importlib.resources import files

    return (files("nwcache") / "nwcache.service").read_text()


def _systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True, check=False)


def main(action: str) -> int:
    if shutil.which("systemctl") is None:
        print("error: systemctl is not available on this machine", file=sys.stderr)
        print("hint: run the daemon in the foreground with 'nwcache daemon'", file=sys.stderr)
        return 1
    path = unit_path()
    if action == "install":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_unit(_template()))
        for step in (("daemon-reload",), ("enable", "--now", UNIT_NAME)):
            done = _systemctl(*step)
            if done.returncode != 0:
                print(
                    f"error: systemctl --user {' '.join(step)}: {done.stderr.strip() or done.stdout.strip()}",
                    file=sys.stderr,
                )
                print(
                    f"hint: the unit is at {path}; is a user systemd instance running (loginctl enable-linger)?",
                    file=sys.stderr,
                )
                return 1
        print(f"installed and started {path}")
        return 0
    if action == "uninstall":
        _systemctl("disable", "--now", UNIT_NAME)
        existed = path.exists()
        path.unlink(missing_ok=True)
        _systemctl("daemon-reload")
        print(f"removed {path}" if existed else f"{path} was not installed")
        return 0
    done = _systemctl("is-active", UNIT_NAME)
    state = done.stdout.strip() or "unknown"
    print(f"{UNIT_NAME}: {state} ({path}{'' if path.exists() else ', not installed'})")
    return 0 if state == "active" else 3
