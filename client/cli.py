"""`nwcache`: the command line.

Exit codes (also in README.md):
    0  success
    1  the archive or the operation failed (nothing was written)
    2  usage error (unknown command, bad flag or value)
    3  no daemon answers (start it: 'nwcache daemon' or 'nwcache service install')
    4  no set of versions satisfies the requirements (install, sync, lock)
  130  interrupted

Heavy modules are imported by the commands that need them, so that start-up
stays close to Python's own.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nwcache.client.remote import call
from nwcache.protocol import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from nwcache.report import emit, fail, interrupted, os_error
from nwcache.report import error as report_error

# Not `from typing import TYPE_CHECKING`: the client imports no typing at all
# (start-up time; mypy treats any TYPE_CHECKING alike).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn

    from nwcache.archive import Archive, ArchiveError


def _columns() -> int:
    """shutil.get_terminal_size().columns without importing shutil (it
    imports bz2 and lzma)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 80
    except (AttributeError, ValueError, OSError):
        return 80


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, told the width: left to itself it imports
    shutil for it, and argparse makes one for every add_argument."""

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ) -> None:
        super().__init__(prog, indent_increment, max_help_position, width or _columns() - 2)


class _RawFormatter(_Formatter):
    """Description and epilog printed as written (lists of actions)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    # Whether the command line asked for --json, read before parsing: a
    # usage error is reported as JSON too (main() sets it).
    as_json = False

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        fail("UsageError", message, f"run '{self.prog} --help' for the options", _Parser.as_json)
        raise SystemExit(EXIT_USAGE)


def _int_range(low: int, high: int) -> type[int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value

    return parse  # type: ignore[return-value]


def _generation_number(text: str) -> int:
    """A generation number: 1 or more (the daemon says which are kept)."""
    shown = text if len(text) <= 24 else text[:20] + "..."
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown!r} is not a generation number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"generations are numbered from 1, not {shown}")
    if value >= 2**63:
        raise argparse.ArgumentTypeError(f"no generation is numbered {shown}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nwcache", description="Wheel 2.0 archives and the nwcache package store.")
    from nwcache import __version__

    parser.add_argument("--version", action="version", version=f"nwcache {__version__}")
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        parser_class=_Parser,
        help="what to do ('nwcache COMMAND --help' describes each)",
    )

    window = _Parser(add_help=False)
    window.add_argument(
        "--max-window-log",
        type=_int_range(10, 31),
        default=27,
        metavar="N",
        help="refuse 2.0 archives that declare a zstd window above 2**N bytes (default 27)",
    )

    convert = commands.add_parser(
        "convert",
        parents=[window],
        help="convert wheels between format 1.0 and 2.0",
        description="Convert wheels; each file is verified against RECORD on the way.",
    )
    convert.add_argument(
        "inputs", nargs="+", type=Path, metavar="IN.whl", help="wheels to convert (classic 1.x or 2.0)"
    )
    convert.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="where to write (default: the current directory, same file name)",
    )
    convert.add_argument("--to", type=int, choices=(1, 2), default=2, help="target format (default 2)")
    convert.add_argument(
        "--level",
        type=_int_range(1, 22),
        default=None,
        metavar="N",
        help="zstd level for --to 2 (default 19)",
    )
    convert.add_argument(
        "--window-log",
        type=_int_range(10, 31),
        default=None,
        metavar="N",
        help="zstd window log to declare for --to 2 (default 23: 8 MiB)",
    )
    convert.add_argument(
        "--no-content-links",
        action="store_true",
        help="store duplicate files again instead of as content links",
    )
    convert.add_argument("--json", action="store_true", help="print JSON")

    inspect = commands.add_parser("inspect", parents=[window], help="describe an archive from its metadata")
    inspect.add_argument("archive", type=Path, metavar="X.whl", help="the wheel (classic 1.x or 2.0)")
    inspect.add_argument("--json", action="store_true", help="print JSON")

    verify = commands.add_parser(
        "verify", parents=[window], help="check every file against RECORD and the content digest"
    )
    verify.add_argument("archive", type=Path, metavar="X.whl", help="the wheel (classic 1.x or 2.0)")
    verify.add_argument("--json", action="store_true", help="print JSON")

    unpack = commands.add_parser(
        "unpack", parents=[window], help="verify and unpack an archive into a new directory"
    )
    unpack.add_argument("archive", type=Path, metavar="X.whl", help="the wheel (classic 1.x or 2.0)")
    unpack.add_argument("dest", type=Path, metavar="DIR", help="where to unpack: a new or empty directory")
    unpack.add_argument(
        "--links",
        choices=("copy", "hardlink", "symlink"),
        default="copy",
        help="how to materialise content links (default copy)",
    )
    unpack.add_argument("--json", action="store_true", help="print JSON")
    _add_store_commands(commands)
    return parser


_VENV_HELP = "the virtual environment's directory (the one holding pyvenv.cfg, not its bin/python)"


def _add_store_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    as_json = _Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print the result as JSON")
    env_opt = _Parser(add_help=False)
    env_opt.add_argument("--env", required=True, type=Path, metavar="VENV", help=_VENV_HELP)

    commands.add_parser(
        "daemon",
        help="run the daemon in the foreground (store, view, socket)",
        description="Run the nwcache daemon in the foreground until SIGTERM or SIGINT. State in NWCACHE_HOME "
        "(default $XDG_DATA_HOME/nwcache), socket at NWCACHE_SOCKET (default $XDG_RUNTIME_DIR/nwcache/daemon.sock).",
    )
    env = commands.add_parser("env", help="register, list, show and unregister environments")
    env_commands = env.add_subparsers(
        dest="env_command",
        required=True,
        metavar="ACTION",
        parser_class=_Parser,
        help="what to do ('nwcache env ACTION --help' describes each)",
    )
    register = env_commands.add_parser(
        "register", parents=[as_json], help="serve a venv's site-packages from the store"
    )
    register.add_argument("venv", type=Path, metavar="VENV", help=_VENV_HELP)
    register.add_argument(
        "--bind", action="store_true", help="bind-mount the view over site-packages (daemon runs as root)"
    )
    env_commands.add_parser("list", parents=[as_json], help="every registered environment")
    show = env_commands.add_parser(
        "show", parents=[as_json], help="one environment and its current generation"
    )
    show.add_argument("venv", type=Path, metavar="VENV", help=_VENV_HELP)
    unregister = env_commands.add_parser(
        "unregister", parents=[as_json], help="put a real site-packages back and forget the environment"
    )
    unregister.add_argument("venv", type=Path, metavar="VENV", help=_VENV_HELP)

    install = commands.add_parser(
        "install",
        parents=[as_json, env_opt],
        help="install distributions by name (resolved with uv) or wheel files into an environment",
        description="Install requirements (resolved by uv for the venv's own interpreter, downloaded and "
        "verified by the daemon) and wheel files, as one generation (docs/INSTALL-BY-NAME.md).",
    )
    install.add_argument(
        "archives",
        nargs="*",
        metavar="SPEC",
        help="requirements (NAME, NAME==1.0, NAME[extra]>=2) and wheel files (.whl, classic 1.x or 2.0)",
    )
    install.add_argument(
        "-r", "--requirement", action="append", default=[], metavar="FILE", help="requirements file"
    )
    install.add_argument(
        "-c", "--constraint", action="append", default=[], metavar="FILE", help="constraints file"
    )
    _add_index_options(install)
    install.add_argument(
        "--no-deps", action="store_true", help="install the named distributions without their dependencies"
    )
    install.add_argument(
        "--upgrade", "-U", action="store_true", help="newest versions, not the installed ones"
    )
    install.add_argument("--pre", action="store_true", help="allow pre-releases")
    install.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    install.add_argument(
        "--strict",
        action="store_true",
        help="refuse an install that leaves requirements missing or conflicting",
    )
    sync = commands.add_parser(
        "sync",
        parents=[as_json, env_opt],
        help="make an environment exactly a lock (pylock.toml or pinned requirements)",
        description="Install exactly the locked distributions and remove every other one, as one generation.",
    )
    sync.add_argument(
        "lock",
        type=Path,
        metavar="LOCK",
        help="pylock.toml (PEP 751) or a requirements file pinning every line",
    )
    _add_index_options(sync)
    sync.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    lock = commands.add_parser(
        "lock",
        parents=[as_json, env_opt],
        help="write a lock (pylock.toml) resolved for an environment, or of what it holds",
        description="Resolve requirements with uv for the environment's interpreter (its installed "
        "versions preferred), or, without requirements, pin what the environment holds, and write the "
        "PEP 751 lock that 'nwcache sync' takes (docs/INSTALL-BY-NAME.md).",
    )
    lock.add_argument(
        "specs", nargs="*", metavar="SPEC", help="requirements (NAME, NAME==1.0, NAME[extra]>=2)"
    )
    lock.add_argument(
        "-r", "--requirement", action="append", default=[], metavar="FILE", help="requirements file"
    )
    lock.add_argument(
        "-c", "--constraint", action="append", default=[], metavar="FILE", help="constraints file"
    )
    lock.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="pylock.toml or pylock.NAME.toml (default: stdout)"
    )
    _add_index_options(lock)
    lock.add_argument("--upgrade", "-U", action="store_true", help="newest versions, not the installed ones")
    lock.add_argument("--pre", action="store_true", help="allow pre-releases")
    uninstall = commands.add_parser("uninstall", parents=[as_json, env_opt], help="remove distributions")
    uninstall.add_argument(
        "names", nargs="+", metavar="NAME", help="distribution names, as 'nwcache list --env VENV' shows them"
    )
    commands.add_parser("list", parents=[as_json, env_opt], help="distributions installed in an environment")
    commands.add_parser("history", parents=[as_json, env_opt], help="an environment's generations")
    rollback = commands.add_parser("rollback", parents=[as_json, env_opt], help="return to a kept generation")
    rollback.add_argument(
        "--to",
        type=_generation_number,
        metavar="N",
        help="the generation to return to (default: the one the environment was at before its last "
        "change, so that a second rollback undoes the first); 'nwcache history' lists them",
    )
    gc = commands.add_parser("gc", parents=[as_json], help="drop old generations and what nothing uses")
    gc.add_argument(
        "--keep", type=_int_range(1, 10**6), default=5, metavar="N", help="generations kept per environment"
    )
    commands.add_parser("fsck", parents=[as_json], help="check every blob and index entry")
    remote = commands.add_parser("remote", help="the OCI registries of the shared blob tier (docs/REMOTE.md)")
    remote_commands = remote.add_subparsers(
        dest="remote_command",
        required=True,
        metavar="ACTION",
        parser_class=_Parser,
        help="what to do ('nwcache remote ACTION --help' describes each)",
    )
    remote_add = remote_commands.add_parser("add", parents=[as_json], help="add a registry")
    remote_add.add_argument("name", metavar="NAME", help="a name for it (letters, digits, '_', '.', '-')")
    remote_add.add_argument(
        "url", metavar="URL", help="scheme and host: https://ghcr.io, http://127.0.0.1:5000"
    )
    remote_add.add_argument(
        "--repository", metavar="REPO", help="the repository the packages go to (default: nwcache)"
    )
    remote_add.add_argument(
        "--credentials",
        metavar="FILE",
        help="a file holding one line USER:PASSWORD (or USER:TOKEN), readable by you alone (chmod 600)",
    )
    remote_commands.add_parser("list", parents=[as_json], help="the configured registries")
    remote_remove = remote_commands.add_parser("remove", parents=[as_json], help="forget a registry")
    remote_remove.add_argument("name", metavar="NAME", help="the remote, as 'nwcache remote list' names it")
    push = commands.add_parser(
        "push", parents=[as_json], help="upload stored packages to a remote (what it lacks only)"
    )
    push.add_argument("specs", nargs="*", metavar="NAME==VERSION", help="stored packages to push")
    push.add_argument("--env", type=Path, metavar="VENV", help="push every package of this environment")
    push.add_argument("--remote", metavar="NAME", help="the remote (needed when several are configured)")
    commands.add_parser(
        "prefetch",
        parents=[as_json, env_opt],
        help="fetch every body of an environment that is still on a remote only",
    )
    commands.add_parser("stats", parents=[as_json], help="stored against logical bytes, per environment")
    service = commands.add_parser(
        "service",
        parents=[as_json],
        help="the daemon as a systemd user service: install, uninstall or status",
        description="The daemon as a systemd user service (nwcache.service, Type=notify, restarted on\n"
        "failure). Needs a running systemd user manager; without one run 'nwcache daemon' instead.",
        formatter_class=_RawFormatter,
        epilog="actions:\n"
        "  install    write ~/.config/systemd/user/nwcache.service (ExecStart: this interpreter, with\n"
        "             NWCACHE_HOME and NWCACHE_SOCKET when set), reload systemd, enable and start it\n"
        "  uninstall  stop and disable the unit and remove its file\n"
        "  status     print the unit's state; exit 0 when it is active, 3 otherwise",
    )
    service.add_argument(
        "action",
        choices=["install", "uninstall", "status"],
        metavar="ACTION",
        help="install, uninstall or status",
    )


def _add_index_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index-url", "-i", metavar="URL", help="the package index (default: uv's, PyPI)")
    parser.add_argument(
        "--extra-index-url", action="append", default=[], metavar="URL", help="another index to look in"
    )
    parser.add_argument(
        "--find-links", "-f", action="append", default=[], metavar="DIR|URL", help="more files"
    )
    parser.add_argument("--offline", action="store_true", help="resolve from uv's cache only, no network")
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="resolve again even when a resolution of the same request is fresh "
        "(kept NWCACHE_RESOLVE_TTL seconds, default 600)",
    )


def _fail(error: ArchiveError | OSError, as_json: bool = False) -> int:
    from nwcache.archive import ArchiveError

    if isinstance(error, ArchiveError):
        return report_error(error, as_json)
    return os_error(error, as_json)


def _describe(archive: Archive) -> dict[str, object]:
    from nwcache.archive.sources import payload_name

    payload = [f for f in archive.files if not f.path.startswith(archive.dist_info + "/")]
    keys = {f.link_key for f in payload}
    tags = sorted(str(tag) for tag in archive.wheel_name.tags)
    described: dict[str, object] = {
        "file": str(archive.path),
        "name": archive.name,
        "version": archive.version,
        "tags": tags,
        "format_version": "2.0" if archive.format == 2 else archive.classic_version,
        "classic_wheel_version": archive.classic_version,
        "window_log": archive.window_log,
        "files": len(archive.files),
        "installed_size": archive.installed_size,
        "archive_size": archive.zip.size,
        "payload_compressed_size": archive.payload.compressed_size if archive.payload else None,
        "payload_member": payload_name(archive.dist_info) if archive.format == 2 else None,
        "content_links": len(payload) - len(keys),
        "executables": sum(f.executable for f in archive.files),
        "content_digest": archive.v2.content_digest if archive.v2 else archive.metadata_digest(),
    }
    return described


def cmd_inspect(args: argparse.Namespace) -> int:
    from nwcache.archive import Archive

    with Archive.open(args.archive, max_window_log=args.max_window_log) as archive:
        info = _describe(archive)
    if args.json:
        emit(info)
        return EXIT_OK
    links_label = "content links" if info["format_version"] == "2.0" else "duplicate files"
    window = info["window_log"]
    rows = [
        ("name", info["name"]),
        ("version", info["version"]),
        ("tags", ", ".join(info["tags"])),  # type: ignore[arg-type]
        (
            "format",
            f"{info['format_version']}"
            + (f" (from classic {info['classic_wheel_version']})" if window else ""),
        ),
        (
            "window log",
            f"{window} ({(1 << window) >> 20 if window >= 20 else 0} MiB)"
            if isinstance(window, int)
            else "-",
        ),
        ("files", info["files"]),
        ("installed size", f"{info['installed_size']:,} bytes"),
        ("archive size", f"{info['archive_size']:,} bytes"),
        (links_label, info["content_links"]),
        ("content digest", info["content_digest"] or "(RECORD uses another hash; run verify)"),
    ]
    for label, value in rows:
        print(f"{label:<16}{value}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from nwcache.archive import Archive

    with Archive.open(args.archive, max_window_log=args.max_window_log) as archive:
        count = 0
        for data in archive.iter_files():
            if data.link_to is None:
                for _ in data.chunks():
                    pass
            count += 1
        digest = archive.verified_digest
    if args.json:
        emit({"file": str(args.archive), "ok": True, "files": count, "content_digest": digest})
    else:
        print(f"ok: {args.archive}: {count} files verified, content digest {digest}")
    return EXIT_OK


def cmd_unpack(args: argparse.Namespace) -> int:
    from nwcache.archive import Archive, LinkMode, unpack

    with Archive.open(args.archive, max_window_log=args.max_window_log) as archive:
        count = unpack(archive, args.dest, links=LinkMode(args.links))
    if args.json:
        emit({"file": str(args.archive), "dest": str(args.dest), "files": count})
    else:
        print(f"unpacked {count} files from {args.archive} into {args.dest}")
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    from nwcache.archive import ArchiveError, convert
    from nwcache.archive.wheelinfo import DEFAULT_LEVEL, DEFAULT_WINDOW_LOG

    if args.to == 1 and (args.level is not None or args.window_log is not None):
        return fail(
            "UsageError",
            "--level and --window-log apply to --to 2 only",
            "drop them, or convert with --to 2",
            args.json,
        )
    converted: list[dict[str, object]] = []
    failed: list[dict[str, object]] = []
    for src in args.inputs:
        dest = args.output_dir / src.name
        try:
            result = convert(
                src,
                dest,
                to=args.to,
                level=args.level or DEFAULT_LEVEL,
                window_log=args.window_log or DEFAULT_WINDOW_LOG,
                max_window_log=args.max_window_log,
                content_links=not args.no_content_links,
            )
        except (ArchiveError, OSError) as exc:
            _fail(exc)  # its lines on stderr; the JSON document comes at the end
            kind = type(exc).__name__ if isinstance(exc, ArchiveError) else "OSError"
            hint = (
                exc.hint
                if isinstance(exc, ArchiveError)
                else "check the path, its permissions and the free space"
            )
            failed.append({"file": str(src), "kind": kind, "message": str(exc), "hint": hint})
            continue
        before = os.path.getsize(src)
        converted.append(
            {
                "file": str(src),
                "dest": str(dest),
                "format": args.to,
                "size_before": before,
                "size": result.size,
                "content_links": result.content_links,
                "content_digest": result.content_digest,
            }
        )
        if not args.json:
            print(
                f"{src} -> {dest}: format {args.to}, {before:,} -> {result.size:,} bytes ({result.size / before:.0%}), {result.content_links} content links, {result.content_digest}"
            )
    if args.json:
        document: dict[str, object] = {"converted": converted, "failed": failed}
        if failed:
            first = failed[0]
            message = f"{len(failed)} of {len(args.inputs)} inputs failed; the first: {first['message']}"
            document["error"] = {"kind": first["kind"], "message": message, "hint": first["hint"], "exit": 1}
        emit(document)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_daemon(args: argparse.Namespace) -> int:
    # The console script (nwcache.__main__) runs `nwcache daemon` before this
    # parser sees it: the client never imports the daemon. Only a command line
    # with something before `daemon` ends here.
    return fail("UsageError", "'daemon' takes no options before it", "run 'nwcache daemon'", bool(args.json))


def _remote(
    op: str, request_args: dict[str, object], args: argparse.Namespace, render: Callable[[Any], str]
) -> int:
    return call(op, request_args, bool(getattr(args, "json", False)), render)


def _changes(changes: list[dict[str, Any]] | None, most: int = 8) -> str:
    """Changes as 'pandas 2.2.3 -> 2.1.0, +numpy 2.1.3, -six 1.16.0' ("" when unknown)."""
    if changes is None:
        return ""
    if not changes:
        return "no change"
    words = []
    for change in changes:
        name, old, new = change["name"], change["old"], change["new"]
        if old is None:
            words.append(f"+{name} {new}")
        elif new is None:
            words.append(f"-{name} {old}")
        elif old == new:
            words.append(f"{name} {new} (another build)")
        else:
            words.append(f"{name} {old} -> {new}")
    if len(words) > most:
        words[most:] = [f"and {len(words) - most} more"]
    return ", ".join(words)


def _gen_line(gen: dict[str, Any]) -> str:
    import time

    mark = "*" if gen.get("current") else " "
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(gen["created"]))
    changes = _changes(gen.get("changes"))
    return f"{mark} {gen['number']:>4}  {when}  {gen['action']}" + (f": {changes}" if changes else "")


def _packages(packages: list[dict[str, Any]]) -> str:
    if not packages:
        return "(no distributions)"
    width = max(len(p["name"]) for p in packages)
    return "\n".join(f"{p['name']:<{width}}  {p['version']}" for p in packages)


def _env_line(env: dict[str, Any]) -> str:
    extra = f", {env['packages']} distributions" if "packages" in env else ""
    return f"{env['path']}  (Python {env['version']}, generation {env['generation']}, {env['link']}{extra})"


def cmd_env(args: argparse.Namespace) -> int:
    if args.env_command == "list":
        return _remote("env.list", {}, args, lambda envs: "\n".join(_env_line(e) for e in envs) or "(none)")
    venv = os.path.abspath(args.venv)
    if args.env_command == "register":
        return _remote(
            "env.register",
            {"env": venv, "bind": args.bind},
            args,
            lambda env: f"registered {_env_line(env)}\n{env.get('linked', env['path'])} -> {env['view']}",
        )
    if args.env_command == "show":
        return _remote(
            "env.show",
            {"env": venv},
            args,
            lambda env: (
                f"{_env_line(env)}\n{_gen_line(env['current'])}\n{_packages(env['current']['packages'])}"
            ),
        )
    return _remote(
        "env.unregister",
        {"env": venv},
        args,
        lambda r: f"unregistered {r['path']}; it is a plain venv again",
    )


def cmd_install(args: argparse.Namespace) -> int:
    from nwcache.client import byname

    return byname.install(args)


def cmd_sync(args: argparse.Namespace) -> int:
    from nwcache.client import byname

    return byname.sync(args)


def cmd_lock(args: argparse.Namespace) -> int:
    from nwcache.client import byname

    return byname.make_lock(args)


def cmd_uninstall(args: argparse.Namespace) -> int:
    return _remote(
        "uninstall",
        {"env": os.path.abspath(args.env), "names": args.names},
        args,
        lambda gen: f"generation {gen['number']}: {gen['action']}",
    )


def cmd_list(args: argparse.Namespace) -> int:
    return _remote("list", {"env": os.path.abspath(args.env)}, args, _packages)


def cmd_history(args: argparse.Namespace) -> int:
    return _remote(
        "history",
        {"env": os.path.abspath(args.env)},
        args,
        lambda gens: "\n".join(_gen_line(g) for g in gens),
    )


def cmd_rollback(args: argparse.Namespace) -> int:
    return _remote(
        "rollback",
        {"env": os.path.abspath(args.env), "to": args.to},
        args,
        lambda gen: f"now at generation {gen['number']} ({gen['action']}): {_changes(gen['changes'])}",
    )


def cmd_gc(args: argparse.Namespace) -> int:
    return _remote(
        "gc",
        {"keep": args.keep},
        args,
        lambda r: (
            f"dropped {r['generations']} generations, {r['packages']} packages, {r['blobs']} blobs; "
            f"freed {r['bytes_freed']:,} bytes"
        ),
    )


def cmd_fsck(args: argparse.Namespace) -> int:
    return call(
        "fsck",
        {},
        bool(args.json),
        lambda r: "\n".join(r["problems"]) if r["problems"] else "fsck: the store is consistent",
        exit_of=lambda r: EXIT_FAILED if r["problems"] else 0,  # damage found: exit 1 (README's table)
    )


def cmd_stats(args: argparse.Namespace) -> int:
    def render(r: dict[str, Any]) -> str:
        lines = [
            f"stored:  {r['stored_bytes']:,} bytes in {r['blobs']:,} blobs",
            f"logical: {r['logical_bytes']:,} bytes in {r['files']:,} files across {len(r['envs'])} environments",
            f"dedup:   {r['dedup_ratio']:.2f}x" if r["dedup_ratio"] else "dedup:   -",
            f"bytecode: {r['bytecode_bytes']:,} bytes in {r['bytecode_blobs']:,} pycs, shared by every environment",
            f"view:    {r['view']['mode']} mode",
        ]
        if (
            r.get("remote_only_blobs")
            or r.get("remote", {}).get("fetched")
            or r.get("remote", {}).get("failures")
        ):
            m = r["remote"]
            lines.append(
                f"remote:  {r['remote_only_blobs']:,} bodies ({r['remote_only_bytes']:,} bytes) not fetched yet; "
                f"fetched {m['fetched']:,} ({m['bytes']:,} bytes), {m['failures']} failures, "
                f"{m['refused']} refused, {m['waiting']} reads waiting"
            )
        lines += [f"  {e['path']}: {e['files']:,} files, {e['bytes']:,} bytes" for e in r["envs"]]
        for e in r.get("bytecode_pending", []):
            left = "?" if e["sources"] is None else f"{e['sources']:,}"
            state = "compiling" if e["compiling"] else "waiting"
            failed = f"; last attempt failed: {e['error']}" if e["error"] else ""
            lines.append(f"bytecode pending: {e['path']}: {left} sources ({state}){failed}")
        return "\n".join(lines)

    return _remote("stats", {}, args, render)


def cmd_remote(args: argparse.Namespace) -> int:
    from nwcache.client.remotecmd import cmd_remote

    return cmd_remote(args)


def cmd_push(args: argparse.Namespace) -> int:
    from nwcache.client.remotecmd import cmd_push

    return cmd_push(args)


def cmd_prefetch(args: argparse.Namespace) -> int:
    from nwcache.client.remotecmd import cmd_prefetch

    return cmd_prefetch(args)


def cmd_service(args: argparse.Namespace) -> int:
    from nwcache.client.service import main as service_main

    return service_main(args.action, args.json)


COMMANDS = {
    "convert": cmd_convert,
    "inspect": cmd_inspect,
    "verify": cmd_verify,
    "unpack": cmd_unpack,
    "daemon": cmd_daemon,
    "env": cmd_env,
    "install": cmd_install,
    "sync": cmd_sync,
    "lock": cmd_lock,
    "uninstall": cmd_uninstall,
    "list": cmd_list,
    "history": cmd_history,
    "rollback": cmd_rollback,
    "gc": cmd_gc,
    "fsck": cmd_fsck,
    "stats": cmd_stats,
    "remote": cmd_remote,
    "push": cmd_push,
    "prefetch": cmd_prefetch,
    "service": cmd_service,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (tests call this directly)."""
    words = sys.argv[1:] if argv is None else list(argv)
    _Parser.as_json = "--json" in words
    parser = build_parser()
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:
        return int(exc.code or 0)
    as_json = bool(getattr(args, "json", False))
    try:
        return COMMANDS[args.command](args)
    except OSError as exc:
        return _fail(exc, as_json)
    except KeyboardInterrupt:
        return interrupted(as_json)
    except Exception as exc:
        # Only the archive commands import the archive library (start-up
        # time of the store commands), so its errors are recognised lazily.
        archive = sys.modules.get("nwcache.archive")
        if archive is not None and isinstance(exc, archive.ArchiveError):
            return _fail(exc, as_json)
        raise
