"""nwdemo-ext: a package whose work is done by a C extension module."""

from ._speedups import fib, greet

__all__ = ["fib", "greet"]
