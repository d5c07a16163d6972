"""A short run of bench/load.py (`make bench-load` runs it for 10 minutes,
docs/BENCH-LOAD.md): 4 clients installing and uninstalling while 16 processes
read through the view, with the same invariants: no error, no descriptor
left open in the daemon, RSS growth under 10% after the warm-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.load import build_wheels, run_load

pytestmark = [pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse"), pytest.mark.slow]


def test_load_for_15_seconds(tmp_path: Path, built_wheels: dict[str, Path]) -> None:
    wheels = build_wheels(tmp_path, built_wheels["pure"])
    result = run_load(tmp_path, wheels, seconds=15, warmup=5)
    assert result.command_errors == []
    assert result.read_errors == []
    assert result.commands >= 4  # every client got through at least one command
    assert result.reads > 100
    assert result.fds_leaked == []
    assert result.fds_end <= result.fds_start
    assert result.rss_growth < 0.10, (result.rss_start_kib, result.rss_end_kib)
    assert result.latency_ms["p99"] > 0
