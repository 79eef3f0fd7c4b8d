"""Benchmarks of memcluster, run from the repository root (see bench/README.md).

``python -m bench`` runs them all (or one of ``workloads``, ``rebalance``, ``tiers``):
YCSB-style workloads on a local 3-node cluster against a private redis-server and a
private memcached, a node join and a node failure under load, and one node's tiers
side by side with Redis (``python -m bench.tiers`` on its own).
"""
