"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.harness import NodeFactory

# The machine is shared and noisy: property tests judge behaviour, never speed.
settings.register_profile("memcluster", deadline=None)
settings.load_profile("memcluster")


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[NodeFactory]:
    """Start real node processes; all are killed at teardown."""
    factory = NodeFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()
