"""A stored package as an OCI artifact, and back (docs/REMOTE.md, "Mapping").

    manifest  application/vnd.oci.image.manifest.v1+json
              artifactType  application/vnd.nwcache.package.v1
              config        the package's config blob (below)
              layers        the pack (if the package has small files), then
                            one layer per larger blob, sorted by digest
              annotations   org.nwcache.name / .version / .wheel-tags, and
                            org.opencontainers.image.title (the wheel's name)
    config    application/vnd.nwcache.package.v1+json: canonical JSON (sorted
              keys, no spaces) {"format": 1, "package": <the package record
              as the store keeps it>, "pack": [[blob, size], ...]}
    pack      application/vnd.nwcache.pack.v1: the bodies of the package's
              blobs of INLINE_MAX bytes or fewer, concatenated in the order
              "pack" lists them (sorted by blob); one request brings them all
    layer     application/vnd.nwcache.blob.v1: one blob's body, as it is

The tag names the package: `<canonical name>-<version>-<12 hex of its content
digest>`, the version with `+` and `!` written `_` (the tag grammar has
neither). Two builds of one version (other wheel tags) get two tags; the
manifest's annotations say which wheel tags each carries, so an install picks
the build its interpreter supports without fetching any config.

Everything read back is checked before use: the JSON's shape, every path
(the archive library's path rules), every digest, that the layers and the
pack hold exactly the package's blobs, and that the record's files give its
content digest (docs/FORMAT.md section 7). A registry that answers anything
else raises `registry.BadAnswer`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name

from nwcache.archive.digest import DigestItem, content_digest
from nwcache.archive.errors import ArchiveError
from nwcache.archive.paths import check_path

from . import schema
from .registry import MANIFEST, BadAnswer, parse_json
from .schema import PackageRecord

ARTIFACT_TYPE = "application/vnd.nwcache.package.v1"
CONFIG_TYPE = "application/vnd.nwcache.package.v1+json"
PACK_TYPE = "application/vnd.nwcache.pack.v1"
BLOB_TYPE = "application/vnd.nwcache.blob.v1"
FORMAT = 1
_HEX = re.compile(r"[0-9a-f]{64}")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")


def tag_prefix(name: str, version: str) -> str:
    """What every tag of `name` `version` starts with."""
    return f"{canonicalize_name(name)}-{version.replace('+', '_').replace('!', '_')}-"


def tag_of(pkg: PackageRecord) -> str:
    tag = tag_prefix(pkg.name, pkg.version) + pkg.digest.removeprefix("sha256:")[:12]
    if not _TAG.fullmatch(tag):
        raise BadAnswer(
            f"{pkg.name} {pkg.version} gives the tag {tag!r}, which OCI registries refuse",
            hint="a name and version this long cannot be pushed; nothing was pushed for it",
        )
    return tag


def small(size: int) -> bool:
    return size <= schema.INLINE_MAX


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    blob: str  # sha256 hex
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": f"sha256:{self.blob}", "size": self.size}


@dataclass
class Artifact:
    """One package as the registry holds it."""

    package: PackageRecord
    pack: list[tuple[str, int]]  # the small blobs, in pack order
    config: bytes
    layers: list[Descriptor]

    @property
    def config_blob(self) -> str:
        return hashlib.sha256(self.config).hexdigest()

    def manifest(self) -> bytes:
        pkg = self.package
        data = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": Descriptor(CONFIG_TYPE, self.config_blob, len(self.config)).to_json(),
            "layers": [layer.to_json() for layer in self.layers],
            "annotations": {
                "org.nwcache.name": pkg.name,
                "org.nwcache.version": pkg.version,
                "org.nwcache.wheel-tags": ",".join(pkg.tags),
                "org.opencontainers.image.title": pkg.filename,
            },
        }
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()

    @property
    def pack_layer(self) -> Descriptor | None:
        return self.layers[0] if self.layers and self.layers[0].media_type == PACK_TYPE else None


def build(pkg: PackageRecord, pack_bytes: bytes | None = None) -> Artifact:
    """The artifact of a package; `pack_bytes` (the small blobs' bodies
    concatenated in pack order) gives the pack layer's digest."""
    blobs = {ref.blob: ref.size for ref in pkg.files.values()}
    pack = sorted((b, s) for b, s in blobs.items() if small(s))
    large = sorted((b, s) for b, s in blobs.items() if not small(s))
    config = json.dumps(
        {"format": FORMAT, "package": json.loads(pkg.encode()), "pack": [list(p) for p in pack]},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    layers = []
    if pack:
        assert pack_bytes is not None, "a package with small files needs its pack"
        layers.append(Descriptor(PACK_TYPE, hashlib.sha256(pack_bytes).hexdigest(), len(pack_bytes)))
    layers += [Descriptor(BLOB_TYPE, b, s) for b, s in large]
    return Artifact(pkg, pack, config, layers)


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: list[Descriptor]
    name: str
    version: str
    wheel_tags: list[str]


def _descriptor(data: Any, what: str) -> Descriptor:
    try:
        digest = str(data["digest"])
        size = data["size"]
        media_type = str(data["mediaType"])
    except (KeyError, TypeError):
        raise BadAnswer(f"{what} is not a descriptor") from None
    blob = digest.removeprefix("sha256:")
    if not digest.startswith("sha256:") or not _HEX.fullmatch(blob):
        raise BadAnswer(f"{what} names {digest[:80]!r}, not a sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadAnswer(f"{what} has no size")
    return Descriptor(media_type, blob, size)


def read_manifest(content: bytes, where: str) -> Manifest:
    data = parse_json(content, f"the manifest {where}")
    if not isinstance(data, dict) or data.get("artifactType") != ARTIFACT_TYPE:
        raise BadAnswer(f"the manifest {where} is not an nwcache package")
    config = _descriptor(data.get("config"), f"the config of {where}")
    layers = data.get("layers")
    if not isinstance(layers, list):
        raise BadAnswer(f"the manifest {where} has no layers")
    notes = data.get("annotations")
    if not isinstance(notes, dict):
        raise BadAnswer(f"the manifest {where} has no annotations")
    return Manifest(
        config,
        [_descriptor(layer, f"a layer of {where}") for layer in layers],
        str(notes.get("org.nwcache.name", "")),
        str(notes.get("org.nwcache.version", "")),
        [t for t in str(notes.get("org.nwcache.wheel-tags", "")).split(",") if t],
    )


def read_config(content: bytes, manifest: Manifest, where: str) -> Artifact:
    """The artifact a config describes, every claim checked (see the module)."""
    data = parse_json(content, f"the config of {where}")
    try:
        if data["format"] != FORMAT:
            raise BadAnswer(
                f"the config of {where} is of format {data['format']!r}, this nwcache reads {FORMAT}"
            )
        pkg = PackageRecord.decode(json.dumps(data["package"]).encode())
        pack = [(str(b), int(s)) for b, s in data["pack"]]
    except BadAnswer:
        raise
    except (KeyError, TypeError, ValueError, AttributeError):
        raise BadAnswer(f"the config of {where} is not a package record") from None
    if pkg.source != "archive":
        raise BadAnswer(f"the config of {where} is of an adopted package, which is never pushed")
    try:
        for path in pkg.files:
            check_path(path)
    except ArchiveError as exc:
        raise BadAnswer(f"the config of {where}: {exc}") from None
    for ref in pkg.files.values():
        if not _HEX.fullmatch(ref.blob) or ref.size < 0:
            raise BadAnswer(f"the config of {where} names a blob that is no sha256")
    digest = content_digest(
        DigestItem(p, r.executable, bytes.fromhex(r.blob), r.size) for p, r in pkg.files.items()
    )
    if digest != pkg.digest:
        raise BadAnswer(f"the config of {where}: its files do not give its content digest")
    blobs = {ref.blob: ref.size for ref in pkg.files.values()}
    packed = dict(pack)
    large = {d.blob: d.size for d in manifest.layers if d.media_type == BLOB_TYPE}
    if packed.keys() & large.keys() or packed.keys() | large.keys() != blobs.keys():
        raise BadAnswer(f"the layers of {where} do not hold exactly the package's files")
    if any(blobs[b] != s for b, s in (*packed.items(), *large.items())):
        raise BadAnswer(f"the layers of {where} give other sizes than the package's files")
    if (manifest.name, manifest.version) != (pkg.name, pkg.version):
        raise BadAnswer(f"the manifest {where} and its config name different packages")
    return Artifact(pkg, pack, content, manifest.layers)


def split_pack(content: bytes, pack: list[tuple[str, int]], where: str) -> dict[str, bytes]:
    """The pack's bodies by blob, each checked against its sha256."""
    out: dict[str, bytes] = {}
    offset = 0
    for blob, size in pack:
        body = content[offset : offset + size]
        offset += size
        if len(body) != size or hashlib.sha256(body).hexdigest() != blob:
            raise BadAnswer(f"the pack of {where} does not hold blob {blob} (refused)")
        out[blob] = body
    if offset != len(content):
        raise BadAnswer(f"the pack of {where} holds more than its blobs (refused)")
    return out
