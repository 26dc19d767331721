"""The concerns settings are grouped by: one section each of `onnxgate serve --help` and of
docs/configuration.md, in the order CONCERNS lists them."""

from __future__ import annotations

from gateway.settings.schema import Concern

__all__ = ["CONCERNS"]

SERVING = Concern("Serving", "What is served, where, and by how many processes and threads.")
CONNECTIONS = Concern(
    "Connections and calls",
    "Limits that keep slow, idle or hostile clients from holding threads and sockets.",
)
SECURITY = Concern("Security", "TLS on the gRPC port, bearer tokens, and who may read /metrics.")
MODELS = Concern("Models and loading", "How versions are loaded, and what is refused.")
ADMISSION = Concern("Admission and batching", "How many requests one version takes at once.")
SHUTDOWN = Concern("Shutdown", "What SIGTERM leaves to the requests in flight.")
REGISTRY = Concern("Registry", "The Redis whose routing rules this gateway follows.")
SHADOWS = Concern("Shadows", "Copies of requests mirrored to shadow versions, off the hot path.")
TELEMETRY = Concern("Statistics and drift", "What is written to the registry, and how often.")
QUALITY = Concern(
    "Model quality",
    "The prediction log that delayed labels are joined with, and the quality read back.",
)
ROLLOUTS = Concern("Rollouts", "The controller that drives canary rollouts.")
LOGGING = Concern("Logging", "Log lines and the access log.")
CONCERNS = (SERVING, CONNECTIONS, SECURITY, MODELS, ADMISSION, SHUTDOWN, REGISTRY, SHADOWS,
            TELEMETRY, QUALITY, ROLLOUTS, LOGGING)  # fmt: skip
