"""Transport security and access of one gateway, read and checked once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.api.tokens import TokenError, TokenTable
from gateway.settings import Settings
from gateway.tls import TlsError, TlsFiles

__all__ = ["Security", "SecurityError"]


class SecurityError(ValueError):
    """Raised for TLS or token settings that cannot work; the message names the flag."""


@dataclass(frozen=True, slots=True)
class Security:
    """TLS material (None: plaintext) and bearer tokens (None: no authentication)."""

    tls: TlsFiles | None
    tokens: TokenTable | None

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
        return cls(tls, tokens)
