# One image for every kubenetmon role: the command picks it
#   kubenetmon agent | enricher | writer | nats init | clickhouse migrate | ...
#
# Build (both architectures; every compiled dependency ships wheels for amd64 and arm64):
#   docker buildx build --platform linux/amd64,linux/arm64 -t kubenetmon:0.1.0 .
#
# Portable on purpose: no `# syntax=` line and no heredocs, so BuildKit's built-in frontend, the classic
# builder, buildah/podman and kaniko all build it with no frontend fetched from a registry; nothing but
# packages is fetched at build time. PYTHON_IMAGE is any Debian-like image with `python` 3.11 and `venv`.
#
# The image talks to ClickHouse servers over HTTP(S). The embedded engine (chdb:// DSNs, used by
# `kubenetmon up`, docs/compose/chdb.yaml and the tests) adds about 0.5 GB and is left out unless
# --build-arg WITH_CHDB=true.

ARG PYTHON_IMAGE=python:3.11-slim-trixie

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ARG WITH_CHDB=false
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
RUN python -m venv /opt/kubenetmon

# Dependencies first, from the pinned list in pyproject.toml, so source edits reuse this layer.
# Wheels are preferred, and every compiled dependency ships them for amd64 and arm64; the few
# sdist-only packages are pure Python. This stage has no compiler: a dependency that would need one
# fails the build here instead of being compiled.
COPY pyproject.toml README.md .ci/image_requirements.py ./
RUN python image_requirements.py > /tmp/requirements.txt
RUN /opt/kubenetmon/bin/pip install --prefer-binary -r /tmp/requirements.txt

# The project itself: a pure-Python wheel built here (hatchling is fetched into an isolated build
# environment and never reaches the final stage), installed without re-resolving dependencies.
COPY shared ./shared
COPY agent ./agent
COPY enricher ./enricher
COPY writer ./writer
RUN /opt/kubenetmon/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && /opt/kubenetmon/bin/pip install --no-deps /tmp/wheels/kubenetmon-*.whl \
 && /opt/kubenetmon/bin/python -m compileall -q /opt/kubenetmon/lib \
 && /opt/kubenetmon/bin/kubenetmon --help > /dev/null

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="kubenetmon" \
      org.opencontainers.image.description="Kubernetes network-flow metering: conntrack -> NATS JetStream -> enrichment -> ClickHouse" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="kubenetmon" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# Bytecode is compiled at build time: the root filesystem is read-only at run time.
ENV PATH=/opt/kubenetmon/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# /var/lib/kubenetmon: where a volume for the embedded engine's data (chdb:///var/lib/kubenetmon/...)
# is mounted; a new volume takes this directory's owner.
RUN groupadd --system --gid 10001 kubenetmon \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin kubenetmon \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/kubenetmon

COPY --from=build /opt/kubenetmon /opt/kubenetmon

# Non-root by default. The agent's DaemonSet runs it as root with NET_ADMIN only (conntrack netlink).
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["kubenetmon"]
CMD ["--help"]
