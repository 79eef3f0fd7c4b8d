"""The coordinator: membership, topology, rebalancing and leader election, kept in etcd."""
