"""Benchmarks of memcluster, run from the repository root (see bench/README.md).

``python -m bench.tiers`` measures one node's tiers (memory per key, compression,
cold-tier latency, end-to-end latency) side by side with a private redis-server.
"""
