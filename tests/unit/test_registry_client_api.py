"""What `import registry_client` offers: the client and the error tree gatectl maps to exit
codes, no more, and at the price of the client alone."""

from __future__ import annotations

import subprocess
import sys

import registry_client
from registry_client import client, errors
from registry_client.quality import labels
from tests.support.gateways import REPO_ROOT


def test_the_package_exports_the_client_the_label_and_the_error_tree():
    assert registry_client.__all__ == [
        "Conflict",
        "Label",
        "NotFound",
        "RegistryClient",
        "RegistryError",
        "Rejected",
        "Unreachable",
    ]


def test_each_export_is_the_class_its_module_defines():
    assert registry_client.RegistryClient is client.RegistryClient
    assert registry_client.Label is labels.Label
    for name in ("Conflict", "NotFound", "RegistryError", "Rejected", "Unreachable"):
        assert getattr(registry_client, name) is getattr(errors, name)


def test_the_errors_form_one_tree_under_registry_error():
    assert issubclass(errors.RegistryError, Exception)
    assert issubclass(errors.Rejected, errors.RegistryError)
    assert issubclass(errors.NotFound, errors.Rejected)  # exits like any refused request
    assert issubclass(errors.Conflict, errors.RegistryError)
    assert issubclass(errors.Unreachable, errors.RegistryError)
    assert not issubclass(errors.Conflict, errors.Rejected)
    assert not issubclass(errors.Unreachable, errors.Rejected)


def test_importing_the_package_leaves_onnxruntime_unloaded():
    # onnxruntime costs half a second of CPU; only registering a version needs it.
    loaded = subprocess.run(
        [sys.executable, "-c",
         "import sys, registry_client; print('onnxruntime' in sys.modules)"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert loaded.strip() == "False"
