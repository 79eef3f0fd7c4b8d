"""The committed gRPC code matches the .proto files (run scripts/gen_proto.py to fix)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_no_top_level_node_or_client_module() -> None:
    import importlib.util

    for name in ("node", "client", "coordinator", "common", "wire"):
        spec = importlib.util.find_spec(name)
        assert spec is None or "memcluster" not in str(spec.origin), name
