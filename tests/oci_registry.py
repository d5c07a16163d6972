"""Debian's `docker-registry` (the CNCF distribution reference server) on
127.0.0.1 for tests: a config written into a temporary directory (filesystem
storage there, a free port, deletes enabled, optionally htpasswd auth),
readiness polled with a deadline, always stopped (or killed) by its owner."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
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


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of a registry that can break the
    bodies of its answers: `cut("close", n)` closes each new connection after
    n bytes of an answer's body (a registry killed mid-transfer), `cut("stall",
    n)` sends nothing more after them (a registry that hangs), `cut(None)`
    passes everything. Switching closes the connections open until then."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)  # accept() looks at `done` this often
        self.port = int(self.listener.getsockname()[1])
        self.mode: tuple[str, int] | None = None
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self, how: str | None, after: int = 0) -> None:
        self._close_open()
        self.mode = None if how is None else (how, after)

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.listener.close()
        self._close_open()

    def _close_open(self) -> None:
        with self.lock:
            for sock in self.open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self.open.clear()

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.open += [client, upstream]
            mode = self.mode
            threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, mode), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, mode: tuple[str, int] | None) -> None:
        head = b""
        sent_body = 0
        try:
            while chunk := source.recv(65536):
                if mode is None:
                    sink.sendall(chunk)
                    continue
                how, after = mode
                if b"\r\n\r\n" not in head:
                    head += chunk
                    if b"\r\n\r\n" not in head:
                        continue
                    headers, _, chunk = head.partition(b"\r\n\r\n")
                    sink.sendall(headers + b"\r\n\r\n")
                room = after - sent_body
                sink.sendall(chunk[:room])
                sent_body += min(len(chunk), max(room, 0))
                if sent_body >= after:
                    if how == "close":
                        break
                    self.done.wait()  # stall: send nothing more until the end
                    break
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass
