# onnxgate: gRPC inference gateway for ONNX models. Mount or bake models at /models.
FROM python:3.11-slim

# redis-server: without --redis-url the gateway runs a private one in its data directory.
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* && useradd --create-home --uid 10001 onnxgate
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY registry_client ./registry_client
RUN pip install --no-cache-dir . && rm -rf /root/.cache
COPY --chown=onnxgate examples/models /models

USER onnxgate
# 8001: gRPC (inference, health, reflection); 8002: Prometheus /metrics. Triton's ports.
EXPOSE 8001 8002
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["onnxgate", "probe", "--address", "127.0.0.1:8001"]
ENTRYPOINT ["onnxgate", "serve"]
# Replicas sharing a registry: override with --redis-url redis://HOST:6379/0 --models /models
CMD ["--models", "/models", "--data-dir", "/home/onnxgate/data"]
