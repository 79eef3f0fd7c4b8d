"""A lease kept alive in the background: what a node registers under, what a leader holds.

Like etcd's ``concurrency/session.go``: :meth:`Session.start` grants a lease of
``ttl`` seconds and starts a keep-alive loop that refreshes it every ``ttl / 3``
seconds (sooner after a failed refresh). :attr:`Session.lost` is set once the lease
expired or could not be refreshed before it ran out, as measured on our monotonic
clock from the moment each refresh was sent, so that we give up no later than etcd
does. After a loss, :meth:`Session.restart` obtains a fresh lease (nodes register
again after an etcd outage).
"""

from __future__ import annotations

import asyncio
import logging

from memcluster.common.errors import Unavailable
from memcluster.coordinator.etcd import Etcd, EtcdError

__all__ = ["Session", "SessionLost"]

log = logging.getLogger(__name__)

# How soon to try again after a refresh failed (capped by ttl / 3).
_RETRY_INTERVAL = 0.5


class SessionLost(Unavailable):
    """The session's lease is gone (expired, revoked or closed): restart the session."""


class Session:
    """One etcd lease of ``ttl`` seconds and the background loop that keeps it alive."""

    def __init__(self, etcd: Etcd, ttl: int) -> None:
        if ttl < 1:
            raise ValueError(f"a session ttl is at least 1 second, not {ttl}")
        self.etcd = etcd
        self.ttl = ttl
        #: Set when the lease expired or could not be refreshed in time.
        self.lost = asyncio.Event()
        self._lease_id: int | None = None
        self._expires_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def lease_id(self) -> int:
        """The current lease (raises SessionLost before start())."""
        if self._lease_id is None:
            raise SessionLost("the session has not been started")
        return self._lease_id

    @property
    def alive(self) -> bool:
        """True while the lease is held: started, not lost, not closed."""
        return self._lease_id is not None and not self.lost.is_set() and not self._closed

    async def start(self) -> None:
        """Grant the lease and start keeping it alive (EtcdError if etcd is unreachable)."""
        if self._task is not None:
            raise RuntimeError("the session is already started")
        loop = asyncio.get_running_loop()
        sent = loop.time()
        self._lease_id = await self.etcd.grant_lease(self.ttl)
        self._expires_at = sent + self.ttl
        self._closed = False
        self.lost.clear()
        self._task = loop.create_task(self._keep_alive(), name=f"session-{self._lease_id:x}")
        self._task.add_done_callback(self._done)

    async def restart(self) -> None:
        """Drop the current lease (revoked, best effort) and start with a fresh one."""
        await self.close()
        await self.start()

    async def close(self) -> None:
        """Stop the keep-alive loop and revoke the lease (best effort: it expires anyway).

        Closing does not set :attr:`lost`; :attr:`alive` turns False. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})  # a crash was already reported by _done
        if self._lease_id is not None:
            try:
                await self.etcd.revoke_lease(self._lease_id)
            except EtcdError as exc:
                log.warning("could not revoke lease %x (it will expire): %s", self._lease_id, exc)

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        lease_id = self.lease_id
        interval = self.ttl / 3
        delay = interval
        while True:
            left = self._expires_at - loop.time()
            if left <= 0:
                log.warning("lease %x ran out before it could be refreshed", lease_id)
                break
            await asyncio.sleep(min(delay, left))
            sent = loop.time()
            try:
                # A refresh that answers after the lease ran out is of no use.
                async with asyncio.timeout(self._expires_at - sent):
                    remaining = await self.etcd.refresh_lease(lease_id)
            except (EtcdError, TimeoutError) as exc:
                log.warning("could not refresh lease %x: %s", lease_id, str(exc) or "timed out")
                delay = min(interval, _RETRY_INTERVAL)
                continue
            if remaining <= 0:
                log.warning("lease %x expired", lease_id)
                break
            self._expires_at = sent + remaining
            delay = interval
        self.lost.set()

    def _done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # A dead keep-alive loop means the lease will lapse: say so at once.
            log.error("keep-alive of lease %x died: %r", self._lease_id or 0, exc)
            self.lost.set()
