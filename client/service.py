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


def template() -> str:
    """The unit template, systemd/nwcache.service (installed as nwcache.systemd)."""
    from importlib.resources import files

    return (files("nwcache.systemd") / UNIT_NAME).read_text()


def _systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemctl", "--user", *args], capture_output=True, text=True, check=False)


NO_MANAGER_HINT = (
    "run the daemon yourself with 'nwcache daemon' (it stays in the foreground), or have "
    "systemd start a user manager for you at boot with 'loginctl enable-linger {user}' "
    "(as root) and log in again"
)


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


def _why(done: subprocess.CompletedProcess[str]) -> str:
    return (
        (done.stderr.strip() or done.stdout.strip()).splitlines()[0] if (done.stderr or done.stdout) else ""
    )


def main(action: str, as_json: bool = False) -> int:
    """`nwcache service ACTION`; errors as `error:` + `hint:` (and JSON with --json)."""
    from nwcache.report import emit, fail

    def done(result: dict[str, object], text: str, code: int = 0) -> int:
        if as_json:
            emit(result)
        else:
            print(text)
        return code

    if shutil.which("systemctl") is None:
        return fail(
            "NoSystemd",
            "systemctl is not available on this machine",
            NO_MANAGER_HINT.format(user=_user()),
            as_json,
        )
    path = unit_path()
    if action == "install":
        # Asked before anything is written: no user manager, nothing installed.
        probe = _systemctl("show", "--property=Version")
        if probe.returncode != 0:
            return fail(
                "NoSystemd",
                f"no systemd user manager runs for {_user()} here (systemctl --user: {_why(probe)})",
                NO_MANAGER_HINT.format(user=_user()),
                as_json,
            )
        existed = path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_unit(template()))
        for step in (("daemon-reload",), ("enable", "--now", UNIT_NAME)):
            ran = _systemctl(*step)
            if ran.returncode != 0:
                if not existed:  # nothing half-installed
                    _systemctl("disable", UNIT_NAME)
                    path.unlink(missing_ok=True)
                    _systemctl("daemon-reload")
                return fail(
                    "ServiceFailed",
                    f"systemctl --user {' '.join(step)}: {_why(ran)}",
                    f"'systemctl --user status {UNIT_NAME}' and 'journalctl --user -u {UNIT_NAME}' say why; "
                    + ("the unit was removed again" if not existed else f"the unit is at {path}"),
                    as_json,
                )
        return done(
            {"action": "install", "unit": str(path), "state": "active"}, f"installed and started {path}"
        )
    if action == "uninstall":
        _systemctl("disable", "--now", UNIT_NAME)
        existed = path.exists()
        path.unlink(missing_ok=True)
        _systemctl("daemon-reload")
        return done(
            {"action": "uninstall", "unit": str(path), "removed": existed},
            f"removed {path}" if existed else f"{path} was not installed",
        )
    ran = _systemctl("is-active", UNIT_NAME)
    state = ran.stdout.strip() or "unknown"
    return done(
        {"action": "status", "unit": str(path), "installed": path.exists(), "state": state},
        f"{UNIT_NAME}: {state} ({path}{'' if path.exists() else ', not installed'})",
        0 if state == "active" else 3,
    )
