"""`nwcache install SPEC...|-r FILE` and `nwcache sync LOCK`: resolve
(client/resolve.py), check, print the plan or send it (op install.files).
docs/INSTALL-BY-NAME.md describes the whole path."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from nwcache.client.build import build_sdists
from nwcache.client.remote import call
from nwcache.client.resolve import (
    Facts,
    Options,
    Plan,
    ResolveError,
    lock,
    main_check,
    public,
    requested_names,
    resolve,
    sync_plan,
    warn,
)
from nwcache.protocol import EXIT_OK
from nwcache.report import emit, fail


def _options(args: argparse.Namespace) -> Options:
    return Options(
        index_url=args.index_url,
        extra_index_urls=list(args.extra_index_url),
        find_links=list(args.find_links),
        no_deps=bool(getattr(args, "no_deps", False)),
        upgrade=bool(getattr(args, "upgrade", False)),
        pre=bool(getattr(args, "pre", False)),
        offline=bool(args.offline),
        refresh=bool(getattr(args, "refresh", False)),
    )


def render(result: dict[str, Any]) -> str:
    if result.get("unchanged"):
        return f"nothing to do: generation {result['number']} already holds it"
    from nwcache.client.cli import _changes

    fetched = ""
    if "downloaded" in result:
        fetched = f" ({result['downloaded']} downloaded, {result['stored_before']} already stored)"
    return f"generation {result['number']}: {_changes(result.get('changes'))}{fetched}"


def _send(
    env: str, plan: Plan, action: str, as_json: bool, offline: bool, requested: list[str] | None = None
) -> int:
    downloads = [c.download() for c in plan.chosen if c.url is not None]
    archives = [c.path for c in plan.chosen if c.path is not None]
    request: dict[str, Any] = {
        "env": env,
        "downloads": downloads,
        "archives": archives,
        "remove": plan.remove,
        "action": action,
    }
    if requested is not None:
        request["requested"] = requested  # REQUESTED for these, not for their dependencies
    if offline:
        request["offline"] = True  # the daemon installs what it stores, downloads nothing
    return call("install.files", request, as_json, render)


def _nothing(facts: Facts, plan: Plan, as_json: bool) -> int:
    if as_json:
        emit({"unchanged": True, "changes": [], "kept": [f"{c.name}=={c.version}" for c in plan.kept]})
    else:
        kept = ", ".join(f"{c.name} {c.version}" for c in plan.kept)
        print(f"nothing to do: already installed ({kept})" if kept else "nothing to do")
    return EXIT_OK


def _dry_run(facts: Facts, plan: Plan, as_json: bool) -> int:
    if as_json:
        emit(
            {
                "install": [
                    {"name": c.name, "version": c.version, "url": c.url, "path": c.path, "sha256": c.sha256}
                    for c in plan.chosen
                ],
                "remove": plan.remove,
                "kept": [f"{c.name}=={c.version}" for c in plan.kept],
            }
        )
        return EXIT_OK
    lines = plan.describe(facts)
    print("would change:" if lines else "nothing to do")
    for line in lines:
        print(f"  {line}")
    return EXIT_OK


def _no_daemon(args: argparse.Namespace) -> int | None:
    """Exit 3 before resolving when no daemon answers (resolving can take
    seconds, and its result could not be installed)."""
    from nwcache.protocol import answers, default_socket

    if args.dry_run or answers(default_socket()):
        return None
    return fail(
        "NoDaemon",
        f"no nwcache daemon at {default_socket()}",
        "start it with 'nwcache daemon' (foreground) or 'nwcache service install'",
        args.json,
    )


def install(args: argparse.Namespace) -> int:
    env = os.path.abspath(args.env)
    specs = [str(s) for s in args.archives]
    if not specs and not args.requirement:
        return fail(
            "UsageError",
            "nothing to install",
            "name requirements, wheel files or -r FILE",
            args.json,
        )
    local_only = not args.requirement and all(s.endswith(".whl") or os.path.exists(s) for s in specs)
    if local_only and not args.strict and not args.dry_run:
        # Files only: the plain install (the daemon checks the files, refuses
        # a directory or an sdist with its messages, and checks the
        # requirements after installing); --strict and --dry-run check here.
        from nwcache.client.remote import install as plain_install

        return plain_install(specs, str(args.env), args.json)
    if args.requirement or any(not s.endswith(".whl") for s in specs):
        refused = _no_daemon(args)  # (wheel files only: the files are checked first, as before)
        if refused is not None:
            return refused
    if not args.requirement and not args.constraint and not args.dry_run:
        from nwcache.client.remotecmd import try_remote

        code = try_remote(args, env, specs)  # exact pins a remote holds (docs/REMOTE.md)
        if code is not None:
            return code
    try:
        facts, plan = resolve(Path(env), specs, args.requirement, args.constraint, _options(args))
        if not args.dry_run:
            build_sdists(plan, facts, _options(args))
        problems = main_check(plan, facts)
    except ResolveError as exc:
        return fail(exc.kind, str(exc), exc.hint, args.json)
    if problems and args.strict:
        return fail(
            "DependencyConflict",
            f"{problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            "install what is missing in the same command, or drop --strict to install anyway; nothing was changed",
            args.json,
        )
    if args.dry_run:
        code = _dry_run(facts, plan, args.json)
    elif not plan.chosen:
        code = _nothing(facts, plan, args.json)
    else:
        action = "install " + " ".join(public(s) for s in specs + [f"-r {r}" for r in args.requirement])
        requested = requested_names(specs, args.requirement)
        code = _send(env, plan, action, args.json, args.offline, requested)
    if problems and code == EXIT_OK:
        warn(problems)
    return code


def sync(args: argparse.Namespace) -> int:
    env = os.path.abspath(args.env)
    refused = _no_daemon(args)
    if refused is not None:
        return refused
    try:
        facts, plan = sync_plan(Path(env), args.lock, _options(args))
        if not args.dry_run:
            build_sdists(plan, facts, _options(args))
    except ResolveError as exc:
        return fail(exc.kind, str(exc), exc.hint, args.json)
    if args.dry_run:
        return _dry_run(facts, plan, args.json)
    if not plan.chosen and not plan.remove:
        return _nothing(facts, plan, args.json)
    return _send(env, plan, f"sync {args.lock.name}", args.json, args.offline)


def make_lock(args: argparse.Namespace) -> int:
    """`nwcache lock [SPEC...|-r FILE] --env VENV [-o pylock.toml]`
    (docs/INSTALL-BY-NAME.md): the lock on stdout or in the file; no daemon
    is needed and nothing is installed."""
    out: Path | None = args.output
    if out is not None and not (
        out.name == "pylock.toml"
        or (out.name.startswith("pylock.") and out.name.endswith(".toml") and out.name.count(".") == 2)
    ):
        return fail(
            "UsageError",
            f"{out}: a lock file is named pylock.toml or pylock.NAME.toml (PEP 751)",
            f"write it as {out.parent / 'pylock.toml'}",
            args.json,
        )
    try:
        text, chosen = lock(
            Path(os.path.abspath(args.env)),
            list(args.specs),
            args.requirement,
            args.constraint,
            _options(args),
        )
    except ResolveError as exc:
        return fail(exc.kind, str(exc), exc.hint, args.json)
    if out is not None:
        try:
            temp = out.with_name(f".{out.name}.{os.getpid()}")
            temp.write_text(text)
            os.replace(temp, out)
        except OSError as exc:
            return fail(
                "OSError",
                f"{out}: {exc.strerror or exc}",
                "check the directory and its permissions; nothing was written",
                args.json,
            )
    if args.json:
        emit({"lock": str(out) if out else None, "packages": [f"{c.name}=={c.version}" for c in chosen]})
    elif out is None:
        print(text, end="")
    else:
        print(f"locked {len(chosen)} distributions in {out}")
    return EXIT_OK
