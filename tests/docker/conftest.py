"""The docker tier: the image, the compose file and the integration suite on containers.

Tests here carry the ``docker`` marker. They run only when MEMCLUSTER_DOCKER_TESTS=1
(CI sets it in its docker step, after scripts/docker_test_env.sh); otherwise they are
deselected. When it is set and Docker, compose or the image is missing, every one of
them fails, saying what is missing: a docker tier that silently skips would pass with
nothing tested.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.docker.compose import ComposeCluster, DockerUnavailable, check_docker

ENABLED = os.environ.get("MEMCLUSTER_DOCKER_TESTS") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    deselected = [item for item in items if item.get_closest_marker("docker")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("docker")]


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """Docker, compose and the image are usable, or the test fails saying what is missing."""
    try:
        check_docker()
    except DockerUnavailable as exc:
        pytest.fail(f"docker tests (MEMCLUSTER_DOCKER_TESTS=1): {exc}", pytrace=False)


@pytest.fixture(scope="module")
def compose_cluster(docker_ready: None) -> Iterator[ComposeCluster]:
    """The standard compose cluster, shared by one module's tests, removed afterwards."""
    cluster = ComposeCluster.start_fresh()
    try:
        yield cluster
    finally:
        cluster.stop()
