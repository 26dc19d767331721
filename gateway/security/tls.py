"""TLS material for the gRPC port and /metrics, read and checked once at start-up."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from gateway.settings import Settings

__all__ = ["TlsError", "TlsFiles"]


class TlsError(ValueError):
    """Raised for TLS settings that cannot work; the message names the flag."""


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{flag} {path}: cannot read: {exc.strerror}") from exc


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The PEM bytes of the server's certificate chain and key, and of the client CA."""

    cert: bytes
    key: bytes
    client_ca: bytes | None
    paths: tuple[Path, Path, Path | None]

    @classmethod
    def from_settings(cls, settings: Settings) -> TlsFiles | None:
        """None without TLS; TlsError for half a configuration or files that do not match."""
        cert_path, key_path = settings.tls_cert_file, settings.tls_key_file
        ca_path = settings.tls_client_ca_file
        if cert_path is None and key_path is None:
            if ca_path is not None:
                raise TlsError("--tls-client-ca needs --tls-cert and --tls-key")
            if settings.metrics_tls:
                raise TlsError("--metrics-tls needs --tls-cert and --tls-key")
            return None
        if cert_path is None or key_path is None:
            raise TlsError("--tls-cert and --tls-key: expected both or neither")
        files = cls(
            _read(cert_path, "--tls-cert"), _read(key_path, "--tls-key"),
            None if ca_path is None else _read(ca_path, "--tls-client-ca"),
            (cert_path, key_path, ca_path),
        )  # fmt: skip
        files.ssl_context()  # a key that does not fit the certificate fails here, not later
        return files

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Server credentials; with a client CA, a client certificate it signed is required."""
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The same policy for /metrics, as an ssl context."""
        cert_path, key_path, ca_path = self.paths
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(cert_path, key_path)
            if ca_path is not None:
                context.load_verify_locations(cafile=ca_path)
                context.verify_mode = ssl.CERT_REQUIRED
        except (ssl.SSLError, OSError) as exc:
            raise TlsError(
                f"--tls-cert {cert_path} / --tls-key {key_path} / --tls-client-ca {ca_path}:"
                f" not a usable certificate, key and CA: {exc}"
            ) from exc
        return context
