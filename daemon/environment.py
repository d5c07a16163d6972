"""One registered environment as the daemon serves it.

The store keeps an environment's record (by the id of its venv's path:
`Index.env_id`), the view serves its merged tree (by `name`, its directory
under the mount point), and the service changes it. `Environment` is the one
object that joins them: the record, the lock that every change to the
environment takes, its copy-on-write layers and where its parts are. The
service holds one per served venv (`Service.envs`, by venv path); everything
else asks it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import trio

from .overlay import Overlay
from .schema import EnvRecord


def view_name(record: EnvRecord) -> str:
    """The environment's directory under the mount point: the venv's name
    and the start of its id (unique, and says which venv it is)."""
    return f"{os.path.basename(record.path)}-{record.id.hex()[:12]}"  # not pathlib: several calls per request


@dataclass(frozen=True)
class Places:
    """Where an environment's parts are, from its record alone: known before
    it is served (registering) and after (unregistering, dropping)."""

    home: Path
    mountpoint: Path
    record: EnvRecord

    @property
    def name(self) -> str:
        return view_name(self.record)

    @property
    def layer(self) -> Path:
        """The copy-on-write layer over site-packages (daemon/overlay.py)."""
        return self.home / "overlay" / self.record.id.hex()

    @property
    def root_layer(self) -> Path:
        """Symlink mode: the layer of the venv's root beside site-packages (daemon/rootlayer.py)."""
        return self.home / "roots" / self.record.id.hex()

    @property
    def venv(self) -> Path:
        return Path(self.record.path)

    @property
    def site(self) -> Path:
        """site-packages where the venv's interpreter looks for it."""
        return self.venv / self.record.site_packages

    @property
    def view_dir(self) -> Path:
        """Symlink mode: what the venv's directory links to."""
        return self.mountpoint / self.name

    @property
    def view_site(self) -> Path:
        """site-packages in the view (bind mode binds it over `site`)."""
        return self.view_dir / self.record.site_packages


@dataclass(eq=False)
class Environment:
    """A served environment. `record` is the one it was served with: who it
    is (path, id, link mode, interpreter, layout); its current generation is
    the store's to say (`Store.get_env`). `lock` serialises every change to
    it, the registration and the fold before a change included."""

    places: Places
    lock: trio.Lock
    layer: Overlay
    root_layer: Overlay | None  # symlink mode only

    @property
    def record(self) -> EnvRecord:
        return self.places.record

    @property
    def path(self) -> str:
        return self.places.record.path

    @property
    def name(self) -> str:
        return self.places.name

    def close(self) -> None:
        """Its layers written out and closed (the daemon stops, or it is unregistered)."""
        for layer in (self.layer, self.root_layer):
            if layer is not None:
                layer.sync()
                layer.close()
