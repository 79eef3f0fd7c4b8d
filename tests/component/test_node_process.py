"""One real node process, driven over gRPC by the client library and the CLI."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from memcluster.cli.local import wait_for
from memcluster.client import AsyncClient, Client
from memcluster.common.errors import InvalidRequest, Timeout
from tests.harness import NodeFactory


def doc(i: int) -> bytes:
    digest = hashlib.sha256(str(i).encode()).hexdigest()
    return json.dumps(
        {"id": i, "user": f"user{i}", "email": f"u{i}@example.com", "key": digest * 4}
    ).encode()


def test_basic_operations(nodes: NodeFactory) -> None:
    node = nodes.start()
    with Client(node.address) as c:
        version = c.put(b"k", b"v1", ttl=3600, priority=5)
        assert version > 0
        entry = c.get_entry(b"k")
        assert entry is not None and entry.value == b"v1" and entry.priority == 5
        assert entry.tier == "hot" and entry.expires_at is not None
        assert c.touch(b"k", ttl=None)
        assert c.get_entry(b"k").expires_at is None  # type: ignore[union-attr]
        c.put_many({f"m{i}".encode(): f"v{i}".encode() for i in range(500)})
        got = c.get_many([f"m{i}".encode() for i in range(500)] + [b"absent"])
        assert len(got) == 500 and got[b"m7"] == b"v7"
        assert c.delete(b"k") and not c.delete(b"k")
        assert c.get(b"k") is None
        assert c.delete_many([b"m1", b"m2", b"nope"]) == 2
        topo = c.topology()
        assert [n.address for n in topo.nodes] == [node.address]


@pytest.mark.parametrize("loop", ["auto", "asyncio"])
def test_the_node_runs_on_the_event_loop_its_config_chooses(nodes: NodeFactory, loop: str) -> None:
    pytest.importorskip("uvloop", reason="uvloop has no build for this platform")
    node = nodes.start(**{"server.event_loop": loop})
    assert node.ready["event_loop"] == ("uvloop" if loop == "auto" else "asyncio")
    with Client(node.address) as c:  # frames and gRPC both serve on either loop
        c.put_many({f"k{i}".encode(): b"v" * 100 for i in range(200)})
        assert c.get_many([f"k{i}".encode() for i in range(200)])[b"k7"] == b"v" * 100
        assert c.stats()["node_id"]


async def test_async_client(nodes: NodeFactory) -> None:
    node = nodes.start()
    async with AsyncClient(node.address) as c:
        await c.put(b"a", b"1")
        assert await c.get(b"a") == b"1"
        await c.put_many([(b"x", b"1"), (b"y", b"2")])
        assert await c.get_many([b"x", b"y"]) == {b"x": b"1", b"y": b"2"}
        assert await c.delete(b"a")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.put(b"", b"v"), "must not be empty"),
        (lambda c: c.put(b"k" * 2000, b"v"), "limits.max_key_bytes"),
        (lambda c: c.put(b"k", b"v" * (2 * 1024 * 1024)), "limits.max_value_bytes"),
        (lambda c: c.put(b"k", b"v", ttl=-1), "ttl"),
        (lambda c: c.put(b"k", b"v", priority=10**6), "priority"),
    ],
)
def test_bad_input_is_refused_and_the_node_keeps_serving(nodes: NodeFactory, call, message) -> None:  # type: ignore[no-untyped-def]
    node = nodes.start("n1", **{"limits.max_value_bytes": "1MiB"})
    with Client(node.address) as c:
        with pytest.raises(InvalidRequest, match=message):
            call(c)
        c.put(b"still", b"serving")
        assert c.get(b"still") == b"serving"


def test_bad_batch_applies_nothing(nodes: NodeFactory) -> None:
    node = nodes.start()
    channel = grpc.insecure_channel(node.address)
    from memcluster.wire import node_pb2, node_pb2_grpc

    stub = node_pb2_grpc.NodeStub(channel)
    items = [node_pb2.PutItem(key=b"good1", value=b"v"), node_pb2.PutItem(key=b"", value=b"v")]
    with pytest.raises(grpc.RpcError) as info:
        stub.PutMany(node_pb2.PutManyRequest(items=items))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "items[1]" in info.value.details()
    assert not stub.Get(node_pb2.GetRequest(key=b"good1")).entry.found
    channel.close()


def test_tiers_demote_promote_and_report(nodes: NodeFactory) -> None:
    node = nodes.start()
    with Client(node.address) as c:
        keys = [f"doc:{i}".encode() for i in range(1000)]  # ~400 KB, far above hot + warm
        c.put_many({k: doc(i) for i, k in enumerate(keys)})
        stats = c.stats()
        tiers = stats["tiers"]
        assert tiers["hot"]["bytes"] <= tiers["hot"]["capacity"]
        assert tiers["warm"]["items"] > 0 and tiers["cold"]["items"] > 0
        assert sum(t["items"] for t in tiers.values()) == 1000
        assert tiers["hot"]["demotions"] > 0
        # Reading an old key serves it from below; the first read leaves it there, the
        # second promotes it (memory.promote_after: 2, the default), once that read is
        # answered and before the node reads on.
        for read in range(2):
            entry = c.get_entry(keys[0])
            assert entry is not None and entry.value == doc(0) and entry.tier == "cold", read
            if read == 0:
                assert c.stats()["tiers"]["cold"]["promotions"] == 0
        assert c.get_entry(keys[0]).tier == "hot"  # type: ignore[union-attr]
        assert c.stats()["tiers"]["cold"]["promotions"] == 1
        assert c.get_many(keys) == {k: doc(i) for i, k in enumerate(keys)}

    body = (
        urllib.request.urlopen(f"http://{node.ready['metrics']}/metrics", timeout=10)
        .read()
        .decode()
    )
    assert "memcluster_tier_items{node=" in body
    for name in (
        "memcluster_tier_hits_total",
        "memcluster_tier_demotions_total",
        "memcluster_gc_pause_seconds_total",
        "memcluster_oom_near_misses_total",
        "memcluster_memory_churn_bytes_total",
        "memcluster_rss_bytes",
    ):
        assert name in body, name


def test_expiry_removes_items_in_the_background(nodes: NodeFactory) -> None:
    node = nodes.start()
    with Client(node.address) as c:
        c.put_many({f"t{i}".encode(): b"v" for i in range(50)}, ttl=0.5)
        wait_for(lambda: c.stats()["tiers"]["hot"]["expirations"] == 50, 15, "background expiry")
        assert c.get_many([f"t{i}".encode() for i in range(50)]) == {}


def test_health_and_reflection(nodes: NodeFactory) -> None:
    node = nodes.start()
    with grpc.insecure_channel(node.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "memcluster.v1.Node"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for r in replies for s in r.list_services_response.service}
        assert {
            "memcluster.v1.Node",
            "memcluster.v1.Peer",
            "memcluster.v1.TopologyService",
        } <= names


def test_sigterm_flushes_ram_tiers_and_restart_serves_everything(nodes: NodeFactory) -> None:
    node = nodes.start()
    data = {f"k{i}".encode(): doc(i) for i in range(300)}
    with Client(node.address) as c:
        c.put_many(data)
        assert c.stats()["tiers"]["hot"]["items"] > 0
    node.signal(signal.SIGTERM)
    assert node.wait() == 0
    again = nodes.start()
    with Client(again.address) as c:
        assert c.stats()["tiers"]["cold"]["items"] == 300
        assert c.get_many(list(data)) == data


def test_kill_9_restart_serves_cold_data(nodes: NodeFactory) -> None:
    node = nodes.start("n1", **{"memory.promote_on_read": False})
    data = {f"k{i}".encode(): doc(i) for i in range(1000)}
    with Client(node.address) as c:
        c.put_many(data)
        in_cold = {k for k in data if c.get_entry(k).tier == "cold"}  # type: ignore[union-attr]
    assert len(in_cold) > 100
    node.kill()
    again = nodes.start("n1")
    with Client(again.address) as c:
        assert c.get_many(list(in_cold)) == {k: data[k] for k in in_cold}


def test_cli_round_trip(nodes: NodeFactory) -> None:
    node = nodes.start()

    def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "memcluster.cli.main", *args],
            input=stdin,
            capture_output=True,
            check=False,
            timeout=60,
        )

    assert cli("put", "-a", node.address, "greeting", "hello").returncode == 0
    got = cli("get", "-a", node.address, "greeting")
    assert got.returncode == 0 and got.stdout.strip() == b"hello"
    assert cli("put", "-a", node.address, "blob", "-", stdin=b"\x00\x01binary").returncode == 0
    assert cli("get", "-a", node.address, "blob").stdout == b"\x00\x01binary"
    missing = cli("get", "-a", node.address, "nope")
    assert missing.returncode == 3 and b"not found" in missing.stderr
    stats = cli("stats", "-a", node.address, "--json")
    assert json.loads(stats.stdout)["tiers"]["hot"]["items"] == 2
    table = cli("stats", "-a", node.address)
    assert b"hot" in table.stdout and b"cold" in table.stdout
    bad = cli("put", "-a", node.address, "k", "v", "--ttl", "-5")
    assert bad.returncode == 1 and b"ttl" in bad.stderr


def test_bad_config_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.yaml"
    path.write_text(
        "memory:\n  tiers:\n    warm: {compression_level: 30}\n    hot: {capcity: 5GB}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "memcluster.cli.main", "node", "--config", str(path)],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "memory.tiers.warm.compression_level" in result.stderr
    assert "capcity" in result.stderr and "Traceback" not in result.stderr


def test_grpc_calls_time_out_and_recover(nodes: NodeFactory) -> None:
    node = nodes.start()
    with Client(node.address, timeout=0.5, max_retries=0, transport="grpc") as c:
        c.put(b"k", b"v")
        node.signal(signal.SIGSTOP)
        try:
            with pytest.raises(Timeout):
                c.get(b"k")
        finally:
            node.signal(signal.SIGCONT)
        assert c.get(b"k") == b"v"
        with pytest.raises(InvalidRequest, match="max_key_bytes"):
            c.put(b"k" * 2000, b"v")  # refused by the node
        assert c.get(b"k") == b"v"


def test_get_many_answers_entries_or_values_only(nodes: NodeFactory) -> None:
    node = nodes.start()
    from memcluster.wire import node_pb2, node_pb2_grpc

    with grpc.insecure_channel(node.address) as channel:
        stub = node_pb2_grpc.NodeStub(channel)
        stub.Put(node_pb2.PutRequest(item=node_pb2.PutItem(key=b"a", value=b"1", priority=3)))
        full = stub.GetMany(node_pb2.GetManyRequest(keys=[b"a", b"zz"]))
        assert [e.found for e in full.entries] == [True, False]
        assert full.entries[0].value == b"1" and full.entries[0].priority == 3
        assert not full.values
        lean = stub.GetMany(node_pb2.GetManyRequest(keys=[b"a", b"zz"], values_only=True))
        assert list(lean.found) == [True, False] and list(lean.values) == [b"1", b""]
        assert not lean.entries and lean.epoch == full.epoch > 0
        every = stub.GetMany(node_pb2.GetManyRequest(keys=[b"a", b"a"], values_only=True))
        assert list(every.found) == [True, True] and list(every.values) == [b"1", b"1"]
        # Asked to, the node leaves the flags out when every key was found, only then.
        sparse = node_pb2.GetManyRequest(keys=[b"a", b"a"], values_only=True)
        sparse.found_only_on_miss = True
        hits = stub.GetMany(sparse)
        assert not hits.found and list(hits.values) == [b"1", b"1"]
        sparse.keys.append(b"zz")
        miss = stub.GetMany(sparse)
        assert list(miss.found) == [True, True, False] and list(miss.values) == [b"1", b"1", b""]
