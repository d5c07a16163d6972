"""The smallest pyfuse3 filesystem: one file, every answer a constant.

    python -m bench.floor_fs MOUNTPOINT

It measures the floor under the view: what a FUSE request costs in pyfuse3
on trio on this machine when the handler does no work at all. Same mount
options as the view, the same caching (long entry and attribute timeouts,
keep_cache, flush answered ENOSYS once). Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import sys

import pyfuse3
import trio

from nwcache.daemon.mount import mount_options

FILE = b"floor"
CONTENT = b"x" * 4096
FILE_INODE = pyfuse3.InodeT(2)


class FloorOperations(pyfuse3.Operations):
    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = inode
        attrs.entry_timeout = attrs.attr_timeout = 3600.0
        if inode == pyfuse3.ROOT_INODE:
            attrs.st_mode = stat.S_IFDIR | 0o755
        else:
            attrs.st_mode = stat.S_IFREG | 0o644
            attrs.st_size = len(CONTENT)
        return attrs

    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if parent_inode != pyfuse3.ROOT_INODE or name != FILE:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self.getattr(FILE_INODE)

    async def open(
        self, inode: pyfuse3.InodeT, flags: pyfuse3.FlagT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(inode), keep_cache=True)

    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        return CONTENT[off : off + size]

    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        return None


def main(mountpoint: str) -> None:
    os.makedirs(mountpoint, exist_ok=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unmount on the way out
    pyfuse3.init(FloorOperations(), mountpoint, mount_options("nwcache-floor") - {"default_permissions"})
    try:
        trio.run(pyfuse3.main)
    except KeyboardInterrupt:
        pass
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main(sys.argv[1])
