"""Builds libnwfoo.so.1.2.3 with the C compiler during build_py and ships it
three times (libnwfoo.so.1.2.3, libnwfoo.so.1, libnwfoo.so), byte for byte the
same, the way wheels carry versioned libraries today since zip has no symlinks."""

import hashlib
import os
import shutil
import subprocess

from setuptools import Distribution, setup  # type: ignore[import-untyped]
from setuptools.command.build_py import build_py  # type: ignore[import-untyped]

LIBRARY = "libnwfoo.so.1.2.3"
ALIASES = ("libnwfoo.so.1", "libnwfoo.so")
TABLE_SIZE = 32 * 1024


def table_source() -> str:
    """A deterministic pseudo-random table (sha256 in counter mode) as C."""
    data = b"".join(hashlib.sha256(b"nwfoo-table-%d" % i).digest() for i in range(TABLE_SIZE // 32))
    rows = ",\n".join(", ".join(str(b) for b in data[i : i + 24]) for i in range(0, len(data), 24))
    return (
        "#include <stddef.h>\n"
        f"const unsigned char nwfoo_table[{len(data)}] = {{\n{rows}\n}};\n"
        f"const size_t nwfoo_table_size = {len(data)};\n"
    )


class BuildWithLibrary(build_py):  # type: ignore[misc]
    def run(self) -> None:
        super().run()
        temp = os.path.join(self.get_finalized_command("build").build_temp, "nwfoo")
        os.makedirs(temp, exist_ok=True)
        table = os.path.join(temp, "nwfoo_table.c")
        with open(table, "w", encoding="ascii") as fh:
            fh.write(table_source())
        out_dir = os.path.join(self.build_lib, "nwdemo_sharedlib")
        os.makedirs(out_dir, exist_ok=True)
        library = os.path.join(out_dir, LIBRARY)
        compiler = os.environ.get("CC", "gcc")
        command = [
            compiler,
            "-shared",
            "-fPIC",
            "-O2",
            "-Wl,-soname,libnwfoo.so.1",
            "-o",
            library,
            os.path.join("src", "nwfoo.c"),
            table,
        ]
        self.announce(" ".join(command), level=2)
        subprocess.run(command, check=True)
        for alias in ALIASES:
            shutil.copy(library, os.path.join(out_dir, alias))  # content and mode


class BinaryDistribution(Distribution):  # type: ignore[misc]
    """Platform-specific wheel: the package holds native code."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
