"""Downloads for install by name (docs/INSTALL-BY-NAME.md).

The client resolves (uv, as the user) and sends the files it chose: name,
version, file name, URL, sha256 and size when the index gave one. The daemon
fetches them here because it owns the store:

- a wheel whose file sha256 the store has ingested before (`wheels`
  database, daemon/schema.py) is not downloaded at all: its stored package
  is installed;
- two requests for one file at once share one download (by sha256);
- downloads run in parallel over pooled connections (httpx on trio, through
  anyio), each streamed into `$NWCACHE_HOME/downloads/tmp/` while hashed,
  refused the moment it outgrows its declared size, and renamed into place
  only when its sha256 matched; anything else is deleted, and downloads/
  is emptied when the daemon starts (server.Handlers), so no partial or
  unverified file survives;
- credentials come from the URL's userinfo or, for a URL without, from
  ~/.netrc; no message names them (URLs are shown without userinfo).

A downloaded file lives until the install that asked for it has ingested it
(the store keeps its content; the file itself is deleted).
"""

from __future__ import annotations

import hashlib
import logging
import netrc
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from .errors import StoreError
from .schema import PackageRecord
from .store import Store

log = logging.getLogger("nwcache.daemon")
# httpx logs every request at INFO: the daemon's log says what it downloaded itself.
logging.getLogger("httpx").setLevel(logging.WARNING)
# (message, done, total, files): files as [[name, bytes done, size], ...]
Progress = Callable[[str, int, int, list[list[Any]]], Awaitable[None]]

CONNECTIONS = 8  # downloads at once, and pooled connections kept
CHUNK = 1 << 20  # bytes handed to the writing thread at a time
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FILENAME = re.compile(r"[A-Za-z0-9_.+!-]+\.whl")


class FetchError(StoreError):
    hint = "nothing was changed; check the index and run the install again"


class IndexUnreachable(FetchError):
    hint = "check the index URL, the network and any proxy settings; nothing was changed"


class DownloadRefused(FetchError):
    """The index answered with an error status (404, 401, 500...)."""


class NotAWheelFile(FetchError):
    hint = (
        "the index served a web page (often a login or error page) where the wheel should be: "
        "check the URL and credentials (URL userinfo or ~/.netrc); nothing was changed"
    )


class HashMismatch(FetchError):
    hint = (
        "the file differs from the one the index or lock lists (changed on the index, or tampered with); "
        "nothing was stored; re-resolve, or ask the index's maintainers"
    )


class DownloadInterrupted(FetchError):
    hint = "the connection broke during the download; nothing was kept: run the install again"


class BadRequest(FetchError):
    hint = "the client sent a file description this daemon cannot use; upgrade both to one version"


def public(url: str) -> str:
    """The URL as messages may show it: without userinfo (credentials)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<an unreadable URL>"
    return str(parsed.copy_with(username=None, password=None)) if parsed.userinfo else url


@dataclass(frozen=True)
class Wanted:
    """One file the client chose."""

    name: str
    version: str
    filename: str
    url: str
    sha256: str
    size: int | None = None

    @classmethod
    def from_json(cls, data: Any) -> Wanted:
        if not isinstance(data, dict):
            raise BadRequest("a download is not an object")
        try:
            wanted = cls(
                name=str(data["name"]),
                version=str(data["version"]),
                filename=str(data["filename"]),
                url=str(data["url"]),
                sha256=str(data["sha256"]).lower(),
                size=None if data.get("size") is None else int(data["size"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"a download lacks {exc}") from None
        if not _SHA256.fullmatch(wanted.sha256):
            raise BadRequest(f"{wanted.filename}: {wanted.sha256!r} is not a sha256")
        if not _FILENAME.fullmatch(wanted.filename):
            raise BadRequest(f"{wanted.filename!r} is not a wheel file name")
        if not wanted.url.startswith(("https://", "http://")):
            raise BadRequest(f"{wanted.filename}: {public(wanted.url)} is not an http(s) URL")
        return wanted


@dataclass
class _Download:
    done: trio.Event = field(default_factory=trio.Event)
    path: Path | None = None
    error: FetchError | None = None
    users: int = 0


@dataclass
class _Meter:
    """Bytes done of all the files of one request, reported at most every 0.1 s."""

    progress: Progress
    total: int
    files: int
    done: int = 0
    finished: int = 0
    last: float = 0.0
    # Parallel downloads share the client's connection: one line at a time
    # (a line due while another is being sent is skipped, unless it is a
    # file's last).
    sending: trio.Lock = field(default_factory=trio.Lock)
    # Each file's [bytes done, size or 0], for a bar per file on the client.
    each: dict[str, list[int]] = field(default_factory=dict)

    def expect(self, name: str, size: int | None, length: int | None) -> None:
        """A file's size: listed, or else the Content-Length once it comes."""
        if size is None and length is not None:
            self.total += length
        self.each[name] = [0, size if size is not None else (length or 0)]

    async def add(self, count: int, name: str, *, final: bool = False) -> None:
        self.done += count
        entry = self.each.setdefault(name, [0, 0])
        entry[0] += count
        if final:
            self.finished += 1
            entry[1] = entry[1] or entry[0]
        now = time.monotonic()
        if final or (now - self.last > 0.1 and not self.sending.locked()):
            self.last = now
            files = [[n, d, s] for n, (d, s) in self.each.items()]
            async with self.sending:
                await self.progress(
                    f"downloading ({self.finished}/{self.files} files)", self.done, self.total, files
                )


class Fetcher:
    def __init__(self, store: Store, root: Path, *, connections: int = CONNECTIONS) -> None:
        self.store = store
        self.root = root
        self.tmp = root / "tmp"
        # Made by the first download (an install of local files leaves
        # NWCACHE_HOME as it was); the daemon empties downloads/ at start.
        self.limiter = trio.CapacityLimiter(connections)
        self.connections = connections
        self._client: httpx.AsyncClient | None = None
        self._running: dict[str, _Download] = {}
        self.downloads = 0  # files fetched since start (stats, tests)

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(
                    max_connections=self.connections, max_keepalive_connections=self.connections
                ),
                timeout=httpx.Timeout(60.0, connect=15.0),
                follow_redirects=True,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def fetch(
        self, wanted: list[Wanted], progress: Progress, *, offline: bool = False
    ) -> dict[str, Path | PackageRecord]:
        """Each file by its sha256: the stored package it became before, or
        the verified file downloaded now (`offline`: refused instead). Call
        release() once it is ingested."""
        known = await trio.to_thread.run_sync(
            lambda: {w.sha256: self.store.wheel_package(w.sha256) for w in wanted}
        )
        found: dict[str, Path | PackageRecord] = {s: r for s, r in known.items() if r is not None}
        todo = [w for w in wanted if w.sha256 not in found]
        if not todo:
            return found
        if offline:
            raise FetchError(
                f"{todo[0].filename} is not in the store, and --offline forbids downloading it"
                + (f" (nor {len(todo) - 1} more)" if len(todo) > 1 else ""),
                hint="run the install without --offline; nothing was changed",
            )
        meter = _Meter(progress, sum(w.size or 0 for w in todo), len(todo))
        # Each file is claimed here, before any task runs: release() then
        # gives back exactly what this request holds, even when a failure
        # cancels a task before it started.
        claimed: list[Wanted] = []
        mine: list[bool] = []
        for w in todo:
            running = self._running.get(w.sha256)
            mine.append(running is None)
            if running is None:
                running = self._running[w.sha256] = _Download()
            running.users += 1
            claimed.append(w)
        try:
            async with trio.open_nursery() as nursery:
                for w, download in zip(todo, mine, strict=True):
                    nursery.start_soon(self._one, w, meter, found, download)
        except BaseExceptionGroup as group:
            self.release(claimed)
            first = _first_error(group)
            if first is not None:
                raise first from None
            raise
        except BaseException:
            self.release(claimed)
            raise
        return found

    async def _one(
        self, wanted: Wanted, meter: _Meter, found: dict[str, Path | PackageRecord], download: bool
    ) -> None:
        """Download the file (`download`: this request claimed it first), or
        wait for the request that does."""
        running = self._running[wanted.sha256]
        if not download:
            await running.done.wait()
            if running.error is not None:
                raise type(running.error)(str(running.error), hint=running.error.hint)
            assert running.path is not None
            found[wanted.sha256] = running.path
            await meter.add(wanted.size or 0, wanted.filename, final=True)
            return
        try:
            running.path = await self._download(wanted, meter)
            found[wanted.sha256] = running.path
        except FetchError as exc:
            running.error = exc
            raise
        except BaseException:
            running.error = DownloadInterrupted(f"the download of {wanted.filename} was cancelled")
            raise
        finally:
            running.done.set()

    def release(self, wanted: list[Wanted]) -> None:
        """The request is done with its downloads: a file no other request
        waits for is deleted (its content is in the store, or unwanted)."""
        for w in wanted:
            running = self._running.get(w.sha256)
            if running is None:
                continue
            running.users -= 1
            if running.users <= 0:
                del self._running[w.sha256]
                if running.path is not None:
                    shutil.rmtree(running.path.parent, ignore_errors=True)

    def _auth(self, url: httpx.URL) -> httpx.BasicAuth | None:
        """The URL's userinfo, else ~/.netrc's login for its host. The
        request goes to the URL without userinfo, so that no log line (ours
        or httpx's) carries a credential."""
        if url.userinfo:
            return httpx.BasicAuth(url.username, url.password)
        try:
            entry = netrc.netrc(os.path.expanduser("~/.netrc")).authenticators(url.host)
        except (OSError, netrc.NetrcParseError):
            return None
        if entry is None:
            return None
        login, _, password = entry
        return httpx.BasicAuth(login, password or "")

    async def _download(self, wanted: Wanted, meter: _Meter) -> Path:
        shown = public(wanted.url)
        url = httpx.URL(wanted.url)
        temp = self.tmp / f"{wanted.sha256}.{os.urandom(4).hex()}.part"
        digest = hashlib.sha256()
        received = 0
        async with self.limiter:
            try:
                handle = await trio.to_thread.run_sync(partial_open, temp)
                try:
                    auth = self._auth(url)
                    bare = url.copy_with(username=None, password=None) if url.userinfo else url
                    async with self.client().stream("GET", bare, auth=auth) as response:
                        self._check_response(response, wanted, shown)
                        length = response.headers.get("content-length")
                        meter.expect(
                            wanted.filename, wanted.size, int(length) if length and length.isdigit() else None
                        )
                        buffer = bytearray()
                        async for chunk in response.aiter_bytes():
                            if not received and not buffer and not chunk.startswith(b"PK"):
                                raise NotAWheelFile(
                                    f"{shown} is not a wheel (it does not start as a zip archive does)"
                                )
                            buffer += chunk
                            if wanted.size is not None and received + len(buffer) > wanted.size:
                                raise HashMismatch(
                                    f"{wanted.filename}: more than the {wanted.size:,} bytes listed for it came from {shown}"
                                )
                            if len(buffer) >= CHUNK:
                                await trio.to_thread.run_sync(_write, handle, digest, bytes(buffer))
                                received += len(buffer)
                                await meter.add(len(buffer), wanted.filename)
                                buffer.clear()
                        if buffer:
                            await trio.to_thread.run_sync(_write, handle, digest, bytes(buffer))
                            received += len(buffer)
                            await meter.add(len(buffer), wanted.filename)
                finally:
                    await trio.to_thread.run_sync(handle.close)
                if received == 0:
                    raise NotAWheelFile(f"{shown} answered with an empty body")
                if wanted.size is not None and received != wanted.size:
                    raise HashMismatch(
                        f"{wanted.filename}: {received:,} bytes came from {shown}, the index lists {wanted.size:,}"
                    )
                if digest.hexdigest() != wanted.sha256:
                    raise HashMismatch(
                        f"{wanted.filename}: its sha256 is {digest.hexdigest()}, the index lists {wanted.sha256}"
                    )
                final = self.root / f"{wanted.sha256}.{os.urandom(4).hex()}" / wanted.filename
                await trio.to_thread.run_sync(_publish, temp, final)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise IndexUnreachable(f"cannot connect to {url.host} for {shown}: {_reason(exc)}") from None
            except httpx.TimeoutException as exc:
                raise DownloadInterrupted(
                    f"the download of {wanted.filename} from {shown} timed out after {received:,} bytes ({_reason(exc)})"
                ) from None
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.NetworkError) as exc:
                raise DownloadInterrupted(
                    f"the download of {wanted.filename} from {shown} broke off after {received:,} bytes ({_reason(exc)})"
                ) from None
            except httpx.HTTPError as exc:
                raise FetchError(f"downloading {shown} failed: {_reason(exc)}") from None
            finally:
                temp.unlink(missing_ok=True)
        self.downloads += 1
        await meter.add(0, wanted.filename, final=True)
        log.info("downloaded %s (%d bytes, sha256 verified)", wanted.filename, received)
        return final

    def _check_response(self, response: httpx.Response, wanted: Wanted, shown: str) -> None:
        status = response.status_code
        if status in (401, 403):
            raise DownloadRefused(
                f"{shown}: {status} {response.reason_phrase} (the index wants credentials)",
                hint="give them in the index URL (https://USER:TOKEN@host/...) or in ~/.netrc; nothing was changed",
            )
        if status == 404:
            raise DownloadRefused(
                f"{shown}: 404 Not Found",
                hint="the index lists a file it does not serve (removed since?): resolve again; nothing was changed",
            )
        if status != 200:
            raise DownloadRefused(f"{shown}: HTTP {status} {response.reason_phrase}")
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind in ("text/html", "application/xhtml+xml"):
            raise NotAWheelFile(f"{shown} answered with an HTML page, not the wheel {wanted.filename}")


def _first_error(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    """The error to report of several downloads that failed at once: the
    first that is not a cancellation, so that one `error:` line names it."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_error(exc)
            if found is not None:
                return found
        elif isinstance(exc, Exception):
            return exc
    return None


def partial_open(path: Path) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "xb")  # closed by the caller, on the worker thread


def _write(handle: Any, digest: Any, data: bytes) -> None:
    digest.update(data)
    handle.write(data)


def _publish(temp: Path, final: Path) -> None:
    # No fsync: the file lives until the install ingests it, and the store
    # makes what it keeps durable itself.
    final.parent.mkdir(parents=True)
    os.rename(temp, final)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return re.sub(r"//[^/@\s]*@", "//", text)  # never a credential, whatever httpx put in its message
