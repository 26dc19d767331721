"""A version's model card (card) and the framework facts read from its ONNX file (onnx_facts)."""
