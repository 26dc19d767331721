"""Transport security and access: mutual TLS on the gRPC port and /metrics, bearer tokens with
scopes, and no token in any log line. The matrix must show 0 bypasses."""

from __future__ import annotations

import json
import logging
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway._proto import feedback_pb2 as fb
from gateway._proto import feedback_pb2_grpc as fb_grpc
from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from gateway.cli import main as onnxgate
from tests.support.gateways import REPO_ROOT, make_gateway
from tests.support.redis_server import make_certificates
from tests.support.wire import infer_request

TOKENS = {
    "infer": "infer-token-0123456789abcdef",
    "admin": "admin-token-0123456789abcdef",
    "metrics": "metrics-token-0123456789abcdef",
    "feedback": "feedback-token-0123456789abcdef",
}
WRONG = "wrong-token-0123456789abcdef"
REQUEST = infer_request("classifier", {"input": np.ones((1, 4), np.float32)})


@dataclass
class Secured:
    gateway: Gateway
    certs: dict[str, Path]
    foreign: dict[str, Path]  # a client certificate from another CA
    tokens_file: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gateway.grpc_port}"

    def channel(self, certs: dict[str, Path] | None = None) -> grpc.Channel:
        """A TLS channel presenting `certs`' client certificate (ours by default)."""
        certs = self.certs if certs is None else certs
        credentials = grpc.ssl_channel_credentials(
            self.certs["ca"].read_bytes(),
            certs["client_key"].read_bytes() if "client_key" in certs else None,
            certs["client_cert"].read_bytes() if "client_cert" in certs else None,
        )
        return grpc.secure_channel(self.address, credentials)


def write_tokens(path: Path) -> Path:
    lines = ["# name scopes token", *(f"{s}-caller {s} {t}" for s, t in TOKENS.items())]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def secured(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    certs = make_certificates(tmp_path_factory.mktemp("certs"))
    foreign = make_certificates(tmp_path_factory.mktemp("foreign"))
    tokens_file = write_tokens(tmp_path_factory.mktemp("auth") / "tokens")
    gateway = make_gateway(
        model_repo, tls_cert_file=certs["server_cert"], tls_key_file=certs["server_key"],
        tls_client_ca_file=certs["ca"], auth_tokens_file=tokens_file, metrics_tls=True,
        metrics_auth=True,
    )  # fmt: skip
    yield Secured(gateway, certs, foreign, tokens_file)
    gateway.stop(grace_seconds=1)


def _metadata(authorization: str | None) -> tuple[tuple[str, str], ...]:
    return () if authorization is None else (("authorization", authorization),)


def _code(call: object) -> str:
    try:
        result = call() if callable(call) else call
        if isinstance(result, Iterator):
            list(result)
    except grpc.RpcError as exc:
        return exc.code().name
    return "OK"


def _calls(channel: grpc.Channel, authorization: str | None) -> dict[str, str]:
    """The code each kind of RPC gets with this authorization value."""
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    md = _metadata(authorization)
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    listing = reflection_pb2.ServerReflectionRequest(list_services="")
    return {
        "ModelInfer": _code(lambda: stub.ModelInfer(REQUEST, metadata=md, timeout=5)),
        "ModelStreamInfer": _code(
            lambda: list(stub.ModelStreamInfer(iter([REQUEST]), metadata=md, timeout=5))
        ),
        "ServerReady": _code(
            lambda: stub.ServerReady(pb.ServerReadyRequest(), metadata=md, timeout=5)
        ),
        "RepositoryIndex": _code(
            lambda: stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=md, timeout=5)
        ),
        "Reflection": _code(
            lambda: list(reflection.ServerReflectionInfo(iter([listing]), metadata=md, timeout=5))
        ),
        "Health": _code(
            lambda: health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), metadata=md, timeout=5
            )
        ),
        "PutLabels": _code(
            lambda: fb_grpc.FeedbackStub(channel).PutLabels(
                fb.PutLabelsRequest(model_name="classifier"), metadata=md, timeout=5
            )
        ),
    }


INFER_OK = {"ModelInfer": "OK", "ModelStreamInfer": "OK", "ServerReady": "OK",
            "RepositoryIndex": "PERMISSION_DENIED", "Reflection": "OK", "Health": "OK",
            "PutLabels": "PERMISSION_DENIED"}  # fmt: skip
ADMIN_OK = {"ModelInfer": "PERMISSION_DENIED", "ModelStreamInfer": "PERMISSION_DENIED",
            "ServerReady": "PERMISSION_DENIED", "RepositoryIndex": "OK",
            "Reflection": "PERMISSION_DENIED", "Health": "OK",
            "PutLabels": "PERMISSION_DENIED"}  # fmt: skip
NONE_OK = {name: "PERMISSION_DENIED" for name in INFER_OK} | {"Health": "OK"}
# Let through: this gateway has no registry, which the service itself then says.
FEEDBACK_OK = NONE_OK | {"PutLabels": "FAILED_PRECONDITION"}
UNAUTHENTICATED = {name: "UNAUTHENTICATED" for name in INFER_OK} | {"Health": "OK"}


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        (f"Bearer {TOKENS['infer']}", INFER_OK),
        (f"bearer {TOKENS['infer']}", INFER_OK),  # the scheme is case-insensitive (RFC 7235)
        (f"Bearer {TOKENS['admin']}", ADMIN_OK),
        (f"Bearer {TOKENS['metrics']}", NONE_OK),
        (f"Bearer {TOKENS['feedback']}", FEEDBACK_OK),
        (None, UNAUTHENTICATED),
        ("", UNAUTHENTICATED),
        ("Bearer", UNAUTHENTICATED),
        ("Bearer ", UNAUTHENTICATED),
        (TOKENS["infer"], UNAUTHENTICATED),  # no scheme
        (f"Basic {TOKENS['infer']}", UNAUTHENTICATED),
        (f"Bearer {WRONG}", UNAUTHENTICATED),
        (f"Bearer {TOKENS['infer'][:-1]}", UNAUTHENTICATED),  # one character short
        (f"Bearer {TOKENS['infer']}x", UNAUTHENTICATED),
        (f"Bearer {TOKENS['infer']} {TOKENS['admin']}", UNAUTHENTICATED),
    ],
)
def test_every_rpc_gets_the_code_its_token_allows(secured, authorization, expected):
    with secured.channel() as channel:
        # Twice: a handler cached by the first call must not let the second one through.
        assert _calls(channel, authorization) == expected
        assert _calls(channel, authorization) == expected


def test_refusals_say_what_is_expected_and_never_echo_the_token(secured):
    stub = pb_grpc.GRPCInferenceServiceStub(secured.channel())
    with pytest.raises(grpc.RpcError) as missing:
        stub.ModelInfer(REQUEST, timeout=5)
    assert missing.value.details() == (
        "expected metadata 'authorization: Bearer <token>' with a token this gateway knows"
    )
    with pytest.raises(grpc.RpcError) as scope:
        stub.RepositoryIndex(
            pb.RepositoryIndexRequest(), metadata=_metadata(f"Bearer {TOKENS['infer']}")
        )
    assert scope.value.details() == (
        "token 'infer-caller' lacks the 'admin' scope for"
        " /inference.GRPCInferenceService/RepositoryIndex"
    )
    assert TOKENS["infer"] not in str(scope.value.details())


@pytest.mark.parametrize("client", ["none", "foreign", "plaintext"])
def test_mutual_tls_refuses_clients_without_a_certificate_of_our_ca(secured, client):
    if client == "plaintext":
        channel = grpc.insecure_channel(secured.address)
    else:
        channel = secured.channel({} if client == "none" else secured.foreign)
    with channel:
        calls = _calls(channel, f"Bearer {TOKENS['infer']}")
    assert set(calls.values()) == {"UNAVAILABLE"}, calls  # refused in the handshake


def _scrape(secured: Secured, authorization: str | None, certs: dict[str, Path] | None = None,
            scheme: str = "https") -> tuple[int, str]:  # fmt: skip
    context = ssl.create_default_context(cafile=secured.certs["ca"])
    certs = secured.certs if certs is None else certs
    if "client_cert" in certs:
        context.load_cert_chain(certs["client_cert"], certs["client_key"])
    request = urllib.request.Request(
        f"{scheme}://127.0.0.1:{secured.gateway.metrics_port}/metrics",
        headers={} if authorization is None else {"Authorization": authorization},
    )
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def test_metrics_need_the_metrics_scope_over_mutual_tls(secured):
    with secured.channel() as channel:  # something to count
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            REQUEST, metadata=_metadata(f"Bearer {TOKENS['infer']}"), timeout=5
        )
    status, body = _scrape(secured, f"Bearer {TOKENS['metrics']}")
    assert status == 200 and "onnxgate_requests_total{" in body
    assert _scrape(secured, None)[0] == 401
    assert _scrape(secured, f"Bearer {WRONG}")[0] == 401
    status, body = _scrape(secured, f"Bearer {TOKENS['infer']}")
    assert (status, body) == (403, "token 'infer-caller' lacks the 'metrics' scope\n")
    no_certificate: dict[str, Path] = {}
    for certs in (no_certificate, secured.foreign):  # the handshake refuses them before any header
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _scrape(secured, f"Bearer {TOKENS['metrics']}", certs)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        _scrape(secured, f"Bearer {TOKENS['metrics']}", scheme="http")


def test_no_token_reaches_the_log(secured, caplog):
    caplog.set_level(logging.DEBUG)
    with secured.channel() as channel:
        for authorization in [*(f"Bearer {t}" for t in TOKENS.values()), f"Bearer {WRONG}",
                              TOKENS["admin"]]:  # fmt: skip
            _calls(channel, authorization)
    _scrape(secured, f"Bearer {WRONG}")
    _scrape(secured, f"Bearer {TOKENS['infer']}")
    logged = caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
    assert "request refused" in logged  # the refusals were logged, by caller name
    assert "infer-caller" in logged
    for token in [*TOKENS.values(), WRONG]:
        assert token not in logged


def test_health_probe_speaks_mutual_tls(secured, capsys):
    certs = secured.certs
    argv = ["probe", "--address", secured.address, "--ca-cert", str(certs["ca"]), "--client-cert",
            str(certs["client_cert"]), "--client-key", str(certs["client_key"])]  # fmt: skip
    assert onnxgate(argv) == 0
    assert capsys.readouterr().out.strip().endswith("SERVING")
    assert onnxgate(["probe", "--address", secured.address, "--timeout", "1"]) == 1


def test_the_probe_follows_the_gateways_own_port_and_tls_settings(secured, capsys):
    certs = secured.certs
    env = {"ONNXGATE_GRPC_PORT": str(secured.gateway.grpc_port),
           "ONNXGATE_TLS_CERT_FILE": str(certs["server_cert"])}  # fmt: skip
    client = ["--ca-cert", str(certs["ca"]), "--client-cert", str(certs["client_cert"]),
              "--client-key", str(certs["client_key"])]  # fmt: skip
    assert onnxgate(["probe", *client], env) == 0
    assert capsys.readouterr().out.strip() == f"{secured.address}: SERVING"
    # Plaintext to a TLS port fails: the environment's TLS setting is what made it speak TLS.
    assert (
        onnxgate(["probe", "--timeout", "1"], {"ONNXGATE_GRPC_PORT": env["ONNXGATE_GRPC_PORT"]})
        == 1
    )


def test_the_probe_trusts_a_certificate_chain_that_carries_its_ca(model_repo, tmp_path, capsys):
    certs = make_certificates(tmp_path)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(certs["server_cert"].read_bytes() + certs["ca"].read_bytes())
    gateway = make_gateway(model_repo, tls_cert_file=chain, tls_key_file=certs["server_key"])
    try:
        env = {"ONNXGATE_HOST": "0.0.0.0", "ONNXGATE_GRPC_PORT": str(gateway.grpc_port),
               "ONNXGATE_TLS_CERT_FILE": str(chain)}  # fmt: skip
        assert onnxgate(["probe", "--service", "liveness"], env) == 0
        assert capsys.readouterr().out.strip().endswith(": SERVING")
    finally:
        gateway.stop(grace_seconds=1)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "{server_cert}"], "--tls-cert and --tls-key: expected both or neither"),
        (["--tls-client-ca", "{ca}"], "--tls-client-ca needs --tls-cert and --tls-key"),
        (["--metrics-tls"], "--metrics-tls needs --tls-cert and --tls-key"),
        (["--metrics-auth"], "--metrics-auth needs --auth-tokens-file"),
        (["--tls-cert", "{server_cert}", "--tls-key", "{client_key}"], "not a usable certificate"),
        (["--tls-cert", "{missing}", "--tls-key", "{server_key}"], "cannot read"),
        (["--auth-tokens-file", "{short}"], "expected at least 16"),
        (["--auth-tokens-file", "{scope}"], "unknown scope 'root'"),
        (["--auth-tokens-file", "{fields}"], "expected NAME SCOPES TOKEN, got 2 fields"),
        (["--auth-tokens-file", "{empty}"], "no tokens"),
        (["--auth-tokens-file", "{twice}"], "name 'a' appears twice"),
        (["--rollout-webhook-url", "http://127.0.0.1:9/hook"],
         "--rollout-webhook-url needs --rollout-webhook-secret-file"),
        (["--rollout-webhook-secret-file", "{secret}"],
         "--rollout-webhook-secret-file needs --rollout-webhook-url"),
        (["--rollout-webhook-url", "http://127.0.0.1:9/hook", "--rollout-webhook-secret-file",
          "{short}"], "--rollout-webhook-secret-file: "),
        (["--rollout-webhook-url", "ftp://127.0.0.1/hook", "--rollout-webhook-secret-file",
          "{secret}"], "--rollout-webhook-url: webhook URL must be http:// or https://"),
    ],
)  # fmt: skip
def test_unusable_security_settings_are_usage_errors(tmp_path, capsys, flags, message):
    certs = make_certificates(tmp_path)
    files = {"short": "a infer short\n", "scope": "a infer,root 0123456789abcdef0\n",
             "fields": "a 0123456789abcdef0\n", "empty": "# nothing\n",
             "twice": "a infer 0123456789abcdef0\na admin 0123456789abcdef1\n",
             "secret": "a-webhook-secret-of-some-length\n"}  # fmt: skip
    paths = {**{k: str(v) for k, v in certs.items()}, "missing": str(tmp_path / "nope.crt")}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        paths[name] = str(tmp_path / name)
    argv = ["serve", "--no-registry", "--grpc-port", "0", "--metrics-port", "-1",
            *(flag.format(**paths) for flag in flags)]  # fmt: skip
    assert onnxgate(argv, env={}) == 2
    assert message in capsys.readouterr().err


def test_workers_serve_tls_and_tokens_from_the_environment(model_repo, secured, tmp_path):
    """Settings reach worker processes through ONNXGATE_* variables, flags included."""
    certs = secured.certs
    command = [sys.executable, "-m", "gateway", "serve", "--models", str(model_repo),
               "--no-registry", "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port",
               "-1", "--workers", "2", "--tls-cert", str(certs["server_cert"]), "--tls-key",
               str(certs["server_key"]), "--auth-tokens-file",
               str(secured.tokens_file)]  # fmt: skip
    log = (tmp_path / "log").open("w+")
    process = subprocess.Popen(command, cwd=REPO_ROOT, stderr=log, text=True)
    try:
        port = _port_from_log(log, process)
        credentials = grpc.ssl_channel_credentials(certs["ca"].read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            md = _metadata(f"Bearer {TOKENS['infer']}")
            _wait_served(stub, md)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(REQUEST, timeout=5)
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
        log.seek(0)
        text = log.read()
        log.close()
    assert TOKENS["infer"] not in text


def _port_from_log(log: IO[str], process: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log.seek(0)
        for line in log:
            if '"gateway started"' in line:
                return int(json.loads(line)["grpc_port"])
        assert process.poll() is None, "gateway exited"
        time.sleep(0.05)
    raise AssertionError("gateway did not start")


def _wait_served(stub: pb_grpc.GRPCInferenceServiceStub, md: tuple[tuple[str, str], ...]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            stub.ModelInfer(REQUEST, metadata=md, timeout=5)
            return
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
