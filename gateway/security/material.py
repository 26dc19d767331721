"""Transport security and access of one gateway, read and checked once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.rollout.webhook_endpoint import WebhookEndpoint, read_secret
from gateway.security.tls import TlsError, TlsFiles
from gateway.security.tokens import TokenError, TokenTable
from gateway.settings import Settings

__all__ = ["Security", "SecurityError"]


class SecurityError(ValueError):
    """Raised for TLS or token settings that cannot work; the message names the flag."""


@dataclass(frozen=True, slots=True)
class Security:
    """TLS material (None: plaintext) and bearer tokens (None: no authentication)."""

    tls: TlsFiles | None
    tokens: TokenTable | None
    webhook_secret: bytes | None = None  # the rollout webhook's signing key

    @classmethod
    def from_settings(cls, settings: Settings) -> Security:
        try:
            tls = TlsFiles.from_settings(settings)
            tokens = None
            if settings.auth_tokens_file is not None:
                tokens = TokenTable.load(settings.auth_tokens_file)
        except (TlsError, TokenError) as exc:
            raise SecurityError(str(exc)) from exc
        if settings.metrics_auth and tokens is None:
            raise SecurityError("--metrics-auth needs --auth-tokens-file")
        return cls(tls, tokens, _webhook_secret(settings))


def _webhook_secret(settings: Settings) -> bytes | None:
    url, path = settings.rollout_webhook_url, settings.rollout_webhook_secret_file
    if not url:
        if path is not None:
            raise SecurityError("--rollout-webhook-secret-file needs --rollout-webhook-url")
        return None
    if path is None:
        raise SecurityError("--rollout-webhook-url needs --rollout-webhook-secret-file: receivers"
                            " must be able to tell our notifications from forged ones")  # fmt: skip
    try:
        secret = read_secret(path)
    except ValueError as exc:
        raise SecurityError(f"--rollout-webhook-secret-file: {exc}") from exc
    try:
        WebhookEndpoint(url, secret)  # checks the URL
    except ValueError as exc:
        raise SecurityError(f"--rollout-webhook-url: {exc}") from exc
    return secret
