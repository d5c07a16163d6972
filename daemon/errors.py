"""Errors of the store and the daemon: one base class, one line each."""

from __future__ import annotations

from nwcache.errors import NwcacheError


class StoreError(NwcacheError):
    """Base class of the store's and the daemon's errors; `hint` says what to do about it."""


class NotAVenv(StoreError):
    hint = "pass the root of a virtual environment (the directory holding pyvenv.cfg)"


class InterpreterError(StoreError):
    hint = "check that the environment's python runs (CPython 3.9 or newer)"


class UnknownEnv(StoreError):
    hint = "register it first with 'nwcache env register VENV'"


class UnknownPackage(StoreError):
    hint = "'nwcache list --env VENV' shows what is installed"


class PathConflict(StoreError):
    hint = "uninstall one of the two distributions first"


class NotAWheel(StoreError):
    hint = (
        "build a wheel first, e.g. 'pip wheel --no-deps -w dist/ SOURCE' or 'python -m build --wheel', "
        "and install the .whl"
    )


class IncompatibleTags(StoreError):
    hint = "use a wheel built for this environment's interpreter and platform"


class NoSuchGeneration(StoreError):
    hint = "'nwcache history --env VENV' lists the generations kept"


class StoreBusy(StoreError):
    hint = "another nwcache daemon owns this NWCACHE_HOME; stop it or use another"


class NotInstallable(StoreError):
    """The archive is valid, but installing it would harm the environment."""

    hint = "the archive is hostile or broken; nothing was installed or stored"


class RemoteBody(StoreError):
    """The blob's body is on a remote only (schema: kind 2): fetch it first
    (daemon/lazy.py)."""

    hint = "the body is fetched from the remote at its first read; 'nwcache prefetch --env VENV' fetches all"

    def __init__(self, blob: str, remote: str) -> None:
        super().__init__(f"the body of blob {blob} is on remote {remote} only")
        self.blob = blob
        self.remote = remote
