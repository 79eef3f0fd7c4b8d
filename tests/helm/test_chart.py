"""The Helm chart (helm/memcluster): lint, render variants, validate, check what matters.

Offline: ``helm lint`` / ``helm template`` with the binary from scripts/install_helm.sh, and
kubernetes-validate's bundled schemas for a fixed Kubernetes version. The rendered node and
coordinator configurations are read back with memcluster's own configuration loader.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from memcluster.common.config import CoordinatorConfig, NodeConfig, parse_size

from .conftest import INSTALL_HELM, ROOT

pytestmark = pytest.mark.helm

CHART = ROOT / "helm" / "memcluster"
K8S_VERSION = "1.30.0"
RELEASE, NAMESPACE = "mc", "data"
NODE_STS = f"{RELEASE}-memcluster-node"
HEADLESS = f"{NODE_STS}-headless"
ETCD = f"{RELEASE}-memcluster-etcd"
DOMAIN = f"{NAMESPACE}.svc.cluster.local"
GIB, MIB = 1024**3, 1024**2
LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
EXTERNAL_ETCD = ["etcd-a.infra.svc:2379", "etcd-b.infra.svc:2379"]

# Name -> helm arguments. Every variant must lint, render and validate.
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "external-etcd": [
        "--set=etcd.bundled=false",
        f"--set-json=etcd.external.endpoints={EXTERNAL_ETCD}".replace("'", '"'),
    ],
    "one-node": ["--set=nodes.replicas=1"],
    "five-nodes": ["--set=nodes.replicas=5,nodes.pdb.maxUnavailable=2"],
    "warm-and-cold-disabled": [
        "--set=memory.tiers.warm.enabled=false,memory.tiers.cold.enabled=false"
    ],
    "cold-disabled": ["--set=memory.tiers.cold.enabled=false"],
    "hot-only": ["--values", str(Path(__file__).with_name("hot_only.yaml"))],
    "service-monitor": ["--set=metrics.serviceMonitor.enabled=true"],
    "etcd-3": ["--set=etcd.replicas=3"],
    "required-anti-affinity": [
        "--set=nodes.podAntiAffinity=required,coordinator.podAntiAffinity=none"
    ],
    "big-cold-tier": ["--set=memory.tiers.cold.capacity=100GB,nodes.sizing.cpuLimit=2"],
}

Docs = list[dict[str, Any]]
Render = Callable[..., Docs]


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """``render(*helm_args)``: the manifests of ``helm template`` (cached per arguments)."""
    cache: dict[tuple[str, ...], Docs] = {}

    def _render(*args: str) -> Docs:
        if args not in cache:
            done = run_helm(helm, "template", RELEASE, str(CHART), "-n", NAMESPACE, *args)
            assert done.returncode == 0, done.stderr
            cache[args] = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
        return cache[args]

    return _render


def find(docs: Docs, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def find_all(docs: Docs, kind: str) -> Docs:
    return [d for d in docs if d["kind"] == kind]


def by_component(docs: Docs, kind: str, component: str) -> Docs:
    return [
        d
        for d in find_all(docs, kind)
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    (found,) = (c for c in containers if c["name"] == name)
    return found


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c["env"]}


def quantity(text: str) -> float:
    """Bytes of a Kubernetes quantity such as ``12Gi`` or ``2059Mi``."""
    m = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T)?", text)
    assert m, f"{text!r} is not a quantity"
    units = {None: 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    units |= {"Ki": 1024, "Mi": MIB, "Gi": GIB, "Ti": 1024**4}
    return float(m[1]) * units[m[2]]


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


# --- lint -----------------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
def test_lint_passes(helm: str, strict: bool) -> None:
    done = run_helm(helm, "lint", str(CHART), *(["--strict"] if strict else []))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "default"])
def test_lint_passes_for_variant(helm: str, variant: str) -> None:
    done = run_helm(helm, "lint", "--strict", str(CHART), *VARIANTS[variant])
    assert done.returncode == 0, done.stdout + done.stderr


def test_install_script_is_idempotent(helm: str) -> None:
    before = Path(helm).stat().st_mtime_ns
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(INSTALL_HELM)], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == helm == str(ROOT / ".tools" / "bin" / "helm")
    assert Path(helm).stat().st_mtime_ns == before  # kept, not fetched again
    assert time.monotonic() - started < 5
    assert "v3." in run_helm(helm, "version", "--short").stdout


# --- every manifest is valid Kubernetes ---------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_manifests_validate_against_kubernetes_schemas(render: Render, variant: str) -> None:
    import kubernetes_validate  # a dev dependency: missing means a broken setup, not a skip

    docs = render(*VARIANTS[variant])
    assert docs
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no bundled schema; checked in test_service_monitor
        where = f"{doc['kind']} {doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{variant}: {where}: {exc.message}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_has_the_standard_labels(render: Render, variant: str) -> None:
    for doc in render(*VARIANTS[variant]):
        labels = doc["metadata"]["labels"]
        where = f"{doc['kind']} {doc['metadata']['name']}"
        assert set(LABELS) <= set(labels), f"{where}: {set(LABELS) - set(labels)} missing"
        assert labels["app.kubernetes.io/component"] in {"node", "coordinator", "etcd"}
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert doc["metadata"]["namespace"] == NAMESPACE
        if doc["kind"] in {"StatefulSet", "Deployment"}:
            pod_labels = doc["spec"]["template"]["metadata"]["labels"]
            assert set(LABELS) <= set(pod_labels), where
            assert doc["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_names_and_kinds_of_the_default_release(render: Render) -> None:
    docs = render()
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == sorted(
        [
            ("StatefulSet", NODE_STS),
            ("ConfigMap", NODE_STS),
            ("Service", HEADLESS),
            ("Service", f"{RELEASE}-memcluster"),
            ("PodDisruptionBudget", NODE_STS),
            ("Deployment", f"{RELEASE}-memcluster-coordinator"),
            ("ConfigMap", f"{RELEASE}-memcluster-coordinator"),
            ("Service", f"{RELEASE}-memcluster-coordinator"),
            ("PodDisruptionBudget", f"{RELEASE}-memcluster-coordinator"),
            ("StatefulSet", ETCD),
            ("Service", ETCD),
        ]
    )


# --- nodes ----------------------------------------------------------------------------------


def test_node_statefulset_shape(render: Render) -> None:
    sts = find(render(), "StatefulSet", NODE_STS)
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == HEADLESS
    assert pod["terminationGracePeriodSeconds"] == 60
    c = container(sts, "node")
    assert c["image"] == "memcluster:0.1.0"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert [*c["command"], *c["args"][:3]] == [
        "memcluster",
        "node",
        "--config",
        "/etc/memcluster/node.yaml",
    ]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["grpc"] == {"port": 7400}, probe
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": 7400, "frames": 7401, "metrics": 9400}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts == {"/etc/memcluster": "config", "/tmp": "tmp", "/data": "data"}
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == NODE_STS
    # Pods roll when their configuration changes.
    assert re.fullmatch(
        r"[0-9a-f]{64}", sts["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    )


def test_pods_run_as_non_root_with_a_read_only_root(render: Render) -> None:
    docs = render("--set=etcd.replicas=3")
    workloads = find_all(docs, "StatefulSet") + find_all(docs, "Deployment")
    assert len(workloads) == 3
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_node_env_gives_a_stable_id_and_a_reachable_address(render: Render) -> None:
    c = container(find(render(), "StatefulSet", NODE_STS), "node")
    env = env_of(c)
    assert env["MEMCLUSTER_SERVER__ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["MEMCLUSTER_SERVER__ADVERTISE"]["value"] == f"$(POD_NAME).{HEADLESS}.{DOMAIN}:7400"
    # A $(VAR) reference only expands when VAR comes earlier in the list.
    names = [e["name"] for e in c["env"]]
    for i, e in enumerate(c["env"]):
        for ref in re.findall(r"\$\((\w+)\)", e.get("value", "")):
            assert ref in names[:i], f"{e['name']} refers to {ref} before it is defined"


@pytest.mark.parametrize(
    ("variant", "endpoints"),
    [
        ("default", [f"{ETCD}-0.{ETCD}.{DOMAIN}:2379"]),
        ("etcd-3", [f"{ETCD}-{i}.{ETCD}.{DOMAIN}:2379" for i in range(3)]),
        ("external-etcd", EXTERNAL_ETCD),
    ],
)
def test_nodes_and_coordinators_point_at_etcd(
    render: Render, variant: str, endpoints: list[str]
) -> None:
    docs = render(*VARIANTS[variant])
    node = container(find(docs, "StatefulSet", NODE_STS), "node")
    coordinator = container(find(docs, "Deployment"), "coordinator")
    for c in (node, coordinator):
        assert env_of(c)["MEMCLUSTER_CLUSTER__ETCD"]["value"] == ",".join(endpoints)
    assert bool(by_component(docs, "StatefulSet", "etcd")) == (variant != "external-etcd")


def test_node_config_is_the_values_and_loads_as_a_node_config(
    render: Render, tmp_path: Path
) -> None:
    args = (
        "--set=memory.tiers.hot.capacity=2GB,memory.tiers.hot.eviction=lfu",
        "--set=memory.tiers.warm.compression_level=7,memory.tiers.cold.path=/data/lmdb",
        "--set=nodes.gracePeriod=45s,nodes.terminationGracePeriodSeconds=90",
    )
    docs = render(*args)
    text = find(docs, "ConfigMap", NODE_STS)["data"]["node.yaml"]
    data = yaml.safe_load(text)
    tiers = data["memory"]["tiers"]
    assert tiers["hot"]["capacity"] == "2GB"
    assert tiers["hot"]["eviction"] == "lfu"
    assert tiers["warm"]["compression_level"] == 7
    assert tiers["cold"]["path"] == "/data/lmdb"
    assert data["server"] == {
        "listen": "0.0.0.0:7400",
        "frames_listen": "0.0.0.0:7401",
        "metrics_listen": "0.0.0.0:9400",
        "grace_period": "45s",
    }
    # Everything else is the chart's defaults, key for key.
    defaults = chart_values()
    assert data["limits"] == defaults["limits"]
    assert data["cluster"] == {"name": "memcluster", **defaults["nodes"]["cluster"]}
    expected_memory = defaults["memory"]
    expected_memory["tiers"]["hot"] |= {"capacity": "2GB", "eviction": "lfu"}
    expected_memory["tiers"]["warm"]["compression_level"] = 7
    expected_memory["tiers"]["cold"]["path"] = "/data/lmdb"
    assert data["memory"] == expected_memory

    # The node itself accepts the file plus the per-pod environment.
    sts = find(docs, "StatefulSet", NODE_STS)
    pod = f"{NODE_STS}-0"
    env = {
        name: e["value"].replace("$(POD_NAME)", pod)
        for name, e in env_of(container(sts, "node")).items()
        if name.startswith("MEMCLUSTER_") and "value" in e
    }
    env["MEMCLUSTER_SERVER__ID"] = pod
    (tmp_path / "node.yaml").write_text(text)
    config = NodeConfig.load(tmp_path / "node.yaml", env=env)
    assert config.server.id == pod
    assert config.server.advertise == f"{pod}.{HEADLESS}.{DOMAIN}:7400"
    assert config.server.grace_period == 45
    assert config.memory.tiers.hot.capacity == 2 * 10**9
    assert config.memory.tiers.hot.eviction == "lfu"
    assert config.cluster.etcd == f"{ETCD}-0.{ETCD}.{DOMAIN}:2379"
    # The cold tier lives on the node's volume.
    mounts = {m["name"]: m["mountPath"] for m in container(sts, "node")["volumeMounts"]}
    assert Path(config.memory.tiers.cold.path).is_relative_to(mounts["data"])


def test_coordinator_config_loads_as_a_coordinator_config(render: Render, tmp_path: Path) -> None:
    docs = render(
        "--set=coordinator.topology.replication_factor=3,coordinator.topology.partitions=256"
    )
    cm = find(docs, "ConfigMap", f"{RELEASE}-memcluster-coordinator")
    (tmp_path / "coordinator.yaml").write_text(cm["data"]["coordinator.yaml"])
    c = container(find(docs, "Deployment"), "coordinator")
    env = {
        n: e["value"] for n, e in env_of(c).items() if n.startswith("MEMCLUSTER_") and "value" in e
    }
    env["MEMCLUSTER_SERVER__ADVERTISE"] = env["MEMCLUSTER_SERVER__ADVERTISE"].replace(
        "$(POD_IP)", "10.1.2.3"
    )
    config = CoordinatorConfig.load(tmp_path / "coordinator.yaml", env=env)
    assert config.topology.replication_factor == 3
    assert config.topology.partitions == 256
    assert config.topology.down_after == 60
    assert config.balancing.enabled is True
    assert config.server.listen == "0.0.0.0:7500"
    assert config.server.advertise == "10.1.2.3:7500"


@pytest.mark.parametrize(
    ("cold", "headroom", "expected_gi"),
    [("10GB", 20, 12), ("100GB", 20, 112), ("10GiB", 20, 12), ("1TB", 20, 1118), ("100GB", 0, 94)],
)
def test_node_volume_follows_the_cold_tier(
    render: Render, cold: str, headroom: int, expected_gi: int
) -> None:
    docs = render(
        f"--set=memory.tiers.cold.capacity={cold},nodes.persistence.headroomPercent={headroom}"
    )
    (claim,) = find(docs, "StatefulSet", NODE_STS)["spec"]["volumeClaimTemplates"]
    size = claim["spec"]["resources"]["requests"]["storage"]
    assert size == f"{expected_gi}Gi"
    capacity = parse_size(cold)
    assert quantity(size) >= capacity * (1 + headroom / 100)
    assert quantity(size) < capacity * (1 + headroom / 100) + GIB
    assert claim["metadata"]["name"] == "data"
    assert "helm.sh/chart" not in claim["metadata"]["labels"]  # immutable: no versioned labels


def test_node_volume_size_and_class_can_be_given(render: Render) -> None:
    docs = render("--set=nodes.persistence.size=500Gi,nodes.persistence.storageClassName=fast")
    (claim,) = find(docs, "StatefulSet", NODE_STS)["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "500Gi"
    assert claim["spec"]["storageClassName"] == "fast"


@pytest.mark.parametrize("variant", ["cold-disabled", "warm-and-cold-disabled", "hot-only"])
def test_no_volume_without_a_cold_tier(render: Render, variant: str) -> None:
    sts = find(render(*VARIANTS[variant]), "StatefulSet", NODE_STS)
    assert "volumeClaimTemplates" not in sts["spec"]
    assert "persistentVolumeClaimRetentionPolicy" not in sts["spec"]
    assert "/data" not in {m["mountPath"] for m in container(sts, "node")["volumeMounts"]}


def expected_memory_mi(hot: str | None, warm: str | None, factor: float = 1.25) -> str:
    ram = sum(parse_size(size) for size in (hot, warm) if size)
    return f"{math.ceil((ram * factor + 256 * MIB) / MIB)}Mi"


@pytest.mark.parametrize(
    ("variant", "hot", "warm"),
    [
        ("default", "256MB", "1GB"),
        ("warm-and-cold-disabled", "256MB", None),
        ("hot-only", "2GiB", None),
        ("cold-disabled", "256MB", "1GB"),
    ],
)
def test_node_resources_follow_the_ram_tiers(
    render: Render, variant: str, hot: str, warm: str | None
) -> None:
    c = container(find(render(*VARIANTS[variant]), "StatefulSet", NODE_STS), "node")
    memory = expected_memory_mi(hot, warm)
    assert c["resources"]["requests"] == {"memory": memory, "cpu": "500m"}
    assert c["resources"]["limits"] == {"memory": memory}
    assert quantity(memory) >= sum(parse_size(s) for s in (hot, warm) if s) * 1.25


@pytest.mark.parametrize("size", ["1.5GiB", "750MB", "3gb", "1TB", "1048576", "12 MiB", "64kib"])
def test_chart_sizes_read_like_the_node_reads_them(render: Render, size: str) -> None:
    """The template's size parser agrees with memcluster.common.config.parse_size."""
    docs = render(
        f"--set-string=memory.tiers.hot.capacity={size}",
        "--set=memory.tiers.warm.enabled=false,nodes.sizing.memoryFactor=1,nodes.sizing.memoryBase=0B",
    )
    memory = container(find(docs, "StatefulSet", NODE_STS), "node")["resources"]["requests"]
    assert memory["memory"] == f"{math.ceil(parse_size(size) / MIB)}Mi"


def test_node_resources_can_be_overridden(render: Render) -> None:
    docs = render(
        "--set=nodes.resources.requests.memory=8Gi,nodes.resources.limits.memory=8Gi",
        "--set=nodes.sizing.cpuLimit=4",
    )
    resources = container(find(docs, "StatefulSet", NODE_STS), "node")["resources"]
    assert resources == {
        "requests": {"memory": "8Gi", "cpu": "500m"},
        "limits": {"memory": "8Gi", "cpu": 4},
    }


def test_node_services(render: Render) -> None:
    docs = render()
    headless = find(docs, "Service", HEADLESS)["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    client = find(docs, "Service", f"{RELEASE}-memcluster")["spec"]
    assert client["type"] == "ClusterIP"
    assert {p["name"]: p["port"] for p in client["ports"]} == {"grpc": 7400, "metrics": 9400}
    pod_labels = find(docs, "StatefulSet", NODE_STS)["spec"]["template"]["metadata"]["labels"]
    for spec in (headless, client):
        assert spec["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize(
    ("mode", "key"),
    [
        ("preferred", "preferredDuringSchedulingIgnoredDuringExecution"),
        ("required", "requiredDuringSchedulingIgnoredDuringExecution"),
    ],
)
def test_node_anti_affinity(render: Render, mode: str, key: str) -> None:
    sts = find(render(f"--set=nodes.podAntiAffinity={mode}"), "StatefulSet", NODE_STS)
    anti = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert list(anti) == [key]
    (term,) = anti[key]
    term = term.get("podAffinityTerm", term)
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]


# --- replicas and disruption budgets ----------------------------------------------------


@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
def test_node_replicas_and_pdb_agree(render: Render, replicas: int) -> None:
    docs = render(f"--set=nodes.replicas={replicas}")
    assert find(docs, "StatefulSet", NODE_STS)["spec"]["replicas"] == replicas
    pdbs = by_component(docs, "PodDisruptionBudget", "node")
    if replicas == 1:
        assert pdbs == []
        return
    (pdb,) = pdbs
    assert 0 < pdb["spec"]["maxUnavailable"] < replicas
    sts = find(docs, "StatefulSet", NODE_STS)
    assert pdb["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]


def test_coordinators_default_to_two_behind_a_service(render: Render) -> None:
    docs = render()
    deployment = find(docs, "Deployment", f"{RELEASE}-memcluster-coordinator")
    assert deployment["spec"]["replicas"] >= 2
    c = container(deployment, "coordinator")
    assert c["livenessProbe"]["grpc"] == c["readinessProbe"]["grpc"] == {"port": 7500}
    env = env_of(c)
    assert env["MEMCLUSTER_SERVER__ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    service = find(docs, "Service", f"{RELEASE}-memcluster-coordinator")["spec"]
    assert service["type"] == "ClusterIP"
    assert [(p["name"], p["port"]) for p in service["ports"]] == [("grpc", 7500)]
    (pdb,) = by_component(docs, "PodDisruptionBudget", "coordinator")
    assert pdb["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]


def test_bundled_etcd_with_three_members(render: Render) -> None:
    docs = render(*VARIANTS["etcd-3"])
    sts = find(docs, "StatefulSet", ETCD)
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["serviceName"] == ETCD
    c = container(sts, "etcd")
    assert c["image"].startswith("quay.io/coreos/etcd:v3.5.")
    env = {name: str(e.get("value")) for name, e in env_of(c).items()}
    assert env["ETCD_INITIAL_CLUSTER"] == ",".join(
        f"{ETCD}-{i}=http://{ETCD}-{i}.{ETCD}.{DOMAIN}:2380" for i in range(3)
    )
    assert env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == f"http://$(POD_NAME).{ETCD}.{DOMAIN}:2380"
    assert env["ETCD_ADVERTISE_CLIENT_URLS"] == f"http://$(POD_NAME).{ETCD}.{DOMAIN}:2379"
    assert env["ETCD_INITIAL_CLUSTER_STATE"] == "new"
    assert env["ETCD_NAME"] == "$(POD_NAME)"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}[claim["metadata"]["name"]]
    assert env["ETCD_DATA_DIR"].startswith(mount + "/")
    service = find(docs, "Service", ETCD)["spec"]
    assert service["clusterIP"] == "None"
    assert service["publishNotReadyAddresses"] is True
    (pdb,) = by_component(docs, "PodDisruptionBudget", "etcd")
    assert pdb["spec"]["maxUnavailable"] == 1  # keeps a quorum of 2


def test_service_monitor(render: Render) -> None:
    assert find_all(render(), "ServiceMonitor") == []
    docs = render(*VARIANTS["service-monitor"])
    monitor = find(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    # It selects the node Services, and exactly one of them has the `metrics` port.
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s for s in find_all(docs, "Service") if selector.items() <= s["metadata"]["labels"].items()
    ]
    with_metrics = [s for s in selected if "metrics" in {p["name"] for p in s["spec"]["ports"]}]
    assert [s["metadata"]["name"] for s in with_metrics] == [f"{RELEASE}-memcluster"]


# --- bad values are refused, naming the value ---------------------------------------------


SCHEMA_VIOLATIONS = [
    ("--set=memory.tiers.hot.eviction=fifo", "memory.tiers.hot.eviction"),
    ("--set=nodes.replicas=-1", "nodes.replicas"),
    ("--set=coordinator.replicas=0", "coordinator.replicas"),
    ("--set=memory.tiers.cold.capacity=lots", "memory.tiers.cold.capacity"),
    ("--set=memory.tiers.warm.compression_level=30", "memory.tiers.warm.compression_level"),
    ("--set=memory.tiers.hot.ttl=forever", "memory.tiers.hot.ttl"),
    ("--set=memory.promote_chance=0", "memory.promote_chance"),
    ("--set=memory.promote_after=0", "memory.promote_after"),
    ("--set=memory.tiers.cold.path=/var/cold", "memory.tiers.cold.path"),
    ("--set=etcd.replicas=2", "etcd.replicas"),
    ("--set=memory.tiers.hot.capcity=1GB", "capcity"),
    ("--set=nodes.podAntiAffinity=sometimes", "nodes.podAntiAffinity"),
    ("--set=etcd.bundled=false", "etcd.external.endpoints"),
    ("--set=etcd.bundled=false,etcd.external.endpoints[0]=no-port", "etcd.external.endpoints"),
]
# Cross-field rules the schema cannot express: checked in the templates. They stop
# `helm template` / install / upgrade; `helm lint` reports a template's `fail` as [INFO] only.
TEMPLATE_CHECKS = [
    ("--set=nodes.terminationGracePeriodSeconds=20", "nodes.terminationGracePeriodSeconds"),
    ("--set=nodes.replicas=3,nodes.pdb.maxUnavailable=3", "nodes.pdb.maxUnavailable"),
    ("--set=memory.tiers.hot.capacity=0GB", "memory.tiers.hot.capacity"),
    ("--set=etcd.replicas=3,etcd.pdb.maxUnavailable=2", "etcd.pdb.maxUnavailable"),
    (
        "--set=memory.tiers.hot.enabled=false,memory.tiers.warm.enabled=false,"
        "memory.tiers.cold.enabled=false",
        "memory.tiers: at least one tier",
    ),
]


@pytest.mark.parametrize(("arg", "named"), SCHEMA_VIOLATIONS, ids=[n for _, n in SCHEMA_VIOLATIONS])
@pytest.mark.parametrize("command", ["template", "lint"])
def test_schema_refuses_bad_values(helm: str, command: str, arg: str, named: str) -> None:
    chart_args = [RELEASE, str(CHART)] if command == "template" else [str(CHART)]
    done = run_helm(helm, command, *chart_args, arg)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "don't meet the specifications of the schema" in output
    assert named in output


@pytest.mark.parametrize(("arg", "named"), TEMPLATE_CHECKS, ids=[n for _, n in TEMPLATE_CHECKS])
def test_templates_refuse_inconsistent_values(helm: str, arg: str, named: str) -> None:
    done = run_helm(helm, "template", RELEASE, str(CHART), arg)
    assert done.returncode != 0, done.stdout
    assert named in done.stderr
    linted = run_helm(helm, "lint", str(CHART), arg)
    assert named in linted.stdout + linted.stderr


# --- docs -----------------------------------------------------------------------------------


def documented_keys(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted keys of values.yaml as the README documents them: objects that are Kubernetes
    structures (resources, probes, security contexts, ...) count as one value."""
    whole = {
        "podSecurityContext",
        "containerSecurityContext",
        "resources",
        "retentionPolicy",
        "startupProbe",
        "livenessProbe",
        "readinessProbe",
    }
    for key, value in values.items():
        if isinstance(value, dict) and value and key not in whole:
            yield from documented_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    table_keys = set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", readme, re.MULTILINE))
    keys = set(documented_keys(chart_values()))
    assert keys - table_keys == set(), "values missing from the README's tables"
    assert table_keys - keys == set(), "README documents values that do not exist"
    assert "TLS" in readme
    assert "memcluster admin drain" in readme


@pytest.fixture(scope="module")
def notes_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart that renders NOTES.txt as a ConfigMap (helm template skips NOTES)."""
    chart = tmp_path_factory.mktemp("chart") / "memcluster"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes_preview.tpl").write_text(
        '{{- define "preview.notes" -}}\n' + notes + "\n{{- end }}\n"
    )
    (chart / "templates" / "notes-preview.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: {{ include "preview.notes" . | toJson }}\n'
    )
    return chart


def render_notes(helm: str, chart: Path, *args: str) -> str:
    done = run_helm(
        helm, "template", RELEASE, str(chart), "-n", NAMESPACE,
        "--show-only", "templates/notes-preview.yaml", *args,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return str(yaml.safe_load(done.stdout)["data"]["notes"])


def test_notes_tell_how_to_connect_and_scale_down(helm: str, notes_chart: Path) -> None:
    notes = render_notes(helm, notes_chart)
    assert f"{RELEASE}-memcluster.{DOMAIN}:7400" in notes  # the client bootstrap address
    assert "memcluster status -c 127.0.0.1:7500" in notes
    assert f"port-forward svc/{RELEASE}-memcluster-coordinator 7500:7500" in notes
    assert f"memcluster admin drain {NODE_STS}-2" in notes
    assert "nodes.replicas=2" in notes
    assert f"delete pvc data-{NODE_STS}-2" in notes
    assert "WARNING" not in notes
    single = render_notes(helm, notes_chart, "--set=nodes.replicas=1,coordinator.replicas=1")
    assert "drain" not in single
    assert "replication_factor (2) is above nodes.replicas (1)" in single
    assert "one coordinator" in single
