"""Regenerate the gRPC code and type stubs in proto/memcluster/wire from the .proto files.

    python scripts/gen_proto.py           # rewrite the committed generated files
    python scripts/gen_proto.py --check   # exit 1 if they are stale

The .proto files sit beside their generated code; protoc sees them under the
virtual path `memcluster/wire/` so that generated imports read
`from memcluster.wire import items_pb2`.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIRE = Path(__file__).resolve().parent.parent / "proto" / "memcluster" / "wire"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc over every .proto in WIRE; return the generated files in out_dir."""
    protos = sorted(p.name for p in WIRE.glob("*.proto"))
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-Imemcluster/wire={WIRE}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(f"memcluster/wire/{name}" for name in protos),
    ]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return sorted((out_dir / "memcluster" / "wire").iterdir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        committed = {p.name for p in WIRE.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}
        stale = sorted(
            {p.name for p in fresh if not (WIRE / p.name).exists()}
            | {
                p.name
                for p in fresh
                if (WIRE / p.name).exists() and not filecmp.cmp(p, WIRE / p.name, shallow=False)
            }
            | (committed - {p.name for p in fresh})
        )
        if args.check:
            for name in stale:
                print(f"stale generated file: proto/memcluster/wire/{name}", file=sys.stderr)
            if stale:
                print("run: python scripts/gen_proto.py", file=sys.stderr)
            return 1 if stale else 0
        for name in committed - {p.name for p in fresh}:
            (WIRE / name).unlink()
        for p in fresh:
            shutil.copyfile(p, WIRE / p.name)
        print(f"generated {len(fresh)} files in {WIRE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
