"""PNG plots of the results (matplotlib, Agg backend: no display needed).

- ``rebalance``: per-second throughput and p99 of the background load, with the
  join, settle, kill, removal and restore marked;
- ``latency``: latency at each quantile per system, for a few cells at one size;
- ``throughput``: ops/s per system against the value size, for a few cells.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {
    "memcluster": "tab:blue",
    "memcluster-rf2": "tab:cyan",
    "redis": "tab:red",
    "memcached": "tab:green",
}
LATENCY_CELLS = ("sync/C", "sync/A", "sync/batch-get", "async/C")
THROUGHPUT_CELLS = ("sync/C", "sync/batch-get", "async/C")
_EVENTS = (
    ("join", "join", "tab:green"),
    ("join_settled", "settled", "tab:olive"),
    ("kill", "SIGKILL", "tab:red"),
    ("removed", "removed", "tab:orange"),
    ("rf_restored", "RF restored", "tab:purple"),
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def available() -> bool:
    """True when matplotlib can be imported."""
    try:
        _pyplot()
    except ImportError:
        return False
    return True


def rebalance(result: dict[str, Any], path: Path) -> None:
    """Throughput and p50/p99 per second, with the events as vertical lines."""
    plt = _pyplot()
    timeline = result["timeline"]
    t = [s["t"] + 0.5 for s in timeline]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5))
    top.plot(t, [s["ops"] for s in timeline], color="tab:blue", label="ops/s")
    top.bar(t, [s["errors"] for s in timeline], color="tab:red", width=0.8, label="errors/s")
    top.set_ylabel("calls per second")
    for name, key in (("p50", "p50_ms"), ("p99", "p99_ms")):
        points = [(x, s[key]) for x, s in zip(t, timeline, strict=True) if s[key] is not None]
        bottom.plot([x for x, _ in points], [y for _, y in points], label=name)
    bottom.set_yscale("log")
    bottom.set_ylabel("latency per call (ms)")
    bottom.set_xlabel("seconds since the background load started")
    bottom.legend(loc="upper left")
    events = result["events"]
    # The benchmark's own holdings scans (Peer.Fetch of every key) compete with the load.
    scans = [
        k.removesuffix("_start")
        for k in events
        if k.startswith("holdings_") and k.endswith("_start")
    ]
    for number, scan in enumerate(scans):
        for axis in (top, bottom):
            axis.axvspan(
                events[f"{scan}_start"],
                events[f"{scan}_end"],
                color="0.85",
                label="holdings scan (bench)" if number == 0 and axis is top else None,
            )
    top.legend(loc="lower left")
    for key, label, color in _EVENTS:
        if key in events:
            for axis in (top, bottom):
                axis.axvline(events[key], color=color, linestyle="--", linewidth=1)
            top.annotate(
                label,
                (events[key], 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=8,
                color=color,
            )
    plan, moved = result["plan"], result["join"]["moved"]
    fig.suptitle(
        f"3 -> 4 nodes, RF=2, {plan['megabytes']} MB; one blocking client, workload B "
        f"(moved {moved['fraction_moved']:.1%} of replica copies)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency(sizes: dict[str, Any], size: str, path: Path) -> bool:
    """Latency at each quantile, one panel per cell; False when ``size`` has no cells."""
    cells = sizes.get(size, {}).get("cells")
    if not cells:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(LATENCY_CELLS), figsize=(4 * len(LATENCY_CELLS), 4))
    for axis, cell in zip(axes, LATENCY_CELLS, strict=True):
        for system, results in cells.items():
            quantiles = results.get(cell, {}).get("quantiles_us")
            if not quantiles:
                continue
            labels = list(quantiles)
            axis.plot(
                range(len(labels)),
                [v / 1000 for v in quantiles.values()],
                marker=".",
                label=system,
                color=COLORS.get(system),
            )
            axis.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
        axis.set_yscale("log")
        axis.set_title(f"{cell}, {size} values")
        axis.set_xlabel("quantile")
    axes[0].set_ylabel("latency (ms)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def throughput(sizes: dict[str, Any], path: Path) -> bool:
    """Median ops/s per system against the value size; False without two sizes to draw."""
    # One line over the value sizes measured with the same (small) tiers.
    measured = {
        s.get("label", key): s
        for key, s in sizes.items()
        if "cells" in s and s.get("tiers", "small") == "small"
    }
    if len(measured) < 2:
        return False
    plt = _pyplot()
    labels = list(measured)
    fig, axes = plt.subplots(1, len(THROUGHPUT_CELLS), figsize=(4.5 * len(THROUGHPUT_CELLS), 4))
    for axis, cell in zip(axes, THROUGHPUT_CELLS, strict=True):
        systems = {name for s in measured.values() for name in s["cells"]}
        for system in sorted(systems):
            points = [
                (i, measured[label]["cells"][system][cell]["median"]["ops_s"])
                for i, label in enumerate(labels)
                if "median" in measured[label]["cells"].get(system, {}).get(cell, {})
            ]
            if points:
                axis.plot(
                    [x for x, _ in points],
                    [y for _, y in points],
                    marker="o",
                    label=system,
                    color=COLORS.get(system),
                )
        axis.set_xticks(range(len(labels)), labels)
        axis.set_yscale("log")
        axis.set_title(cell + (" (calls of 100 keys)" if "batch" in cell else ""))
        axis.set_xlabel("value size")
    axes[0].set_ylabel("calls per second (median of rounds)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
