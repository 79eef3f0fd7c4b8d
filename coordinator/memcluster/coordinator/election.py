"""Leader election among coordinator replicas, after etcd's ``concurrency/election.go``.

The leader is the candidate whose id is the value of ``key``. A candidate creates
the key under its session's lease; if another holds it, the candidate watches the
key (from the revision it read, so no deletion slips by) until it is deleted, then
tries again. Leadership ends with :meth:`Election.resign`, with the session (closed,
or its lease lost: etcd then deletes the key) - nothing else.

Knowing that we lead is not enough to write safely: a leader that was paused may
not yet know it was deposed. Topology writes therefore go through
``Etcd.put_if_equal(..., *election.fence())``: etcd applies them only while the
election key still holds this candidate's id, atomically with the write.

``candidate_id`` must be unique per process (say, address plus a random part): the
fence cannot tell two candidates with the same id apart.
"""

from __future__ import annotations

import asyncio
import contextlib

from memcluster.coordinator.etcd import Etcd
from memcluster.coordinator.session import Session, SessionLost

__all__ = ["Election"]


class Election:
    """One candidate's part in the election held at ``key``."""

    def __init__(self, etcd: Etcd, session: Session, key: str, candidate_id: str) -> None:
        if not candidate_id:
            raise ValueError("a candidate id must not be empty")
        self.etcd = etcd
        self.session = session
        self.key = key
        self.candidate_id = candidate_id
        self._value = candidate_id.encode()
        self._lease: int | None = None  # the session lease we won under

    async def campaign(self) -> None:
        """Return once this candidate leads.

        Raises SessionLost if the session's lease is lost meanwhile (restart the
        session, then campaign again) and EtcdError if etcd fails (campaign again
        later); cancel the call to stop campaigning.
        """
        while True:
            if not self.session.alive:
                raise SessionLost(f"cannot campaign for {self.key!r}: the session is not alive")
            lease = self.session.lease_id
            if await self.etcd.create(self.key, self._value, lease=lease):
                self._lease = lease
                return
            current, revision = await self.etcd.get_with_revision(self.key)
            if current == self._value:
                # Ours already (an earlier create whose reply was lost): bind it to
                # this session's lease, unless it vanished since the read.
                if await self.etcd.put_if_equal(
                    self.key, self._value, guard_key=self.key, guard_value=self._value, lease=lease
                ):
                    self._lease = lease
                    return
            elif current is not None:
                await self._until_deleted(revision)

    def is_leader(self) -> bool:
        """True if this candidate won and its session still holds the lease it won with."""
        return (
            self._lease is not None and self.session.alive and self.session.lease_id == self._lease
        )

    async def leader(self) -> str | None:
        """The id of the current leader, or None when there is none."""
        value = await self.etcd.get(self.key)
        return value.decode() if value is not None else None

    async def resign(self) -> None:
        """Stop leading: delete the key if it is still ours (another's is left alone)."""
        lease, self._lease = self._lease, None
        if lease is not None:
            await self.etcd.delete_if_equal(self.key, self._value)

    def fence(self) -> tuple[str, bytes]:
        """``(guard_key, guard_value)`` for ``Etcd.put_if_equal``: holds only while we lead."""
        return self.key, self._value

    async def _until_deleted(self, revision: int) -> None:
        """Wait until the key is deleted after ``revision``, or the session is lost."""
        deleted = asyncio.ensure_future(self._next_delete(revision))
        lost = asyncio.ensure_future(self.session.lost.wait())
        try:
            await asyncio.wait({deleted, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            deleted.cancel()
            lost.cancel()
            await asyncio.wait({deleted, lost})
        if not deleted.cancelled():
            deleted.result()  # re-raises EtcdError if the watch failed

    async def _next_delete(self, revision: int) -> None:
        events = self.etcd.watch_prefix(self.key, start_revision=revision + 1)
        async with contextlib.aclosing(events):
            async for event in events:
                if event.key == self.key and event.kind == "delete":
                    return
