"""Services registered through ErrorMappedRegistry answer their errors as statuses, whichever
way grpcio finds their handlers: registered by name (matched in gRPC core) or generic."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from gateway.api.error_mapping import ErrorMappedRegistry
from gateway.errors import InvalidInput

SERVICE = "test.Mapped"


def _identity(data: bytes) -> bytes:
    return data


def _handlers() -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    def invalid(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise InvalidInput("field 'x': expected an int")

    def broken(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise RuntimeError("secret detail")

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    return {
        name: grpc.unary_unary_rpc_method_handler(
            behaviour, request_deserializer=_identity, response_serializer=_identity
        )
        for name, behaviour in (("Invalid", invalid), ("Broken", broken), ("Echo", echo))
    }


def _register_by_name(registry: ErrorMappedRegistry) -> None:
    registry.add_registered_method_handlers(SERVICE, _handlers())


def _register_generic(registry: ErrorMappedRegistry) -> None:
    registry.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, _handlers()),))


@pytest.fixture(params=[_register_by_name, _register_generic], ids=["registered", "generic"])
def call(request: pytest.FixtureRequest) -> Iterator[Callable[[str], bytes]]:
    register: Callable[[ErrorMappedRegistry], None] = request.param
    server = grpc.server(ThreadPoolExecutor(2))
    register(ErrorMappedRegistry(server))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    def invoke(method: str) -> bytes:
        stub = channel.unary_unary(
            f"/{SERVICE}/{method}", request_serializer=_identity, response_deserializer=_identity
        )
        response: bytes = stub(b"ping", timeout=10)
        return response

    yield invoke
    channel.close()
    server.stop(None)


def test_a_domain_error_answers_its_status_and_message(call: Callable[[str], bytes]) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call("Invalid")
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "field 'x': expected an int"


def test_anything_else_answers_internal_without_its_details(
    call: Callable[[str], bytes],
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call("Broken")
    assert err.value.code() is grpc.StatusCode.INTERNAL
    assert re.fullmatch(r"internal error \(request [0-9a-f]{32}\)", str(err.value.details()))


def test_a_handler_that_succeeds_answers_unchanged(call: Callable[[str], bytes]) -> None:
    assert call("Echo") == b"ping"


def test_an_unknown_method_is_unimplemented(call: Callable[[str], bytes]) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call("Missing")
    assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
