"""`nwcache daemon`: the store, the view and the socket on one trio loop.

Start-up order is the refusal order: the store's lock (another daemon owns
NWCACHE_HOME), the socket (another daemon answers there), FUSE and the mount
point (a stale mount of a killed daemon is cleared), then READY=1 for
systemd. SIGTERM or SIGINT: STOPPING=1, bind mounts released, the view
unmounted, exit 0.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import shutil
import signal
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lmdb
import trio
from packaging.utils import canonicalize_name

from nwcache import __version__
from nwcache.archive import ArchiveError
from nwcache.errors import NwcacheError
from nwcache.protocol import (
    MAX_LINE,
    OPS,
    PROTOCOL,
    answers,
    default_home,
    default_socket,
    encode,
    error_event,
)

from . import bytecode
from .errors import StoreError, UnknownPackage
from .ingest import Progress as InstallProgress
from .reserve import free_bytes
from .runner import run_service
from .schema import Change, EnvRecord, GenerationRecord, PackageRecord, changes_between
from .service import Service
from .tier import Tier

MB = 1_000_000
if TYPE_CHECKING:
    from .fetch import Fetcher

log = logging.getLogger("nwcache.daemon")
Progress = Callable[[str, int, int], Awaitable[None]]


FINISHED_KEPT = 256


class DaemonError(StoreError):
    hint = "see 'nwcache daemon --help'"


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) how we are; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:  # a manager that went away must not take the daemon with it
        log.warning("could not notify %s of %r: %s", address, state.split("\n")[0], exc)


def prepare_socket(path: Path) -> None:
    """The socket's directory is ours alone (0700); a socket left by a dead
    daemon is removed, one a live daemon answers on is refused."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.parent.stat()
    if st.st_uid != os.getuid():
        raise DaemonError(f"{path.parent} belongs to uid {st.st_uid}", hint="choose another NWCACHE_SOCKET")
    os.chmod(path.parent, 0o700)
    if path.exists() or path.is_symlink():
        if answers(path):
            raise DaemonError(
                f"another nwcache daemon is listening on {path}",
                hint="stop it first ('nwcache service status')",
            )
        path.unlink()  # nobody listens: debris of a killed daemon


def env_json(service: Service, env: EnvRecord) -> dict[str, Any]:
    places = service.places(env)
    return {
        "path": env.path,
        "python": env.python,
        "version": env.version,
        "site_packages": env.site_packages,
        "link": env.link,
        "generation": env.current,
        # What links to the view: the venv itself (symlink mode) or its
        # site-packages (bind mode).
        "view": str(places.view_dir if env.link == "symlink" else places.view_site),
        "linked": env.path if env.link == "symlink" else str(places.site),
        "tags": env.tags[:3],
        "name": places.name,
    }


def changes_json(changes: list[Change] | None) -> list[dict[str, Any]] | None:
    if changes is None:
        return None
    return [{"name": name, "old": old, "new": new} for name, old, new in changes]


def change_json(gen: GenerationRecord) -> dict[str, Any]:
    """What an install, uninstall or rollback answers: the generation it led
    to and what changed, not the whole package list."""
    data = generation_json(gen, gen.number)
    del data["packages"]
    return data


def generation_json(
    gen: GenerationRecord, current: int | None = None, changes: list[Change] | None = None
) -> dict[str, Any]:
    """A generation for the client; `changes` (against another generation)
    replaces the ones it records against its parent."""
    return {
        "number": gen.number,
        "parent": gen.parent,
        "created": gen.created,
        "action": gen.action,
        "changes": changes_json(gen.changes if changes is None else changes),
        "request": gen.request,
        "current": gen.number == current if current is not None else None,
        "packages": [
            {"name": p.name, "version": p.version, "requested": p.requested}
            for p in sorted(gen.packages, key=lambda p: p.name.lower())
        ],
    }


class Handlers:
    """One coroutine per protocol operation, each taking the request's args
    and a progress callback and returning a JSON-able result."""

    def __init__(self, service: Service) -> None:
        self.service = service
        # Requests that change something, by the client's id: those at work,
        # and the answers of the last FINISHED_KEPT (a client whose
        # connection broke asks with "outcome").
        self.running: set[str] = set()
        self.finished: dict[str, dict[str, Any]] = {}
        self.fetcher: Fetcher | None = None  # made by the first install by name
        # The blob tier (docs/REMOTE.md): remote-only bodies are fetched at their first read.
        self.tier = Tier(service.store)
        service.view.bodies.fetch = self.tier.lazy.ensure
        service.fetch_bodies = self.tier.lazy.ensure_all
        # Downloads live only during a request: what a killed daemon left goes now.
        shutil.rmtree(service.store.home / "downloads", ignore_errors=True)

    def record(self, request_id: str, outcome: dict[str, Any]) -> None:
        self.finished[request_id] = outcome
        while len(self.finished) > FINISHED_KEPT:
            del self.finished[next(iter(self.finished))]

    async def outcome(self, args: dict[str, Any], progress: Progress) -> Any:
        """What became of a request, by id: "running", "done" (with its
        answer), "failed" (with its error), or "unknown": neither this daemon
        nor the store knows it, so it never took effect (a generation or a
        rollback records its request in the same transaction)."""
        request_id = str(args.get("request") or "")
        if request_id in self.running:
            return {"state": "running"}
        if request_id in self.finished:
            return self.finished[request_id]
        current = None
        if args.get("env"):
            try:
                env = await self._run(partial(self.service.store.get_env, args["env"]))
            except StoreError:
                env = None
            # Registering and unregistering record no request: their effect is the answer.
            if args.get("op") == "env.register" and env is not None:
                return {"state": "done", "result": env_json(self.service, env)}
            if args.get("op") == "env.unregister" and env is None:
                return {"state": "done", "result": {"path": args["env"]}}
            if env is not None:
                current = env.current
                gens = await self._run(partial(self.service.store.history, env.path))
                made = [g for g in gens if g.request == request_id]
                if made:
                    return {"state": "done", "result": change_json(made[0])}
                if env.request == request_id:  # a rollback
                    gen = await self._run(partial(self.service.store.generation, env.path))
                    return {"state": "done", "result": change_json(gen)}
        return {"state": "unknown", "current": current}

    async def _run(self, fn: Callable[[], Any]) -> Any:
        return await self.service._run(fn)

    async def ping(self, args: dict[str, Any], progress: Progress) -> Any:
        return {
            "version": __version__,
            "protocol": PROTOCOL,
            "pid": os.getpid(),
            "home": str(self.service.store.home),
            "mount": str(self.service.mountpoint),
        }

    async def env_register(self, args: dict[str, Any], progress: Progress) -> Any:
        await progress(f"registering {args['env']} (storing its site-packages)", 0, 1)
        env = await self.service.register(args["env"], "bind" if args.get("bind") else "symlink")
        return env_json(self.service, env)

    async def env_list(self, args: dict[str, Any], progress: Progress) -> Any:
        envs = await self._run(self.service.store.envs)
        out = []
        for env in sorted(envs, key=lambda e: e.path):
            gen = await self._run(partial(self.service.store.generation, env.path))
            out.append({**env_json(self.service, env), "packages": len(gen.packages)})
        return out

    async def env_show(self, args: dict[str, Any], progress: Progress) -> Any:
        await self.service.fold(args["env"])  # what pip changed inside the venv shows
        env = await self._run(partial(self.service.store.get_env, args["env"]))
        gen = await self._run(partial(self.service.store.generation, env.path))
        return {**env_json(self.service, env), "current": generation_json(gen, env.current)}

    async def env_unregister(self, args: dict[str, Any], progress: Progress) -> Any:
        await self.service.unregister(args["env"])
        return {"path": args["env"]}

    async def install(self, args: dict[str, Any], progress: Progress) -> Any:
        archives: list[str | os.PathLike[str]] = [str(a) for a in args["archives"]]
        work = InstallProgress()

        async def report() -> None:
            """What the install has done, as it is done: a line when the
            stage or the megabytes read and verified change, at most five a second."""
            said: tuple[str, int, int] | None = None
            while True:
                now = (work.stage, -(-work.done // MB), -(-work.total // MB))
                if now != said:
                    stage, done, total = said = now
                    what = f"{len(archives)} archive{'s' if len(archives) > 1 else ''}"
                    await progress(f"{stage} {what} (MB read and verified)", done, total)
                await trio.sleep(0.2)  # a reporting interval, not a synchronisation

        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(report)
            try:
                gen = await self.service.install(
                    args["env"], archives, request=args.get("request_id"), progress=work
                )
            except Exception as exc:  # raised below, as itself (not in an exception group)
                failure = exc
            finally:
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        total = -(-work.total // MB)
        await progress("installed", total, total)
        result = {**change_json(gen), "bytecode": await self.service.bytecode_of(args["env"])}
        if args.get("request_id") is not None and gen.request != args.get("request_id"):
            result.update(unchanged=True, changes=[])  # the generation the venv was at: nothing to do
        else:
            result["warnings"] = await self._run(partial(self._depcheck, args["env"], gen))
        return result

    def _depcheck(self, path: str, gen: GenerationRecord) -> list[str]:
        """Missing or conflicting requirements the install brought (daemon/depcheck.py)."""
        from . import depcheck

        changed = {canonicalize_name(name) for name, _old, new in gen.changes or [] if new is not None}
        env = self.service.store.get_env(path)
        return depcheck.problems(self.service.store, env, gen, changed)

    async def install_files(self, args: dict[str, Any], progress: Any) -> Any:
        """Install by name (docs/INSTALL-BY-NAME.md): the files the client
        resolved, downloaded and verified here (or found stored by their
        sha256), local archives beside them, `remove` dropped (sync): one
        generation, or none when nothing changes ({"unchanged": true}).
        `progress` takes a fourth argument here, the files in flight."""
        from .fetch import Fetcher, Wanted

        if self.fetcher is None:
            self.fetcher = Fetcher(self.service.store, self.service.store.home / "downloads")
        wanted = [Wanted.from_json(item) for item in args.get("downloads") or []]
        archives: list[str | os.PathLike[str] | PackageRecord] = [str(a) for a in args.get("archives") or []]
        fetched = await self.fetcher.fetch(wanted, progress, offline=bool(args.get("offline")))
        try:
            items = archives + [fetched[w.sha256] for w in wanted]
            ingested: dict[str, PackageRecord] = {}
            await progress(f"installing {len(items)} distributions", 0, 0)
            gen = await self.service.install(
                args["env"],
                items,
                request=args.get("request_id"),
                remove=[str(n) for n in args.get("remove") or []],
                ingested=ingested,
                action=str(args["action"]) if args.get("action") else None,
                # The names the user asked for get REQUESTED, their dependencies not (as pip).
                requested=True
                if args.get("requested") is None
                else {canonicalize_name(str(n)) for n in args["requested"]},
            )
            made = {}
            for w in wanted:
                item = fetched[w.sha256]
                if not isinstance(item, PackageRecord) and str(item) in ingested:
                    made[w.sha256] = ingested[str(item)].id
            await self._run(partial(self.service.store.remember_wheels, made))
        finally:
            self.fetcher.release(wanted)
        unchanged = args.get("request_id") is not None and gen.request != args.get("request_id")
        result = change_json(gen)
        if unchanged:
            result["changes"] = []
        result["unchanged"] = unchanged
        result["downloaded"] = sum(1 for w in wanted if not isinstance(fetched[w.sha256], PackageRecord))
        result["stored_before"] = len(wanted) - result["downloaded"]
        return result

    async def push(self, args: dict[str, Any], progress: Progress) -> Any:
        """Push stored packages to a remote (docs/REMOTE.md): those of an
        environment's current generation, or those named NAME==VERSION."""
        packages = await self._run(
            partial(self._packages_to_push, args.get("env"), list(args.get("specs") or []))
        )
        return await self.tier.push(packages, args.get("remote"), progress)

    def _packages_to_push(self, env: str | None, specs: list[list[str]]) -> list[PackageRecord]:
        store = self.service.store
        out: list[PackageRecord] = []
        if env is not None:
            for installed in store.generation(env).packages:
                pkg = store.get_package(installed.package)
                if pkg is not None:
                    out.append(pkg)
        if specs:
            stored = store.packages()
            for name, version in specs:
                hits = [
                    p
                    for p in stored
                    if canonicalize_name(p.name) == canonicalize_name(name) and p.version == version
                ]
                if not hits:
                    raise UnknownPackage(
                        f"the store holds no {name} {version}",
                        hint="install it first (any environment), or push what an environment holds with --env VENV",
                    )
                out.extend(hits)
        return sorted({p.id: p for p in out}.values(), key=lambda p: (p.name.lower(), p.version))

    async def remote_find(self, args: dict[str, Any], progress: Progress) -> Any:
        """Which of the pinned specs the remotes hold a build of for these
        wheel tags; changes nothing. {"remotes": n, "found": [...], "missing": [...]}."""
        if not self.tier.remotes():
            return {"remotes": 0, "found": [], "missing": [f"{n}=={v}" for n, v in args["specs"]]}
        found, missing = await self.tier.find(
            [(str(n), str(v)) for n, v in args["specs"]], list(args["tags"])
        )
        return {
            "remotes": len(self.tier.remotes()),
            "found": [f"{h.registry.remote.name}:{h.tag}" for h in found],
            "missing": missing,
        }

    async def install_remote(self, args: dict[str, Any], progress: Progress) -> Any:
        """Install pinned packages from the remotes (docs/REMOTE.md): found,
        indexed with their bodies on the remote (those installing reads
        fetched now), installed as one generation. Nothing changes unless
        every one of them is found and indexed."""
        specs = [(str(n), str(v)) for n, v in args["specs"]]
        found, missing = await self.tier.find(specs, list(args["tags"]))
        if missing:
            from .tier import NotOnRemote

            raise NotOnRemote(f"no remote holds {', '.join(missing)} for this environment")
        packages = await self.tier.bring(found, progress)
        await progress(f"installing {len(packages)} distributions", 0, 0)
        gen = await self.service.install(
            args["env"],
            packages,
            request=args.get("request_id"),
            action=str(args["action"]) if args.get("action") else None,
        )
        result = change_json(gen)
        unchanged = args.get("request_id") is not None and gen.request != args.get("request_id")
        if unchanged:
            result["changes"] = []
        result["unchanged"] = unchanged
        result["from_remote"] = [f"{h.registry.remote.name}:{h.tag}" for h in found]
        return result

    async def prefetch(self, args: dict[str, Any], progress: Progress) -> Any:
        """Fetch every remote-only body an environment's current generation
        (and its bytecode's sources) reads."""
        tree = await self._run(partial(self.service.store.tree, args["env"]))
        gen = await self._run(partial(self.service.store.generation, args["env"]))
        blobs = {r.blob for r in tree.values()} | {r.blob for i in gen.packages for r in i.outside.values()}
        await progress(f"fetching the bodies of {len(blobs)} files", 0, len(blobs))
        fetched = await self.tier.lazy.ensure_all(blobs)
        return {"files": len(blobs), "fetched": fetched}

    async def uninstall(self, args: dict[str, Any], progress: Progress) -> Any:
        gen = await self.service.uninstall(args["env"], list(args["names"]), request=args.get("request_id"))
        return change_json(gen)

    async def list(self, args: dict[str, Any], progress: Progress) -> Any:
        await self.service.fold(args["env"])  # what pip changed inside the venv shows
        gen = await self._run(partial(self.service.store.generation, args["env"]))
        return generation_json(gen, gen.number)["packages"]

    async def history(self, args: dict[str, Any], progress: Progress) -> Any:
        await self.service.fold(args["env"])  # pip's changes are a generation of their own
        env = await self._run(partial(self.service.store.get_env, args["env"]))
        gens = await self._run(partial(self.service.store.history, env.path))
        by_number = {g.number: g for g in gens}
        out = []
        for gen in gens:
            changes = gen.changes
            parent = by_number.get(gen.parent) if gen.parent is not None else None
            if changes is None and parent is not None:  # a record older than `changes`
                changes = changes_between(parent.packages, gen.packages)
            elif changes is None and gen.parent is None:
                changes = changes_between([], gen.packages)
            out.append(generation_json(gen, env.current, changes))
        return out

    async def rollback(self, args: dict[str, Any], progress: Progress) -> Any:
        gen = await self.service.rollback(args["env"], args.get("to"), request=args.get("request_id"))
        return change_json(gen)  # its changes: against the generation left

    async def gc(self, args: dict[str, Any], progress: Progress) -> Any:
        report = await self.service.gc(int(args.get("keep", 5)))
        return dataclasses.asdict(report)

    async def fsck(self, args: dict[str, Any], progress: Progress) -> Any:
        await progress("checking every blob", 0, 1)
        await self.service.index_demanded()  # pycs compiled on demand are bodies not indexed yet
        problems = await self._run(self.service.store.fsck)
        return {"problems": [str(p) for p in problems]}

    async def stats(self, args: dict[str, Any], progress: Progress) -> Any:
        await self.tier.lazy.flush()  # bodies fetched so far count as local
        stats = await self._run(self.service.store.stats)
        view = self.service.view.stats
        return {
            **stats,
            "dedup_ratio": stats["logical_bytes"] / stats["stored_bytes"] if stats["stored_bytes"] else None,
            "compiled": dataclasses.asdict(self.service.bytecode_counts),
            "remote": {
                **self.tier.lazy.stats(),
                "pushed": dict(self.tier.pushed),
                "at_install": dict(self.tier.brought),
            },
            "bytecode_pending": await self.service.bytecode_pending(),
            "view": {
                "mode": view.mode,
                "faults": view.faults,
                "requests": dict(view.requests),
                "invalidations": view.invalidations,
            },
        }


FREEING = frozenset({"gc", "uninstall", "rollback", "env.unregister"})


def error_message(exc: BaseException, home: Path | None = None, op: str = "") -> dict[str, Any]:
    if _out_of_space(exc) or (home is not None and _index_failed_on_a_full_disk(exc, home)):
        hint = (
            "nothing was changed; the room nwcache keeps for this ($NWCACHE_HOME/reserve) was not enough: "
            "delete other files on that disk and run it again, or move NWCACHE_HOME to a larger disk"
            if op in FREEING
            else "nothing was changed; make room with 'nwcache gc --keep 1' (it runs on a full disk), "
            "'nwcache uninstall NAME --env VENV' or 'nwcache env unregister VENV' first if every generation "
            "is needed, or move NWCACHE_HOME to a larger disk"
        )
        return {
            "kind": "NoSpace",
            "message": f"the disk holding NWCACHE_HOME ({home}) is full",
            "hint": hint,
        }
    if isinstance(exc, NwcacheError) and not isinstance(exc, ArchiveError):
        return {"kind": exc.kind, "message": str(exc), "hint": exc.hint}
    if isinstance(exc, ArchiveError):
        return {
            "kind": exc.kind,
            "message": str(exc),
            "hint": "the archive is malformed, tampered with or not for this environment; nothing was changed",
        }
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return {
            "kind": "OSError",
            "message": f"{where}{exc.strerror or exc}",
            "hint": "check the path, its permissions and the free space",
        }
    return {
        "kind": "InternalError",
        "message": f"{type(exc).__name__}: {exc}",
        "hint": "see the daemon's log",
    }


def _out_of_space(exc: BaseException) -> bool:
    """ENOSPC from a write of the store's own (a body, LMDB's "No space left
    on device", possibly wrapped in an exception group of the workers)."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_out_of_space(e) for e in exc.exceptions)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return (exc.__cause__ is not None and _out_of_space(exc.__cause__)) or "No space left on device" in str(
        exc
    )


def _index_failed_on_a_full_disk(exc: BaseException, home: Path) -> bool:
    """LMDB reports a short write as "Input/output error": an LMDB error
    while the store's file system has (next to) nothing free is a full disk."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_index_failed_on_a_full_disk(e, home) for e in exc.exceptions)
    if not isinstance(exc, lmdb.Error):
        return False
    try:
        return free_bytes(home) < (1 << 20)
    except OSError:
        return False


async def _read_line(stream: trio.SocketStream) -> bytes:
    buffer = bytearray()
    while b"\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        buffer += chunk
        if len(buffer) > MAX_LINE:
            raise ValueError("request too large")
    return bytes(buffer.partition(b"\n")[0])


async def handle_client(handlers: Handlers, stream: trio.SocketStream) -> None:
    async with stream:
        sock = stream.socket
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", raw)

        async def send(message: dict[str, Any]) -> None:
            try:
                await stream.send_all(encode(message))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away; the operation still completes or fails whole

        # The request is read before any answer, refusals included: closing a
        # socket with unread input resets it, and the peer could lose the answer.
        try:
            with trio.fail_after(30):
                line = await _read_line(stream)
            request = json.loads(line)
        except (ValueError, trio.TooSlowError):
            await send(error_event("BadRequest", "unreadable request", ""))
            return
        if uid != os.getuid():
            await send(
                error_event(
                    "PermissionDenied",
                    f"uid {uid} may not use the daemon of uid {os.getuid()}",
                    "run your own daemon (nwcache daemon) with your own NWCACHE_HOME",
                )
            )
            return
        if request.get("protocol") != PROTOCOL:
            await send(
                error_event(
                    "ProtocolMismatch",
                    f"the daemon speaks protocol {PROTOCOL}, the client {request.get('protocol')}",
                    "restart the daemon after upgrading nwcache",
                )
            )
            return
        op = str(request.get("op", ""))
        method = getattr(handlers, op.replace(".", "_"), None) if op in OPS else None
        if method is None:
            await send(error_event("BadRequest", f"unknown operation {op!r}", ""))
            return

        async def progress(message: str, done: int, total: int, files: list[list[Any]] | None = None) -> None:
            event: dict[str, Any] = {"event": "progress", "message": message, "done": done, "total": total}
            if files is not None:
                event["files"] = files  # install by name: [[file, bytes done, size], ...]
            await send(event)

        started = time.monotonic()
        args = dict(request.get("args") or {})
        request_id = request.get("request")
        if not isinstance(request_id, str) or not request_id or op == "outcome":
            request_id = None
        if request_id is not None:
            args["request_id"] = request_id
            handlers.running.add(request_id)
        try:
            try:
                result = await method(args, progress)
            except Exception as exc:
                answer = error_message(exc, handlers.service.store.home, op)
                if answer["kind"] == "InternalError":
                    log.exception("internal error in %s", op)
                if request_id is not None:
                    handlers.record(request_id, {"state": "failed", "error": answer})
                await send({"event": "error", **answer})
                return
            if request_id is not None:
                handlers.record(request_id, {"state": "done", "result": result})
        finally:
            if request_id is not None:
                handlers.running.discard(request_id)
        log.info("%s done in %.3f s", op, time.monotonic() - started)
        await send({"event": "result", "result": result})


async def serve_socket(
    service: Service, path: Path, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    await trio.to_thread.run_sync(prepare_socket, path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(128)
    listener = trio.SocketListener(sock)
    handlers = Handlers(service)
    try:
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handlers.tier.lazy.committer)  # bodies fetched from a remote, indexed
            await trio.serve_listeners(partial(handle_client, handlers), [listener])
    finally:
        path.unlink(missing_ok=True)  # noqa: ASYNC240 (a directory entry, on the way out, possibly cancelled)


async def run_daemon(
    home: Path, socket_path: Path, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            service = await nursery.start(run_service, home, home / "view")
            await nursery.start(serve_socket, service, socket_path)
            sd_notify(f"READY=1\nSTATUS=serving {home} on {socket_path}")
            log.info(
                "nwcache daemon %s ready: %s, socket %s, view %s",
                __version__,
                home,
                socket_path,
                service.view.mode,
            )
            task_status.started()
            async for _ in signals:
                break
            sd_notify("STOPPING=1")
            log.info("stopping")
            nursery.cancel_scope.cancel()


def _first(group: BaseExceptionGroup[BaseException], kind: type[BaseException]) -> BaseException | None:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first(exc, kind)
            if found is not None:
                return found
        elif isinstance(exc, kind):
            return exc
    return None


def main(argv: list[str] | None = None) -> int:
    """`nwcache daemon`: run in the foreground until SIGTERM or SIGINT (the
    console script hands it `daemon`'s command line). A refusal to start is
    one `error:` line and one `hint:` line, exit 1."""
    from nwcache.report import error, fail

    words = list(argv or [])
    if words in (["--help"], ["-h"]):
        print(
            "usage: nwcache daemon\n\nRun the daemon in the foreground (NWCACHE_HOME, NWCACHE_SOCKET; "
            "SIGTERM or SIGINT stops it)."
        )
        return 0
    if words:
        return fail("UsageError", f"unexpected arguments: {' '.join(words)}", "run 'nwcache daemon' alone")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        bytecode.parse_levels(os.environ.get("NWCACHE_BYTECODE"))
    except ValueError as exc:
        return fail("BadSetting", str(exc), "unset NWCACHE_BYTECODE to compile at level 0 (docs/BYTECODE.md)")
    try:
        trio.run(run_daemon, default_home(), default_socket())
    except BaseException as exc:
        found: BaseException | None = exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first(exc, StoreError) or _first(exc, OSError)
        if isinstance(found, StoreError):
            return error(found)
        if isinstance(found, OSError):
            return fail("OSError", str(found), "check NWCACHE_HOME and NWCACHE_SOCKET and their permissions")
        raise
    return 0
