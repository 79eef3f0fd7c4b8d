"""memcluster's benchmarks, one entry point (see bench/README.md).

    python -m bench [all|workloads|rebalance|tiers|memory] [--quick] [--out FILE]

- ``workloads``: YCSB-style workloads on a 3-node memcluster vs a private Redis and a
  private memcached, at 100 B, 4 KB and 64 KB values, plus memory per item;
- ``rebalance``: a node joins a loaded RF=2 cluster, then one is SIGKILLed;
- ``tiers``: one node's tiers side by side with Redis (``bench.tiers``);
- ``memory``: only the default-tier memory checks of ``workloads`` (a few minutes);
- ``all`` (the default): the three, then the issue's targets judged met or not.

Everything measured is started here (127.0.0.1 only) and stopped again, on errors
and on Ctrl-C or SIGTERM too. Writes every figure with the environment to a JSON
file (default ``bench/results/<date>.json``, ``<date>-quick.json`` with ``--quick``),
PNG plots beside it, and prints tables.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
from rich.console import Console

from bench import plots, rebalance, report, tiers, workloads

RESULTS = Path("bench/results")
COMMANDS = ("all", "workloads", "rebalance", "tiers", "memory")
_PACKAGES = ("memcluster", "grpcio", "redis", "pymemcache", "zstandard", "lmdb", "matplotlib")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the chosen sections, write JSON and plots, print tables."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="all", choices=COMMANDS)
    parser.add_argument("--quick", action="store_true", help="a smoke run: seconds, not minutes")
    parser.add_argument("--out", type=Path, help="JSON file (default bench/results/<date>.json)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # clean up as on Ctrl-C
    now = datetime.datetime.now(datetime.UTC)
    out = args.out or RESULTS / f"{now:%Y-%m-%d}{'-quick' if args.quick else ''}.json"
    progress = Console(stderr=True)
    started = time.monotonic()
    results: dict[str, Any] = {"meta": _meta(now, args.command, args.quick)}
    try:
        for name, measure in _sections(args.command, args.quick, progress):
            progress.rule(name)
            try:
                results[name] = measure()
            except Exception as exc:
                progress.print_exception()
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    except KeyboardInterrupt:
        progress.print("[red]interrupted: every process the bench started is stopped")
        return 130
    results["targets"] = report.targets(results)
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    written = [out, *_plots(results, out, progress)]
    console = Console(width=None if sys.stdout.isatty() else 200)
    if "tiers" in results and "error" not in results["tiers"]:
        tiers.render(results["tiers"], console)
    report.render(results, console)
    progress.print(f"wrote {', '.join(map(str, written))} in {results['meta']['seconds']}s")
    failed = [n for n in ("workloads", "rebalance", "tiers") if "error" in results.get(n, {})]
    return 1 if failed else 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _sections(
    command: str, quick: bool, progress: Console
) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """The (name, measure) pairs ``command`` runs, at full or quick size."""
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "tiers": lambda: tiers.run(tiers.QUICK if quick else tiers.FULL, progress),
        "workloads": lambda: workloads.measure_workloads(
            workloads.QUICK if quick else workloads.FULL, progress
        ),
        "rebalance": lambda: rebalance.measure_rebalance(
            rebalance.QUICK if quick else rebalance.FULL, progress
        ),
    }
    if command == "memory":  # recorded as a workloads section holding only these checks
        plan = workloads.QUICK if quick else workloads.FULL
        return [("workloads", lambda: workloads.measure_memory(plan, progress))]
    names = list(sections) if command == "all" else [command]
    return [(name, sections[name]) for name in names]


def _plots(results: dict[str, Any], out: Path, progress: Console) -> list[Path]:
    """The PNG plots the results allow, beside ``out``; the paths written."""
    if not plots.available():
        progress.print("[yellow]no plots: matplotlib not installed (scripts/bench_env.sh)")
        return []
    written: list[Path] = []

    def path(kind: str) -> Path:
        return out.with_name(f"{out.stem}-{kind}.png")

    sizes = results.get("workloads", {}).get("sizes", {})
    if plots.latency(sizes, report.TARGET_SIZE, path("latency")):
        written.append(path("latency"))
    if plots.throughput(sizes, path("throughput")):
        written.append(path("throughput"))
    if "timeline" in results.get("rebalance", {}):
        plots.rebalance(results["rebalance"], path("rebalance"))
        written.append(path("rebalance"))
    return written


def _meta(now: datetime.datetime, command: str, quick: bool) -> dict[str, Any]:
    """Date, machine, Python and the versions of what is measured."""
    versions = {name: _version(name) for name in _PACKAGES}
    versions["redis-server"] = _server_version(["redis-server", "--version"], "v=")
    versions["memcached"] = _server_version(["memcached", "-V"], "memcached ")
    return {
        "date": now.isoformat(timespec="seconds"),
        "command": command,
        "quick": quick,
        "machine": {
            "cpus": psutil.cpu_count(),
            "cpu_model": _cpu_model(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
        },
        "python": platform.python_version(),
        "versions": {k: v for k, v in versions.items() if v is not None},
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _server_version(argv: list[str], marker: str) -> str | None:
    """The version a server binary prints after ``marker`` (None when not installed)."""
    if shutil.which(argv[0]) is None:
        return None
    printed = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    _, found, rest = printed.stdout.partition(marker)
    return rest.split()[0] if found and rest.split() else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
