"""``memcluster``: run a cluster and its processes, talk to it, inspect and change it.

Exit codes: 0 success, 1 a request failed (the message says why), 2 bad usage or
bad configuration, 3 a key was not found (``get``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from memcluster.common.config import ConfigError, CoordinatorConfig, NodeConfig
from memcluster.common.errors import MemclusterError

DEFAULT_ADDRESS = "127.0.0.1:7400"
DEFAULT_COORDINATOR = "127.0.0.1:7500"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from memcluster.client import Client

    return Client(args.address, timeout=args.timeout)


def cmd_node(args: argparse.Namespace) -> int:
    """Run a node process in the foreground."""
    from memcluster.node.server import main

    config = NodeConfig.load(args.config)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    return main(config, ready_file=args.ready_file)


def cmd_coordinator(args: argparse.Namespace) -> int:
    """Run a coordinator replica in the foreground."""
    from memcluster.coordinator.server import run

    config = CoordinatorConfig.load(args.config)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    return asyncio.run(run(config))


def cmd_local(args: argparse.Namespace) -> int:
    """A whole cluster on this machine until Ctrl-C."""
    from memcluster.cli.demo import run_local

    return run_local(args.data_dir, args.nodes, args.rf, demo=args.demo)


def cmd_status(args: argparse.Namespace) -> int:
    """The cluster as its coordinator sees it, with every node's tiers."""
    from memcluster.cli.tables import render_cluster_status
    from memcluster.client.admin import AdminClient

    with AdminClient(args.coordinator, timeout=args.timeout) as admin:
        status = admin.status()
    render_cluster_status(status, timeout=args.timeout)
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    """Change the replication factor, a weight, or drain a node."""
    from memcluster.client.admin import AdminClient

    with AdminClient(args.coordinator, timeout=args.timeout) as admin:
        if args.action == "set-rf":
            rf = args.value or args.node
            if rf is None or not rf.isdigit():
                print("usage: memcluster admin set-rf N", file=sys.stderr)
                return 2
            print(admin.set_replication_factor(int(rf)))
        elif args.action == "set-weight":
            try:
                weight = float(args.value)
            except (TypeError, ValueError):
                print("usage: memcluster admin set-weight NODE WEIGHT", file=sys.stderr)
                return 2
            print(admin.set_weight(args.node, weight))
        else:
            if not args.node:
                print("usage: memcluster admin drain NODE", file=sys.stderr)
                return 2
            print(admin.drain(args.node))
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the process at --address reports SERVING (standard gRPC health)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(args.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"{args.address}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def cmd_config(args: argparse.Namespace) -> int:
    """Validate a configuration and print the effective values."""
    config = NodeConfig.load(args.config)
    print(yaml.safe_dump(config.to_mapping(), sort_keys=False), end="")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    """Print a value (raw bytes to stdout)."""
    with _client(args) as client:
        value = client.get(args.key.encode())
    if value is None:
        print(f"not found: {args.key}", file=sys.stderr)
        return 3
    sys.stdout.buffer.write(value + (b"\n" if sys.stdout.isatty() else b""))
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    """Store a value given as an argument or on stdin ('-')."""
    value = sys.stdin.buffer.read() if args.value == "-" else args.value.encode()
    with _client(args) as client:
        version = client.put(args.key.encode(), value, ttl=args.ttl, priority=args.priority)
    print(f"stored {args.key} ({len(value)} bytes, version {version})")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete a key."""
    with _client(args) as client:
        existed = client.delete(args.key.encode())
    print(f"deleted {args.key}" if existed else f"not found: {args.key}")
    return 0 if existed else 3


def cmd_stats(args: argparse.Namespace) -> int:
    """Per-tier figures of one node."""
    with _client(args) as client:
        stats = client.stats()
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
        return 0
    from memcluster.cli.tables import render_node_stats

    render_node_stats(stats)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start a local cluster, run a short workload, add a node, check nothing was lost."""
    from memcluster.cli.demo import run_local

    return run_local(args.data_dir, args.nodes, args.rf, demo=True, items=args.items)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="memcluster", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _process_commands(sub)
    _data_commands(sub)
    _cluster_commands(sub)
    return parser


def _process_commands(sub: Any) -> None:
    for name, func, help_ in (
        ("node", cmd_node, "run a node"),
        ("coordinator", cmd_coordinator, "run a coordinator replica"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", help="YAML or TOML file (env MEMCLUSTER_* overrides it)")
        p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
        p.set_defaults(func=func)
        if name == "node":
            p.add_argument("--ready-file", help="write the ready JSON (addresses) to this file")
    config = sub.add_parser("config", help="validate a node configuration and print it")
    config.add_argument("--config", help="YAML or TOML file")
    config.set_defaults(func=cmd_config)
    local = sub.add_parser("local", help="run etcd, a coordinator and nodes on this machine")
    demo = sub.add_parser("demo", help="a local cluster, a workload, a node added, nothing lost")
    for p in (local, demo):
        p.add_argument("--nodes", type=int, default=3, help="nodes to start with (default 3)")
        p.add_argument("--rf", type=int, default=2, help="replication factor (default 2)")
        p.add_argument("--data-dir", help="keep all data here (default: a temporary dir)")
    local.add_argument("--demo", action="store_true", help="run the demo workload, then exit")
    local.set_defaults(func=cmd_local)
    demo.add_argument("--items", type=int, default=30_000, help="documents to write")
    demo.set_defaults(func=cmd_demo)


def _data_commands(sub: Any) -> None:
    def client_command(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--address", "-a", default=DEFAULT_ADDRESS, help="a node's host:port")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
        return p  # type: ignore[no-any-return]

    get = client_command("get", "print a key's value")
    get.add_argument("key")
    get.set_defaults(func=cmd_get)
    put = client_command("put", "store a value ('-' reads stdin)")
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument("--ttl", type=float, help="seconds to live")
    put.add_argument("--priority", type=int, default=0, help="higher is evicted later")
    put.set_defaults(func=cmd_put)
    delete = client_command("delete", "delete a key")
    delete.add_argument("key")
    delete.set_defaults(func=cmd_delete)
    health = client_command("health", "exit 0 if a node or coordinator serves (gRPC health)")
    health.add_argument("--service", default="", help="service name ('' = the whole server)")
    health.set_defaults(func=cmd_health)
    stats = client_command("stats", "show one node's tiers")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.set_defaults(func=cmd_stats)


def _cluster_commands(sub: Any) -> None:
    def coordinator_command(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--coordinator", "-c", default=DEFAULT_COORDINATOR, help="host:port")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
        return p  # type: ignore[no-any-return]

    status = coordinator_command("status", "nodes, states, epoch, tiers, migration progress")
    status.set_defaults(func=cmd_status)
    admin = coordinator_command("admin", "change the cluster")
    admin.add_argument("action", choices=["set-rf", "set-weight", "drain"])
    admin.add_argument("node", nargs="?", help="node id (set-weight, drain)")
    admin.add_argument("value", nargs="?", help="the replication factor or the weight")
    admin.set_defaults(func=cmd_admin)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``memcluster`` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"memcluster: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    except MemclusterError as exc:
        print(f"memcluster: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
