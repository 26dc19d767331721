"""The framework facts an ONNX file holds about itself: who produced it, its IR version and
opsets, its doc string and metadata; cut to a size a registry record can carry."""

from __future__ import annotations

from typing import Any

from registry_client.errors import Rejected

__all__ = [
    "MAX_FACT_CHARS", "MAX_METADATA_KEY_CHARS", "MAX_METADATA_PROPS", "MAX_OPSET_IMPORTS",
    "onnx_facts",
]  # fmt: skip

# Exporters may put a whole tokenizer or config in the doc string or a metadata value; the
# facts keep the start of each, and `truncated` says what was cut.
MAX_FACT_CHARS = 4_000
MAX_METADATA_KEY_CHARS = 200
MAX_METADATA_PROPS = 32
MAX_OPSET_IMPORTS = 32  # real models import a handful of domains


def onnx_facts(data: bytes) -> dict[str, Any]:
    """The facts of the ONNX model in `data`, a JSON-able dict: producer_name,
    producer_version, ir_version, opset_imports ({domain: version}, the default domain as
    "ai.onnx"), model_version, domain, doc_string, graph_name, metadata_props ({key: value}),
    and truncated (what was cut to fit, e.g. "doc_string: 9000 characters, the first 4000
    kept"; empty when nothing). External data is not loaded. Rejected when `data` is not an
    ONNX model."""
    # Imported here: it is slow to import, and only registering a version needs it.
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)  # the bytes only: no external data is read
    except DecodeError as exc:
        raise Rejected(f"not an ONNX model: protobuf cannot parse it ({exc})") from exc
    # Protobuf parses some garbage (an empty file, for one) as a message with nothing set.
    if model.ir_version < 1 or not model.HasField("graph"):
        raise Rejected("not an ONNX model: it has no IR version or no graph")
    truncated: list[str] = []

    def cut(value: str | bytes, limit: int, what: str) -> str:
        # Protobuf hands a string field that is not UTF-8 over as bytes.
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if len(text) <= limit:
            return text
        truncated.append(f"{what}: {len(text)} characters, the first {limit} kept")
        return text[:limit]

    metadata: dict[str, str] = {}
    for prop in model.metadata_props[:MAX_METADATA_PROPS]:
        key = cut(prop.key, MAX_METADATA_KEY_CHARS, "a metadata_props key")
        metadata[key] = cut(prop.value, MAX_FACT_CHARS, f"metadata_props[{key!r}]")
    if len(model.metadata_props) > MAX_METADATA_PROPS:
        truncated.append(f"metadata_props: {len(model.metadata_props)} entries,"
                         f" the first {MAX_METADATA_PROPS} kept")  # fmt: skip
    opsets = {cut(o.domain, MAX_METADATA_KEY_CHARS, "an opset domain") or "ai.onnx": o.version
              for o in model.opset_import[:MAX_OPSET_IMPORTS]}  # fmt: skip
    if len(model.opset_import) > MAX_OPSET_IMPORTS:
        truncated.append(f"opset_imports: {len(model.opset_import)} entries,"
                         f" the first {MAX_OPSET_IMPORTS} kept")  # fmt: skip
    return {
        "producer_name": cut(model.producer_name, MAX_FACT_CHARS, "producer_name"),
        "producer_version": cut(model.producer_version, MAX_FACT_CHARS, "producer_version"),
        "ir_version": model.ir_version,
        "opset_imports": opsets,
        "model_version": model.model_version,
        "domain": cut(model.domain, MAX_FACT_CHARS, "domain"),
        "doc_string": cut(model.doc_string, MAX_FACT_CHARS, "doc_string"),
        "graph_name": cut(model.graph.name, MAX_FACT_CHARS, "graph_name"),
        "metadata_props": metadata,
        "truncated": truncated,
    }
