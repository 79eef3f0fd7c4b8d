"""End-to-end unary latency: memcluster.client.Client to a real node vs redis-py to Redis.

A node process (``python -m memcluster.cli.main node``) listens on 127.0.0.1 port 0
and announces its address in a JSON line on stdout. One client per system, one call
at a time, 100-byte values. Rounds alternate between the systems (and which one goes
first) so that the machine's noise spreads over both; each round puts a fresh set of
keys, then gets them back (hot-tier hits on the node).
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from bench import timing
from bench.memory import value

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
WARMUP = 100  # unrecorded calls per system and operation (connections, caches)
_REPO = Path(__file__).resolve().parents[1]


Put = Callable[[bytes, bytes], object]
Get = Callable[[bytes], object]


def measure_e2e(
    redis_server: Any | None, ops: int, rounds: int, time_budget: float
) -> dict[str, Any]:
    """Median and tail of put/get latency per system over ``ops`` calls each, in ``rounds``.

    Every round is bounded by its share of ``time_budget``; without ``redis_server`` only
    memcluster is measured.
    """
    from memcluster.client import Client

    per_round = max(ops // rounds, 1)
    with _node() as address, Client(address, timeout=5.0) as client:
        systems: dict[str, tuple[Put, Get]] = {"memcluster": (client.put, client.get)}
        redis_client = None
        if redis_server is not None:
            redis_client = redis_server.client()
            redis_client.flushall()
            systems["redis"] = (redis_client.set, redis_client.get)
        try:
            samples = _rounds(systems, per_round, rounds, time_budget)
        finally:
            if redis_client is not None:
                redis_client.close()
    result: dict[str, Any] = {
        name: {op: timing.summary(s) for op, s in ops_.items()} for name, ops_ in samples.items()
    }
    if "redis" in result:
        result["ratio_p50"] = {
            op: result["memcluster"][op]["p50_us"] / result["redis"][op]["p50_us"]
            for op in ("put", "get")
        }
    return result


def _rounds(
    systems: dict[str, tuple[Put, Get]],
    per_round: int,
    rounds: int,
    time_budget: float,
) -> dict[str, dict[str, list[int]]]:
    samples: dict[str, dict[str, list[int]]] = {n: {"put": [], "get": []} for n in systems}
    for put, get in systems.values():
        warmup = [b"warmup:%d" % i for i in range(WARMUP)]
        timing.sample(_putter(put, value(0)), warmup, time_budget / rounds)
        timing.sample(get, warmup, time_budget / rounds)
    budget = time_budget / rounds / 2 / len(systems)  # per round, operation and system
    order = list(systems)
    for r in range(rounds):
        keys = [b"e2e:%d:%d" % (r, i) for i in range(per_round)]
        for name in order if r % 2 == 0 else reversed(order):
            put, get = systems[name]
            puts = timing.sample(_putter(put, value(r)), keys, budget)
            samples[name]["put"] += puts
            samples[name]["get"] += timing.sample(get, keys[: len(puts)], budget)
    return samples


def _putter(put: Put, payload: bytes) -> Get:
    """``put`` with the value fixed, in the one-argument shape timing.sample calls."""
    return lambda key: put(key, payload)


@contextmanager
def _node() -> Iterator[str]:
    """A node process in a temporary directory; yields its address, always stops it."""
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp:
        config = {
            "server": {"listen": "127.0.0.1:0", "metrics_listen": "", "grace_period": "5s"},
            "memory": {
                "tiers": {"cold": {"path": str(Path(tmp) / "cold")}},
                "pressure": {"enabled": False},
            },
        }
        path = Path(tmp) / "node.yaml"
        path.write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "memcluster.cli.main", "node", "--config", str(path)]
        with open(Path(tmp) / "node.log", "wb") as log:
            process = subprocess.Popen(
                [*command, "--log-level", "warning"],
                cwd=_REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
            try:
                yield _ready_address(process)
            finally:
                process.terminate()
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(STOP_TIMEOUT)
                assert process.stdout is not None
                process.stdout.close()


def _ready_address(process: subprocess.Popen[bytes]) -> str:
    """The address in the node's ``{"event": "ready"}`` line, waiting READY_TIMEOUT at most."""
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                break
            line = process.stdout.readline()
            if not line:
                break
            try:
                event = json.loads(line)
            except ValueError:
                continue  # not the node's JSON: keep waiting
            if isinstance(event, dict) and event.get("event") == "ready":
                address: str = event["address"]
                if not address.startswith("127.0.0.1:"):
                    raise RuntimeError(f"the node listens on {address}, not on loopback")
                return address
    raise RuntimeError(f"the node printed no ready line within {READY_TIMEOUT:.0f}s")
