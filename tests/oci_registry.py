"""Debian's `docker-registry` (the CNCF distribution reference server) on
127.0.0.1 for tests: a config written into a temporary directory (filesystem
storage there, a free port, deletes enabled, optionally htpasswd auth),
readiness polled with a deadline, always stopped (or killed) by its owner."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx

BINARY = "/usr/bin/docker-registry"
READY_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OCIRegistry:
    def __init__(self, root: Path, *, htpasswd: Path | None = None) -> None:
        self.root = root
        self.storage = root / "storage"
        self.config = root / "config.yml"
        self.log = root / "registry.log"
        self.htpasswd = htpasswd
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        auth = ""
        if self.htpasswd is not None:
            auth = f"auth:\n  htpasswd:\n    realm: nwcache-test\n    path: {self.htpasswd}\n"
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: nwcache-test-secret\n"
            "  debug:\n    addr: ''\n"
            f"{auth}"
        )

    def start(self) -> None:
        assert shutil.which(BINARY), f"{BINARY} is missing: 'make setup' installs the docker-registry package"
        self.write_config()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [BINARY, "serve", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                status = httpx.get(f"{self.url}/v2/", timeout=1.0).status_code
                if status in (200, 401):
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise AssertionError(
                    f"docker-registry exited {self.process.returncode}:\n{self.log.read_text()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"docker-registry did not answer within {READY_TIMEOUT} s")
            time.sleep(0.05)  # polling for readiness, bounded by the deadline above

    def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def blob_data(self, blob: str) -> Path:
        """Where the registry keeps a blob's bytes on its disk."""
        return self.storage / "docker/registry/v2/blobs/sha256" / blob[:2] / blob / "data"
