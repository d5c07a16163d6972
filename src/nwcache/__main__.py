"""The `nwcache` console script (and `python -m nwcache`): `nwcache daemon`
runs the daemon (nwcache.daemon.server); every other command line is the
client's (nwcache.client.remote, which never imports the daemon)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ["daemon"]:
        from nwcache.daemon.server import main as daemon

        return daemon(words[1:])
    from nwcache.client.remote import main as client

    return client(words)


if __name__ == "__main__":
    sys.exit(main())
