"""The blob tier's commands (docs/REMOTE.md): `remote add|list|remove`
(the configuration file in NWCACHE_HOME, no daemon needed), `push`,
`prefetch`, and installing exact pins from a remote (`try_remote`, asked by
client/byname.py before resolving)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from nwcache import remotes
from nwcache.client.remote import DaemonUnavailable, ProtocolError, call, request
from nwcache.protocol import EXIT_OK, default_home, socket_path
from nwcache.report import emit, fail


def cmd_remote(args: argparse.Namespace) -> int:
    home = default_home()
    try:
        if args.remote_command == "add":
            remote = remotes.add(home, args.name, args.url, args.repository, args.credentials)
            if args.json:
                emit(_shown(remote))
            else:
                print(f"added {remote.name}: {remote.url}/{remote.repository}")
        elif args.remote_command == "remove":
            remote = remotes.remove(home, args.name)
            if args.json:
                emit(_shown(remote))
            else:
                print(f"removed {remote.name} ({remote.url}/{remote.repository})")
        else:
            found = remotes.load(home)
            if args.json:
                emit([_shown(r) for r in found.values()])
            elif not found:
                print("no remotes (add one with 'nwcache remote add NAME URL')")
            for remote in found.values():
                auth = f", credentials in {remote.credentials}" if remote.credentials else ", anonymous"
                print(f"{remote.name}: {remote.url}/{remote.repository}{auth}")
    except remotes.RemoteError as exc:
        return fail(exc.kind, str(exc), exc.hint, args.json)
    return EXIT_OK


def _shown(remote: remotes.Remote) -> dict[str, Any]:
    """A remote as printed: the credentials file's path, never its content."""
    return {
        "name": remote.name,
        "url": remote.url,
        "repository": remote.repository,
        "credentials": remote.credentials,
    }


def _pin(spec: str) -> tuple[str, str] | None:
    """(name, version) of an exact `NAME==VERSION` with nothing more."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(spec)
    except InvalidRequirement:
        return None
    specifiers = list(req.specifier)
    if req.extras or req.marker or req.url or len(specifiers) != 1:
        return None
    only = specifiers[0]
    if only.operator != "==" or "*" in only.version:
        return None
    return req.name, only.version


def _pins(specs: list[str]) -> list[tuple[str, str]] | None:
    pins = [_pin(s) for s in specs]
    return None if not pins or any(p is None for p in pins) else [p for p in pins if p is not None]


def cmd_push(args: argparse.Namespace) -> int:
    specs = []
    for spec in args.specs:
        pin = _pin(spec)
        if pin is None:
            return fail(
                "UsageError",
                f"{spec!r} is not NAME==VERSION",
                "name stored packages by exact version, or push an environment's with --env VENV",
                args.json,
            )
        specs.append(list(pin))
    if not specs and args.env is None:
        return fail("UsageError", "nothing to push", "give --env VENV or NAME==VERSION...", args.json)
    request_args: dict[str, Any] = {"specs": specs, "remote": args.remote}
    if args.env is not None:
        request_args["env"] = os.path.abspath(args.env)

    def render(r: dict[str, Any]) -> str:
        lines = [
            f"pushed {r['packages']} packages to {r['remote']} ({r['repository']}): {r['manifests']} new manifests, "
            f"{r['uploaded']} blobs uploaded ({r['bytes']:,} bytes), {r['present']} already there"
        ]
        lines += [f"skipped {s}" for s in r["skipped"]]
        return "\n".join(lines)

    return call("push", request_args, args.json, render)


def cmd_prefetch(args: argparse.Namespace) -> int:
    return call(
        "prefetch",
        {"env": os.path.abspath(args.env)},
        args.json,
        lambda r: (
            f"fetched {r['fetched']} bodies; every file of the environment is local now ({r['files']} files)"
        ),
    )


def try_remote(args: argparse.Namespace, env: str, specs: list[str]) -> int | None:
    """Install exact pins from the remotes when they hold every one of them
    for this environment; None to go on resolving as usual (not all pins, no
    remote configured, or some pin on no remote)."""
    from nwcache.client.resolve import ResolveError, probe

    pins = _pins(specs)
    if pins is None:
        return None
    try:
        if not remotes.load(default_home()):
            return None
    except remotes.RemoteError as exc:
        return fail(exc.kind, str(exc), exc.hint, args.json)
    try:
        facts = probe(Path(env))
    except ResolveError as exc:
        return fail(exc.kind, str(exc), exc.hint, args.json)
    lookup: dict[str, Any] = {"specs": [list(p) for p in pins], "tags": facts.tags}
    try:
        answer: dict[str, Any] = {}
        for message in request(socket_path(), "remote.find", lookup):
            answer = message
    except (DaemonUnavailable, ProtocolError) as exc:
        return fail("NoDaemon", str(exc), "start it with 'nwcache daemon'", args.json)
    if answer.get("event") == "error":
        return fail(
            str(answer.get("kind")),
            str(answer.get("message")),
            str(answer.get("hint") or ""),
            args.json,
        )
    result = answer.get("result") or {}
    if result.get("missing"):
        return None  # the package index may have them
    action = "install " + " ".join(f"{n}=={v}" for n, v in pins) + " (from a remote)"

    def render(r: dict[str, Any]) -> str:
        if r.get("unchanged"):
            return f"nothing to do: generation {r['number']} already holds it"
        from nwcache.client.cli import _changes

        return f"generation {r['number']}: {_changes(r.get('changes'))} (from {', '.join(r['from_remote'])})"

    return call("install.remote", {"env": env, **lookup, "action": action}, args.json, render)
