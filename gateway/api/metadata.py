"""ModelMetadata and ModelConfig answers built from a version's signature; the server's version."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import model_config_pb2 as mc
from gateway.models.signature import Signature, TensorSpec

__all__ = ["PLATFORM", "model_config", "model_metadata", "server_version"]

PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"


def server_version() -> str:
    """The version ServerMetadata answers: the installed package's."""
    try:
        return version("onnxgate")
    except PackageNotFoundError:
        return "0+unknown"


def model_metadata(model: str, version: str, signature: Signature) -> pb.ModelMetadataResponse:
    """Metadata with full shapes; -1 marks dynamic dimensions, the batch one included."""

    def tensor(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
        return pb.ModelMetadataResponse.TensorMetadata(
            name=spec.name, datatype=spec.datatype.name, shape=spec.shape
        )

    return pb.ModelMetadataResponse(
        name=model,
        versions=[version],
        platform=PLATFORM,
        inputs=[tensor(s) for s in signature.inputs],
        outputs=[tensor(s) for s in signature.outputs],
    )


def model_config(model: str, signature: Signature, max_batch_size: int) -> mc.ModelConfig:
    """Triton's config view: for batchable models the batch dim leaves `dims`."""
    batch = max_batch_size if signature.batchable else 0
    skip = 1 if batch else 0
    return mc.ModelConfig(
        name=model,
        platform=PLATFORM,
        backend=BACKEND,
        max_batch_size=batch,
        input=[
            mc.ModelInput(name=s.name, data_type=s.datatype.config_enum, dims=s.shape[skip:])  # type: ignore[arg-type]  # the enum field takes its int value
            for s in signature.inputs
        ],
        output=[
            mc.ModelOutput(name=s.name, data_type=s.datatype.config_enum, dims=s.shape[skip:])  # type: ignore[arg-type]
            for s in signature.outputs
        ],
    )
