# syntax=docker/dockerfile:1
# One image for both entry points: `streamscale consume` (the default) and `streamscale operate`.
# Build: docker build -t streamscale:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: a virtualenv with streamscale and its dependencies ---------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first, so that a change of the code alone reuses this layer.
COPY pyproject.toml README.md ./
COPY streamscale/__init__.py streamscale/py.typed streamscale/
COPY streamscale/core/__init__.py streamscale/core/
COPY streamscale/cli/__init__.py streamscale/cli/
COPY streamscale/cli/commands/__init__.py streamscale/cli/commands/
COPY consumer/__init__.py consumer/py.typed consumer/
COPY consumer/sinks/__init__.py consumer/sinks/
COPY operator/__init__.py operator/py.typed operator/
RUN pip install --no-compile . && pip uninstall --yes streamscale

COPY streamscale/ streamscale/
COPY consumer/ consumer/
COPY operator/ operator/
# Byte-compile once here: the runtime's root filesystem is read-only, so Python never could.
# -P: `python -m` would otherwise put /src first on sys.path, where operator/ shadows the
# standard library's operator module.
RUN pip install --no-deps . \
    && python -P -m compileall -q /opt/venv/lib

# --- runtime: the venv on a slim Python, nothing else ------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="streamscale" \
      org.opencontainers.image.description="Redis Streams consumers on Kubernetes: stream to PostgreSQL, lag-driven scaling, dead letters." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/streamscale/streamscale" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# Unbuffered logs; no .pyc writes (read-only root filesystem); the only writable place is /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    STREAMSCALE_HTTP_PORT=8080 \
    STREAMSCALE_LOG_FORMAT=json

COPY --from=builder /opt/venv /opt/venv

# The numeric user of the chart's securityContext (runAsUser 65532), with no login and no home.
RUN groupadd --system --gid 65532 streamscale \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin streamscale

USER 65532:65532
WORKDIR /tmp
EXPOSE 8080

ENTRYPOINT ["streamscale"]
CMD ["consume"]
