"""MLServer custom runtime serving one ONNX file with onnxruntime, set up like onnxgate's.

Runs inside MLServer's own virtualenv (`benchmarks/peers.py` puts this folder on PYTHONPATH and
names `mlserver_onnx.OnnxRuntimeModel` as the implementation in model-settings.json). The
inputs and outputs MLServer reports in ModelMetadata come from model-settings.json, which
peers.py writes from the same ONNX file.
"""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri
from onnx_session import open_session


class OnnxRuntimeModel(MLModel):
    """One onnxruntime session: 1 intra-op and 1 inter-op thread, sequential, CPU."""

    async def load(self) -> bool:
        """Open the session on the model-settings `parameters.uri` file."""
        self._session = open_session(await get_model_uri(self.settings))
        self._output_names = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Decode every input with NumpyCodec, run the session, encode every output."""
        feeds: dict[str, np.ndarray] = {
            request_input.name: NumpyCodec.decode_input(request_input)
            for request_input in payload.inputs
        }
        results = self._session.run(self._output_names, feeds)
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output(name, array)
                for name, array in zip(self._output_names, results, strict=True)
            ],
        )
