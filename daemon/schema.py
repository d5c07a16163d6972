"""The store's on-disk layout: every LMDB key and value, in one place.

    $NWCACHE_HOME/
      index/          LMDB environment (data.mdb, lock.mdb): the databases below
      blobs/ab/<hex>  blob bodies larger than INLINE_MAX, immutable, named by sha256
      tmp/            bodies being written; anything here at start-up is debris
      remotes.json    the OCI registries of the blob tier (daemon/remotes.py, docs/REMOTE.md)
      downloads/      wheels of an install by name while its request runs (daemon/fetch.py);
                      tmp/ in it: downloads not yet verified; emptied at start-up
      owner.lock      flock held by the one process that has the store open
      reserve         allocated blocks as large as index/data.mdb (at least 8 MiB), given
                      back before a commit that frees space on a full disk (daemon/reserve.py)

Databases (all keys are bytes; integers big-endian so that keys sort numerically):

    meta         b"schema"                 -> b"1"
    blobs        sha256 (32)               -> BLOB: kind (1) | size (u64) | inline body
                                              kind 0: body in blobs/, kind 1: body follows,
                                              kind 2 (since issue 17): the body is on a remote
                                              only, whose name (utf-8) follows; fetched by
                                              digest at its first read (daemon/lazy.py), then
                                              rewritten as kind 0
    packages     package id (32)           -> JSON PackageRecord
    envs         env id (16)               -> JSON EnvRecord
    generations  env id (16) | number (u64)-> JSON GenerationRecord
    bytecode     source blob (32) | level (1) | interpreter (ascii)
                                           -> BYTECODE: kind (1) | pyc sha256 (32) | pyc size (u64)
                                              kind 0: compiled, kind 1: does not compile (no more bytes)
    compiling    env id (16)               -> JSON {"generation": n, "error": text or null}: the
                                              environment's bytecode is not complete since generation
                                              n (written with the flip; deleted once compiled), and
                                              why the last attempt failed (docs/BYTECODE.md)
    wheels       wheel file sha256 (32)    -> package id (32)
                                              (since issue 15) the package a downloaded wheel
                                              file became: a file whose hash is here is never
                                              downloaded again while the package is stored; an
                                              entry whose package GC dropped is stale, not wrong

A package id is the raw content digest (docs/FORMAT.md section 7) of the
distribution as installed from its archive, so the classic and 2.0 forms of
one wheel are one package. An env id is the first 16 bytes of sha256 over the
venv's real path.

An interpreter is "<cache tag>:<magic number hex>" ("cpython-311:a70d0d0a"):
the cache tag names the pyc file, the magic number is what the interpreter
checks, and pre-releases share a tag across magic numbers (docs/BYTECODE.md).

Record layouts grow only by optional fields, so a store written by an earlier
version reads as it is (no schema bump, no migration):
    EnvRecord.previous         (since issue 20) the generation before the last
                               change, where a plain rollback goes; absent: the
                               current generation's parent
    GenerationRecord.changes   (since issue 20) [[name, old, new], ...] against
                               the parent, null for absent; absent: computed
                               from the parent while it is kept
    GenerationRecord.request   (since issue 20) the id of the client request
                               that made it; absent: none was sent
    EnvRecord.request          (since issue 20) the id of the last rollback's
                               request; absent: none
A database added later is created empty in an earlier store: `compiling`
(since issue 16; its environments are compiled at their next change).
Blob kind 2 (since issue 17) is written only by an install from a remote; a
version before it would take such an entry for a missing body file (it
reads as EIO there until `nwcache prefetch` under this version makes it
local). Small blobs (INLINE_MAX or less) are never kind 2: they come in the
package's pack at install (daemon/artifact.py).

GC roots are the generations each environment keeps; a blob or package that
no kept generation reaches is garbage. A bytecode entry lives while its source
blob does and some registered environment runs its interpreter; its pyc blob
is reachable through it. Reachability is computed, not
counted: no write has to maintain a reference count.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from packaging.utils import canonicalize_name

SCHEMA_VERSION = b"1"
DATABASES = ("meta", "blobs", "packages", "envs", "generations", "bytecode", "compiling", "wheels")
# Bodies up to this size live in LMDB itself: below half a page they need no
# overflow page, and a file per tiny blob costs an inode and a 4 KiB block.
# Measured (docs/BENCH-STORE.md, numpy+pandas+pyarrow+scipy+requests): at 2000,
# 30% of the blobs stay out of the file system for 4 MB more index; disk per
# installed file hardly moves, since large bodies dominate it.
INLINE_MAX = 2000
BLOB_IN_FILE = 0
BLOB_INLINE = 1
BLOB_REMOTE = 2
_BLOB_HEAD = struct.Struct(">BQ")


def encode_blob(size: int, inline: bytes | None) -> bytes:
    if inline is None:
        return _BLOB_HEAD.pack(BLOB_IN_FILE, size)
    return _BLOB_HEAD.pack(BLOB_INLINE, size) + inline


def encode_remote_blob(size: int, remote: str) -> bytes:
    return _BLOB_HEAD.pack(BLOB_REMOTE, size) + remote.encode("utf-8")


def decode_blob(value: bytes | memoryview) -> tuple[int, bytes | None]:
    """(size, inline body or None when the body is a file, or on a remote)."""
    kind, size = _BLOB_HEAD.unpack_from(value)
    return size, (bytes(value[_BLOB_HEAD.size :]) if kind == BLOB_INLINE else None)


def blob_remote(value: bytes | memoryview) -> str | None:
    """The remote holding the body of a blob not local yet, else None."""
    if value[0] != BLOB_REMOTE:
        return None
    return bytes(value[_BLOB_HEAD.size :]).decode("utf-8")


_BYTECODE_HEAD = struct.Struct(">B32sQ")
BYTECODE_COMPILED = 0
BYTECODE_FAILED = 1


def bytecode_key(source: str, level: int, interpreter: str) -> bytes:
    return bytes.fromhex(source) + bytes((level,)) + interpreter.encode("ascii")


def split_bytecode_key(key: bytes) -> tuple[str, int, str]:
    return key[:32].hex(), key[32], key[33:].decode("ascii")


def encode_bytecode(pyc: FileRef | None) -> bytes:
    if pyc is None:
        return bytes((BYTECODE_FAILED,))
    return _BYTECODE_HEAD.pack(BYTECODE_COMPILED, bytes.fromhex(pyc.blob), pyc.size)


def decode_bytecode(value: bytes | memoryview) -> FileRef | None:
    """The pyc as a (non-executable) file, or None for a source that does not compile."""
    if value[0] == BYTECODE_FAILED:
        return None
    _kind, blob, size = _BYTECODE_HEAD.unpack_from(value)
    return FileRef(blob.hex(), size, False)


def encode_compiling(generation: int, error: str | None) -> bytes:
    return json.dumps({"generation": generation, "error": error}).encode()


def decode_compiling(value: bytes | memoryview) -> tuple[int, str | None]:
    data = json.loads(bytes(value))
    return int(data["generation"]), data.get("error")


def env_id(real_path: str) -> bytes:
    return hashlib.sha256(real_path.encode()).digest()[:16]


def wheel_key(sha256_hex: str) -> bytes:
    """The `wheels` key of a wheel file, by the sha256 (hex) of its bytes."""
    key = bytes.fromhex(sha256_hex)
    if len(key) != 32:
        raise ValueError(f"{sha256_hex!r} is not a sha256")
    return key


def generation_key(env: bytes, number: int) -> bytes:
    return env + struct.pack(">Q", number)


def split_generation_key(key: bytes) -> tuple[bytes, int]:
    return key[:16], struct.unpack(">Q", key[16:24])[0]


@dataclass(frozen=True)
class FileRef:
    """One file of a tree: which blob, how big, executable or not."""

    blob: str  # sha256 hex
    size: int
    executable: bool

    def to_json(self) -> list[Any]:
        return [self.blob, self.size, self.executable]

    @classmethod
    def from_json(cls, value: list[Any]) -> FileRef:
        return cls(str(value[0]), int(value[1]), bool(value[2]))


@dataclass
class PackageRecord:
    """A distribution in the store: its files as the archive lays them out
    (or, for an adopted package, as site-packages holds them)."""

    name: str
    version: str
    digest: str  # "sha256:..."
    tags: list[str]
    filename: str
    source: str  # "archive" or "adopted"
    dist_info: str
    files: dict[str, FileRef]
    # Adopted packages: RECORD paths outside site-packages (scripts pip wrote),
    # relative to site-packages as RECORD writes them.
    external: list[str] = field(default_factory=list)

    @property
    def id(self) -> bytes:
        return bytes.fromhex(self.digest.removeprefix("sha256:"))

    def encode(self) -> bytes:
        data = asdict(self)
        data["files"] = {path: ref.to_json() for path, ref in self.files.items()}
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, value: bytes | memoryview) -> PackageRecord:
        data = json.loads(bytes(value))
        data["files"] = {path: FileRef.from_json(ref) for path, ref in data["files"].items()}
        return cls(**data)


@dataclass
class EnvRecord:
    """A registered virtual environment and what its interpreter said of itself."""

    path: str
    python: str  # the venv's interpreter, as a path inside the venv
    version: str  # "3.11.7"
    cache_tag: str  # "cpython-311"
    tags: list[str]  # supported tags, most preferred first (packaging.tags.sys_tags)
    site_packages: str  # relative to path
    scripts: str  # relative to path
    include: str  # relative to path
    current: int
    next: int
    created: float
    # How site-packages reaches the view: "symlink" or "bind" (daemon/linking.py).
    link: str = "symlink"
    magic: str = ""  # importlib.util.MAGIC_NUMBER, hex
    # The generation the environment was at before its last change (a new
    # generation or a rollback): where a plain rollback goes. Records written
    # before it existed lack it (None): a plain rollback then goes to the
    # current generation's parent, which was the same thing until then.
    previous: int | None = None
    # The request (client's id) of the last rollback, so that a client whose
    # connection broke can ask what became of it.
    request: str | None = None

    @property
    def interpreter(self) -> str:
        """Which bytecode this environment's interpreter accepts (schema: bytecode)."""
        return f"{self.cache_tag}:{self.magic}"

    @property
    def id(self) -> bytes:
        return env_id(self.path)

    def encode(self) -> bytes:
        # Not asdict(): it deep-copies the hundreds of tags at every flip.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, value: bytes | memoryview) -> EnvRecord:
        return cls(**json.loads(bytes(value)))


@dataclass
class Installed:
    """One package in a generation, with the files installing it generated for
    this environment: the installed RECORD, INSTALLER and REQUESTED in
    site-packages, and scripts, headers and data outside it."""

    package: str  # package id hex
    name: str
    version: str
    requested: bool
    site: dict[str, FileRef]  # generated files, relative to site-packages
    outside: dict[str, FileRef]  # relative to the venv root: bin/x, include/..., data

    def to_json(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "name": self.name,
            "version": self.version,
            "requested": self.requested,
            "site": {p: r.to_json() for p, r in self.site.items()},
            "outside": {p: r.to_json() for p, r in self.outside.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Installed:
        return cls(
            package=data["package"],
            name=data["name"],
            version=data["version"],
            requested=data["requested"],
            site={p: FileRef.from_json(r) for p, r in data["site"].items()},
            outside={p: FileRef.from_json(r) for p, r in data["outside"].items()},
        )


Change = tuple[str, "str | None", "str | None"]


def changes_between(old: list[Installed], new: list[Installed]) -> list[Change]:
    """What going from `old` to `new` changes, by distribution name (sorted,
    case-insensitively): (name, old version, new version), None where the
    distribution is absent. A distribution whose version is the same but
    whose package differs (another build) is listed with both versions equal."""
    before = {canonicalize_name(i.name): i for i in old}
    after = {canonicalize_name(i.name): i for i in new}
    out: list[Change] = []
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key), after.get(key)
        if a is not None and b is not None and a.package == b.package:
            continue
        name = (b or a).name  # type: ignore[union-attr]  # one of them is there
        out.append((name, a.version if a else None, b.version if b else None))
    return out


@dataclass
class GenerationRecord:
    number: int
    parent: int | None
    created: float
    action: str
    packages: list[Installed]
    # (name, old version, new version) against the parent, written at the
    # flip; None in records written before it existed (readers compare with
    # the parent when it is still kept).
    changes: list[Change] | None = None
    # The id of the client request that made it (protocol "request"), so that
    # a client whose answer was lost can ask for it; None without one.
    request: str | None = None

    def encode(self) -> bytes:
        data: dict[str, Any] = {
            "number": self.number,
            "parent": self.parent,
            "created": self.created,
            "action": self.action,
            "packages": [p.to_json() for p in self.packages],
        }
        if self.changes is not None:
            data["changes"] = [list(c) for c in self.changes]
        if self.request is not None:
            data["request"] = self.request
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, value: bytes | memoryview) -> GenerationRecord:
        data = json.loads(bytes(value))
        data["packages"] = [Installed.from_json(p) for p in data["packages"]]
        if data.get("changes") is not None:
            data["changes"] = [(str(n), o, v) for n, o, v in data["changes"]]
        return cls(**data)
