"""The shared blob tier (docs/REMOTE.md): pushing stored packages to an OCI
registry, finding a package there by name and version, and indexing it here
with its bodies left on the registry (fetched by daemon/lazy.py).

Push, per package: the blobs the registry lacks (HEAD first; the small files
as one pack layer, each larger body as a layer of its own, streamed from its
file), the config (the package record), then the manifest under the package's
tag (artifact.py), unless the registry holds that very manifest already: a
second push sends HEADs and one GET per package, and no body.

Install from a remote, per `NAME==VERSION`: the remotes in name order, their
tag lists (one listing per remote and request), the tags of that name and
version, the manifest whose wheel tags the environment supports best, its
config checked against its digest and its claims (artifact.read_config). Then
the pack (every small file, verified one by one) and the larger bodies that
installing reads (the .dist-info and .data files: RECORD, entry points,
scripts) are fetched and kept, and the package is indexed with every other
blob as remote-only, all in one commit; nothing is committed when any of it
fails, so a failed install changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
from packaging.tags import Tag
from packaging.utils import canonicalize_name

from nwcache import remotes
from nwcache.remotes import Credentials, Remote, RemoteError

from . import artifact, schema
from .errors import RemoteBody, StoreError
from .index import Index
from .lazy import Lazy
from .registry import CHUNK, BadAnswer, Registry, retrying
from .schema import PackageRecord
from .staging import Staged
from .store import Store

log = logging.getLogger("nwcache.daemon")
Progress = Callable[[str, int, int], Awaitable[None]]
UPLOADS = 8  # blobs uploaded at once


class NotOnRemote(RemoteError):
    hint = "push it from a machine that has it ('nwcache push NAME==VERSION'), or install it from an index"


@dataclass
class Found:
    registry: Registry
    art: artifact.Artifact
    tag: str


def _file_body(path: Path) -> Callable[[], AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        handle = await trio.to_thread.run_sync(open, path, "rb")
        try:
            while chunk := await trio.to_thread.run_sync(handle.read, CHUNK):
                yield chunk
        finally:
            handle.close()

    return chunks


def eager(pkg: PackageRecord, path: str) -> bool:
    """Whether installing reads this file's body (so it is fetched at install)."""
    return path.startswith((pkg.dist_info + "/", pkg.dist_info.removesuffix(".dist-info") + ".data/"))


def index_remote(
    index: Index,
    pkg: PackageRecord,
    remote: str,
    inline: dict[str, bytes],
    files: dict[str, tuple[Path, int]],
) -> None:
    """Index a package from a remote: the bodies fetched (inline ones and
    verified files in tmp/) as local blobs, every other blob of it the store
    lacks as remote-only, and the record; one commit."""
    staged = Staged(index.bodies, inline=dict(inline), files=dict(files))
    try:
        with index.gate.shared():
            staged.publish()
            with index.write() as txn:
                staged.commit(txn, index.db["blobs"])
                for ref in pkg.files.values():
                    txn.put(
                        bytes.fromhex(ref.blob),
                        schema.encode_remote_blob(ref.size, remote),
                        db=index.db["blobs"],
                        overwrite=False,
                    )
                txn.put(pkg.id, pkg.encode(), db=index.db["packages"], overwrite=False)
    except BaseException:
        staged.discard()
        raise


class Tier:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._client: httpx.AsyncClient | None = None
        self._registries: dict[tuple[Remote, Credentials | None], Registry] = {}
        self.lazy = Lazy(self)
        self.pushed = {"blobs": 0, "bytes": 0, "manifests": 0}
        # Indexed from a remote: packages, and the bytes fetched for them at
        # install (configs, packs, the files installing reads).
        self.brought = {"packages": 0, "bytes": 0}

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
                timeout=httpx.Timeout(10.0, connect=5.0),
                follow_redirects=True,  # registries redirect blob GETs to their storage
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def remotes(self) -> dict[str, Remote]:
        return remotes.load(self.store.home)

    def registry(self, name: str) -> Registry:
        remote = self.remotes().get(name)
        if remote is None:
            raise RemoteError(
                f"no remote is named {name!r} (any more)",
                hint="add it again with 'nwcache remote add', or reinstall what came from it",
            )
        # Read at each use (a small file): changed credentials take effect at once.
        credentials = remotes.read_credentials(remote.credentials) if remote.credentials else None
        found = self._registries.get((remote, credentials))
        if found is None:
            found = self._registries[(remote, credentials)] = Registry(remote, self.client(), credentials)
        return found

    def choose(self, name: str | None) -> Registry:
        if name is not None:
            return self.registry(name)
        names = sorted(self.remotes())
        if not names:
            raise RemoteError("no remote is configured", hint="add one with 'nwcache remote add NAME URL'")
        if len(names) > 1:
            raise RemoteError(
                f"{len(names)} remotes are configured ({', '.join(names)})",
                hint="name one with --remote NAME",
            )
        return self.registry(names[0])

    # -- push ----------------------------------------------------------------------------

    async def push(
        self, packages: list[PackageRecord], remote: str | None, progress: Progress
    ) -> dict[str, Any]:
        registry = self.choose(remote)
        done: dict[str, Any] = {
            "packages": 0,
            "skipped": [],
            "manifests": 0,
            "uploaded": 0,
            "bytes": 0,
            "present": 0,
        }
        for number, pkg in enumerate(packages):
            if pkg.source != "archive":
                done["skipped"].append(
                    f"{pkg.name} {pkg.version} (adopted from site-packages, not from a wheel)"
                )
                continue
            await progress(
                f"pushing {pkg.name} {pkg.version} to {registry.remote.name}", number, len(packages)
            )
            await self._push_one(registry, pkg, done)
            done["packages"] += 1
        return {"remote": registry.remote.name, "repository": registry.remote.repository, **done}

    async def _push_one(self, registry: Registry, pkg: PackageRecord, done: dict[str, Any]) -> None:
        small = sorted({r.blob: r.size for r in pkg.files.values() if artifact.small(r.size)}.items())
        pack = await trio.to_thread.run_sync(
            lambda: b"".join(self.store.read_blob(blob) for blob, _ in small) if small else None
        )
        art = artifact.build(pkg, pack)
        tag = artifact.tag_of(pkg)
        manifest = art.manifest()
        have = await retrying(lambda: registry.get_manifest(tag))
        if have is not None and have[0] == manifest:
            done["present"] += len(art.layers) + 1
            return
        limiter = trio.CapacityLimiter(UPLOADS)

        async def upload(blob: str, size: int, body: Callable[[], Any]) -> None:
            async with limiter:
                if await retrying(lambda: registry.has_blob(blob)):
                    done["present"] += 1
                    return
                await retrying(lambda: registry.put_blob(blob, size, body))
                done["uploaded"] += 1
                done["bytes"] += size
                self.pushed["blobs"] += 1
                self.pushed["bytes"] += size

        async def upload_stored(blob: str, size: int) -> None:
            try:
                _size, where = await trio.to_thread.run_sync(self.store.blob_location, blob)
            except RemoteBody:
                async with limiter:
                    if await retrying(lambda: registry.has_blob(blob)):
                        done["present"] += 1
                        return
                await self.lazy.ensure_all([blob])  # from the remote it came from, then up
                _size, where = await trio.to_thread.run_sync(self.store.blob_location, blob)
            if isinstance(where, bytes):
                content = where
                await upload(blob, size, lambda: content)
            else:
                await upload(blob, size, _file_body(where))

        async with trio.open_nursery() as nursery:
            for layer in art.layers:
                if layer.media_type == artifact.PACK_TYPE:
                    assert pack is not None
                    nursery.start_soon(upload, layer.blob, layer.size, lambda: pack)
                else:
                    nursery.start_soon(upload_stored, layer.blob, layer.size)
            config = art.config
            nursery.start_soon(upload, art.config_blob, len(config), lambda: config)
        await retrying(lambda: registry.put_manifest(tag, manifest))
        done["manifests"] += 1
        self.pushed["manifests"] += 1
        log.info("pushed %s %s to %s as %s", pkg.name, pkg.version, registry.remote.shown(), tag)

    # -- find and index --------------------------------------------------------------------

    async def find(self, specs: list[tuple[str, str]], env_tags: list[str]) -> tuple[list[Found], list[str]]:
        """The package of each (name, version) on the first remote that holds
        a build the environment supports; and the specs no remote holds."""
        found: list[Found] = []
        missing: list[str] = []
        rank = {tag: i for i, tag in enumerate(env_tags)}
        listings: dict[str, list[str]] = {}
        for name, version in specs:
            hit: Found | None = None
            for remote in sorted(self.remotes()):
                registry = self.registry(remote)
                if remote not in listings:
                    listings[remote] = await retrying(registry.tags)
                prefix = artifact.tag_prefix(name, version)
                best: tuple[int, str, artifact.Manifest] | None = None
                for tag in sorted(t for t in listings[remote] if t.startswith(prefix)):
                    got = await retrying(partial(registry.get_manifest, tag))
                    if got is None:
                        continue
                    manifest = artifact.read_manifest(got[0], f"{remote}:{tag}")
                    if canonicalize_name(manifest.name) != canonicalize_name(name):
                        continue
                    score = min(
                        (rank[str(t)] for w in manifest.wheel_tags for t in _expand(w) if str(t) in rank),
                        default=None,
                    )
                    if score is not None and (best is None or score < best[0]):
                        best = (score, tag, manifest)
                if best is None:
                    continue
                _score, tag, manifest = best
                where = f"{remote}:{tag}"
                config = await retrying(
                    partial(registry.read_blob, manifest.config.blob, manifest.config.size)
                )
                hit = Found(registry, artifact.read_config(config, manifest, where), tag)
                break
            if hit is None:
                missing.append(f"{name}=={version}")
            else:
                found.append(hit)
        return found, missing

    async def bring(self, found: list[Found], progress: Progress) -> list[PackageRecord]:
        """Index each found package here (see the module); returns the records."""
        out: list[PackageRecord] = []
        for number, hit in enumerate(found):
            pkg = hit.art.package
            await progress(
                f"indexing {pkg.name} {pkg.version} from {hit.registry.remote.name}", number, len(found)
            )
            stored = await trio.to_thread.run_sync(self.store.get_package, pkg.id)
            if stored is not None:
                out.append(stored)
                continue
            where = f"{hit.registry.remote.name}:{hit.tag}"
            inline: dict[str, bytes] = {}
            layer = hit.art.pack_layer
            if layer is not None:
                present = await trio.to_thread.run_sync(
                    self.store.index.blobs_present, [b for b, _ in hit.art.pack]
                )
                if len(present) < len(hit.art.pack):
                    content = await retrying(partial(hit.registry.read_blob, layer.blob, layer.size))
                    inline = artifact.split_pack(content, hit.art.pack, where)
            wanted = {
                r.blob: r.size for p, r in pkg.files.items() if eager(pkg, p) and not artifact.small(r.size)
            }
            local = await trio.to_thread.run_sync(self._local_bodies, list(wanted))
            files: dict[str, tuple[Path, int]] = {}
            try:
                for blob, size in sorted(wanted.items()):
                    if blob in local:
                        continue
                    files[blob] = (
                        await retrying(partial(self.lazy.download, hit.registry, blob, size)),
                        size,
                    )
                await trio.to_thread.run_sync(
                    index_remote, self.store.index, pkg, hit.registry.remote.name, inline, files
                )
            except BaseException:
                for temp, _ in files.values():
                    temp.unlink(missing_ok=True)
                raise
            self.brought["packages"] += 1
            self.brought["bytes"] += (
                len(hit.art.config)
                + (layer.size if inline and layer is not None else 0)
                + sum(size for _, size in files.values())
            )
            log.info(
                "indexed %s %s from %s: %d files, %d bodies fetched now, the rest at first read",
                pkg.name,
                pkg.version,
                where,
                len(pkg.files),
                len(inline) + len(files),
            )
            stored = await trio.to_thread.run_sync(self.store.get_package, pkg.id)
            if stored is None:
                raise StoreError(f"{pkg.name} {pkg.version} vanished from the store while it was indexed")
            out.append(stored)
        return out

    def _local_bodies(self, blobs: list[str]) -> set[str]:
        """Those of `blobs` whose bodies are local (indexed, not remote-only)."""
        index = self.store.index
        with index.env.begin() as txn:
            out = set()
            for blob in blobs:
                value = txn.get(bytes.fromhex(blob), db=index.db["blobs"])
                if value is not None and schema.blob_remote(value) is None:
                    out.add(blob)
            return out


def _expand(wheel_tag: str) -> list[Tag]:
    """A wheel's tag triple, compressed sets expanded (py2.py3-none-any)."""
    try:
        interpreters, abis, platforms = wheel_tag.split("-")
    except ValueError:
        raise BadAnswer(f"{wheel_tag!r} is not a wheel tag") from None
    return [
        Tag(i, a, p) for i in interpreters.split(".") for a in abis.split(".") for p in platforms.split(".")
    ]
