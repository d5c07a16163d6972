"""nwdemo-sharedlib: loads its bundled libnwfoo.so.1 with ctypes."""

import ctypes
import os

_HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY_PATH = os.path.join(_HERE, "libnwfoo.so.1")
_lib = ctypes.CDLL(LIBRARY_PATH)
_lib.nwfoo_answer.restype = ctypes.c_int
_lib.nwfoo_answer.argtypes = []
_lib.nwfoo_add.restype = ctypes.c_int
_lib.nwfoo_add.argtypes = [ctypes.c_int, ctypes.c_int]
_lib.nwfoo_checksum.restype = ctypes.c_uint32
_lib.nwfoo_checksum.argtypes = []


def answer() -> int:
    return int(_lib.nwfoo_answer())


def add(a: int, b: int) -> int:
    return int(_lib.nwfoo_add(a, b))


def self_check() -> bool:
    """The library's own checksum of its table equals FNV-1a over the table
    as read through ctypes."""
    size = ctypes.c_size_t.in_dll(_lib, "nwfoo_table_size").value
    table = bytes((ctypes.c_ubyte * size).in_dll(_lib, "nwfoo_table"))
    h = 2166136261
    for byte in table:
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return size > 0 and h == int(_lib.nwfoo_checksum())
