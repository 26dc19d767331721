"""KServe ModelServer serving one ONNX file with onnxruntime, set up like onnxgate's.

Runs inside KServe's own virtualenv; every kserve.model_server flag is accepted as well:

    python kserve_onnx.py --model_name tiny --model_path model.onnx --metadata tensors.json \
        --grpc_port 8081 --http_port 8080

ModelMetadata reports the inputs and outputs of the metadata file, which `benchmarks/peers.py`
writes from the same ONNX file: {"inputs": [{"name", "datatype", "shape"}], "outputs": [...]}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from onnx_session import open_session

TensorInfo = dict[str, str | list[int]]


class OnnxRuntimeModel(Model):
    """One onnxruntime session: 1 intra-op and 1 inter-op thread, sequential, CPU."""

    def __init__(self, name: str, model_path: str, tensors: dict[str, list[TensorInfo]]) -> None:
        """Remember the model file and its v2 metadata; load() opens the model."""
        super().__init__(name)
        self._path = model_path
        self._inputs = tensors["inputs"]
        self._outputs = tensors["outputs"]
        self._output_names = [str(o["name"]) for o in self._outputs]

    def load(self) -> bool:
        """Open the session and declare the model ready."""
        self._session = open_session(self._path)
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[TensorInfo]:
        """ModelMetadata inputs."""
        return self._inputs

    def get_output_types(self) -> list[TensorInfo]:
        """ModelMetadata outputs."""
        return self._outputs

    def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None
    ) -> InferResponse:
        """Run the session on every input; outputs are raw when the request's inputs were."""
        feeds: dict[str, np.ndarray] = {t.name: t.as_numpy() for t in payload.inputs}
        results = self._session.run(self._output_names, feeds)
        binary = payload.use_binary_outputs
        outputs = []
        for meta, array in zip(self._outputs, results, strict=True):
            output = InferOutput(str(meta["name"]), list(array.shape), str(meta["datatype"]))
            output.set_data_from_numpy(array, binary_data=binary)
            outputs.append(output)
        return InferResponse(
            response_id=payload.id,
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=binary,
        )


def main() -> None:
    """Parse KServe's own flags plus --model_path, load the model, serve until signalled."""
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_path", required=True, help="the ONNX file to serve")
    parser.add_argument("--metadata", type=Path, required=True, help="inputs and outputs (JSON)")
    args, _ = parser.parse_known_args()
    tensors = json.loads(args.metadata.read_text())
    model = OnnxRuntimeModel(args.model_name, args.model_path, tensors)
    model.load()
    ModelServer().start([model])


if __name__ == "__main__":
    main()
