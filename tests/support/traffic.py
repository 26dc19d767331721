"""A client sending without pause, and the tiny model whose versions misbehave on purpose."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import grpc
import numpy as np

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.wire import infer_request

ROW = {"input": np.full((1, 4), 0.25, np.float32)}
NEVER = 10**12  # loop trips: far longer than any test


class Traffic:
    """A client sending ModelInfer to one model without pause until stopped; counts codes."""

    def __init__(self, address: str, model: str) -> None:
        self.codes: Counter[str] = Counter()
        self._stop = threading.Event()
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._model = model
        self._thread = threading.Thread(target=self._send, daemon=True)
        self._thread.start()

    def _send(self) -> None:
        while not self._stop.is_set():
            try:
                self._stub.ModelInfer(infer_request(self._model, ROW), timeout=10)
                self.codes["OK"] += 1
            except grpc.RpcError as exc:
                self.codes[exc.code().name] += 1

    def stop(self) -> Counter[str]:
        self._stop.set()
        self._thread.join(15)
        self._channel.close()
        return self.codes


def register_tiny(redis_url: str, directory: Path) -> RegistryClient:
    """tiny 1 (a classifier) serving everything; 2 warms up for ever; 3 runs for ever on any
    non-zero row (its warm-up is instant)."""
    client = RegistryClient.from_url(redis_url)
    client.create_model("tiny", actor="ops")
    models = {
        "1": onnx_models.classifier(seed=1),
        "2": onnx_models.looping_classifier(seed=1, fixed_trips=NEVER),
        "3": onnx_models.looping_classifier(seed=1, fixed_trips=0, trips_per_unit=NEVER),
    }
    for version, model in models.items():
        path = onnx_models.save(model, directory, "tiny", version)
        client.register_version("tiny", version, path, actor="ops")
    client.set_route("tiny", [Split("1", 100)], actor="ops")
    return client
