"""onnxgate's tests. Servers started in the tests' own process run on the gRPC transport the
`onnxgate` command runs on (gateway/api/transport.py): chosen here, before grpcio loads."""

from gateway.api.transport import choose_transport

choose_transport()
