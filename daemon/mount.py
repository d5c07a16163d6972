"""Mounting the view: one pyfuse3 session per process, on trio."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pyfuse3
import trio

from .errors import StoreError
from .linking import is_mount_point
from .view import ViewOperations

log = logging.getLogger("nwcache.view")


class MountError(StoreError):
    hint = "check that /dev/fuse exists and fusermount3 is installed (apt-get install fuse3)"


def clear_stale_mount(mountpoint: Path) -> bool:
    """Unmount what a killed daemon left at `mountpoint` (its connection is
    dead: every access fails with ENOTCONN). Returns whether there was one."""
    if not is_mount_point(mountpoint):
        return False
    for args in (["-u"], ["-u", "-z"]):
        subprocess.run(["fusermount3", *args, str(mountpoint)], capture_output=True, check=False)
        if not is_mount_point(mountpoint):
            log.warning("removed a stale mount at %s", mountpoint)
            return True
    raise MountError(f"{mountpoint} is still mounted and could not be unmounted", hint="unmount it by hand")


def prepare_mountpoint(mountpoint: Path) -> None:
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse does not exist: FUSE is not available here")
    clear_stale_mount(mountpoint)
    mountpoint.mkdir(parents=True, exist_ok=True)
    if any(mountpoint.iterdir()):
        raise MountError(f"the mount point {mountpoint} is not empty", hint="move its content away")


def mount_options(fsname: str) -> set[str]:
    return {"default_permissions", f"fsname={fsname}", "subtype=nwcache", "noatime"}


async def serve_view(
    ops: ViewOperations,
    mountpoint: Path,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Mount, report started, serve until cancelled, unmount."""
    await trio.to_thread.run_sync(prepare_mountpoint, mountpoint)
    try:
        pyfuse3.init(ops, str(mountpoint), mount_options("nwcache"))
    except RuntimeError as exc:
        raise MountError(f"cannot mount the view at {mountpoint}: {exc}") from None
    ops.mounted = True
    try:
        task_status.started()
        await pyfuse3.main(min_tasks=4, max_tasks=64)
    finally:
        ops.mounted = False
        pyfuse3.close(unmount=True)
        ops.close_bodies()
