"""The remotes: OCI registries that hold a shared blob tier (docs/REMOTE.md).

`$NWCACHE_HOME/remotes.json` names each remote: its URL (`https://host[:port]`
or `http://` for a registry on loopback), the repository its packages go to
(default `nwcache`), and optionally a credentials file. The client writes it
(`nwcache remote add|remove`), the daemon reads it each time it needs it, so
no restart is needed. Written atomically (temporary file, rename).

A credentials file holds one line, `USER:PASSWORD` (a registry token goes
where the password does). It must belong to the user and be readable by
nobody else (mode 0600 or 0400): one that the group or others may read is
refused with a hint, before any byte of it is read. The credentials are used
for HTTP basic auth and for the registry's token endpoint; no message and no
log line carries them.

Standard library only: the client imports this module.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from nwcache.errors import NwcacheError

CONFIG = "remotes.json"
DEFAULT_REPOSITORY = "nwcache"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# The distribution spec's repository name grammar (path components, lower case).
_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")


class RemoteError(NwcacheError):
    hint = "'nwcache remote list' shows the remotes; docs/REMOTE.md describes them"


class CredentialsError(RemoteError):
    hint = "make the credentials file yours and private: 'chmod 600 FILE'; it holds one line USER:PASSWORD"


@dataclass(frozen=True)
class Remote:
    name: str
    url: str  # scheme://host[:port], no path, no userinfo
    repository: str = DEFAULT_REPOSITORY
    credentials: str | None = None  # absolute path of the credentials file

    def shown(self) -> str:
        return f"{self.name} ({self.url}/{self.repository})"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never shown, whatever prints it
        return "Credentials(<hidden>)"


def check_url(url: str) -> str:
    """`url` as a registry's base URL, or RemoteError."""
    match = re.fullmatch(r"(https?)://([^/@\s]+)/?", url)
    if match is None:
        raise RemoteError(
            f"{url!r} is not a registry URL",
            hint="give scheme and host only, e.g. https://ghcr.io or http://127.0.0.1:5000 "
            "(credentials go in --credentials FILE, the repository in --repository)",
        )
    return f"{match.group(1)}://{match.group(2)}"


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise RemoteError(
            f"{name!r} is not a remote name", hint="use letters, digits, '_', '.' and '-' (64 at most)"
        )
    return name


def check_repository(repository: str) -> str:
    if len(repository) > 255 or not _REPOSITORY.fullmatch(repository):
        raise RemoteError(
            f"{repository!r} is not a repository name",
            hint="lower-case path components of letters and digits, joined by '.', '_' or '-', e.g. team/nwcache",
        )
    return repository


def load(home: Path) -> dict[str, Remote]:
    """The remotes configured in `home` (none when the file is absent)."""
    path = home / CONFIG
    try:
        data = json.loads(path.read_text())
        return {
            name: Remote(
                name=name,
                url=str(item["url"]),
                repository=str(item.get("repository") or DEFAULT_REPOSITORY),
                credentials=item.get("credentials"),
            )
            for name, item in dict(data["remotes"]).items()
        }
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RemoteError(
            f"{path} is unreadable ({exc})",
            hint=f"fix or delete {path}, then add the remotes again with 'nwcache remote add'",
        ) from None


def save(home: Path, remotes: dict[str, Remote]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    data = {
        "remotes": {name: {k: v for k, v in asdict(r).items() if k != "name"} for name, r in remotes.items()}
    }
    fd, temp = tempfile.mkstemp(dir=home, prefix=".remotes-")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(temp, home / CONFIG)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def add(home: Path, name: str, url: str, repository: str | None, credentials: str | None) -> Remote:
    remotes = load(home)
    name = check_name(name)
    if name in remotes:
        raise RemoteError(
            f"a remote named {name} exists already ({remotes[name].url})",
            hint=f"remove it first with 'nwcache remote remove {name}', or choose another name",
        )
    path = None
    if credentials is not None:
        path = os.path.abspath(credentials)
        read_credentials(path)  # refused now rather than at the first push
    remote = Remote(name, check_url(url), check_repository(repository or DEFAULT_REPOSITORY), path)
    remotes[name] = remote
    save(home, remotes)
    return remote


def remove(home: Path, name: str) -> Remote:
    remotes = load(home)
    if name not in remotes:
        raise RemoteError(f"no remote is named {name!r}")
    gone = remotes.pop(name)
    save(home, remotes)
    return gone


def read_credentials(path: str) -> Credentials:
    """The credentials in `path`, refused when anyone but the user could read them."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise CredentialsError(
            f"cannot open the credentials file {path}: {exc.strerror}",
            hint="create it (one line USER:PASSWORD, mode 0600) or add the remote again without --credentials",
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CredentialsError(f"the credentials file {path} is not a regular file")
        if st.st_uid != os.getuid():
            raise CredentialsError(f"the credentials file {path} belongs to uid {st.st_uid}, not to you")
        if st.st_mode & 0o077:
            raise CredentialsError(
                f"the credentials file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o})",
                hint=f"'chmod 600 {path}': a file of credentials is for its owner alone",
            )
        with os.fdopen(os.dup(fd), "r", encoding="utf-8") as fh:
            line = fh.readline().strip()
    except UnicodeDecodeError:
        raise CredentialsError(f"the credentials file {path} is not text") from None
    finally:
        os.close(fd)
    user, sep, password = line.partition(":")
    if not sep or not user:
        raise CredentialsError(f"the credentials file {path} does not hold a line USER:PASSWORD")
    return Credentials(user, password)
