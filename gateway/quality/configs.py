"""The models' quality configs, followed from the registry in the background: the prediction
recorder logs the models that have one, the joiner joins their labels."""

from __future__ import annotations

import logging
import threading

import redis

from gateway.quality.recorder import PredictionRecorder
from registry_client.client import RegistryClient
from registry_client.errors import RegistryError, Rejected
from registry_client.quality.task import QualityConfig

__all__ = ["QualityConfigs"]

_log = logging.getLogger(__name__)


class QualityConfigs:
    """Reads every model's quality config on refresh() (a Periodic's thread); thread-safe."""

    def __init__(self, client: RegistryClient, recorder: PredictionRecorder | None) -> None:
        self._client = client
        self._recorder = recorder
        self._lock = threading.Lock()
        self._configs: dict[str, QualityConfig] = {}
        self._unreadable: set[str] = set()  # warned about once until it is readable again

    def current(self) -> dict[str, QualityConfig]:
        """model -> config, of the models that have one (as last read)."""
        with self._lock:
            return dict(self._configs)

    def refresh(self) -> None:
        """Read every model's config. Redis unreachable: the last ones read stay (a model's
        predictions keep being logged through an outage, to be written when it ends)."""
        try:
            found = {model: self._read(model) for model in self._client.list_models()}
        except (RegistryError, redis.RedisError) as exc:
            _log.debug("quality configs not refreshed", extra={"reason": str(exc)})
            return
        configs = {model: config for model, config in found.items() if config is not None}
        with self._lock:
            gone = self._configs.keys() - configs.keys()
            self._configs = configs
        if self._recorder is not None:
            for model in gone:
                self._recorder.set_config(model, None)
            for model, config in configs.items():
                self._recorder.set_config(model, config)

    def _read(self, model: str) -> QualityConfig | None:
        try:
            config = self._client.model_quality(model)
        except Rejected as exc:  # unreadable: the model is not logged until mended
            if model not in self._unreadable:
                _log.warning("quality config unreadable; predictions not logged",
                             extra={"model": model, "reason": str(exc)})  # fmt: skip
            self._unreadable.add(model)
            return None
        self._unreadable.discard(model)
        return config
