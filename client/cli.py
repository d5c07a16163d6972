"""`nwcache`: the command line.

Exit codes (also in README.md):
    0  success
    1  the archive or the operation failed (nothing was written)
    2  usage error (unknown command, bad flag or value)

Heavy modules are imported by the commands that need them, so that start-up
stays close to Python's own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from nwcache.archive import Archive, ArchiveError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        print(f"hint: run '{self.prog} --help' for the options", file=sys.stderr)
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nwcache", description="Wheel 2.0 archives and the nwcache package store.")
    from nwcache import __version__

    parser.add_argument("--version", action="version", version=f"nwcache {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

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
    convert.add_argument("inputs", nargs="+", type=Path, metavar="IN.whl")
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

    inspect = commands.add_parser("inspect", parents=[window], help="describe an archive from its metadata")
    inspect.add_argument("archive", type=Path, metavar="X.whl")
    inspect.add_argument("--json", action="store_true", help="print JSON")

    verify = commands.add_parser(
        "verify", parents=[window], help="check every file against RECORD and the content digest"
    )
    verify.add_argument("archive", type=Path, metavar="X.whl")
    verify.add_argument("--json", action="store_true", help="print JSON")

    unpack = commands.add_parser(
        "unpack", parents=[window], help="verify and unpack an archive into a new directory"
    )
    unpack.add_argument("archive", type=Path, metavar="X.whl")
    unpack.add_argument("dest", type=Path, metavar="DIR")
    unpack.add_argument(
        "--links",
        choices=("copy", "hardlink", "symlink"),
        default="copy",
        help="how to materialise content links (default copy)",
    )
    return parser


def _hint(error: ArchiveError) -> str:
    from nwcache.archive import DestinationError, UnsupportedArchive

    if error.rule == "window-log-limit":
        return "if you trust this archive, raise the limit with --max-window-log"
    if error.rule == "io":
        return "check the path and its permissions"
    if isinstance(error, DestinationError):
        return "choose an empty or new destination"
    if isinstance(error, UnsupportedArchive):
        return "this archive needs a newer or differently configured reader"
    return "the archive is malformed or was tampered with; nothing was written"


def _fail(error: ArchiveError | OSError) -> int:
    from nwcache.archive import ArchiveError

    if isinstance(error, ArchiveError):
        print(f"error: {error}", file=sys.stderr)
        print(f"hint: {_hint(error)}", file=sys.stderr)
    else:
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        print(
            "hint: check the path, its permissions and the free space; nothing was kept",
            file=sys.stderr,
        )
    return EXIT_FAILED


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
        print(json.dumps(info, indent=2))
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
        print(json.dumps({"file": str(args.archive), "ok": True, "files": count, "content_digest": digest}))
    else:
        print(f"ok: {args.archive}: {count} files verified, content digest {digest}")
    return EXIT_OK


def cmd_unpack(args: argparse.Namespace) -> int:
    from nwcache.archive import Archive, LinkMode, unpack

    with Archive.open(args.archive, max_window_log=args.max_window_log) as archive:
        count = unpack(archive, args.dest, links=LinkMode(args.links))
    print(f"unpacked {count} files from {args.archive} into {args.dest}")
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    from nwcache.archive import ArchiveError, convert
    from nwcache.archive.wheelinfo import DEFAULT_LEVEL, DEFAULT_WINDOW_LOG

    if args.to == 1 and (args.level is not None or args.window_log is not None):
        print("error: --level and --window-log apply to --to 2 only", file=sys.stderr)
        print("hint: drop them, or convert with --to 2", file=sys.stderr)
        return EXIT_USAGE
    status = EXIT_OK
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
            status = _fail(exc)
            continue
        before = os.path.getsize(src)
        print(
            f"{src} -> {dest}: format {args.to}, {before:,} -> {result.size:,} bytes ({result.size / before:.0%}), {result.content_links} content links, {result.content_digest}"
        )
    return status


COMMANDS = {
    "convert": cmd_convert,
    "inspect": cmd_inspect,
    "verify": cmd_verify,
    "unpack": cmd_unpack,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (tests call this directly)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    from nwcache.archive import ArchiveError

    try:
        return COMMANDS[args.command](args)
    except (ArchiveError, OSError) as exc:
        return _fail(exc)
    except KeyboardInterrupt:
        print("error: interrupted; nothing was kept", file=sys.stderr)
        return 130
