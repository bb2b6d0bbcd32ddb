# syntax=docker/dockerfile:1
# The one AIMA image: `aima operator run`, `aima gateway serve`, `aima mcp serve`, `aima device-agent`
# and `aima loader` (the operator's loader Jobs run this same image). Non-root, read-only friendly.
#   docker build -t aima:dev .
ARG PYTHON_IMAGE=python:3.12-slim

# Build: the package and its dependencies into a virtual environment, compiled once.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/aima/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/aima/venv/bin/pip install . \
    && /opt/aima/venv/bin/python -m compileall -q /opt/aima/venv

# Runtime: the slim base, the environment and the catalog; nothing to build with.
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="aima" \
      org.opencontainers.image.description="AIMA: Kubernetes inference operator, gateway, MCP server and loader" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 65532 aima \
    && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin aima
COPY --from=build /opt/aima/venv /opt/aima/venv
COPY catalog /opt/aima/catalog
# No .pyc writes at run time (the root filesystem is read-only in the chart); logs unbuffered.
ENV PATH=/opt/aima/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["aima"]
CMD ["--help"]
