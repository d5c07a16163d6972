"""The OCI distribution protocol, the part the blob tier uses (docs/REMOTE.md):

    HEAD /v2/<repo>/blobs/<digest>            does the registry hold the blob?
    GET  /v2/<repo>/blobs/<digest>            its body (streamed, verified here)
    POST /v2/<repo>/blobs/uploads/            start an upload -> Location
    PUT  <Location>?digest=<digest>           the whole body at once (monolithic)
    PUT  /v2/<repo>/manifests/<tag>           a package's manifest
    GET  /v2/<repo>/manifests/<tag>           it back
    GET  /v2/<repo>/tags/list?n=&last=        the tags, page by page (Link header)

httpx on trio, as daemon/fetch.py downloads. Authentication follows the
registry's challenge: a 401 with `WWW-Authenticate: Basic` is answered with the
remote's credentials, one with `Bearer realm=...,service=...,scope=...` by
asking the realm for a token (with the credentials when there are some,
anonymously otherwise) and sending it; the token is kept until a 401 asks
for another. The credentials never reach a message or the log (httpx's own
request log is silenced in fetch.py).

Every body read is checked against its digest and its declared size while it
streams; a registry that answers something else (a wrong body, HTML, a
truncated stream, an unparsable manifest) raises `BadAnswer` and nothing of
it is kept. Errors worth another attempt (cannot connect, timed out, broke
off, 5xx, 429) are `Transient`; `retrying` runs an operation again with
backoff (stamina) within a total time bound.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlencode, urljoin

import httpx
import stamina
import stamina.instrumentation

from nwcache.remotes import Credentials, Remote, RemoteError

# A retry is not news: stamina's default hook logs each one as a warning; a
# fetch that fails in the end is logged once by daemon/lazy.py, and an
# install or push that fails answers with its error.
stamina.instrumentation.set_on_retry_hooks([])
# httpx logs every request at INFO: the daemon's log says what it fetched itself.
logging.getLogger("httpx").setLevel(logging.WARNING)

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CHUNK = 1 << 20
T = TypeVar("T")


class RegistryError(RemoteError):
    hint = "check the remote ('nwcache remote list'), the registry and the network; nothing was changed"


class Transient(RegistryError):
    """Worth another attempt: unreachable, timed out, broke off, 5xx, 429."""

    hint = "the registry did not answer in time or at all: check that it runs and that the network reaches it"


class Refused(RegistryError):
    hint = "the registry refused the credentials: check the remote's credentials file ('nwcache remote list')"


class BadAnswer(RegistryError):
    """The registry answered something that is not what was asked for."""

    hint = "the registry answered garbage (or a blob that does not match its digest); nothing of it was kept"


class _Challenge:
    def __init__(self, header: str) -> None:
        scheme, _, rest = header.strip().partition(" ")
        self.scheme = scheme.lower()
        self.params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}


def digest_of(blob: str) -> str:
    return f"sha256:{blob}"


class Registry:
    """One remote's repository, through a shared httpx client."""

    def __init__(self, remote: Remote, client: httpx.AsyncClient, credentials: Credentials | None) -> None:
        self.remote = remote
        self.client = client
        self.credentials = credentials
        self.base = f"{remote.url}/v2/{remote.repository}"
        self._authorization: str | None = None
        self.requests = 0  # HTTP requests sent (tests and stats)

    # -- requests, authentication ------------------------------------------------------

    async def _token(self, challenge: _Challenge) -> str:
        realm = challenge.params.get("realm")
        if not realm or not realm.startswith(("http://", "https://")):
            raise BadAnswer(f"{self.remote.shown()}: a Bearer challenge without a usable realm")
        params = {k: v for k, v in challenge.params.items() if k in ("service", "scope")}
        params.setdefault("scope", f"repository:{self.remote.repository}:pull,push")
        auth = (
            httpx.BasicAuth(self.credentials.username, self.credentials.password)
            if self.credentials
            else None
        )
        self.requests += 1
        response = await self.client.get(realm, params=params, auth=auth)
        if response.status_code in (401, 403):
            raise Refused(
                f"{self.remote.shown()}: the token endpoint refused the credentials ({response.status_code})"
            )
        if response.status_code != 200:
            raise BadAnswer(f"{self.remote.shown()}: the token endpoint answered {response.status_code}")
        try:
            data = response.json()
            token = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise BadAnswer(f"{self.remote.shown()}: the token endpoint answered no token")
        return f"Bearer {token}"

    async def _authenticate(self, response: httpx.Response) -> None:
        header = response.headers.get("www-authenticate", "")
        challenge = _Challenge(header)
        if challenge.scheme == "basic":
            if self.credentials is None:
                raise Refused(
                    f"{self.remote.shown()} wants credentials",
                    hint=f"add the remote again with --credentials FILE ('nwcache remote remove {self.remote.name}' first)",
                )
            pair = f"{self.credentials.username}:{self.credentials.password}".encode()
            self._authorization = "Basic " + base64.b64encode(pair).decode("ascii")
        elif challenge.scheme == "bearer":
            self._authorization = await self._token(challenge)
        else:
            raise Refused(
                f"{self.remote.shown()} answered 401 without a challenge nwcache knows ({challenge.scheme or 'none'})"
            )

    async def _send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: Callable[[], bytes | AsyncIterator[bytes]] | None = None,
        params: dict[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """The response (open if `stream`: the caller closes it), after
        answering at most one authentication challenge."""
        for attempt in (0, 1):
            sent = dict(headers or {})
            if self._authorization is not None:
                sent["authorization"] = self._authorization
            request = self.client.build_request(
                method, url, headers=sent, params=params, content=body() if body is not None else None
            )
            self.requests += 1
            try:
                response = await self.client.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise Transient(f"cannot connect to {self.remote.shown()}: {_reason(exc)}") from None
            except httpx.TimeoutException as exc:
                raise Transient(f"{self.remote.shown()} did not answer in time ({_reason(exc)})") from None
            except (httpx.RemoteProtocolError, httpx.NetworkError) as exc:
                raise Transient(f"the connection to {self.remote.shown()} broke ({_reason(exc)})") from None
            except httpx.HTTPError as exc:
                raise BadAnswer(f"{self.remote.shown()}: {_reason(exc)}") from None
            if response.status_code == 401 and attempt == 0:
                await response.aclose()
                await self._authenticate(response)
                continue
            if response.status_code in (401, 403):
                await response.aclose()
                raise Refused(f"{self.remote.shown()} refused {method} ({response.status_code})")
            if response.status_code >= 500 or response.status_code == 429:
                await response.aclose()
                raise Transient(f"{self.remote.shown()} answered {response.status_code} to {method}")
            return response
        raise AssertionError("unreachable")

    # -- blobs ---------------------------------------------------------------------------

    async def has_blob(self, blob: str) -> bool:
        response = await self._send("HEAD", f"{self.base}/blobs/{digest_of(blob)}")
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise BadAnswer(f"{self.remote.shown()} answered {response.status_code} to HEAD of blob {blob}")

    async def put_blob(self, blob: str, size: int, body: Callable[[], bytes | AsyncIterator[bytes]]) -> None:
        """Upload a blob whole: POST an upload, then PUT its body with the
        digest (the registry checks it)."""
        started = await self._send("POST", f"{self.base}/blobs/uploads/", headers={"content-length": "0"})
        await started.aclose()
        location = started.headers.get("location")
        if started.status_code != 202 or not location:
            raise BadAnswer(f"{self.remote.shown()} answered {started.status_code} to starting an upload")
        url = urljoin(self.base + "/", location)
        # The location carries the upload's state in its query: add to it.
        url += ("&" if "?" in url else "?") + urlencode({"digest": digest_of(blob)})
        done = await self._send(
            "PUT",
            url,
            headers={"content-type": "application/octet-stream", "content-length": str(size)},
            body=body,
        )
        await done.aclose()
        if done.status_code != 201:
            raise BadAnswer(f"{self.remote.shown()} answered {done.status_code} to the upload of blob {blob}")

    async def get_blob(
        self, blob: str, size: int, write: Callable[[bytes], Awaitable[None]], *, limit: int | None = None
    ) -> None:
        """Stream the blob's body into `write`, refusing it the moment it
        outgrows `size` and at the end unless its sha256 is `blob`."""
        response = await self._send("GET", f"{self.base}/blobs/{digest_of(blob)}", stream=True)
        try:
            if response.status_code == 404:
                raise BadAnswer(f"{self.remote.shown()} does not hold blob {blob}")
            if response.status_code != 200:
                raise BadAnswer(
                    f"{self.remote.shown()} answered {response.status_code} to GET of blob {blob}"
                )
            digest = hashlib.sha256()
            got = 0
            try:
                async for chunk in response.aiter_raw(CHUNK):
                    got += len(chunk)
                    if got > size:
                        raise BadAnswer(
                            f"{self.remote.shown()}: blob {blob} is larger than its {size:,} bytes"
                        )
                    digest.update(chunk)
                    await write(chunk)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                raise Transient(
                    f"the download of blob {blob} from {self.remote.shown()} broke off after {got:,} bytes ({_reason(exc)})"
                ) from None
            if got != size or digest.hexdigest() != blob:
                raise BadAnswer(
                    f"{self.remote.shown()}: blob {blob} came as {got:,} bytes with sha256 {digest.hexdigest()[:16]}...; refused"
                )
        finally:
            await response.aclose()

    async def read_blob(self, blob: str, size: int) -> bytes:
        parts: list[bytes] = []

        async def keep(chunk: bytes) -> None:
            parts.append(chunk)

        await self.get_blob(blob, size, keep)
        return b"".join(parts)

    # -- manifests and tags ------------------------------------------------------------------

    async def put_manifest(self, tag: str, manifest: bytes) -> None:
        response = await self._send(
            "PUT", f"{self.base}/manifests/{tag}", headers={"content-type": MANIFEST}, body=lambda: manifest
        )
        await response.aclose()
        if response.status_code != 201:
            raise BadAnswer(
                f"{self.remote.shown()} refused the manifest {tag} ({response.status_code}: {response.text[:200]})"
            )

    async def get_manifest(self, reference: str) -> tuple[bytes, str] | None:
        """(the manifest's bytes, their digest), None when there is none."""
        response = await self._send("GET", f"{self.base}/manifests/{reference}", headers={"accept": MANIFEST})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise BadAnswer(
                f"{self.remote.shown()} answered {response.status_code} to GET of manifest {reference}"
            )
        content = response.content
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind in ("text/html", "application/xhtml+xml"):
            raise BadAnswer(f"{self.remote.shown()} answered a web page for manifest {reference}")
        if len(content) > 4 << 20:
            raise BadAnswer(f"{self.remote.shown()}: manifest {reference} is larger than 4 MiB")
        return content, "sha256:" + hashlib.sha256(content).hexdigest()

    async def tags(self) -> list[str]:
        """Every tag of the repository (none when it does not exist yet)."""
        out: list[str] = []
        url: str | None = f"{self.base}/tags/list"
        params: dict[str, str] | None = {"n": "1000"}
        while url is not None:
            response = await self._send("GET", url, params=params)
            if response.status_code == 404:
                return out
            if response.status_code != 200:
                raise BadAnswer(f"{self.remote.shown()} answered {response.status_code} to the tag list")
            try:
                tags = response.json().get("tags") or []
                out.extend(str(t) for t in tags)
            except (ValueError, AttributeError, TypeError):
                raise BadAnswer(f"{self.remote.shown()}: the tag list is not JSON") from None
            following = response.links.get("next", {}).get("url")
            url = urljoin(self.base + "/", following) if following else None
            params = None
        return out


async def retrying(fn: Callable[[], Awaitable[T]], *, attempts: int = 4, bound: float = 30.0) -> T:
    """`fn()` again after a Transient error, with exponential backoff and
    jitter (stamina), at most `attempts` times and within `bound` s in all."""
    async for attempt in stamina.retry_context(
        on=Transient, attempts=attempts, timeout=bound, wait_initial=0.1, wait_max=2.0
    ):
        with attempt:
            return await fn()
    raise AssertionError("unreachable")


def parse_json(content: bytes, what: str) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        raise BadAnswer(f"{what} is not JSON") from None


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return re.sub(r"//[^/@\s]*@", "//", text)
