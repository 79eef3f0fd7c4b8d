"""What a node publishes about itself, and when: its migration's progress and its load.

``ClusterAgent`` (agent.py) puts these reports to etcd; this module decides, without
I/O, which of them are due.
"""

from __future__ import annotations

import math

from memcluster.node.migration import Progress
from memcluster.wire import coordinator_pb2

PROGRESS_EVERY = 1.0
"""Seconds between two reports of a running migration's counts.

The migrator reports progress after every batch it sends, many times a second during a
rebalance: an etcd put for each cost etcd and the coordinator CPU that clients felt in
their latency, for counts only people watching the rebalance read.
"""


def progress_to_wire(node_id: str, progress: Progress) -> coordinator_pb2.MigrationProgress:
    """The protobuf a node publishes about its migration."""
    return coordinator_pb2.MigrationProgress(
        node_id=node_id,
        epoch=progress.epoch,
        done=progress.done,
        items_sent=progress.items_sent,
        bytes_sent=progress.bytes_sent,
        items_scanned=progress.items_scanned,
        items_total=progress.items_total,
    )


class ReportSchedule:
    """What the reports loop publishes and when, for one registration (no I/O).

    A migration's milestones (a new epoch, its end, another failure) are due at once:
    the coordinator and the other nodes wait for every node's ``done`` to settle an
    epoch. Changed counts are due ``progress_every`` seconds after the last progress
    report, the load ``load_every`` seconds after the last load report; both are due
    at once on a new schedule (a new lease: the load key went with the old one).
    """

    def __init__(self, load_every: float, progress_every: float = PROGRESS_EVERY) -> None:
        self.load_every = load_every
        self.progress_every = progress_every
        self._milestone: tuple[int, bool, int] | None = None
        self._counts: tuple[int, int, int, int] | None = None
        self._progress_at = -math.inf
        self._load_at = -math.inf

    def progress_due(self, progress: Progress, now: float) -> bool:
        """Whether ``progress`` is to be published at ``now``."""
        if _milestone(progress) != self._milestone:
            return True
        return _counts(progress) != self._counts and now >= self._progress_at + self.progress_every

    def progress_sent(self, progress: Progress, now: float) -> None:
        """``progress`` was published at ``now``."""
        self._milestone, self._counts = _milestone(progress), _counts(progress)
        self._progress_at = now

    def load_due(self, now: float) -> bool:
        """Whether the load is to be published at ``now``."""
        return now >= self._load_at + self.load_every

    def load_sent(self, now: float) -> None:
        """The load was published at ``now``."""
        self._load_at = now

    def wait(self, progress: Progress, now: float) -> float:
        """Seconds from ``now`` until a report is due if ``progress`` stays as it is."""
        if self.progress_due(progress, now):
            return 0.0
        due = self._load_at + self.load_every
        if _counts(progress) != self._counts:
            # A throttled count goes out when its time comes even if nothing else
            # happens: the last counts of a migration are not left unpublished.
            due = min(due, self._progress_at + self.progress_every)
        return max(0.0, due - now)


def _milestone(progress: Progress) -> tuple[int, bool, int]:
    return progress.epoch, progress.done, progress.failures


def _counts(progress: Progress) -> tuple[int, int, int, int]:
    return progress.items_sent, progress.bytes_sent, progress.items_scanned, progress.items_total
