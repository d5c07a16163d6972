"""A short, seeded run of the archive fuzzer (tests/fuzz/) inside the suite:
a fixed number of executions, no crash, no hang, unpack and convert agreeing
with the reader, the real command line answering a sample of the inputs with
an error and a hint line (never a traceback), and mutations that reach every
stage of the reader, not just the zip container."""

from __future__ import annotations

from pathlib import Path

from tests.fuzz.run import fuzz

EXECUTIONS = 800


def test_short_seeded_run(tmp_path: Path) -> None:
    summary = fuzz(executions=EXECUTIONS, seed=20261129, workers=0, timeout=10.0, out=tmp_path, cli_every=40)
    assert summary.findings == {}, f"see {tmp_path / 'findings'}"
    assert summary.hangs == 0
    assert summary.build_errors == {}
    assert summary.executions == EXECUTIONS
    assert summary.cli_runs >= EXECUTIONS // 80
    verdicts = set(summary.verdicts)
    assert 0 < summary.accepted < EXECUTIONS
    # Refusals from every stage: container, paths, RECORD, WHEEL, payload
    # frame or tar, and the install-time checks.
    for prefix in ("zip-", "path-", "record-", "wheel-", "store:"):
        assert any(v.startswith(prefix) for v in verdicts), (prefix, sorted(verdicts))
    assert any(v.startswith(("tar-", "payload-")) for v in verdicts), sorted(verdicts)
    assert len(verdicts) >= 20, sorted(verdicts)
