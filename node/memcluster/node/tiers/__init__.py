"""A node's storage tiers: hot (RAM), warm (zstd in RAM), cold (zstd on disk, LMDB)."""

from memcluster.node.tiers.base import Item, Tier

__all__ = ["Item", "Tier"]
