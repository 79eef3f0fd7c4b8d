"""The memcluster node process: gRPC server, hot/warm/cold tiers, peer traffic."""
