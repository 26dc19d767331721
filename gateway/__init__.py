"""onnxgate's data plane: a gRPC inference gateway for ONNX model versions."""
