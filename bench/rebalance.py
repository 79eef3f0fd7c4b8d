"""Rebalance and failure: a node joins a loaded cluster, then one is SIGKILLed.

A 3-node RF=2 cluster (the workload benchmark's small tiers: hot 16MB + warm 32MB
per node, so most of the data sits compressed in warm and cold) is loaded with
``megabytes`` of ~1 KB JSON values. A background thread then runs YCSB workload B
(95% reads, 5% updates, zipfian keys) with one blocking client, one call at a time,
recording every call's latency and outcome. Meanwhile:

1. baseline: ``baseline_seconds`` of load alone;
2. join: a 4th node starts; the cluster moves data until it has settled (every node
   UP, every migration done). Per-node holdings before and after (asked over
   ``Peer.Fetch`` for every key) give the share of replica copies that moved (ideal:
   the new node's 1/4 share, nothing else), and the bytes moved;
3. failure: one of the original nodes is SIGKILLed. Measured: the time until the
   coordinator removes it from the topology (its lease lapses, then ``down_after``),
   and until the replication factor is restored (settled again, then verified: every
   key held by 2 live nodes).

Client p50/p99 in each window are compared with the baseline; the per-second
timeline (ops/s, errors, p50, p99) goes into the results and a PNG plot. The machine's
noise (``bench.noise``) is probed before the background load starts and once the
cluster has stopped (a calibration holds the GIL the measured client needs, and the
nodes' own work after the kill is not another tenant's): the second probe's steal
covers every window.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console

from bench import dataset, noise, timing, ycsb
from bench.cluster import SMALL_TIERS, cluster_config, holdings, local_cluster
from bench.systems import Memcluster
from bench.workloads import POOL_SEED, SizeSpec, load, make_dataset
from memcluster.cli.local import LocalCluster, is_settled
from memcluster.client.admin import AdminClient
from memcluster.wire import coordinator_pb2

NEW_NODE = "n4"
VICTIM = "n1"
POLL_INTERVAL = 0.2  # seconds between looks at the coordinator's status
RF = 2
LOAD_OPS = 200_000  # pre-drawn background operations, cycled through
MAX_LOAD_OPS = 10_000_000  # the background loop's count bound
MAX_CHECKS = 30  # replication-factor checks after a failure (one a second at most)


@dataclass(frozen=True)
class RebalancePlan:
    """How much the rebalance benchmark does; every wait is bounded."""

    megabytes: int  # raw value bytes loaded (each stored RF times)
    pool: int  # distinct values, assigned to keys round-robin
    baseline_seconds: float
    quiet_seconds: float  # load alone between the phases
    settle_timeout: float  # for the join, the removal and the restore, each
    down_after: str  # how long a node may miss its lease before it is removed
    load_seconds: float  # bound on loading the dataset
    migration_rate: str | None = None  # per-node migration throttle; None: the node default


FULL = RebalancePlan(
    megabytes=128,
    pool=512,
    baseline_seconds=10.0,
    quiet_seconds=4.0,
    settle_timeout=180.0,
    down_after="5s",
    load_seconds=120.0,
)
QUICK = RebalancePlan(
    megabytes=4,
    pool=128,
    baseline_seconds=2.0,
    quiet_seconds=1.0,
    settle_timeout=60.0,
    down_after="2s",
    load_seconds=20.0,
)


class BackgroundLoad:
    """A thread running pre-drawn operations in a loop; every call's time and outcome."""

    def __init__(self, addresses: list[str], ops: list[tuple[bytes, bytes | None]]) -> None:
        self.addresses = addresses
        self.ops = ops
        #: (seconds since ``t0`` at the call's end, latency in ns, succeeded)
        self.records: list[tuple[float, int, bool]] = []
        self.t0 = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="background-load", daemon=True)
        self._failure: BaseException | None = None

    def start(self, max_seconds: float) -> float:
        """Start the thread (it stops by itself after ``max_seconds``); returns ``t0``."""
        self._max_seconds = max_seconds
        self.t0 = time.monotonic()
        self._thread.start()
        return self.t0

    def stop(self) -> None:
        """Stop the thread and wait for it (it ends after its current call)."""
        self._stop.set()
        self._thread.join(60.0)
        if self._thread.is_alive():
            raise TimeoutError("the background load did not stop within 60s")
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        from memcluster.client import Client

        try:
            with Client(self.addresses) as client:  # default timeout, retries, consistency
                self._loop(client.get, client.put)
        except BaseException as exc:
            self._failure = exc

    def _loop(self, get: Callable[[bytes], object], put: Callable[[bytes, bytes], object]) -> None:
        clock, ns = time.monotonic, time.perf_counter_ns
        deadline = self.t0 + self._max_seconds
        records, ops = self.records, self.ops
        for n in range(MAX_LOAD_OPS):
            key, value = ops[n % len(ops)]
            began = ns()
            try:
                if value is None:
                    get(key)
                else:
                    put(key, value)
                ok = True
            except Exception:  # the client's errors: counted, the load goes on
                ok = False
            ended = ns()
            now = clock()
            records.append((now - self.t0, ended - began, ok))
            if self._stop.is_set() or now > deadline:
                return


def measure_rebalance(plan: RebalancePlan, progress: Console) -> dict[str, Any]:
    """Load, join a node, kill a node; figures, windows and a per-second timeline."""
    values = dataset.values("medium", plan.pool, POOL_SEED)
    items = math.ceil(plan.megabytes * 1e6 / (sum(map(len, values)) / len(values)))
    data = make_dataset(SizeSpec("1KB", "medium", items), plan.pool)
    result: dict[str, Any] = {"plan": asdict(plan), "items": items}
    meter = noise.Meter()
    overrides = dict(SMALL_TIERS)
    if plan.migration_rate is not None:
        overrides["cluster.migration_rate"] = plan.migration_rate
    with local_cluster(
        nodes=3, replication_factor=RF, tiers=overrides, down_after=plan.down_after
    ) as cluster:
        result["cluster"] = cluster_config(cluster)
        progress.print(f"  load {plan.megabytes} MB ({items:,} values of ~1 KB), RF={RF}")
        result["load"] = load(Memcluster(cluster), data, plan.load_seconds)
        keys = data.keys[: result["load"]["items"]]
        progress.print("  holdings before the join")
        before = holdings(cluster, keys)
        ops = data.operations(
            ycsb.WORKLOADS["B"], ycsb.chooser("zipfian", len(keys)), LOAD_OPS, "rebalance"
        )
        background = BackgroundLoad(cluster.node_addresses(), ops)
        meter.probe()
        background.start(max_seconds=plan.baseline_seconds + 4 * plan.settle_timeout + 120)
        scenario = _Scenario(cluster, plan, keys, background.t0, progress)
        try:
            time.sleep(plan.baseline_seconds)
            result["join"] = scenario.join()
            time.sleep(plan.quiet_seconds)
            result["join"]["moved"] = _moved(before, scenario.holdings("after the join"))
            time.sleep(plan.quiet_seconds)
            result["failure"] = scenario.failure()
            time.sleep(plan.quiet_seconds)
        finally:
            background.stop()
    # After the cluster stopped: its nodes, still restoring the replication factor,
    # would count as another process taking the CPU.
    meter.probe()
    events = scenario.events
    result["events"] = events
    result["windows"] = _windows(background.records, events)
    result["timeline"] = _timeline(background.records)
    result["noise"] = meter.result()
    return result


class _Scenario:
    """The join and the failure, with the time of each event (seconds since ``t0``)."""

    def __init__(
        self,
        cluster: LocalCluster,
        plan: RebalancePlan,
        keys: list[bytes],
        t0: float,
        progress: Console,
    ) -> None:
        self.cluster = cluster
        self.plan = plan
        self.keys = keys
        self.t0 = t0
        self.progress = progress
        self.events: dict[str, float] = {}

    def mark(self, event: str) -> float:
        """Note that ``event`` happens now; returns its time."""
        self.events[event] = time.monotonic() - self.t0
        return self.events[event]

    def holdings(self, when: str) -> dict[bytes, dict[str, int]]:
        """Per-key holdings (its start and end marked: it competes with the load)."""
        self.progress.print(f"  holdings {when}")
        label = when.replace(" ", "_")
        self.mark(f"holdings_{label}_start")
        found = holdings(self.cluster, self.keys)
        self.mark(f"holdings_{label}_end")
        return found

    def join(self) -> dict[str, Any]:
        """Start the new node and wait until the cluster has settled with it."""
        epoch = self.cluster.status().topology.epoch
        self.progress.print(f"  join {NEW_NODE}")
        start = self.mark("join")
        self.cluster.add_node(NEW_NODE, wait=False)
        ready = self.mark("join_ready")
        sent = self._wait(
            lambda status: is_settled(status, nodes=4, required=[NEW_NODE]),
            f"{NEW_NODE} to join and the cluster to settle",
            epoch,
        )
        settled = self.mark("join_settled")
        return {
            "seconds_from_start": settled - start,
            "seconds_from_ready": settled - ready,
            **_sent(sent),
        }

    def failure(self) -> dict[str, Any]:
        """SIGKILL a node; wait for its removal, the settle, and verify the RF."""
        epoch = self.cluster.status().topology.epoch
        self.progress.print(f"  SIGKILL {VICTIM}")
        killed = self.mark("kill")
        self.cluster.kill_node(VICTIM)

        def gone(status: coordinator_pb2.ClusterStatus) -> bool:
            return VICTIM not in {n.id for n in status.topology.nodes}

        self._wait(gone, f"{VICTIM} to leave the topology", epoch)
        removed = self.mark("removed")
        sent = self._wait(is_settled, "the cluster to settle", epoch)
        settled = self.mark("kill_settled")
        restored: float | None = None
        under = checks = 0
        deadline = time.monotonic() + self.plan.settle_timeout
        for checks in range(1, MAX_CHECKS + 1):
            began = time.monotonic() - self.t0
            held = self.holdings(f"check {checks}")
            under = sum(len(h) < RF for h in held.values())
            if under == 0:
                # Verified by the first check: restored when the cluster settled.
                restored = settled if checks == 1 else began
                break
            if time.monotonic() > deadline:
                break
            time.sleep(1.0)
        # Unverified: the windows end at the last check.
        self.events["rf_restored"] = restored if restored is not None else began
        return {
            "seconds_to_removal": removed - killed,
            "seconds_to_rf_restored": None if restored is None else restored - killed,
            "rf_verified": restored is not None,
            "rf_checks": checks,
            "under_replicated_keys": under,
            **_sent(sent),
        }

    def _wait(
        self,
        predicate: Callable[[coordinator_pb2.ClusterStatus], bool],
        what: str,
        since_epoch: int,
    ) -> dict[tuple[str, int], tuple[int, int]]:
        """Poll the cluster's status until ``predicate`` holds; meanwhile note migrations of
        epochs after ``since_epoch``. One status call per poll, over one channel: the
        measured client shares this process.

        Returns (node, epoch) -> (items sent, bytes sent), the latest seen for each.
        """
        sent: dict[tuple[str, int], tuple[int, int]] = {}
        timeout = self.plan.settle_timeout
        deadline = time.monotonic() + timeout
        with AdminClient(self.cluster.coordinator_address()) as admin:
            for _ in range(int(timeout / POLL_INTERVAL) + 1):
                try:
                    status = admin.status()
                except Exception:  # the coordinator may be busy or electing: look again
                    status = None
                if status is not None:
                    for m in status.migrations:
                        if m.epoch > since_epoch:
                            sent[m.node_id, m.epoch] = (m.items_sent, m.bytes_sent)
                    if predicate(status):
                        return sent
                if time.monotonic() > deadline:
                    break
                time.sleep(POLL_INTERVAL)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _sent(sent: dict[tuple[str, int], tuple[int, int]]) -> dict[str, Any]:
    """Items and MB the migrations reported sending (key + value bytes), in total and each."""
    return {
        "migration_items_sent": sum(items for items, _ in sent.values()),
        "migration_mb_sent": sum(size for _, size in sent.values()) / 1e6,
        "migrations": [
            {"node": node, "epoch": epoch, "items_sent": items, "bytes_sent": size}
            for (node, epoch), (items, size) in sorted(sent.items())
        ],
    }


def _moved(
    before: dict[bytes, dict[str, int]], after: dict[bytes, dict[str, int]]
) -> dict[str, Any]:
    """What the join moved, from per-key holdings before and after."""
    copies_before = {(k, n) for k, held in before.items() for n in held}
    copies_after = {(k, n) for k, held in after.items() for n in held}
    new = copies_after - copies_before
    nodes = sorted({n for _, n in copies_after})
    per_node = {n: sum(1 for _, m in copies_after if m == n) for n in nodes}
    return {
        "keys": len(after),
        "copies_before": len(copies_before),
        "copies_after": len(copies_after),
        "copies_moved": len(new),
        "fraction_moved": len(new) / max(len(copies_after), 1),
        "ideal_fraction": 1 / len(nodes) if nodes else 0.0,
        "copies_to_new_node": sum(1 for _, n in new if n == NEW_NODE),
        "copies_dropped": len(copies_before - copies_after),
        "keys_with_new_holders": sum(1 for k in after if set(after[k]) - set(before.get(k, {}))),
        "mb_moved": sum(after[k][n] + len(k) for k, n in new) / 1e6,
        "share_per_node": {n: c / max(len(copies_after), 1) for n, c in per_node.items()},
        "under_replicated_keys": sum(len(held) < RF for held in after.values()),
    }


def _window(records: list[tuple[float, int, bool]], start: float, end: float) -> dict[str, Any]:
    """Throughput, errors and latency percentiles (ms) of the calls ending in [start, end)."""
    inside = [(latency, ok) for t, latency, ok in records if start <= t < end]
    seconds = max(end - start, 1e-9)
    out: dict[str, Any] = {
        "start": start,
        "end": end,
        "ops": len(inside),
        "ops_s": len(inside) / seconds,
        "errors": sum(1 for _, ok in inside if not ok),
    }
    if inside:
        ordered = sorted(latency for latency, _ in inside)
        for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99), ("p999_ms", 0.999)):
            out[name] = timing.percentile(ordered, q) / 1000
    return out


def _windows(records: list[tuple[float, int, bool]], events: dict[str, float]) -> dict[str, Any]:
    """The baseline, the move and the failure windows, and their ratios to the baseline."""
    windows = {
        "before": _window(records, 1.0, events["join"]),
        "join_from_start": _window(records, events["join"], events["join_settled"]),
        "move": _window(records, events["join_ready"], events["join_settled"]),
        "failure_to_removal": _window(records, events["kill"], events["removed"]),
        "failure_to_rf_restored": _window(records, events["kill"], events["rf_restored"]),
    }
    base = windows["before"]
    ratios = {}
    for name, window in windows.items():
        if name != "before" and "p99_ms" in window and "p99_ms" in base:
            ratios[name] = {
                "p50": window["p50_ms"] / base["p50_ms"],
                "p99": window["p99_ms"] / base["p99_ms"],
                "ops_s": window["ops_s"] / base["ops_s"],
            }
    return {**windows, "ratios_to_before": ratios}


def _timeline(records: list[tuple[float, int, bool]]) -> list[dict[str, Any]]:
    """Per second since the load started: ops, errors, p50 and p99 (ms)."""
    seconds: dict[int, list[tuple[int, bool]]] = {}
    for t, latency, ok in records:
        seconds.setdefault(int(t), []).append((latency, ok))
    timeline = []
    for second in range(max(seconds, default=-1) + 1):
        calls = seconds.get(second, [])
        ordered = sorted(latency for latency, _ in calls)
        timeline.append(
            {
                "t": second,
                "ops": len(calls),
                "errors": sum(1 for _, ok in calls if not ok),
                "p50_ms": timing.percentile(ordered, 0.5) / 1000 if ordered else None,
                "p99_ms": timing.percentile(ordered, 0.99) / 1000 if ordered else None,
                "max_ms": ordered[-1] / 1e6 if ordered else None,
            }
        )
    return timeline
