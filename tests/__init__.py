"""onnxgate's tests. Servers started in the tests' own process run on the gRPC transport the
`onnxgate` command runs on (gateway/api/transport.py): chosen here, before grpcio loads."""

from gateway.api.transport import choose_transport

if not choose_transport():
    raise ImportError(
        "grpcio was loaded before the tests' package (by a pytest plugin or a conftest.py"
        " outside tests/?): the servers the tests start in-process would run gRPC's default"
        " transport, not the gateway's; load grpcio only from tests/"
    )
