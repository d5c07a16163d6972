"""The PNG charts of bench.corpus, drawn with matplotlib's Agg backend (no
display). Each function takes the figures to draw and the file to write."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

MB = 1_000_000
MIB = 1 << 20
DPI = 110


def _colour(index: int) -> str:
    """The default colour cycle's colour `index` ("C0".."C9"): one colour per
    variant, the same in every chart."""
    return f"C{index % 10}"


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata={"Software": None})  # no version stamp: reruns diff cleanly
    plt.close(fig)


def size_chart(path: Path, labels: Sequence[str], sizes: Sequence[int], reference: int, wheels: int) -> None:
    """Total archive size per variant, each bar labelled with its share of
    the reference variant's total."""
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.6))
    rows = range(len(labels))
    ax.barh(rows, [s / MB for s in sizes], color=[_colour(i) for i in rows])
    ax.set_yticks(list(rows), labels)
    ax.invert_yaxis()
    for row, size in zip(rows, sizes, strict=True):
        ax.annotate(
            f" {size / MB:,.2f} MB ({size / sizes[reference]:.3f})",
            (size / MB, row),
            va="center",
            fontsize=8,
        )
    ax.set_xlabel("total archive size, MB (share of the first row in brackets)")
    ax.set_title(f"Total size of {wheels} wheels per variant")
    ax.set_xlim(0, max(sizes) / MB * 1.35)
    _save(fig, path)


def ratio_heatmap(
    path: Path, wheels: Sequence[str], labels: Sequence[str], ratios: Sequence[Sequence[float]]
) -> None:
    """Each wheel's size in each variant as a share of the reference variant
    (rows: wheels, columns: variants)."""
    fig, ax = plt.subplots(figsize=(1.0 * len(labels) + 3, 0.32 * len(wheels) + 2.2))
    image = ax.imshow(
        ratios, cmap="viridis_r", aspect="auto", vmin=0.0, vmax=max(1.0, *(max(r) for r in ratios))
    )
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(wheels)), wheels, fontsize=8)
    for y, row in enumerate(ratios):
        for x, value in enumerate(row):
            ax.text(
                x,
                y,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > 0.6 else "black",
            )
    fig.colorbar(image, ax=ax, label="size / size as published")
    ax.set_title("Size per wheel, as a share of the wheel as published")
    _save(fig, path)


def time_chart(
    path: Path,
    labels: Sequence[str],
    pack_s: Sequence[float | None],
    unpack_s: Sequence[float],
    installed: int,
) -> None:
    """Total pack time (log scale: the levels differ by orders of magnitude)
    and total unpack+verify time per variant."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.45 * len(labels) + 1.8), sharey=True)
    rows = list(range(len(labels)))
    packed = [(row, s) for row, s in zip(rows, pack_s, strict=True) if s is not None]
    left.barh([r for r, _ in packed], [s for _, s in packed], color=[_colour(r) for r, _ in packed])
    left.set_xscale("log")
    left.xaxis.set_minor_formatter(NullFormatter())
    if packed:
        left.set_xlim(min(s for _, s in packed) / 2, max(s for _, s in packed) * 6)
    for row, packed_s in packed:
        left.annotate(f" {packed_s:,.1f} s", (packed_s, row), va="center", fontsize=8)
    for row, maybe in enumerate(pack_s):
        if maybe is None:
            left.annotate(" not packed", (left.get_xlim()[0], row), va="center", fontsize=8, color="grey")
    left.set_yticks(rows, labels)
    left.invert_yaxis()
    left.set_xlabel("pack time, s (log scale)")
    left.set_title("Pack (from the published wheel)")
    right.barh(rows, unpack_s, color=[_colour(r) for r in rows])
    for row, seconds in zip(rows, unpack_s, strict=True):
        right.annotate(
            f" {seconds:.2f} s ({installed / MB / seconds:,.0f} MB/s)",
            (seconds, row),
            va="center",
            fontsize=8,
        )
    right.set_xlim(0, max(unpack_s) * 1.6)
    right.set_xlabel("unpack+verify time, s (installed MB/s in brackets)")
    right.set_title("Unpack and verify against RECORD")
    _save(fig, path)


def memory_chart(
    path: Path,
    labels: Sequence[str],
    pack_peak: Sequence[int | None],
    unpack_peak: Sequence[int],
    base: int,
    bound: int,
) -> None:
    """The largest peak resident memory of any wheel's pack and unpack step,
    per variant, with the interpreter's own share marked."""
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(labels) + 1.8))
    rows = list(range(len(labels)))
    height = 0.4
    ax.barh(
        [r - height / 2 for r in rows],
        [(p or 0) / MIB for p in pack_peak],
        height=height,
        label="pack",
        color="#4c72b0",
    )
    ax.barh(
        [r + height / 2 for r in rows],
        [u / MIB for u in unpack_peak],
        height=height,
        label="unpack+verify",
        color="#dd8452",
    )
    for row, (p, u) in enumerate(zip(pack_peak, unpack_peak, strict=True)):
        ax.annotate(
            " not packed" if p is None else f" {p / MIB:,.0f}",
            ((p or 0) / MIB, row - height / 2),
            va="center",
            fontsize=7,
        )
        ax.annotate(f" {u / MIB:,.0f}", (u / MIB, row + height / 2), va="center", fontsize=7)
    ax.axvline(
        base / MIB,
        color="grey",
        linestyle=":",
        label=f"interpreter and imports at rest ({base / MIB:,.0f} MiB)",
    )
    ax.set_yticks(rows, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, max(max(p or 0 for p in pack_peak), max(unpack_peak)) / MIB * 1.25)
    ax.set_xlabel("peak resident memory (VmHWM) of the wheel that needed most, MiB")
    ax.set_title(
        f"Peak memory per step (each bounded to {bound / MIB:,.0f} MiB of address space)", fontsize=10
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=8)
    _save(fig, path)


def install_chart(
    path: Path,
    labels: Sequence[str],
    sizes: Sequence[int],
    unpack_s: Sequence[float],
    reference: int,
    break_evens: Sequence[float],
) -> None:
    """Download plus unpack+verify time of the corpus against the download
    speed, as a share of the reference variant's, one line per variant: a
    line crosses 1 at its break-even speed (`break_evens`, bytes/s, widen the
    range so that every crossing shows)."""
    low, high = 1.0, 10_000.0  # Mbit/s: a slow mobile link to a data-centre link
    for speed in break_evens:
        low, high = min(low, speed * 8 / MB / 3), max(high, speed * 8 / MB * 3)
    steps = 240
    speeds = [low * (high / low) ** (i / steps) for i in range(steps + 1)]

    def install_s(index: int, mbit: float) -> float:
        return sizes[index] * 8 / (mbit * MB) + unpack_s[index]

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for index, label in enumerate(labels):
        shares = [install_s(index, s) / install_s(reference, s) for s in speeds]
        ax.plot(
            speeds, shares, label=label, color=_colour(index), linewidth=2.2 if index == reference else 1.4
        )
    ax.axhline(1.0, color="black", linewidth=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("download speed, Mbit/s (log scale)")
    ax.set_ylabel(f"install time / install time of {labels[reference]}")
    ax.set_title("Download + unpack+verify of every wheel, against the download speed")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
