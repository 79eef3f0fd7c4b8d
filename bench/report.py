"""The results as rich tables, and the issue's targets judged met or not met.

Targets (issue "Benchmarks"), each a memcluster/peer ratio:

- batch get of 100 keys >= 0.5x Redis MGET, batch put >= 0.5x a pipelined SET
  (100 B values, one blocking client, keys/s);
- unary get through the blocking client >= 0.5x redis-py GET (workload C);
- RAM per item with the default tiers <= 0.5x Redis (node RSS growth over Redis
  used_memory growth, for a 4 KB JSON dataset larger than the nodes' hot tiers; the
  one that fits the hot tiers is reported beside it);
- hot-tier overhead per key <= 1.5x Redis's (from ``bench.tiers``);
- client p99 while a node joins <= 2x the p99 before.

A target measured while the machine was disturbed (``bench.noise``: the 100B workloads
for the throughput targets, the rebalance section for the p99 one) is marked so.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from bench.workloads import CELLS

TARGET_SIZE = "100B"  # the value size the throughput targets are judged at
SYSTEMS = (
    ("memcluster", "memcluster\n3 nodes, RF=1"),
    ("redis", "Redis"),
    ("memcached", "memcached"),
    ("memcluster-rf2", "memcluster\nRF=2"),
)
CELL_LABELS = {
    "sync/A": "A 50/50, sync",
    "sync/B": "B 95/5, sync",
    "sync/C": "C read, sync",
    "sync/C-uniform": "C read, uniform, sync",
    "sync/batch-get": "batch get x100, sync",
    "sync/batch-put": "batch put x100, sync",
    "async/A": "A 50/50, 64 in flight",
    "async/B": "B 95/5, 64 in flight",
    "async/C": "C read, 64 in flight",
}


def _dig(data: Any, *path: str) -> Any:
    """``data[path[0]][path[1]]...``, or None where a step is missing."""
    for step in path:
        if not isinstance(data, dict) or step not in data:
            return None
        data = data[step]
    return data


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target with its measured value (None: not measured), whether it is met, and
    whether the machine was disturbed while it was measured (None: not probed)."""
    ratios = _dig(results, "workloads", "sizes", TARGET_SIZE, "ratios", "redis") or {}
    size_noise = _dig(results, "workloads", "sizes", TARGET_SIZE, "noise")
    rows = [
        ("batch get 100 keys vs Redis MGET", ratios.get("sync/batch-get"), ">=", 0.5, size_noise),
        (
            "batch put 100 keys vs Redis pipelined SET",
            ratios.get("sync/batch-put"),
            ">=",
            0.5,
            size_noise,
        ),
        ("unary get (sync client) vs redis-py GET", ratios.get("sync/C"), ">=", 0.5, size_noise),
        (
            "RAM per item, default tiers, vs Redis used_memory",
            _dig(results, "workloads", "default_memory", "memory_ratios", "redis.used_memory"),
            "<=",
            0.5,
            None,  # memory: no noise probe
        ),
        (
            "hot-tier overhead per key vs Redis",
            _dig(results, "tiers", "memory", "ratio", "overhead_rss"),
            "<=",
            1.5,
            None,
        ),
        (
            "client p99 during rebalance vs before",
            _dig(results, "rebalance", "windows", "ratios_to_before", "move", "p99"),
            "<=",
            2.0,
            _dig(results, "rebalance", "noise"),
        ),
    ]
    out = []
    for name, value, op, goal, noise in rows:
        met = None if value is None else (value >= goal if op == ">=" else value <= goal)
        row = {"target": name, "value": value, "goal": f"{op} {goal}x", "met": met}
        out.append({**row, "disturbed": None if noise is None else noise["disturbed"]})
    return out


def render(results: dict[str, Any], console: Console) -> None:
    """Header, targets, then every section that ran."""
    meta = results["meta"]
    machine = meta["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    console.print(
        f"memcluster benchmarks, {meta['date']}, {machine['cpus']} CPUs ({machine['cpu_model']}),"
        f" {machine['memory_gb']} GB RAM, Python {meta['python']}; {versions}"
    )
    if meta["quick"]:
        console.print("[yellow]--quick: a smoke run; its figures are not measurements")
    console.print(_targets_table(results["targets"]))
    workloads = results.get("workloads")
    if workloads is not None:
        _render_workloads(workloads, console)
    if "rebalance" in results:
        if "error" in results["rebalance"]:
            console.print(f"[red]rebalance: failed: {results['rebalance']['error']}")
        else:
            console.print(_rebalance_table(results["rebalance"]))
            _print_noise(results["rebalance"], "the rebalance ratios", console)


def _targets_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"Targets (memcluster/peer; throughput at {TARGET_SIZE} values)")
    table.add_column("target")
    table.add_column("measured", justify="right")
    table.add_column("goal", justify="right")
    table.add_column("met")
    for row in rows:
        value = "not measured" if row["value"] is None else f"{row['value']:.2f}x"
        met = {True: "[green]met", False: "[red]not met", None: "-"}[row["met"]]
        if row.get("disturbed"):
            met += " [yellow](disturbed run)"
        table.add_row(row["target"], value, row["goal"], met)
    return table


def _render_workloads(workloads: dict[str, Any], console: Console) -> None:
    for name, reason in workloads.get("skipped", {}).items():
        console.print(f"[yellow]no {name} comparison: {reason}")
    for label, size in workloads["sizes"].items():
        if "error" in size:
            console.print(f"[red]workloads {label}: failed: {size['error']}")
        else:
            console.print(_workload_table(label, size, workloads["plan"]))
            _print_noise(size, "ratios of this size", console)
    sections = [
        (f"{s.get('label', key)}, {s.get('tiers', 'small')} tiers", s)
        for key, s in workloads["sizes"].items()
    ]
    sections.append(("4KB, default, beyond hot", workloads.get("default_memory", {})))
    sections.append(("4KB, default, fits hot", workloads.get("default_memory_fits_hot", {})))
    console.print(_memory_table(sections))


def _print_noise(section: dict[str, Any], what: str, console: Console) -> None:
    """One line on the machine's noise while ``section`` was measured, if it was probed."""
    noise = section.get("noise")
    if noise is None:
        return
    verdict = f"[red]DISTURBED: {what} may be off" if noise["disturbed"] else "quiet"
    console.print(
        f"machine noise: calibration {noise['calibration_ms_min']:.1f}-"
        f"{noise['calibration_ms_max']:.1f} ms ({noise['slowdown']:.2f}x), on CPU >= "
        f"{noise['on_cpu_pct_min']:.0f}%, steal max {noise['steal_pct_max']:.1f}% — {verdict}"
    )


def _latency(median: dict[str, float]) -> str:
    return " / ".join(f"{median[m] / 1000:.2f}" for m in ("p50_us", "p99_us", "p999_us"))


def _workload_table(label: str, size: dict[str, Any], plan: dict[str, Any]) -> Table:
    cells, ratios = size["cells"], size["ratios"]
    systems = [(name, title) for name, title in SYSTEMS if name in cells]
    shape = size["cluster"]
    hot, warm = shape["tiers"]["hot"]["capacity"], shape["tiers"]["warm"]["capacity"]
    table = Table(
        title=(
            f"Workloads, {size.get('label', label)} JSON values, {size['items']:,} keys, "
            f"{size.get('tiers', 'small')} tiers (memcluster: 3 nodes, RF=1 vs "
            f"single-instance peers; hot {hot} + warm {warm} per node)"
        ),
        caption=(
            f"calls/s (keys/s for batches) over p50 / p99 / p99.9 ms; medians of "
            f"{plan['rounds']} alternating rounds of {plan['cell_seconds']}s; zipfian keys "
            f"(theta 0.99) unless uniform; ratios are memcluster RF=1 / peer of calls/s"
        ),
    )
    table.add_column("workload")
    for _, title in systems:
        table.add_column(title, justify="right")
    peers = [p for p in ("redis", "memcached", "memcluster-rf2") if p in ratios]
    for peer in peers:
        table.add_column(f"/ {peer}", justify="right")
    loads = size["load"]
    table.add_row(
        "load (batches)",
        *[
            f"{loads[name]['items_s']:,.0f} items/s\n{loads[name]['mb_s']:.1f} MB/s"
            for name, _ in systems
        ],
        *[f"{loads['memcluster']['items_s'] / loads[p]['items_s']:.2f}" for p in peers],
    )
    for cell in CELLS:
        if not any(cell.key in measured for measured in cells.values()):
            continue  # not measured at this size
        row = [CELL_LABELS[cell.key]]
        for name, _ in systems:
            result = cells[name].get(cell.key, {})
            if "median" not in result:
                row.append(f"[red]{result.get('error', '-')[:40]}")
                continue
            median = result["median"]
            if "keys_s" in median:
                rate = f"{median['keys_s']:,.0f} keys/s"
            else:
                rate = f"{median['ops_s']:,.0f}/s"
            row.append(f"{rate}\n{_latency(median)}")
        row += [_ratio(ratios[p].get(cell.key)) for p in peers]
        table.add_row(*row)
    return table


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _per_item(memory: dict[str, Any], system: str, measure: str, part: str = "growth") -> str:
    value = _dig(memory, system, "per_item", measure, part)
    return "-" if value is None else f"{value:,.0f}"


def _memory_table(sections: list[tuple[str, dict[str, Any]]]) -> Table:
    table = Table(
        title="Memory per stored item, bytes (growth over the load / items)",
        caption=(
            "memcluster: RSS of the 3 node processes (RF=1; it counts the cold tiers' LMDB pages "
            "the nodes touched too), disk = the cold tiers' files; "
            "ratio = memcluster RSS / Redis used_memory. Small tiers: hot 16MB + warm 32MB per "
            "node. Default tiers (the shipped ones): a dataset several times the hot tiers' "
            "size, and ones that fit them (4KB; 100B, the workloads' second 100B section) "
            "and so stay uncompressed in hot."
        ),
    )
    for column in (
        "dataset",
        "items",
        "key+value",
        "memcluster RSS",
        "(total RSS)",
        "memcluster disk",
        "hot/warm/cold items",
        "Redis used_memory",
        "Redis RSS",
        "memcached bytes",
        "memcached RSS",
        "ratio",
    ):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for label, section in sections:
        memory = section.get("memory")
        if memory is None:
            continue
        tiers = _dig(memory, "memcluster", "after", "tiers") or {}
        split = " / ".join(f"{tiers.get(t, {}).get('items', 0):,}" for t in ("hot", "warm", "cold"))
        ratio = _dig(section, "memory_ratios", "redis.used_memory")
        table.add_row(
            label,
            f"{memory['memcluster']['items']:,}",
            f"{section['data_bytes_per_item']:,.0f}",
            _per_item(memory, "memcluster", "rss"),
            _per_item(memory, "memcluster", "rss", "total"),
            _per_item(memory, "memcluster", "disk"),
            split,
            _per_item(memory, "redis", "used_memory"),
            _per_item(memory, "redis", "rss"),
            _per_item(memory, "memcached", "bytes"),
            _per_item(memory, "memcached", "rss"),
            _ratio(ratio),
        )
    return table


def _rebalance_table(result: dict[str, Any]) -> Table:
    join, failure, windows = result["join"], result["failure"], result["windows"]
    moved, plan = join["moved"], result["plan"]
    ratios = windows["ratios_to_before"]
    table = Table(
        title=(
            f"Rebalance and failure: 3 nodes, RF=2, {plan['megabytes']} MB of ~1 KB JSON "
            f"({result['items']:,} keys); one blocking client running workload B throughout"
        ),
        caption=(
            f"lease {result['cluster']['lease_ttl']}, down_after {plan['down_after']}, "
            f"migration_rate {result['cluster'].get('migration_rate', '8MB (default)')}; "
            "windows: before = the baseline, move = from the new node's ready line to settled"
        ),
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    window = {name: _window_text(w) for name, w in windows.items() if name in _WINDOWS}
    rows = [
        (
            "join: replica copies moved",
            f"{moved['fraction_moved']:.1%} (ideal "
            f"{moved['ideal_fraction']:.0%}); {moved['copies_to_new_node']:,} of "
            f"{moved['copies_moved']:,} to the new node",
        ),
        (
            "join: data moved",
            f"{moved['mb_moved']:.1f} MB (migrations report "
            f"{join['migration_mb_sent']:.1f} MB sent)",
        ),
        (
            "join: add -> settled",
            f"{join['seconds_from_start']:.1f} s from launch, "
            f"{join['seconds_from_ready']:.1f} s from ready",
        ),
        ("client before", window["before"]),
        ("client during the move", window["move"]),
        (
            "during / before",
            f"p50 {ratios['move']['p50']:.2f}x, p99 {ratios['move']['p99']:.2f}x,"
            f" ops/s {ratios['move']['ops_s']:.2f}x",
        ),
        ("kill: SIGKILL -> removed", f"{failure['seconds_to_removal']:.1f} s"),
        (
            "kill: SIGKILL -> RF restored",
            "not verified"
            if not failure["rf_verified"]
            else f"{failure['seconds_to_rf_restored']:.1f} s (verified: every key on 2 live nodes)",
        ),
        ("client until removal", window["failure_to_removal"]),
        ("client until RF restored", window["failure_to_rf_restored"]),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


_WINDOWS = ("before", "move", "failure_to_removal", "failure_to_rf_restored")


def _window_text(window: dict[str, Any]) -> str:
    latency = (
        f"p50 {window['p50_ms']:.2f} ms, p99 {window['p99_ms']:.2f} ms"
        if "p99_ms" in window
        else "no calls"
    )
    return f"{window['ops_s']:,.0f} ops/s, {latency}, {window['errors']} errors"
