"""The console_scripts entry point."""

import sys

from . import __version__
from .core import greeting


def main() -> int:
    print(greeting("entry-point"), __version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
