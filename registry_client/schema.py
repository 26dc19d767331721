"""Names, operators' text and the key layout of the registry, with validation whose messages
name the field. The routing rules stored under these keys are in
registry_client.records.rule_documents.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = [
    "BLOB_CHUNK_BYTES",
    "BLOB_SCHEME",
    "MAX_ACTOR_CHARS",
    "MAX_REASON_CHARS",
    "NAME_PATTERN",
    "NAME_RULE",
    "Keys",
    "SchemaError",
    "brief_repr",
    "is_unsafe_character",
    "is_valid_name",
    "text_problem",
    "validate_actor",
    "validate_name",
    "validate_reason",
    "version_sort_key",
]

# The one rule for model and version names (also namespaces and replica ids), wherever they
# come from: gatectl, the library, a --models directory, a stored document. ASCII only and
# without '/', ':' or '..', so a name is safe in a path, a Redis key and a terminal; Triton's
# versions (positive integers) and names such as v2.1-rc_1 are valid.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
NAME_RULE = "1 to 128 characters from A-Z a-z 0-9 '_' '.' '-', the first a letter or digit, no '..'"
_NAME = re.compile(NAME_PATTERN)
MAX_REASON_CHARS = 500
MAX_ACTOR_CHARS = 100
BLOB_SCHEME = "redis-blob"  # artifact_uri of bytes uploaded into Redis: redis-blob:<sha256>
BLOB_CHUNK_BYTES = 4 * 1024 * 1024


class SchemaError(ValueError):
    """Raised for a document or name that breaks the schema; the message names the field."""


def is_valid_name(name: str) -> bool:
    """Tell whether a model or version name follows NAME_RULE."""
    return _NAME.fullmatch(name) is not None and ".." not in name


def validate_name(name: str, what: str) -> str:
    """Return name, or raise SchemaError saying what was expected."""
    if not is_valid_name(name):
        raise SchemaError(f"{what} {name!r} is not valid: expected {NAME_RULE}")
    return name


# Text operators write is shown on other operators' terminals. Refused in it, and escaped
# wherever gatectl prints what it read: control characters (escape sequences, BEL, CR),
# format characters that reorder or hide text (U+202E and the other bidi controls, zero-width
# spaces, tag characters), line and paragraph separators, lone surrogates. Zero-width
# (non-)joiners stay: Persian, Indic scripts and emoji sequences need them.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_JOINERS = frozenset("\u200c\u200d")


def is_unsafe_character(char: str) -> bool:
    """Tell whether one character may not appear in operators' text (see _UNSAFE_CATEGORIES)."""
    return char not in _JOINERS and unicodedata.category(char) in _UNSAFE_CATEGORIES


def brief_repr(value: object, limit: int = 40) -> str:
    """repr(value), cut short: an error message quotes a bad value, not all of it."""
    if isinstance(value, int) and value.bit_length() > 128:  # repr() may refuse to write it
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def text_problem(text: object, max_chars: int) -> str | None:
    """What is wrong with text an operator wrote (a reason, who acts), or None when nothing."""
    if not isinstance(text, str):
        return f"expected text, got {brief_repr(text)}"
    if len(text) > max_chars:
        return f"expected at most {max_chars} characters, got {len(text)}"
    if not text.isprintable():  # a superset of the unsafe characters: look closer
        for position, char in enumerate(text, start=1):
            if is_unsafe_character(char):
                return (f"expected text without control or format characters, got {char!r}"
                        f" (U+{ord(char):04X}) at character {position}")  # fmt: skip
    return None


def validate_reason(reason: str, what: str = "reason") -> str:
    """Return reason, or raise SchemaError: at most MAX_REASON_CHARS, no unsafe character."""
    problem = text_problem(reason, MAX_REASON_CHARS)
    if problem is not None:
        raise SchemaError(f"{what}: {problem}")
    return reason


def validate_actor(actor: str, what: str = "actor") -> str:
    """Return actor (who acts, for the audit), or raise SchemaError: 1 to MAX_ACTOR_CHARS
    characters, no unsafe character."""
    problem = "expected at least 1 character" if actor == "" else (
        text_problem(actor, MAX_ACTOR_CHARS))  # fmt: skip
    if problem is not None:
        raise SchemaError(f"{what}: {problem}")
    return actor


def version_sort_key(version: str) -> tuple[int, int, str]:
    """Order versions: numeric ones by value, then the others by name; the last is highest."""
    if version.isdigit():
        return (0, int(version), "")
    return (1, 0, version)


@dataclass(frozen=True, slots=True)
class Keys:
    """Redis key names under one namespace. Every control-plane key carries the hash tag
    `{ns}` so multi-key atomic writes stay in one Redis Cluster slot."""

    namespace: str = "onnxgate"

    @property
    def prefix(self) -> str:
        return "{" + self.namespace + "}"

    @property
    def models(self) -> str:
        return f"{self.prefix}:models"

    def model(self, name: str) -> str:
        return f"{self.prefix}:model:{name}"

    def versions(self, name: str) -> str:
        return f"{self.prefix}:versions:{name}"

    def version(self, name: str, version: str) -> str:
        return f"{self.prefix}:version:{name}:{version}"

    def measurements(self, name: str, version: str) -> str:
        """Metrics measured on a version after its registration, oldest first."""
        return f"{self.prefix}:measurements:{name}:{version}"

    def route(self, name: str) -> str:
        return f"{self.prefix}:route:{name}"

    def blob(self, sha256: str) -> str:
        return f"{self.prefix}:blob:{sha256}"

    def gateway(self, replica: str) -> str:
        return f"{self.prefix}:gateway:{replica}"

    def reference(self, name: str, version: str) -> str:
        return f"{self.prefix}:reference:{name}:{version}"

    def stats(self, model: str, window: int) -> str:
        """Request statistics of one model and 1-minute window. Tagged per model, not with
        the control-plane tag, so their volume spreads over a Redis Cluster."""
        return "{" + f"{self.namespace}:{model}" + "}" + f":stats:{window}"

    def model_tag(self, model: str) -> str:
        """The hash tag of a model's volume keys (statistics, sketches, predictions)."""
        return "{" + f"{self.namespace}:{model}" + "}"

    def predictions(self, model: str, day: int, bucket: int) -> str:
        """One bucket of a day's prediction log (registry_client/quality/predictions.py)."""
        return f"{self.model_tag(model)}:pred:{day}:{bucket}"

    def prediction_buckets(self, model: str, day: int) -> str:
        """How many buckets the day's prediction log has (set by its first writer)."""
        return f"{self.model_tag(model)}:pred:{day}:buckets"

    def prediction_count(self, model: str, day: int) -> str:
        """Predictions logged on the day, every replica (sizes the next day's buckets)."""
        return f"{self.model_tag(model)}:pred:{day}:count"

    def prediction_guard(self, model: str) -> str:
        """Never written: a prediction write WATCHes it, so that redis-py, finding the
        connection lost, raises rather than sending the transaction again (it may have been
        applied: the writer's own retry reads what it stored first)."""
        return f"{self.model_tag(model)}:pred:guard"

    def predictions_logged(self, model: str, minute: int) -> str:
        """Predictions logged in one minute, a field per `version|role` (label coverage)."""
        return f"{self.model_tag(model)}:pred:logged:{minute}"

    def labels(self, model: str) -> str:
        """The stream of a model's labels, waiting to be joined with their predictions."""
        return f"{self.model_tag(model)}:labels"

    def labels_checkpoint(self, model: str) -> str:
        """The id of the last label-stream entry joined into the quality state."""
        return f"{self.model_tag(model)}:labels:checkpoint"

    def quality(self, model: str, minute: int) -> str:
        """The joined quality state of one minute of predictions, a field per joiner."""
        return f"{self.model_tag(model)}:quality:{minute}"

    def quality_segments(self, model: str, dimension: str) -> str:
        """The values of a segment dimension kept apart (the rest count as __other__)."""
        return f"{self.model_tag(model)}:quality:segments:{dimension}"

    def quality_applied(self, model: str, day: int) -> str:
        """The label applied per prediction id, for the predictions of one day."""
        return f"{self.model_tag(model)}:quality:applied:{day}"

    def quality_counts(self, model: str) -> str:
        """Labels joined, replaced, unmatched (per reason) and late, every joiner."""
        return f"{self.model_tag(model)}:quality:counts"

    def rollout(self, name: str) -> str:
        return f"{self.prefix}:rollout:{name}"

    @property
    def rollouts(self) -> str:
        """The set of models that have a rollout document."""
        return f"{self.prefix}:rollouts"

    @property
    def label_joiner(self) -> str:
        """The lease of the gateway that joins every model's labels."""
        return f"{self.prefix}:label-joiner"

    @property
    def rollout_leader(self) -> str:
        """The lease of the gateway whose controller drives rollouts."""
        return f"{self.prefix}:rollout-leader"

    def quality_events(self, model: str) -> str:
        """The episodes of a model's quality events: a field per subject, and the end of the
        window judged last. Control-plane tagged: written with the lease check and the audit."""
        return f"{self.prefix}:quality-events:{model}"

    def audit(self, model: str) -> str:
        """The model's audit stream. Control-plane tagged: written in the transaction of the
        change it records."""
        return f"{self.prefix}:audit:{model}"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"
