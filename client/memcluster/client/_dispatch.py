"""Sending requests: routing, fan-out, retries, failover and topology refresh, sans I/O.

The rules, after redis-py's cluster client:

- Before a request the core fetches the topology when it has none (bootstrap: each
  known address in turn) or when a response showed a newer epoch than its own.
- "Not owner" is a normal reply: fetch the topology (from the node that refused for
  the first redirects, then from another one) and route the refused keys again.
- Unavailable, and for reads Timeout, moves a key on to its next replica (a replica
  coordinates writes too), and the failing node is avoided for ``suspect_seconds``.
- An operation makes at most ``max_retries + 1`` rounds of calls. It backs off before
  a round only when the routing did not move on and a key goes back to a node that
  failed it.
- Batches are grouped by target node, chunked, and sent concurrently (``Parallel``);
  only the keys of failed sub-calls go round again.
"""

from __future__ import annotations

import random as _random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, TypeVar, cast

import grpc
from google.protobuf.message import Message

from memcluster.common.errors import MemclusterError, Timeout, Unavailable, from_rpc_error
from memcluster.wire import topology_pb2

from . import _wire as wire
from ._effects import Call, Op, Parallel, Service, Sleep
from ._options import ClientOptions
from ._retry import RetryPolicy
from ._routing import Router
from .types import Topology

T = TypeVar("T")

#: After this many redirects in a row, ask another node for the topology.
REDIRECTS_BEFORE_ELSEWHERE = 3

#: Errors that move a key on to its next replica. A write moves on only when its node
#: could not take it; after a Timeout it is retried where it may already be under way.
_READ_FAILOVER: tuple[type[MemclusterError], ...] = (Unavailable, Timeout)
_WRITE_FAILOVER: tuple[type[MemclusterError], ...] = (Unavailable,)
_Failure: TypeAlias = tuple[str, Sequence[T], MemclusterError, grpc.RpcError]


class Dispatcher:
    """Routes, sends, retries and refreshes for the core (see the module doc)."""

    def __init__(
        self,
        router: Router,
        options: ClientOptions,
        *,
        random: Callable[[], float] = _random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.router = router
        self.options = options
        self.retry = RetryPolicy(options.max_retries, options.backoff, options.max_backoff, random)
        self._clock = clock
        self._stale = True  # fetch a topology before the next request (if the router takes one)
        self._hint: str | None = None  # a node known to serve a newer topology
        self._suspects: dict[str, float] = {}  # address -> until when to prefer others

    # -- topology -----------------------------------------------------------

    def ready(self) -> Op[None]:
        """Fetch the topology first if there is none yet or a newer one was seen."""
        if not self._stale:
            return
        if not self.router.sources():
            self._stale = False
            return
        try:
            yield from self.fetch(first=self._hint)
        except Unavailable:
            if self.router.topology is None:
                raise
            # Keep routing by the topology at hand; the next newer epoch seen tries again.
            self._stale, self._hint = False, None

    def stale(self) -> None:
        """Fetch the topology before the next request."""
        self._stale = True

    def fetch(self, *, first: str | None = None, avoid: str | None = None) -> Op[Topology]:
        """Ask ``first``, then the router's sources in turn (``avoid`` last), for the topology."""
        order = [a for a in dict.fromkeys((first, *self.router.sources())) if a is not None]
        if avoid in order and len(order) > 1:
            order.remove(avoid)
            order.append(avoid)
        tried: list[str] = []
        cause: grpc.RpcError | None = None
        for address in order:
            request = topology_pb2.GetTopologyRequest(known_epoch=self.router.epoch)
            try:
                response = yield Call(
                    address, "TopologyService", "GetTopology", request, self.options.timeout
                )
            except grpc.RpcError as exc:
                tried.append(f"{address} ({from_rpc_error(exc).message})")
                cause = exc
                continue
            topology = Topology.from_wire(response)
            self.router.update(topology)
            self._stale, self._hint = False, None
            return topology
        raise Unavailable(
            f"no node served the cluster topology; tried {', '.join(tried) or 'none'}"
        ) from cause

    def _observe(self, address: str, epoch: int) -> None:
        if epoch > self.router.epoch:
            self._stale, self._hint = True, address

    # -- calls about one node ------------------------------------------------

    def on_node(
        self, service: Service, method: str, request: Message, address: str | None
    ) -> Op[Any]:
        """One call to ``address`` (None: any node), retried there; no key routing."""
        retries = 0
        while True:
            target = address or self.router.any_address()
            try:
                response = yield Call(target, service, method, request, self.options.timeout)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                if not self.retry.should_retry(error, retries):
                    raise error from exc
            else:
                self._observe(target, response.epoch)
                return response
            yield Sleep(self.retry.delay(retries))
            retries += 1

    # -- calls about keys ----------------------------------------------------

    def keyed(
        self,
        method: str,
        items: Sequence[T],
        key: Callable[[T], bytes],
        build: Callable[[Sequence[T], int], Message],
        *,
        read: bool,
        size: Callable[[T], int] | None = None,
    ) -> Op[list[tuple[Sequence[T], Any]]]:
        """Send ``items`` to their keys' nodes; returns (batch, response) pairs.

        ``build(batch, epoch)`` makes a request for a batch; with ``size`` batches are
        chunked to the message limits, without it each target gets one request.
        """
        failover = _READ_FAILOVER if read else _WRITE_FAILOVER
        answered: list[tuple[Sequence[T], Any]] = []
        pending: Sequence[T] = items
        failed: set[str] = set()
        retries = redirects = 0
        while pending:
            yield from self.ready()
            plan = self._plan(pending, key, size, failed)
            epoch, timeout = self.router.epoch, self.options.timeout
            calls = [Call(a, "Node", method, build(batch, epoch), timeout) for a, batch in plan]
            outcomes = yield from self._perform(calls)
            again: list[T] = []
            failures: list[_Failure[T]] = []
            for (address, batch), outcome in zip(plan, outcomes, strict=True):
                if isinstance(outcome, grpc.RpcError):
                    failures.append((address, batch, from_rpc_error(outcome), outcome))
                    again.extend(batch)
                else:
                    self._suspects.pop(address, None)
                    self._observe(address, outcome.epoch)
                    answered.append((batch, outcome))
            pending = again
            if not failures:
                break
            refused = any(error.refresh_routing for _, _, error, _ in failures)
            redirects = redirects + 1 if refused else 0
            routed_by = self.router.epoch
            yield from self._recover(failures, retries, redirects, failed, failover)
            if self.router.epoch == routed_by and self._goes_back(failures, key, failed):
                yield Sleep(self.retry.delay(retries))
            retries += 1
        return answered

    def single(
        self, method: str, key: bytes, build: Callable[[int], Message], *, read: bool
    ) -> Op[Any]:
        """``keyed`` for one key, without the batch bookkeeping (the single-key hot path).

        The same rounds, failover, refresh and backoff as ``keyed``; returns the response.
        """
        failover = _READ_FAILOVER if read else _WRITE_FAILOVER
        failed: set[str] = set()
        retries = redirects = 0
        router, timeout = self.router, self.options.timeout
        while True:
            if self._stale:
                yield from self.ready()
            address = self._target(router.replicas(key), failed)
            try:
                response = yield Call(address, "Node", method, build(router.epoch), timeout)
            except grpc.RpcError as exc:
                failure: _Failure[bytes] = (address, (key,), from_rpc_error(exc), exc)
            else:
                if self._suspects:
                    self._suspects.pop(address, None)
                self._observe(address, response.epoch)
                return response
            redirects = redirects + 1 if failure[2].refresh_routing else 0
            routed_by = router.epoch
            yield from self._recover([failure], retries, redirects, failed, failover)
            if router.epoch == routed_by and self._goes_back([failure], wire.same_key, failed):
                yield Sleep(self.retry.delay(retries))
            retries += 1

    def _recover(
        self,
        failures: list[_Failure[T]],
        retries: int,
        redirects: int,
        failed: set[str],
        failover: tuple[type[MemclusterError], ...],
    ) -> Op[None]:
        """Raise if a failure is final; else mark failed nodes and refresh the routing."""
        _, _, error, exc = min(failures, key=lambda f: f[2].retriable)
        if not self.retry.should_retry(error, retries):
            raise error from exc
        refusal: tuple[str, MemclusterError] | None = None
        for address, _, error, _ in failures:
            if isinstance(error, failover):
                failed.add(address)
                self._suspects[address] = self._clock() + self.options.suspect_seconds
            if error.refresh_routing:
                refusal = refusal or (address, error)
            else:
                self._observe(address, error.epoch)
        if refusal is not None and self.router.refresh(refusal[1]):
            if redirects < REDIRECTS_BEFORE_ELSEWHERE:
                yield from self.fetch(first=refusal[0])
            else:
                yield from self.fetch(avoid=refusal[0])

    def _goes_back(
        self,
        failures: list[_Failure[T]],
        key: Callable[[T], bytes],
        failed: set[str],
    ) -> bool:
        """True when some failed item would go to a node that already failed it."""
        for address, batch, _, _ in failures:
            for item in batch:
                target = self._target(self.router.replicas(key(item)), failed)
                if target == address or target in failed:
                    return True
        return False

    def _plan(
        self,
        items: Sequence[T],
        key: Callable[[T], bytes],
        size: Callable[[T], int] | None,
        failed: set[str],
    ) -> list[tuple[str, Sequence[T]]]:
        """``items`` grouped by target address, then cut into RPC-sized chunks."""
        if len(items) == 1 and size is None:  # a single-key call: nothing to group
            return [(self._target(self.router.replicas(key(items[0])), failed), items)]
        targets: dict[Sequence[str], str] = {}
        groups: dict[str, list[T]] = {}
        keys = items if key is wire.same_key else [key(item) for item in items]
        routes = self.router.replicas_many(cast(Sequence[bytes], keys))
        for item, replicas in zip(items, routes, strict=True):
            if (target := targets.get(replicas)) is None:
                target = targets[replicas] = self._target(replicas, failed)
            if (group := groups.get(target)) is None:
                groups[target] = [item]
            else:
                group.append(item)
        if size is None:
            return list(groups.items())
        opts = self.options
        return [
            (address, chunk)
            for address, group in groups.items()
            for chunk in wire.chunks(group, size, opts.batch_items, opts.batch_bytes)
        ]

    def _target(self, replicas: Sequence[str], failed: set[str]) -> str:
        """The first replica neither failed in this operation nor suspect, else the best left."""
        now = self._clock()
        untried = [a for a in replicas if a not in failed]
        for address in untried:
            if self._suspects.get(address, 0.0) <= now:
                return address
        return untried[0] if untried else replicas[0]

    def _perform(self, calls: list[Call]) -> Op[list[Any]]:
        """Each call's response or RpcError; several calls go out together, in waves."""
        if len(calls) == 1:
            try:
                return [(yield calls[0])]
            except grpc.RpcError as exc:
                return [exc]
        outcomes: list[Any] = []
        step = self.options.max_parallel
        for start in range(0, len(calls), step):
            outcomes.extend((yield Parallel(tuple(calls[start : start + step]))))
        return outcomes
