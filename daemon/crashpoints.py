"""Test hook for crash tests: `crash_point(name)` kills the process with
SIGKILL when NWCACHE_CRASH_AT names that point. The store's write phases and
every step of switching site-packages have one; tests/test_store_crash.py and
tests/test_view_crash.py kill a child at each and check what survives."""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("NWCACHE_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
