"""A PEP 517 build backend of the test sdists (in-tree, backend-path): it
needs nothing from an index, so the sdists build offline in uv's isolated
build environment. It writes a plain wheel of the package directory, with
METADATA from PKG-INFO and a RECORD; NWIDX_FAIL in PKG-INFO's Summary makes
the build fail, as a build missing a compiler does."""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile


def get_requires_for_build_wheel(config_settings: object = None) -> list[str]:
    return []


def build_wheel(
    wheel_directory: str, config_settings: object = None, metadata_directory: object = None
) -> str:
    with open("PKG-INFO", encoding="utf-8") as handle:
        metadata = handle.read()
    fields = dict(line.split(": ", 1) for line in metadata.splitlines() if ": " in line)
    if "NWIDX_FAIL" in fields.get("Summary", ""):
        raise RuntimeError("error: command 'gcc' failed: No such file or directory")
    name, version = fields["Name"].replace("-", "_"), fields["Version"]
    dist_info = f"{name}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for folder, _, names in os.walk(name):
        for file_name in sorted(names):
            path = os.path.join(folder, file_name)
            with open(path, "rb") as handle:
                files[path.replace(os.sep, "/")] = handle.read()
    files[f"{dist_info}/METADATA"] = metadata.encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: nwidx-backend\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel_name = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel_name), "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(zipfile.ZipInfo(path, (1980, 1, 1, 0, 0, 0)), data)
    return wheel_name
