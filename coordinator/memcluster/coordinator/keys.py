"""Where the cluster's state lives in etcd (one prefix per cluster name).

/memcluster/<cluster>/topology              Topology protobuf, written by the leader (fenced)
/memcluster/<cluster>/leader                the leader's id, under the leader's lease
/memcluster/<cluster>/coordinators/<id>     a coordinator's gRPC address, under its lease
/memcluster/<cluster>/members/<node>        a live node's registration (JSON), under its lease
/memcluster/<cluster>/load/<node>           NodeLoad protobuf, under the node's lease
/memcluster/<cluster>/migrations/<node>     MigrationProgress protobuf for the node's epoch
/memcluster/<cluster>/desired/rf            replication factor asked for by an admin
/memcluster/<cluster>/desired/weight/<node> ring weight asked for by an admin
/memcluster/<cluster>/desired/drain/<node>  present: an admin asked the node to leave
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


class Keys:
    """The etcd keys of one cluster."""

    def __init__(self, cluster: str) -> None:
        self.root = f"/memcluster/{cluster}/"
        self.topology = self.root + "topology"
        self.leader = self.root + "leader"
        self.coordinators = self.root + "coordinators/"
        self.members = self.root + "members/"
        self.load = self.root + "load/"
        self.migrations = self.root + "migrations/"
        self.desired = self.root + "desired/"
        self.desired_rf = self.desired + "rf"
        self.desired_weight = self.desired + "weight/"
        self.desired_drain = self.desired + "drain/"

    @staticmethod
    def leaf(key: str) -> str:
        """The last path element (a node or coordinator id)."""
        return key.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class Registration:
    """What a live node says about itself under its lease."""

    address: str
    weight: float = 1.0
    started_at: float = 0.0

    def to_bytes(self) -> bytes:
        """JSON bytes."""
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Registration:
        """From JSON bytes (unknown fields ignored)."""
        raw = json.loads(data)
        return cls(
            str(raw["address"]), float(raw.get("weight", 1.0)), float(raw.get("started_at", 0))
        )
