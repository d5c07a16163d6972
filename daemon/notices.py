"""What a registered venv says when the daemon is down.

A venv's site-packages is a symlink into the view. With the view unmounted
(the daemon stopped, or killed: a watcher process unmounts the view when
the daemon dies, daemon/mount.py) the symlink leads into the mount
point's own directory. There, beneath the mount, each registered venv has a
site-packages holding one .pth file, which every interpreter of the venv runs
at start: one line on stderr naming nwcache and how to start it, instead of
"No module named pip".

The notices are written beneath the mounted view through a descriptor of the
mount point opened before mounting (lookups from it stay in the file system
underneath). Before mounting, the notices are taken away again, so that the
mount point is empty as serve_view requires; anything else there is left for
its check to refuse.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from .mount import clear_stale_mount

log = logging.getLogger("nwcache.daemon")

NOTICE = "00-nwcache-daemon-down.pth"


def notice_text(venv: str) -> str:
    message = (
        f"nwcache: the daemon that serves the packages of {venv} is not running; "
        "start it with 'nwcache daemon' (or 'systemctl --user start nwcache')"
    )
    return f"import sys; sys.stderr.write({message!r} + chr(10))\n"


def stub_text(venv: str, name: str) -> str:
    """What each of the venv's commands (bin/python, bin/pip, its scripts)
    is while the daemon is down: in symlink mode the whole venv lives in the
    view, so without it `venv/bin/python` would simply not exist.

    Run, the first line alone does the work (`env -S` hands sh the command):
    the shell never reads the file, which, at the moment the daemon comes
    back, the view would already serve as the real interpreter. Sourced
    (`. bin/activate`), the lines after it say the same."""
    message = "is served by the nwcache daemon, which is not running"
    hint = "hint: start it with: nwcache daemon (or: systemctl --user start nwcache)"  # no quotes: env -S
    return (
        f'#!/usr/bin/env -S sh -c \'echo "error: $0 {message}" >&2; echo "{hint}" >&2; exit 3\'\n'
        f"{STUB_MARK}\n"
        f"echo 'error: {venv}/{name} {message}' >&2\n"
        f'echo "{hint}" >&2\n'
        "return 3 2>/dev/null || exit 3\n"
    )


STUB_MARK = "# nwcache: daemon-down stub"
# A notice is written under this name beside its place, then renamed there:
# a daemon killed in between leaves this (ours, removed at the next write),
# never a truncated stub that would no longer say what it is.
TEMP_SUFFIX = ".nwcache-new"


def _is_notice(name: str, dir_fd: int) -> bool:
    if name == NOTICE or (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
        return True
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False  # a symlink, or unreadable
    with os.fdopen(fd, "rb") as fh:
        return STUB_MARK.encode() in fh.read(1024)


def _only_notices(folder: str, dir_fd: int | None = None) -> bool:
    """Whether `folder` holds nothing but directories, notice files and
    command stubs (os.fwalk lists a symlink to a directory among the files
    when it does not follow links)."""
    try:
        if not stat.S_ISDIR(os.stat(folder, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return False
    except OSError:
        return False
    return all(
        _is_notice(name, root_fd)
        for _root, _dirs, files, root_fd in os.fwalk(folder, dir_fd=dir_fd)
        for name in files
    )


class DownNotices:
    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint
        self._fd: int | None = None

    def prepare(self) -> None:
        """Before mounting: clear a dead mount and keep a descriptor of the
        directory underneath the mount to come. The notices stay where they
        are (the view hides them): a venv started while the daemon mounts
        finds its stubs, never nothing."""
        clear_stale_mount(self.mountpoint)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    @staticmethod
    def holds_only_notices(entry: Path) -> bool:
        """Whether an entry of the mount point is a venv's notices (the
        mount point may hold those and nothing else)."""
        return _only_notices(str(entry))

    def prune(self, keep: set[str]) -> None:
        """After start-up: the notices of venvs no longer registered go."""
        if self._fd is None:
            return
        for name in set(os.listdir(self._fd)) - keep:
            try:
                if _only_notices(name, self._fd):
                    shutil.rmtree(name, dir_fd=self._fd)
            except OSError as exc:
                log.warning("could not remove the down notice %s: %s", name, exc)

    def _mkdirs(self, name: str, rel: str) -> str:
        path = ""
        for part in Path(name, rel).parts:
            path = os.path.join(path, part)
            try:
                os.mkdir(path, 0o755, dir_fd=self._fd)
            except FileExistsError:
                pass
        return path

    def _put(self, path: str, text: str, mode: int) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._fd)
        except OSError:
            pass
        else:
            with os.fdopen(fd, "rb") as fh:
                if fh.read() == text.encode():
                    return  # unchanged: a process may be running it this moment
        folder, _, base = path.rpartition("/")
        temp = os.path.join(folder, f".{base}{TEMP_SUFFIX}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode, dir_fd=self._fd)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        # Renamed, not rewritten in place: a process running the stub keeps
        # the old one, and a kill never leaves half a stub (see TEMP_SUFFIX).
        os.rename(temp, path, src_dir_fd=self._fd, dst_dir_fd=self._fd)

    def _drop_stubs(self, where: str, keep: set[str]) -> None:
        """Stubs of commands the venv no longer has."""
        fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._fd)
        try:
            for name in set(os.listdir(fd)) - keep:
                if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                    os.unlink(name, dir_fd=fd)  # half a write of a daemon killed
                    continue
                try:
                    body = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                except OSError:
                    continue
                with os.fdopen(body, "rb") as fh:
                    stub = STUB_MARK.encode() in fh.read(1024)
                if stub:
                    os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)

    def write(
        self, name: str, site_packages: str, venv: str, scripts_dir: str = "", scripts: Sequence[str] = ()
    ) -> None:
        """The notice of one venv, at `name/site_packages/` beneath the view,
        and a stub for each of its commands in `name/scripts_dir/`."""
        if self._fd is None:
            return
        try:
            self._put(os.path.join(self._mkdirs(name, site_packages), NOTICE), notice_text(venv), 0o644)
            if scripts:
                where = self._mkdirs(name, scripts_dir)
                self._drop_stubs(where, keep=set(scripts))
                for script in scripts:
                    self._put(os.path.join(where, script), stub_text(venv, f"{scripts_dir}/{script}"), 0o755)
        except OSError as exc:  # a notice is a courtesy: never fail an operation for it
            log.warning("could not write the down notice of %s: %s", venv, exc)

    def remove(self, name: str) -> None:
        if self._fd is None:
            return
        try:
            shutil.rmtree(name, dir_fd=self._fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove the down notice %s: %s", name, exc)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
