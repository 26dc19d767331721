"""A real Prometheus server (Debian's `prometheus`) on a free port, scraping given targets
every second and evaluating the repository's alert rules every second; read through its HTTP
API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tests.support.gateways import REPO_ROOT
from tests.support.redis_server import free_port

ALERT_RULES = REPO_ROOT / "deploy" / "prometheus" / "onnxgate-alerts.yaml"


class Prometheus:
    """`prometheus` scraping `targets` (host:port of /metrics) as job `onnxgate`, with the
    alert rules of deploy/prometheus; stopped by stop()."""

    def __init__(self, directory: Path, targets: Sequence[str]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: apt-get install -y prometheus")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERT_RULES)],
            "scrape_configs": [
                {"job_name": "onnxgate", "static_configs": [{"targets": list(targets)}]}
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [binary, f"--config.file={directory / 'prometheus.yml'}",
                 f"--storage.tsdb.path={directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("prometheus did not start:\n" + self.log.read_text())
            time.sleep(0.05)

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a GET on /api/v1/<path>."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        """An instant query's vector."""
        result: list[dict[str, Any]] = self.api("query", query=expression)["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts pending or firing now: labels, state, value."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def evaluations_since(self, moment: float) -> bool:
        """Whether every rule group has been evaluated after `moment` (Unix time)."""
        groups = self.api("rules")["groups"]
        return bool(groups) and all(_unix(group["lastEvaluation"]) > moment for group in groups)

    def metadata_names(self) -> set[str]:
        """The metric family names the scraped targets described (HELP/TYPE lines), those
        without samples yet included."""
        return set(self.api("metadata"))

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=15)


def _unix(timestamp: str) -> float:
    """Prometheus' RFC 3339 timestamps (nanoseconds) as Unix time."""
    return datetime.fromisoformat(timestamp).timestamp()
