#!/usr/bin/env bash
# What `python -m bench` needs beyond the project itself, idempotent:
#
#   1. redis-server and memcached (Debian packages; the bench starts private instances
#      of them on 127.0.0.1 and never uses a system service);
#   2. redis-py, pymemcache and matplotlib in the project's virtualenv.
#
# Then: .venv/bin/python -m bench
# Environment: PYTHON (.venv/bin/python). apt-get runs only when a binary is missing
# (as root, or through sudo when it is available).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}

log() { printf '[bench_env %4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# -- 1. servers --------------------------------------------------------------------
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v memcached >/dev/null || need+=(memcached)
if [ ${#need[@]} -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install ${need[*]}"
        sudo=(sudo)
    fi
    log "installing ${need[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${need[@]}" >/tmp/memcluster-bench-apt.log 2>&1 \
        || { tail -20 /tmp/memcluster-bench-apt.log; die "apt-get failed"; }
    # Debian starts the packages' services; the bench runs its own instances instead.
    for service in redis-server memcached; do
        if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
            "${sudo[@]}" systemctl stop "$service" || true
        fi
    done
fi

# -- 2. Python packages --------------------------------------------------------------
[ -x "$PYTHON" ] || make setup >/dev/null
if ! "$PYTHON" -c 'import redis, pymemcache, matplotlib' 2>/dev/null; then
    log "installing redis, pymemcache, matplotlib into $PYTHON's environment"
    "$PYTHON" -m pip install --quiet redis pymemcache matplotlib
fi

log "ready: $(redis-server --version | cut -d' ' -f1-3), $(memcached -V), $("$PYTHON" -c \
    'import redis, pymemcache, matplotlib; print(f"redis-py {redis.__version__}, pymemcache \
{pymemcache.__version__}, matplotlib {matplotlib.__version__}")')"
