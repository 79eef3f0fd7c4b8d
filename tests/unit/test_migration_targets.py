"""Rebalancing: who sends a key where (``_targets``), and the Migrator end to end with fakes.

The property test models one topology change as the Migrator sees it: "alive" is every
node of the new topology not marked DOWN (ring members and DRAINING nodes); old nodes
that left the topology (or are listed DOWN) are dead. Every alive node holds the keys
it owned under the previous placement.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memcluster.common.clock import ManualClock
from memcluster.common.config import NodeConfig
from memcluster.common.placement import Placement
from memcluster.common.topology import NodeInfo, NodeState, Topology
from memcluster.node import migration
from memcluster.node.loops import LagMonitor, RunQueueWait
from memcluster.node.migration import Migrator, Pacer, Progress, _targets
from memcluster.node.peers import PeerPool
from memcluster.node.store import TieredStore
from memcluster.wire import peer_pb2

NODES = [f"n{i}" for i in range(8)]
PARTITIONS = 16


# -- _targets: examples ------------------------------------------------------------

ALIVE = {"a", "b", "c", "d"}


@pytest.mark.parametrize(
    ("me", "new", "old", "alive", "expected"),
    [
        pytest.param("a", ("a", "c"), ("a", "b"), ALIVE, ["c"], id="first-old-owner-sends"),
        pytest.param("b", ("a", "c"), ("a", "b"), ALIVE, [], id="leaver-not-sender-quiet"),
        pytest.param("a", ("c", "d"), ("a", "b"), ALIVE, ["c", "d"], id="both-leave-sender"),
        pytest.param("b", ("c", "d"), ("a", "b"), ALIVE, ["c", "d"], id="both-leave-other"),
        pytest.param("a", ("c", "a"), ("b", "a"), ALIVE, [], id="continuing-not-sender"),
        pytest.param("a", ("c", "a"), ("b", "a"), ALIVE - {"b"}, ["c"], id="sender-dead"),
        pytest.param("a", ("a", "b"), ("a", "b"), ALIVE, [], id="no-change"),
        pytest.param("d", ("a", "b"), ("a", "c"), ALIVE, ["a", "b"], id="stray-leaver"),
        pytest.param("c", ("c", "d"), ("a", "b"), {"c", "d"}, ["d"], id="orphan-spreads"),
        pytest.param("c", ("c", "d"), ("a", "b"), ALIVE, [], id="owner-alive-so-quiet"),
        pytest.param("a", ("a",), ("a", "b", "c"), ALIVE, [], id="rf-shrinks"),
        pytest.param("a", ("a", "b", "c"), ("a",), ALIVE, ["b", "c"], id="rf-grows"),
    ],
)
def test_targets_examples(
    me: str, new: tuple[str, ...], old: tuple[str, ...], alive: set[str], expected: list[str]
) -> None:
    assert _targets(me, new, old, alive) == expected


# -- _targets: property over random rebalances -------------------------------------


@st.composite
def rebalances(draw: st.DrawFn) -> Topology:
    """A new topology with its previous ring: some old nodes are gone (dead)."""
    old = draw(st.lists(st.sampled_from(NODES), min_size=1, max_size=6, unique=True))
    new = draw(st.lists(st.sampled_from(NODES), min_size=1, max_size=6, unique=True))
    leaving = [n for n in old if n not in new]
    dead = draw(st.lists(st.sampled_from(leaving), unique=True)) if leaving else []
    listed_down = draw(st.lists(st.sampled_from(dead), unique=True)) if dead else []
    weight = st.sampled_from([0.5, 1.0, 2.0])
    ring_state = st.sampled_from([NodeState.UP, NodeState.JOINING])
    nodes = [NodeInfo(n, f"{n}:1", draw(weight), draw(ring_state)) for n in new]
    nodes += [NodeInfo(n, f"{n}:1", 1.0, NodeState.DRAINING) for n in leaving if n not in dead]
    nodes += [NodeInfo(n, f"{n}:1", 1.0, NodeState.DOWN) for n in listed_down]
    return Topology(
        epoch=2,
        replication_factor=draw(st.integers(1, 3)),
        nodes=tuple(sorted(nodes, key=lambda n: n.id)),
        partitions=PARTITIONS,
        previous_nodes=tuple(NodeInfo(n, f"{n}:1", draw(weight)) for n in old),
        previous_replication_factor=draw(st.integers(1, 3)),
    )


def alive_in(topology: Topology) -> set[str]:
    """What the Migrator counts as alive."""
    return {n.id for n in topology.nodes if n.state != NodeState.DOWN}


def owners_by_partition(topology: Topology) -> Iterator[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(new owners, old owners) of every partition, so of every possible key."""
    previous = Placement.previous(topology)
    assert previous is not None
    current = Placement.current(topology)
    for p in range(PARTITIONS):
        yield current.owners(p), previous.owners(p)


@settings(max_examples=100, deadline=None)
@given(topology=rebalances())
def test_every_new_owner_ends_up_holding_the_key_sent_once_by_one_sender(
    topology: Topology,
) -> None:
    alive = alive_in(topology)
    for new, old in owners_by_partition(topology):
        holders = [n for n in old if n in alive]
        if not holders:
            continue  # every copy is gone: nothing can be done
        missing = [n for n in new if n not in old]
        held = set(holders)
        senders = []
        sender = holders[0]
        for holder in holders:
            sent = _targets(holder, new, old, alive)
            held.update(sent)
            assert len(sent) == len(set(sent))
            assert set(sent) <= set(missing)  # old owners hold it already
            if holder == sender:
                assert sent == missing  # the first live previous owner sends
            elif sender in new:
                assert sent == []  # a copy stays with the sender: nobody else sends
            else:
                assert holder in new or sent == missing  # the sender leaves: leavers send too
            if sent:
                senders.append(holder)
        assert set(new) <= held, (new, old, holders)
        if sender in new:
            assert len(senders) <= 1  # each key travels once


@settings(max_examples=50, deadline=None)
@given(topology=rebalances())
def test_data_held_outside_the_previous_placement_is_not_lost(topology: Topology) -> None:
    """A node that holds a key it did not own before (e.g. from an aborted migration)."""
    alive = alive_in(topology)
    for new, old in owners_by_partition(topology):
        any_old_owner_alive = any(n in alive for n in old)
        for stray in alive - set(old):
            sent = _targets(stray, new, old, alive)
            if stray not in new:
                assert sent == list(new)
            elif any_old_owner_alive:
                assert sent == []
            else:
                assert sent == [n for n in new if n != stray]


# -- Migrator end to end, with a real store and fake peers -------------------------


class FakePeers:
    """PeerPool's one method: stubs whose Transfer drains the stream into ``received``."""

    def __init__(self) -> None:
        self.received: dict[str, list[peer_pb2.ItemBatch]] = defaultdict(list)
        self.calls: list[str] = []
        #: address -> how it fails: "at-once" or "after-first-batch"
        self.failing: dict[str, str] = {}
        self.failures_left = -1  # -1: fail every time
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    def stub(self, address: str) -> FakePeers._Stub:
        return FakePeers._Stub(self, address)

    class _Stub:
        def __init__(self, peers: FakePeers, address: str) -> None:
            self.peers, self.address = peers, address

        async def Transfer(self, batches: AsyncIterator[peer_pb2.ItemBatch]) -> Any:
            peers = self.peers
            peers.calls.append(self.address)
            peers.entered.set()
            if peers.gate is not None:
                await peers.gate.wait()
            how = peers.failing.get(self.address) if peers.failures_left != 0 else None
            if how is not None:
                peers.failures_left -= 1
            if how == "at-once":
                raise ConnectionError(f"{self.address} unreachable")
            count = 0
            async for batch in batches:
                peers.received[self.address].append(batch)
                count += len(batch.items)
                if how == "after-first-batch":
                    raise ConnectionError(f"{self.address} went away")
            return types.SimpleNamespace(received=count, applied=count)


class RecordedSleeps:
    """The migration module's asyncio, with sleeps recorded (and the clock moved on)
    instead of slept."""

    def __init__(self, clock: SteppingClock) -> None:
        self.pauses: list[float] = []
        self.clock = clock

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.clock.advance(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


class SteppingClock:
    """The migration module's time: monotonic() moves 1 ms per call."""

    TICK = 0.001

    def __init__(self) -> None:
        self._now = 0.0

    def monotonic(self) -> float:
        self._now += self.TICK
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> RecordedSleeps:
    clock = SteppingClock()
    recorded = RecordedSleeps(clock)
    monkeypatch.setattr(migration, "asyncio", recorded)
    monkeypatch.setattr(migration, "time", clock)
    return recorded


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TieredStore]:
    tiers = {
        "hot": {"capacity": "4KB", "ttl": "1h", "eviction": "lru"},
        "warm": {"capacity": "4KB", "ttl": "1d"},
        "cold": {"capacity": "1MB", "path": str(tmp_path / "cold")},
    }
    config = NodeConfig.from_mapping({"memory": {"tiers": tiers}})
    s = TieredStore(config.memory, config.limits, origin=1, clock=ManualClock())
    yield s
    s.close()


def node(node_id: str, state: NodeState = NodeState.UP) -> NodeInfo:
    return NodeInfo(node_id, f"{node_id}:7400", 1.0, state)


def joining_c() -> Topology:
    """rf 1: c joins a and b; a is the sole old owner of everything it holds."""
    return Topology(
        2,
        1,
        (node("a"), node("b"), node("c", NodeState.JOINING)),
        partitions=PARTITIONS,
        previous_nodes=(node("a"), node("b")),
    )


def draining_a() -> Topology:
    """rf 2: a drains out of a, b, c, d."""
    return Topology(
        7,
        2,
        (node("a", NodeState.DRAINING), node("b"), node("c"), node("d")),
        partitions=PARTITIONS,
        previous_nodes=(node("a"), node("b"), node("c"), node("d")),
    )


def fill(store: TieredStore, topology: Topology, me: str, count: int = 300) -> dict[bytes, bytes]:
    """Store the keys ``me`` owned before ``topology``; returns key -> value."""
    previous = Placement.previous(topology)
    assert previous is not None
    held = {}
    for i in range(count):
        key = f"key-{i}".encode()
        if me in previous.replicas(key):
            held[key] = (f"value-{i}-".encode() * 20)[:100]
            store.put(key, held[key])
    assert len(store.tiers[-1]) > 0  # some items are on disk: the scan covers every tier
    return held


def holds(store: TieredStore, key: bytes) -> bool:
    return any(key in tier for tier in store.tiers)


class StillLag:
    """LagMonitor's face to the Pacer, with a lag the test sets."""

    def __init__(self) -> None:
        self.lag = 0.0
        self.touches = 0
        self.running = True  # the pace starts where it is, not at the floor

    def touch(self) -> None:
        self.touches += 1
        self.running = True


class Run:
    """A Migrator for node ``me`` (its loop never late) and a way to wait for it."""

    def __init__(
        self, store: TieredStore, peers: FakePeers, me: str, rate: int, batch: int
    ) -> None:
        self.finished = asyncio.Event()
        self.failed = asyncio.Event()
        self.reports: list[tuple[int, bool]] = []
        self.migrator = Migrator(
            me, store, cast(PeerPool, peers), rate=rate, batch=batch, on_progress=self._seen
        )
        self.lag = StillLag()
        self.migrator.pacer.lag = cast(LagMonitor, self.lag)
        self.migrator.pacer.wait = lambda: 0.0  # nor waiting for a CPU, however busy CI is

    def _seen(self, progress: Progress) -> None:
        self.reports.append((progress.items_sent, progress.done))
        if progress.done:
            self.finished.set()
        if progress.failures:
            self.failed.set()

    async def until_done(self) -> Progress:
        await asyncio.wait_for(self.finished.wait(), timeout=5)
        return self.migrator.progress

    async def until_ended(self, epoch: int) -> BaseException | None:
        """Wait for the migration task of ``epoch`` to end, successfully or not."""
        task = next(t for t in asyncio.all_tasks() if t.get_name() == f"migration-{epoch}")
        (outcome,) = await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)
        return cast(BaseException | None, outcome)


def node_of(address: str) -> str:
    return address.split(":", maxsplit=1)[0]


@pytest.mark.parametrize("scenario", [joining_c, draining_a])
async def test_items_go_to_their_new_owners_and_leave_this_node(
    scenario: Callable[[], Topology], store: TieredStore, sleeps: RecordedSleeps
) -> None:
    topology = scenario()
    held = fill(store, topology, "a")
    peers = FakePeers()
    run = Run(store, peers, "a", rate=10**12, batch=25)
    run.migrator.start(topology)
    progress = await run.until_done()

    current = Placement.current(topology)
    previous = Placement.previous(topology)
    assert previous is not None
    sent: dict[bytes, list[str]] = defaultdict(list)
    for address, batches in peers.received.items():
        for batch in batches:
            assert batch.epoch == topology.epoch
            assert 0 < len(batch.items) <= 25
            for item in batch.items:
                assert item.value == held[item.key]
                assert item.version > 0 and item.origin == 1
                sent[item.key].append(node_of(address))
    for key in held:
        # a sends what it held first (as the sender) or when the sender leaves as well.
        new, old = current.replicas(key), previous.replicas(key)
        missing = [n for n in new if n not in old]
        sends = old[0] == "a" or ("a" not in new and old[0] not in new)
        assert sorted(sent.get(key, [])) == (sorted(missing) if sends else []), key
        assert holds(store, key), key  # nothing is dropped before the epoch settles
    assert sent  # the scenario moves something

    dropped = [k for k in held if "a" not in current.replicas(k)]
    assert dropped and progress.items_dropped == 0
    assert run.migrator.settled(topology.epoch - 1) == 0  # another epoch's news: ignored
    assert run.migrator.settled(topology.epoch) == len(dropped)
    assert await run.migrator.dropped() == len(dropped)  # in steps, between yields
    for key in held:
        assert holds(store, key) == ("a" in current.replicas(key)), key
    assert progress.epoch == topology.epoch and progress.done
    assert progress.items_total == progress.items_scanned == len(held)
    assert progress.items_sent == sum(len(v) for v in sent.values())
    assert progress.bytes_sent == sum((len(k) + len(held[k])) * len(v) for k, v in sent.items())
    assert progress.items_dropped == len(dropped)
    assert progress.finished >= progress.started > 0
    # Reported at the start, after every batch, and once done.
    batches = sum(len(b) for b in peers.received.values())
    assert run.reports[0] == (0, False) and run.reports[-1] == (progress.items_sent, True)
    assert len(run.reports) == batches + 2
    assert not any(sleeps.pauses)  # a huge rate never waits (only yields: sleep(0))


async def settle_join(
    store: TieredStore, sleeps: RecordedSleeps
) -> tuple[Run, FakePeers, list[bytes], dict[bytes, bytes]]:
    """a hands c its share of a join and the join settles: (run, peers, handed, held)."""
    joined = joining_c()
    held = fill(store, joined, "a")
    peers = FakePeers()
    run = Run(store, peers, "a", rate=10**12, batch=10)
    run.migrator.start(joined)
    await run.until_done()
    handed = [k for k in held if "a" not in Placement.current(joined).replicas(k)]
    assert sent_keys(peers) == sorted(handed) and handed
    assert run.migrator.settled(joined.epoch) == len(handed)
    run.finished.clear()
    return run, peers, handed, held


def sent_keys(peers: FakePeers) -> list[bytes]:
    return sorted(i.key for batches in peers.received.values() for b in batches for i in b.items)


async def test_copies_handed_over_are_not_sent_again_when_the_next_epoch_comes_first(
    store: TieredStore, sleeps: RecordedSleeps
) -> None:
    # The leader moves on as soon as the join has settled, which can be before this
    # node has dropped the copies it handed to c: those are not data held outside the
    # placement, to be sent to every owner again, only copies to drop.
    run, peers, handed, held = await settle_join(store, sleeps)
    grown = Topology(
        3,
        1,
        (node("a"), node("b"), node("c"), node("d", NodeState.JOINING)),
        partitions=PARTITIONS,
        previous_nodes=joining_c().members(),
    )
    assert not Placement.current(grown).same_owners(Placement.previous(grown))  # type: ignore[arg-type]
    peers.received.clear()
    run.migrator.start(grown)  # owners change: the drop task is cancelled, the scan decides
    progress = await run.until_done()
    assert progress.items_scanned == len(held)
    assert not set(sent_keys(peers)) & set(handed)  # nothing handed over is sent again
    assert all(holds(store, k) for k in handed)  # kept until this epoch settles
    leaving = [k for k in held if "a" not in Placement.current(grown).replicas(k)]
    assert run.migrator.settled(grown.epoch) == len(leaving) >= len(handed)
    assert await run.migrator.dropped() == len(leaving)
    assert not any(holds(store, k) for k in leaving)


async def test_copies_handed_to_a_node_that_died_since_are_sent_to_the_new_owners(
    store: TieredStore, sleeps: RecordedSleeps
) -> None:
    run, peers, handed, _held = await settle_join(store, sleeps)
    lost = Topology(
        3,
        1,
        (node("a"), node("b"), node("c", NodeState.DOWN), node("d", NodeState.JOINING)),
        partitions=PARTITIONS,
        previous_nodes=joining_c().members(),
    )
    peers.received.clear()
    run.migrator.start(lost)  # c died with what a handed it: a's copies are the last ones
    await run.until_done()
    current = Placement.current(lost)
    to_d = sorted(k for k in handed if current.replicas(k) == ("d",))
    assert to_d and set(to_d) <= set(sent_keys(peers))
    assert all(holds(store, k) for k in handed)


async def test_an_epoch_that_changes_no_owners_after_a_settled_one_scans_nothing(
    store: TieredStore, sleeps: RecordedSleeps
) -> None:
    run, peers, handed, held = await settle_join(store, sleeps)
    up = Topology(
        3,
        1,
        (node("a"), node("b"), node("c")),
        partitions=PARTITIONS,
        previous_nodes=joining_c().members(),
    )
    run.migrator.start(up)  # c turns UP before the drop task has run a single step
    progress = await run.until_done()
    assert progress.items_scanned == progress.items_total == progress.items_sent == 0
    assert sent_keys(peers) == sorted(handed)  # nothing more went out
    assert run.migrator.settled(up.epoch) == 0  # nothing new to drop ...
    assert await run.migrator.dropped() == len(handed)  # ... and the join's drops went on
    assert not any(holds(store, k) for k in handed)
    assert all(holds(store, k) for k in held if k not in handed)

    # The next quiet epoch is quiet too: this one settled here as well.
    run.finished.clear()
    again = Topology(4, 1, up.nodes, partitions=PARTITIONS, previous_nodes=up.nodes)
    run.migrator.start(again)
    assert (await run.until_done()).items_scanned == 0


async def test_an_epoch_that_changes_no_owners_is_scanned_if_the_one_before_did_not_settle_here(
    store: TieredStore, sleeps: RecordedSleeps
) -> None:
    joined = joining_c()
    held = fill(store, joined, "a")
    run = Run(store, FakePeers(), "a", rate=10**12, batch=10)
    run.migrator.start(joined)
    await run.until_done()
    run.finished.clear()
    # The node learns of the next epoch before it has seen the join settle: only a scan
    # can tell which copies it no longer owns.
    up = Topology(
        3,
        1,
        (node("a"), node("b"), node("c")),
        partitions=PARTITIONS,
        previous_nodes=joined.members(),
    )
    run.migrator.start(up)
    progress = await run.until_done()
    assert progress.items_scanned == len(held) and progress.items_sent == 0
    handed = [k for k in held if "a" not in Placement.current(up).replicas(k)]
    assert run.migrator.settled(up.epoch) == len(handed) > 0


async def test_after_a_death_before_settling_copies_another_node_was_sending_go_again(
    store: TieredStore, sleeps: RecordedSleeps
) -> None:
    # c joins a, b, d (rf 2); b dies before the join settles, and the leader removes it.
    # Keys a gave up in the join whose sender was d: d's stream to c may have been cut
    # short, so a's copy is the one to send again, not one to drop.
    base = (node("a"), node("b"), node("d"))
    joined = Topology(
        2, 2, (*base, node("c", NodeState.JOINING)), previous_nodes=base, partitions=PARTITIONS
    )
    lost = Topology(
        3,
        2,
        (node("a"), node("b", NodeState.DOWN), node("c", NodeState.JOINING), node("d")),
        partitions=PARTITIONS,
        previous_nodes=joined.members(),
    )
    held = fill(store, joined, "a")
    before, during, after = (
        Placement.previous(joined),
        Placement.current(joined),
        Placement.current(lost),
    )
    assert before is not None
    relayed = [
        k
        for k in held
        if before.replicas(k)[0] != "a"
        and "a" not in during.replicas(k)
        and "a" not in after.replicas(k)
    ]
    assert relayed  # the scenario has such keys
    peers = FakePeers()
    run = Run(store, peers, "a", rate=10**12, batch=10)
    run.migrator.start(joined)
    await run.until_done()
    assert not set(sent_keys(peers)) & set(relayed)  # d was their sender
    peers.received.clear()
    run.finished.clear()
    run.migrator.start(lost)  # the join never settled here
    await run.until_done()
    for key in relayed:
        to = sorted(
            node_of(a)
            for a, bs in peers.received.items()
            for b in bs
            for i in b.items
            if i.key == key
        )
        assert to == sorted(after.replicas(key)), key


async def test_data_not_in_the_previous_placement_is_handed_to_every_owner(
    store: TieredStore, sleeps: RecordedSleeps
) -> None:
    topology = joining_c()
    previous = Placement.previous(topology)
    assert previous is not None
    stray = next(
        k for k in (f"s{i}".encode() for i in range(100)) if previous.replicas(k) == ("b",)
    )
    store.put(stray, b"left over")
    peers = FakePeers()
    run = Run(store, peers, "a", rate=10**12, batch=10)
    run.migrator.start(topology)
    await run.until_done()
    owner = Placement.current(topology).replicas(stray)[0]
    assert [i.key for b in peers.received[f"{owner}:7400"] for i in b.items] == [stray]
    assert holds(store, stray)  # until the cluster has settled
    run.migrator.settled(topology.epoch)
    await run.migrator.dropped()
    assert not holds(store, stray)


async def test_throttling_spaces_batches_by_their_share_of_the_rate(
    store: TieredStore, sleeps: RecordedSleeps
) -> None:
    topology = draining_a()
    fill(store, topology, "a")
    peers = FakePeers()
    run = Run(store, peers, "a", rate=1000, batch=10)
    run.migrator.start(topology)
    await run.until_done()
    # Batches go out target after target, in the order the stubs saw them; each waits
    # until the bytes before it have had their time at 1000 B/s (the clock moves 1 ms
    # per look, and a sleep moves it on: each pause is the share less the ticks since).
    in_order = [b for address in peers.calls for b in peers.received[address]]
    sizes = [sum(len(i.key) + len(i.value) for i in b.items) for b in in_order]
    assert len(sleeps.pauses) == len(in_order) - 1 > 0  # the first batch goes at once
    assert sum(sleeps.pauses) <= sum(sizes[:-1]) / 1000
    for pause, size in zip(sleeps.pauses, sizes, strict=False):
        assert size / 1000 - 0.1 < pause <= size / 1000


async def test_a_late_event_loop_halves_the_rate_down_to_the_floor() -> None:
    lag = StillLag()
    pacer = Pacer(8000, 1000, cast(LagMonitor, lag), target=0.001)
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    clock = types.SimpleNamespace(monotonic=lambda: now[0])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(migration, "time", clock)
        mp.setattr(migration, "asyncio", types.SimpleNamespace(sleep=sleep))
        lag.running = False  # traffic resumes after a quiet spell: start at the floor
        await pacer.take(100)
        assert pacer.rate == 1000 + 400  # the floor, and the first step up
        for _ in range(20):  # on time: up by a twentieth of the ceiling each step
            now[0] += migration.ADAPT_EVERY + 0.001
            await pacer.take(100)
        assert pacer.rate == 8000
        now[0] += migration.ADAPT_EVERY + 0.001
        rates = []
        lag.lag = 0.005  # late: back off, every ADAPT_EVERY seconds
        for _ in range(6):
            await pacer.take(100)
            rates.append(pacer.rate)
            now[0] += migration.ADAPT_EVERY + 0.001
        assert rates == [4000, 2000, 1000, 1000, 1000, 1000]  # never below the floor
        assert pacer.slowdowns == 3
        lag.lag = 0.0  # on time again: back up by a twentieth of the ceiling each step
        for _ in range(30):
            await pacer.take(100)
            now[0] += migration.ADAPT_EVERY + 0.001
        assert pacer.rate == 8000  # and never above the ceiling
        lag.lag = 0.0007  # between half the target and the target: hold
        await pacer.take(100)
        assert pacer.rate == 8000
    assert lag.touches == 58  # every take keeps the lag probe running
    # At 1000 B/s a take of 100 bytes right after another waits for its 0.1 s.
    assert slept == [] or all(s > 0 for s in slept)


async def test_waiting_for_a_cpu_slows_the_rate_as_a_late_loop_does() -> None:
    lag = StillLag()  # the loop itself is on time throughout
    waits = [0.0]
    pacer = Pacer(8000, 1000, cast(LagMonitor, lag), wait=lambda: waits[0], wait_target=0.1)
    now = [100.0]
    clock = types.SimpleNamespace(monotonic=lambda: now[0])
    rates = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(migration, "time", clock)
        mp.setattr(migration, "asyncio", types.SimpleNamespace(sleep=lambda s: _nothing()))
        for wait in (0.2, 0.2, 0.07, 0.04, 0.04):  # busy, busy, between, idle, idle
            waits[0] = wait
            now[0] += migration.ADAPT_EVERY + 0.001
            await pacer.take(100)
            rates.append(pacer.rate)
    assert rates == [4000, 2000, 2000, 2400, 2800]
    assert pacer.slowdowns == 2
    pacer.urgent = True  # restoring lost copies: a busy CPU no longer slows the move
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(migration, "time", clock)
        waits[0] = 0.5
        now[0] += migration.ADAPT_EVERY + 0.001
        await pacer.take(100)
        assert pacer.rate == 3200 and pacer.slowdowns == 2
        lag.lag = 0.005  # ... but a late loop still does
        now[0] += migration.ADAPT_EVERY + 0.001
        await pacer.take(100)
        assert pacer.rate == 1600 and pacer.slowdowns == 3


@pytest.mark.parametrize(
    ("topology", "urgent"),
    [
        (joining_c(), False),
        (draining_a(), False),  # a leaves alive and hands its copies over itself
        (  # b died and was removed: its copies are to be restored
            Topology(
                3,
                1,
                (node("a"), node("c")),
                partitions=PARTITIONS,
                previous_nodes=(node("a"), node("b"), node("c")),
            ),
            True,
        ),
        (  # b is down, not removed yet
            Topology(
                3,
                1,
                (node("a"), node("b", NodeState.DOWN), node("c")),
                partitions=PARTITIONS,
                previous_nodes=(node("a"), node("b"), node("c")),
            ),
            True,
        ),
    ],
)
async def test_a_move_that_restores_a_dead_nodes_copies_is_urgent(
    store: TieredStore, topology: Topology, urgent: bool
) -> None:
    run = Run(store, FakePeers(), "a", rate=10**12, batch=10)
    run.migrator.pacer.urgent = not urgent
    run.migrator.start(topology)
    await run.until_done()
    assert run.migrator.pacer.urgent is urgent


async def _nothing() -> None:
    return None


async def test_the_rate_never_drops_below_the_floor_or_starts_above_the_ceiling() -> None:
    lag = StillLag()
    assert Pacer(1000, 5000, cast(LagMonitor, lag)).floor == 1000  # a floor above: clamped
    assert Pacer(1000, 0, cast(LagMonitor, lag)).floor == 1
    assert Pacer(1000, 10, cast(LagMonitor, lag)).rate == 1000
    migrator = Migrator("a", cast(TieredStore, None), cast(PeerPool, None), rate=800, batch=1)
    assert (migrator.pacer.ceiling, migrator.pacer.floor) == (800, 100)
    assert migrator.pacer.wait_target == migration.WAIT_TARGET  # the CPU-wait signal is on


def test_cluster_migration_cpu_wait_sets_the_target_and_zero_turns_it_off() -> None:
    def pacer(cpu_wait: float) -> Pacer:
        store, peers = cast(TieredStore, None), cast(PeerPool, None)
        return Migrator("a", store, peers, rate=8, batch=1, cpu_wait=cpu_wait).pacer

    on = pacer(0.25)
    assert on.wait_target == 0.25
    assert isinstance(getattr(on.wait, "__self__", None), RunQueueWait)
    off = pacer(0.0)
    assert getattr(off.wait, "__self__", None) is None and off.wait() == 0.0


async def test_the_lag_monitor_measures_a_late_wake_up_and_stops_when_idle() -> None:
    now = [0.0]
    asleep, wake = asyncio.Event(), asyncio.Event()

    async def sleep(seconds: float) -> None:  # the probe's sleep, woken by the test
        asleep.set()
        await wake.wait()
        wake.clear()

    monitor = LagMonitor(
        interval=0.001, smoothing=0.5, idle_after=5.0, clock=lambda: now[0], sleep=sleep
    )
    assert not monitor.running
    monitor.touch()
    assert monitor.running
    await asyncio.wait_for(asleep.wait(), 5)  # the probe asked to wake up at 0.001
    now[0] = 6.0  # it wakes up 5.999 s late, and 6 s after the last touch: idle
    wake.set()
    probe = next(t for t in asyncio.all_tasks() if t.get_name() == "loop-lag")
    await asyncio.wait_for(probe, 5)  # the probe ends by itself
    assert not monitor.running
    assert monitor.lag == pytest.approx(0.5 * 5.999)
    monitor.touch()  # and starts again, afresh, when needed
    assert monitor.running and monitor.lag == 0.0
    await monitor.close()
    assert not monitor.running


def test_lag_is_a_moving_average_of_the_delays() -> None:
    monitor = LagMonitor(smoothing=0.5)
    monitor.observe(0.004)
    assert monitor.lag == pytest.approx(0.002)
    monitor.observe(-1.0)  # early wake-ups count as on time
    assert monitor.lag == pytest.approx(0.001)


async def test_without_a_previous_ring_there_is_nothing_to_do(
    store: TieredStore, sleeps: RecordedSleeps
) -> None:
    store.put(b"k", b"v")
    peers = FakePeers()
    run = Run(store, peers, "a", rate=1000, batch=10)
    run.migrator.start(Topology(4, 1, (node("a"), node("b")), partitions=PARTITIONS))
    progress = await run.until_done()
    assert progress.epoch == 4 and progress.items_scanned == 0
    assert peers.calls == [] and holds(store, b"k")


@pytest.mark.parametrize("how", ["at-once", "after-first-batch"])
async def test_a_failed_transfer_keeps_every_local_item(
    how: str, store: TieredStore, sleeps: RecordedSleeps, caplog: pytest.LogCaptureFixture
) -> None:
    topology = draining_a()
    held = fill(store, topology, "a")
    peers = FakePeers()
    peers.failing["c:7400"] = how
    run = Run(store, peers, "a", rate=10**12, batch=10)
    with caplog.at_level(logging.WARNING, logger=migration.__name__):
        run.migrator.start(topology)
        await asyncio.wait_for(run.failed.wait(), timeout=5)
    try:
        assert "c:7400" in peers.calls and len(set(peers.calls)) >= 2  # others got theirs
        assert all(holds(store, k) for k in held)
        progress = run.migrator.progress
        assert not progress.done and progress.items_dropped == 0
        assert not run.finished.is_set()
        assert "migration to c (c:7400) failed" in caplog.text
        assert f"migration for epoch {topology.epoch} failed" in caplog.text
    finally:
        await run.migrator.close()


async def test_a_failed_migration_is_retried_until_done(
    store: TieredStore, sleeps: RecordedSleeps
) -> None:
    topology = draining_a()
    fill(store, topology, "a")
    peers = FakePeers()
    peers.failing["c:7400"] = "at-once"
    peers.failures_left = 1  # a transient error: the next attempt succeeds
    run = Run(store, peers, "a", rate=10**12, batch=10)
    run.migrator.start(topology)
    try:
        # Any backoff is instantaneous here (sleeps are recorded, not slept).
        await asyncio.wait_for(run.finished.wait(), timeout=0.5)
    finally:
        await run.migrator.close()


async def test_a_newer_epoch_cancels_the_running_migration(
    store: TieredStore, sleeps: RecordedSleeps
) -> None:
    older = draining_a()
    fill(store, older, "a")
    peers = FakePeers()
    peers.gate = asyncio.Event()  # the first transfer hangs
    run = Run(store, peers, "a", rate=10**12, batch=10)
    run.migrator.start(older)
    await asyncio.wait_for(peers.entered.wait(), 5)
    first = run.migrator.progress

    peers.gate = None
    newer = older.evolve(epoch=older.epoch + 1)
    run.migrator.start(newer)
    outcome = await run.until_ended(older.epoch)
    assert isinstance(outcome, asyncio.CancelledError)
    progress = await run.until_done()
    assert progress.epoch == newer.epoch and progress.done
    assert not first.done and first.items_dropped == 0
    await run.migrator.close()


async def test_close_cancels_a_running_migration(
    store: TieredStore, sleeps: RecordedSleeps
) -> None:
    topology = draining_a()
    held = fill(store, topology, "a")
    peers = FakePeers()
    peers.gate = asyncio.Event()
    run = Run(store, peers, "a", rate=10**12, batch=10)
    run.migrator.start(topology)
    await asyncio.wait_for(peers.entered.wait(), 5)
    await run.migrator.close()
    assert not run.migrator.progress.done
    assert all(holds(store, k) for k in held)
