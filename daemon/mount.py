"""Mounting the view: one pyfuse3 session per process, on trio."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import trio

from .errors import StoreError
from .linking import is_mount_point, mounts
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


def prepare_mountpoint(mountpoint: Path, may_hold: Callable[[Path], bool] | None = None) -> None:
    """Refuse a mount point holding anything but what `may_hold` allows (the
    daemon's own notices of venvs, daemon/notices.py)."""
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse does not exist: FUSE is not available here")
    clear_stale_mount(mountpoint)
    mountpoint.mkdir(parents=True, exist_ok=True)
    if any(may_hold is None or not may_hold(entry) for entry in mountpoint.iterdir()):
        raise MountError(f"the mount point {mountpoint} is not empty", hint="move its content away")


# The kernel reads ahead 128 KiB at a time on a FUSE mount unless told
# otherwise, one request (and one pread on a worker thread) per 128 KiB; at
# 1 MiB a cold sequential read of a 200 MB file went from ~290 to ~680 MB/s
# here (docs/BENCH-VIEW.md). Only root may change it.
READ_AHEAD_KB = 1024


def tune_read_ahead(mountpoint: Path) -> bool:
    """Raise the mount's read-ahead (its bdi, named by the device number that
    /proc/self/mountinfo gives; stat-ing the mount point itself would need
    the file system to answer, from the thread that serves it)."""
    for device, point in mounts():
        if point == str(mountpoint):
            knob = Path("/sys/class/bdi") / device / "read_ahead_kb"
            try:
                knob.write_text(f"{READ_AHEAD_KB}\n")
            except OSError as exc:
                log.info("kept the default read-ahead of %s: %s", mountpoint, exc)
                return False
            return True
    return False


def mount_options(fsname: str) -> set[str]:
    return {"default_permissions", f"fsname={fsname}", "subtype=nwcache", "noatime"}


# Unmounts the view when the daemon dies, however it dies, instead of leaving a
# mount that fails with ENOTCONN until the next start (daemon/notices.py shows
# what lies beneath then). libfuse's own auto_unmount cannot serve here: its
# helper unmounts only if opening the mount point fails, and in kernel-cached
# mode the kernel opens directories without asking the (dead) daemon. The
# watcher reads one line from a pipe whose only writer is the daemon: the
# daemon's "stopped" on a clean stop (it unmounts itself), or end-of-file when
# it died, and then it unmounts, lazily.
_WATCHER = 'read -r said || exec fusermount3 -u -z "$0"'


class UnmountWatcher:
    def __init__(self, mountpoint: Path) -> None:
        read_end, self._write_end = os.pipe()  # neither end is inherited by other children
        try:
            self._process = subprocess.Popen(
                ["sh", "-c", _WATCHER, str(mountpoint)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # not stopped by a Ctrl-C meant for the daemon
            )
        except OSError:
            os.close(self._write_end)
            raise
        finally:
            os.close(read_end)

    def stand_down(self) -> None:
        """The daemon stops cleanly and unmounts the view itself."""
        try:
            os.write(self._write_end, b"stopped\n")
        except OSError:
            pass  # the watcher is gone already: nothing will unmount behind us
        os.close(self._write_end)
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


async def serve_view(
    ops: ViewOperations,
    mountpoint: Path,
    *,
    may_hold: Callable[[Path], bool] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Mount, report started, serve until cancelled, unmount."""
    await trio.to_thread.run_sync(prepare_mountpoint, mountpoint, may_hold)
    try:
        pyfuse3.init(ops, str(mountpoint), mount_options("nwcache"))
    except RuntimeError as exc:
        raise MountError(f"cannot mount the view at {mountpoint}: {exc}") from None
    ops.mounted = True
    watcher: UnmountWatcher | None = None
    try:
        watcher = await trio.to_thread.run_sync(UnmountWatcher, mountpoint)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pyfuse3.main)
            # Up means answering: a stat from a worker thread returns once the
            # kernel's INIT and this getattr went through the loop. Read-ahead
            # is tuned after INIT, which would otherwise cap it again.
            await trio.to_thread.run_sync(os.stat, mountpoint)
            await trio.to_thread.run_sync(tune_read_ahead, mountpoint)
            task_status.started()
    finally:
        ops.mounted = False
        if watcher is not None:
            watcher.stand_down()
        pyfuse3.close(unmount=True)
        ops.close_bodies()
