"""The smallest pyfuse3 filesystem: every answer a constant.

    python -m bench.floor_fs MOUNTPOINT [ENTRIES]

It measures the floor under the view: what a FUSE request costs in pyfuse3
on trio on this machine when the handler does no work at all. The root
holds the file `floor` and the directory `dir` of ENTRIES files (default
50). Same mount options as the view, the same caching (long entry and
attribute timeouts, keep_cache, flush answered ENOSYS once). Runs until
SIGTERM or SIGINT.
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

CONTENT = b"x" * 4096
FILE_INODE = 2
DIR_INODE = 3
FIRST_ENTRY_INODE = 4  # the directory's files: FIRST_ENTRY_INODE + index, named f<index>


class FloorOperations(pyfuse3.Operations):
    def __init__(self, entries: int) -> None:
        super().__init__()
        self.entries = entries

    def _attrs(self, inode: int) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = pyfuse3.InodeT(inode)
        attrs.entry_timeout = attrs.attr_timeout = 3600.0
        if inode in (pyfuse3.ROOT_INODE, DIR_INODE):
            attrs.st_mode = stat.S_IFDIR | 0o755
        else:
            attrs.st_mode = stat.S_IFREG | 0o644
            attrs.st_size = len(CONTENT)
        return attrs

    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        return self._attrs(inode)

    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if parent_inode == pyfuse3.ROOT_INODE and name in (b"floor", b"dir"):
            return self._attrs(FILE_INODE if name == b"floor" else DIR_INODE)
        if (
            parent_inode == DIR_INODE
            and name[:1] == b"f"
            and name[1:].isdigit()
            and int(name[1:]) < self.entries
        ):
            return self._attrs(FIRST_ENTRY_INODE + int(name[1:]))
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def opendir(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> pyfuse3.FileHandleT:
        return pyfuse3.FileHandleT(inode)

    async def readdir(self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        if fh == pyfuse3.ROOT_INODE:
            names = [(b"dir", DIR_INODE), (b"floor", FILE_INODE)]
        else:
            names = [(b"f%d" % index, FIRST_ENTRY_INODE + index) for index in range(self.entries)]
        for index in range(start_id, len(names)):
            name, inode = names[index]
            if not pyfuse3.readdir_reply(token, name, self._attrs(inode), index + 1):
                return

    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        return None

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


def main(mountpoint: str, entries: int) -> None:
    os.makedirs(mountpoint, exist_ok=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unmount on the way out
    operations = FloorOperations(entries)
    pyfuse3.init(operations, mountpoint, mount_options("nwcache-floor") - {"default_permissions"})
    try:
        trio.run(pyfuse3.main)
    except KeyboardInterrupt:
        pass
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 50)
