"""Pointing a venv's site-packages at the view, and putting a real directory back.

Every switch is one atomic exchange of two names (renameat2 RENAME_EXCHANGE),
so a crash at any moment leaves site-packages either the old directory or the
new link, never missing; what is left beside it (`site-packages.nwcache-*`)
is removed by the next switch or by the daemon's start-up.

    symlink mode   site-packages -> <mount>/<env dir>
    bind mode      site-packages stays a directory, emptied, with the view's
                   directory bind-mounted over it (root only; the daemon binds
                   again at every start and unbinds when it stops)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from .crashpoints import crash_point

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_MS_BIND = 4096
_MNT_DETACH = 2
LEFTOVER_SUFFIXES = (".nwcache-link", ".nwcache-restore", ".nwcache-empty")


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def exchange(a: Path, b: Path) -> None:
    _check(
        _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE),
        f"exchanging {a} and {b}",
    )


def bind(source: Path, target: Path) -> None:
    _check(_libc.mount(os.fsencode(source), os.fsencode(target), None, _MS_BIND, None), f"binding {target}")


def unbind(target: Path) -> None:
    _check(_libc.umount2(os.fsencode(target), _MNT_DETACH), f"unmounting {target}")


def mounts() -> Iterator[tuple[str, str]]:
    """(major:minor, mount point) of every mount this process sees."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            fields = line.split(" ")
            yield fields[2], fields[4].encode().decode("unicode_escape")


def is_mount_point(path: Path) -> bool:
    try:
        link = path.is_symlink()
    except OSError:  # a dead FUSE mount fails even lstat (ENOTCONN); it is no symlink
        link = False
    wanted = str(path) if link else os.path.realpath(path)
    return any(point == wanted for _, point in mounts())


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def clean_leftovers(site: Path) -> None:
    for suffix in LEFTOVER_SUFFIXES:
        leftover = site.with_name(site.name + suffix)
        if os.path.lexists(leftover):  # never followed: a leftover link may lead into the view
            _remove(leftover)


def state(site: Path, target: Path) -> str:
    """ "linked" (our symlink), "bound" (our bind mount), "directory" (a real
    one, not served by the view) or "missing"."""
    if site.is_symlink():
        return "linked" if os.readlink(site) == str(target) else "foreign-link"
    if not site.exists():
        return "missing"
    return "bound" if is_mount_point(site) else "directory"


def link(site: Path, target: Path) -> None:
    """Make `site` a symlink to `target`; the directory it was goes away."""
    clean_leftovers(site)
    if site.is_symlink() and os.readlink(site) == str(target):
        return
    temp = site.with_name(site.name + ".nwcache-link")
    os.symlink(target, temp)
    crash_point("link-made")
    exchange(temp, site)
    crash_point("link-exchanged")
    _remove(temp)  # the old directory: its content is in the store


def bind_over(site: Path, target: Path) -> None:
    """Bind `target` over `site`, then empty the directory underneath."""
    clean_leftovers(site)
    if is_mount_point(site):
        unbind(site)
    below = os.open(site, os.O_RDONLY | os.O_DIRECTORY)
    try:
        bind(target, site)
        for name in os.listdir(below):
            st = os.lstat(name, dir_fd=below)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=below)
            else:
                os.unlink(name, dir_fd=below)
    finally:
        os.close(below)


def restore(site: Path, fill: Callable[[Path], None]) -> None:
    """Put a real directory back at `site`, filled by `fill(directory)`."""
    clean_leftovers(site)
    temp = site.with_name(site.name + ".nwcache-restore")
    temp.mkdir(mode=0o755)
    fill(temp)
    crash_point("restore-filled")
    if site.is_symlink():
        exchange(temp, site)
        crash_point("restore-exchanged")
        temp.unlink()  # the symlink
    else:
        if is_mount_point(site):
            unbind(site)
        exchange(temp, site)
        _remove(temp)  # the emptied directory the bind covered
