"""Domain errors of the gateway; transport-free (api/status.py maps them to gRPC codes).

    GatewayError
    +-- InvalidInput        the request is malformed or does not fit the model's signature
    +-- ModelNotFound       no such model, or no such version of it
    +-- ServiceUnknown      a health check names a service this server does not have
    +-- ModelNotReady       the model or version exists but cannot serve now (loading, failed)
    +-- Overloaded          admission limit reached; retry later or on another replica
    +-- TooManyStreams      the open-stream limit is reached; no new ModelStreamInfer stream
    +-- DeadlineExceeded    the deadline passed before the model ran, or while it ran (stopped)
    +-- Cancelled           the caller went away before its answer was ready (outcome only)
    +-- Unsupported         the protocol has the call, this gateway does not offer it
    +-- ModelFailed         the model itself raised while running the request (INTERNAL)
    +-- NotAuthenticated    no bearer token, or one this gateway does not know
    +-- NotAllowed          a known token without the scope the call needs
    +-- NotConfigured       the call needs what this gateway or the model is not set up for
    +-- TooManyCalls        a service's bound on calls at once is reached; the call not queued
    +-- RegistryUnavailable the registry's Redis did not answer a call that needed it

Messages are written for the caller: they name the field and say what was expected.
"""

from __future__ import annotations

__all__ = [
    "Cancelled",
    "DeadlineExceeded",
    "GatewayError",
    "InvalidInput",
    "ModelFailed",
    "ModelNotFound",
    "ModelNotReady",
    "NotAllowed",
    "NotAuthenticated",
    "NotConfigured",
    "Overloaded",
    "RegistryUnavailable",
    "ServiceUnknown",
    "TooManyCalls",
    "TooManyStreams",
    "Unsupported",
]


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose; its message is safe to return.
    `version` names the version a request was routed to when it failed after routing."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.version: str | None = None
        self.message = message


class InvalidInput(GatewayError):
    """Raised when a request does not fit the protocol or the model's signature."""


class ModelNotFound(GatewayError):
    """Raised when the model, or the pinned version, is not deployed on this gateway; or, for
    labels, when the registry has no such model."""


class ServiceUnknown(GatewayError):
    """Raised when a health check names a service this server does not have."""


class ModelNotReady(GatewayError):
    """Raised when the model or version is known but loading or failed."""


class Overloaded(GatewayError):
    """Raised when a version's admission limit is reached; the request was not queued."""


class DeadlineExceeded(GatewayError):
    """Raised when the caller's deadline passed before the model ran (it was not run) or while
    it ran (the run was stopped); also the outcome of a request answered after its deadline."""


class Cancelled(GatewayError):
    """The outcome of a request whose caller cancelled it while it was served: it is counted
    under this (not against the version), and nobody is left to answer."""


class TooManyStreams(GatewayError):
    """Raised when a new ModelStreamInfer stream would exceed the open-stream limit."""


class Unsupported(GatewayError):
    """Raised for protocol calls the gateway deliberately does not offer."""


class NotAuthenticated(GatewayError):
    """Raised when a call that needs a token has none, or one this gateway does not know."""


class NotAllowed(GatewayError):
    """Raised when the caller's token lacks the scope the call needs."""


class ModelFailed(GatewayError):
    """Raised when onnxruntime fails on a request the binder accepted; its cause is logged,
    and the caller gets only the fixed internal-error message with a request id."""


class NotConfigured(GatewayError):
    """Raised when a call needs something this gateway or the model is not set up for (labels
    without a registry, or for a model without a quality config); the message says how."""


class TooManyCalls(GatewayError):
    """Raised when a service's own bound on calls at once (PutLabels) is reached; the call was
    not queued, so it holds no thread."""


class RegistryUnavailable(GatewayError):
    """Raised when the registry's Redis does not answer a call that needs it; the message says
    what was stored."""
