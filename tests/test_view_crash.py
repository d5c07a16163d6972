"""Killing the daemon at every step of registering and unregistering a venv
(the venv's directory switched to the view and back) leaves the venv usable:
after the next start it imports what it held, the venv is either a link to
the view or a real directory, the store agrees, fsck is clean and no mount or
leftover is left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nwcache.daemon.linking import is_mount_point
from nwcache.daemon.runner import ServiceThread
from nwcache.daemon.store import Store
from tests.conftest import clean_env
from tests.helpers import new_venv, site_of

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"),
    pytest.mark.slow,
]

_CHILD = r"""
import sys
from pathlib import Path
from nwcache.daemon.runner import ServiceThread
home, venv, step = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
with ServiceThread(home, home / "view") as running:
    service = running.service
    if step in ("register", "both"):
        running.call(service.register, venv)
        (venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages" / "layer.py").write_text("LAYER = 1\n")
    if step in ("unregister", "both"):
        running.call(service.unregister, venv)
print("finished")
"""

REGISTER_POINTS = ["registered", "root-filled", "link-made", "link-exchanged"]
UNREGISTER_POINTS = ["restore-filled", "restore-exchanged", "restored"]


def child(home: Path, venv: Path, step: str, crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = clean_env({"PYTHONPATH": str(Path(__file__).parent.parent)})
    if crash_at:
        env["NWCACHE_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-c", _CHILD, str(home), str(venv), step],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def imports(venv: Path, module: str) -> bool:
    done = subprocess.run(
        [venv / "bin" / "python", "-c", f"import {module}"], capture_output=True, check=False
    )
    return done.returncode == 0


@pytest.mark.parametrize("point", REGISTER_POINTS + UNREGISTER_POINTS)
def test_killed_while_switching(tmp_path: Path, point: str) -> None:
    home = tmp_path / "home"
    venv = tmp_path / "venv"
    new_venv(venv)
    (site_of(venv) / "mine.py").write_text("MINE = 1\n")
    if point in UNREGISTER_POINTS:
        assert "finished" in child(home, venv, "register", None).stdout
        step = "unregister"
    else:
        step = "register"
    killed = child(home, venv, step, point)
    assert killed.returncode == -9, killed.stderr
    # What the killed daemon left: a dead mount (cleared at the next start).
    with ServiceThread(home, home / "view") as running:
        service = running.service
        assert service is not None
        assert imports(venv, "mine")
        registered = [e.path for e in service.store.envs()]
        if venv.is_symlink():
            assert registered == [str(venv)]
            if point in UNREGISTER_POINTS:
                assert imports(venv, "layer")
        else:
            assert registered == []
            assert site_of(venv).is_dir()
            assert not site_of(venv).is_symlink()
        assert not list(venv.parent.glob("venv.nwcache-*"))
        roots = home / "roots"
        held = sorted(p.name for p in roots.iterdir()) if roots.exists() else []
        assert held == [e.id.hex() for e in service.store.envs()]
    assert not is_mount_point(home / "view")
    with Store(home) as store:
        assert store.fsck() == []
    # Without the daemon, a registered venv's python is a stub that says so.
    assert imports(venv, "mine") == (not venv.is_symlink())
