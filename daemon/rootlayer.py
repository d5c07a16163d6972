"""A venv's root beside site-packages, as a layer of its own (symlink mode).

pip decides whether it may uninstall a file by comparing real paths: the
file's must lie under the real path of `sys.prefix`. Python keeps `sys.prefix`
as the path the venv was started by, so a venv whose directory is a symlink
to its directory in the view has both in the view: the venv's own directory
becomes that link (daemon/linking.py), and everything of it that is not
site-packages (bin/ with the interpreter's links and the scripts, pyvenv.cfg,
include/, share/, lib/python3.X/ beside site-packages) lives in a
copy-on-write layer, `$NWCACHE_HOME/roots/<env id hex>/`, served by the view
as the environment's root (daemon/view.py). Registration copies the venv's
directory into it; unregistering writes it back (Service.unregister).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path

from .merged import join
from .overlay import Overlay, OverlayDir, Symlink, UpperFile

log = logging.getLogger("nwcache.daemon")


def fill_layer(layer_root: Path, venv: Path, site_packages: str) -> None:
    """Make `layer_root` a layer holding `venv`'s directory, all but its
    site-packages (which the store holds). Any earlier content goes: a
    registration killed while filling starts again from the venv."""
    shutil.rmtree(layer_root, ignore_errors=True)
    layer = Overlay(layer_root)
    try:
        for dirpath, dirnames, filenames in os.walk(venv):
            rel_dir = os.path.relpath(dirpath, venv)
            rel_dir = "" if rel_dir == "." else rel_dir
            for name in sorted(dirnames + filenames):
                rel = join(rel_dir, name)
                full = os.path.join(dirpath, name)
                st = os.lstat(full)
                if rel == site_packages:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    layer.put(rel, Symlink(layer.new_id(), os.readlink(full)))
                elif stat.S_ISDIR(st.st_mode):
                    layer.put(rel, OverlayDir(opaque=False, mode=stat.S_IMODE(st.st_mode)))
                elif stat.S_ISREG(st.st_mode):
                    upper = UpperFile(layer.new_id(), stat.S_IMODE(st.st_mode))
                    body = layer.body(upper.id)
                    # A copy, never a hard link: the body's own mode is 0600.
                    shutil.copyfile(full, body)
                    os.chmod(body, 0o600)
                    os.utime(body, ns=(st.st_atime_ns, st.st_mtime_ns))
                    layer.put(rel, upper)
                else:
                    log.warning("left out %s: the view holds no special files", full)
            # Not into site-packages; os.walk does not enter symlinked directories.
            dirnames[:] = [d for d in dirnames if join(rel_dir, d) != site_packages]
        layer.sync()
    finally:
        layer.close()
