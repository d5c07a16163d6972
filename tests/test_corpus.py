"""The corpus benchmark harness (bench/corpus.py) on two small wheels built
here, plus a corrupt one: it must measure every variant of both, report the
corrupt one without stopping, write consistent figures and real PNG charts,
and exit 1. Offline: --wheels takes local files, nothing is downloaded."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from bench import corpus
from bench.common import MB, mb
from bench.corpus_variants import PUBLISHED, VARIANTS, ZIP_ZSTD_METHOD, Container

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_break_even_follows_the_discussion() -> None:
    # The format discussion's example: A is 70 MB and decompresses in 5 s, B
    # is 75 MB and takes 2 s; A is the faster install below 13.3 Mbit/s.
    a = corpus.break_even(70 * MB, 5.0, 75 * MB, 2.0)
    assert a.verdict is corpus.Verdict.BELOW
    assert a.speed is not None
    assert a.speed * 8 / MB == pytest.approx(40 / 3)
    assert corpus.break_even_text(a) == "below 13.3 Mbit/s"
    b = corpus.break_even(75 * MB, 2.0, 70 * MB, 5.0)
    assert b.verdict is corpus.Verdict.ABOVE
    assert b.speed == pytest.approx(a.speed)
    assert corpus.break_even(70 * MB, 2.0, 75 * MB, 5.0).verdict is corpus.Verdict.ALWAYS
    assert corpus.break_even(75 * MB, 5.0, 70 * MB, 2.0).verdict is corpus.Verdict.NEVER
    assert corpus.break_even(70 * MB, 5.0, 70 * MB, 5.0).verdict is corpus.Verdict.NEVER


def totals_row(report: str, label: str) -> list[str]:
    """The cells of `label`'s row in the report's Totals table."""
    section = report.split("## Totals", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == label:
            return cells
    raise AssertionError(f"no Totals row for {label!r}")


@pytest.fixture(scope="module")
def harness_run(
    built_wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, int, dict[str, Path], Path]:
    root = tmp_path_factory.mktemp("corpus")
    broken = root / "broken-1.0-py3-none-any.whl"
    broken.write_bytes(built_wheels["pure"].read_bytes()[:400])  # cut inside the first member
    wheels = {kind: built_wheels[kind] for kind in ("pure", "sharedlib")}
    status = corpus.main(
        [
            "--wheels",
            str(wheels["pure"]),
            str(broken),
            str(wheels["sharedlib"]),
            "--results",
            str(root / "results"),
            "--summary",
            str(root / "docs" / "BENCH-CORPUS.md"),
            "--keep-archives",
            str(root / "archives"),
            "--scratch",
            str(root / "scratch"),
            "--repeat",
            "1",
        ]
    )
    return root, status, wheels, broken


def test_a_failed_wheel_is_reported_and_the_others_measured(
    harness_run: tuple[Path, int, dict[str, Path], Path],
) -> None:
    root, status, wheels, broken = harness_run
    assert status == 1
    report = (root / "results" / "report.md").read_text()
    failures = report.split("## Failures", 1)[1]
    assert broken.name in failures
    assert "| open |" in failures
    data: dict[str, Any] = json.loads((root / "results" / "results.json").read_text())
    assert [w["filename"] for w in data["wheels"]] == [wheels["pure"].name, wheels["sharedlib"].name]
    assert [f["wheel"] for f in data["failures"]] == [broken.name]
    assert "2 measured in every variant" in report


def test_every_variant_is_measured_with_consistent_sizes(
    harness_run: tuple[Path, int, dict[str, Path], Path],
) -> None:
    root, _, wheels, _ = harness_run
    data: dict[str, Any] = json.loads((root / "results" / "results.json").read_text())
    report = (root / "results" / "report.md").read_text()
    files = {w.name: w for w in wheels.values()}
    for wheel in data["wheels"]:
        assert set(wheel["cells"]) == {v.key for v in VARIANTS}
        for variant in VARIANTS:
            cell = wheel["cells"][variant.key]
            on_disk = (
                files[wheel["filename"]]
                if variant is PUBLISHED
                else root / "archives" / variant.key / wheel["filename"]
            )
            assert cell["size"] == on_disk.stat().st_size > 0
            assert cell["unpack"]["seconds"] > 0
            assert cell["unpack"]["peak_rss"] >= cell["unpack"]["base_rss"] > 0
            if variant.packs:
                assert cell["pack"]["seconds"] > 0
                assert cell["pack"]["peak_rss"] >= cell["pack"]["base_rss"] > 0
            else:
                assert cell["pack"] is None
    for variant in VARIANTS:
        total = sum(w["cells"][variant.key]["size"] for w in data["wheels"])
        assert totals_row(report, variant.label)[1] == mb(total)
    # The shared library ships three identical copies: content links save them.
    sharedlib = next(w for w in data["wheels"] if w["filename"] == wheels["sharedlib"].name)
    assert sharedlib["duplicates"] >= 2
    assert sharedlib["cells"]["v2-l19"]["content_links"] == sharedlib["duplicates"]
    assert sharedlib["cells"]["v2-no-links"]["content_links"] == 0
    assert sharedlib["cells"]["v2-no-links"]["size"] > sharedlib["cells"]["v2-l19"]["size"]
    # The zstd-member zip holds nothing but zstd members.
    zstd_zip = next(v for v in VARIANTS if v.container is Container.ZIP_ZSTD)
    with zipfile.ZipFile(root / "archives" / zstd_zip.key / wheels["pure"].name) as zf:
        assert {info.compress_type for info in zf.infolist()} == {ZIP_ZSTD_METHOD}


def test_charts_are_pngs_and_the_summary_embeds_them(
    harness_run: tuple[Path, int, dict[str, Path], Path],
) -> None:
    root, _, _, _ = harness_run
    report = (root / "results" / "report.md").read_text()
    summary = (root / "docs" / "BENCH-CORPUS.md").read_text()
    embedded = re.findall(r"!\[[^]]*\]\(corpus/([^)]+\.png)\)", summary)
    assert sorted(embedded) == sorted(c.value for c in corpus.Chart)
    for name in embedded:
        for folder in (root / "results", root / "docs" / "corpus"):
            png = (folder / name).read_bytes()
            assert png.startswith(PNG_SIGNATURE)
            assert len(png) > 5_000
        assert f"]({name})" in report
    assert (root / "docs" / "corpus" / "report.md").read_text() == report
    for variant in VARIANTS:
        assert f"| {variant.label} |" in summary
