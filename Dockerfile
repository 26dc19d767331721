# onnxgate: gRPC inference gateway for ONNX models. Serves the repository mounted at /models.
#
# The base is pinned to an exact release tag here; the release pipeline also pins it by digest
# (python:3.11.15-slim-bookworm@sha256:...), which can only be looked up against a registry.

# Builder: the project and its pinned dependencies in a virtualenv the final stage copies whole.
FROM python:3.11.15-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/onnxgate/venv
COPY constraints.txt pyproject.toml README.md /src/
COPY gateway /src/gateway
COPY registry_client /src/registry_client
RUN /opt/onnxgate/venv/bin/pip install --no-cache-dir -c /src/constraints.txt /src

FROM python:3.11.15-slim-bookworm
ARG VERSION=0.1.0
ARG SOURCE=""
ARG REVISION=""
LABEL org.opencontainers.image.title="onnxgate" \
      org.opencontainers.image.description="gRPC inference gateway for ONNX models (KServe v2 / Triton-compatible)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}"

# redis-server is the private registry a gateway runs when it is given no --redis-url. Pinned to
# bookworm's security release: when a newer one supersedes it, bump the version here.
# The user owns only the data directory; code, examples and /models stay read-only to it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server=5:7.0.15-1~deb12u10 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 onnxgate \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/onnxgate --no-create-home \
        --shell /usr/sbin/nologin onnxgate \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/onnxgate \
    && install -d -m 0755 /models

COPY --from=builder /opt/onnxgate/venv /opt/onnxgate/venv
# Not served unless asked for: docker run IMAGE --models /opt/onnxgate/examples/models
COPY examples/models /opt/onnxgate/examples/models

# Logs go to stderr (JSON lines), unbuffered, for `docker logs` and the cluster's collector.
# The data directory holds the private Redis (append-only file) or, with --redis-url, the
# cache of uploaded artifacts; gatectl inside the container finds the private Redis there.
ENV PATH=/opt/onnxgate/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ONNXGATE_DATA_DIR=/var/lib/onnxgate
VOLUME ["/var/lib/onnxgate"]

USER 10001:10001
# 8001: gRPC (inference, health, reflection); 8002: Prometheus /metrics. Triton's ports.
EXPOSE 8001 8002
# SIGTERM starts the graceful drain: NOT_SERVING for --drain-notice-seconds, then in-flight
# requests get --shutdown-grace-seconds; allow notice + grace + 2 s (docker stop --time).
STOPSIGNAL SIGTERM
# Liveness, not readiness: a gateway still loading its models is healthy. The probe dials
# 127.0.0.1 on $ONNXGATE_GRPC_PORT, over TLS when ONNXGATE_TLS_CERT_FILE is set.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["onnxgate", "probe", "--service", "liveness"]
ENTRYPOINT ["onnxgate", "serve"]
# Replicas sharing a registry add --redis-url redis://HOST:6379/0 (or ONNXGATE_REDIS_URL).
CMD ["--models", "/models"]
