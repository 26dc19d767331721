"""Names, key layout and documents of the registry; validation with messages naming the field.

Shared by the registry client and the gateway (which may import this module, never the client).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "BLOB_SCHEME",
    "MAX_ACTOR_CHARS",
    "MAX_REASON_CHARS",
    "MAX_ROUTE_VERSIONS",
    "MAX_RULE_DOCUMENT_BYTES",
    "MAX_WEIGHT",
    "NAME_PATTERN",
    "NAME_RULE",
    "InvalidRule",
    "Keys",
    "RouteRule",
    "SchemaError",
    "Shadow",
    "Split",
    "default_data_dir",
    "is_unsafe_character",
    "is_valid_name",
    "private_redis_url",
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
MAX_ROUTE_VERSIONS = 16  # versions named by one rule (split and shadows together)
# Weights are relative. Sticky routing resolves shares to 1/10,000 (the gateway's 10,000
# buckets), so a finer weight changes nothing; a huge one only loses precision in the float
# an unkeyed request's draw is multiplied by (or overflows it).
MAX_WEIGHT = 10_000
MAX_REASON_CHARS = 500
MAX_ACTOR_CHARS = 100
# A rule is a few hundred bytes; anything far larger is not one, and is refused unparsed.
MAX_RULE_DOCUMENT_BYTES = 64 * 1024
PRIVATE_SOCKET_NAME = "redis.sock"
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


def _shown(value: object, limit: int = 40) -> str:
    """repr(value), cut short: an error message quotes a bad value, not all of it."""
    if isinstance(value, int) and value.bit_length() > 128:  # repr() may refuse to write it
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def text_problem(text: object, max_chars: int) -> str | None:
    """What is wrong with text an operator wrote (a reason, who acts), or None when nothing."""
    if not isinstance(text, str):
        return f"expected text, got {_shown(text)}"
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


def default_data_dir(env: Mapping[str, str]) -> Path:
    """Where a gateway started without --redis-url keeps its private Redis; gatectl looks
    for it there too."""
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", ".")) / ".local" / "share")
    return Path(base) / "onnxgate"


def private_redis_url(data_dir: Path) -> str:
    """The unix-socket URL of the private Redis in a data directory."""
    return f"unix://{data_dir / PRIVATE_SOCKET_NAME}"


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

    def rollout(self, name: str) -> str:
        return f"{self.prefix}:rollout:{name}"

    @property
    def rollouts(self) -> str:
        """The set of models that have a rollout document."""
        return f"{self.prefix}:rollouts"

    @property
    def rollout_leader(self) -> str:
        """The lease of the gateway whose controller drives rollouts."""
        return f"{self.prefix}:rollout-leader"

    @property
    def audit(self) -> str:
        return f"{self.prefix}:audit"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"


@dataclass(frozen=True, slots=True)
class Split:
    """One version of the weighted split."""

    version: str
    weight: int


@dataclass(frozen=True, slots=True)
class Shadow:
    """A version mirrored for `percent` of requests; never returned to the caller."""

    version: str
    percent: float


class InvalidRule(NamedTuple):
    """A stored rule document that was refused: why, and the sha256 of its bytes (so the same
    document is reported once however often it is read)."""

    reason: str
    digest: str


@dataclass(frozen=True, slots=True)
class RouteRule:
    """A model's routing rule; `revision` counts committed changes."""

    model: str
    split: tuple[Split, ...]
    shadows: tuple[Shadow, ...] = ()
    sticky: bool = True
    revision: int = 0
    updated_by: str = ""
    updated_at: str = ""
    reason: str = ""

    def validate(self, *, text: bool = True) -> RouteRule:
        """Return self, or raise SchemaError naming the first field that is wrong.

        `text` also checks the characters of `reason` and `updated_by`, as every write does.
        A stored document is read without: a rule is not refused for its comment (gateways
        would keep an older rule), and gatectl escapes such text wherever it prints it."""
        validate_name(self.model, "model")
        if not self.split:
            raise SchemaError("split: expected at least one version")
        seen: set[str] = set()
        for i, entry in enumerate(self.split):
            validate_name(entry.version, f"split[{i}].version")
            weight = entry.weight  # a stored document may hold any JSON value here
            if isinstance(weight, bool) or not isinstance(weight, int):
                raise SchemaError(f"split[{i}].weight: expected an integer, got {_shown(weight)}")
            if not 0 <= weight <= MAX_WEIGHT:
                raise SchemaError(
                    f"split[{i}].weight: expected >= 0 and <= {MAX_WEIGHT}, got {_shown(weight)}"
                    f" for version {entry.version!r}"
                )
            if entry.version in seen:
                raise SchemaError(f"split[{i}].version: {entry.version!r} appears twice")
            seen.add(entry.version)
        if sum(e.weight for e in self.split) <= 0:
            raise SchemaError("split: weights must have a positive sum")
        for i, shadow in enumerate(self.shadows):
            validate_name(shadow.version, f"shadows[{i}].version")
            if shadow.version in seen:
                raise SchemaError(
                    f"shadows[{i}].version: {shadow.version!r} is already in the split or"
                    " shadowed; a version is either served or shadowed, once"
                )
            seen.add(shadow.version)
            percent = shadow.percent  # a stored document may hold any JSON value here
            is_number = isinstance(percent, int | float) and not isinstance(percent, bool)
            if not (is_number and 0 <= percent <= 100):
                raise SchemaError(
                    f"shadows[{i}].percent: expected a number from 0 to 100, got {percent!r}"
                )
        if len(seen) > MAX_ROUTE_VERSIONS:
            raise SchemaError(
                f"a rule names at most {MAX_ROUTE_VERSIONS} versions, got {len(seen)}"
            )
        if text:
            validate_reason(self.reason)
            if self.updated_by:
                validate_actor(self.updated_by, "updated_by")
        elif len(self.reason) > MAX_REASON_CHARS:
            raise SchemaError(f"reason: expected at most {MAX_REASON_CHARS} characters")
        return self

    @property
    def versions(self) -> list[str]:
        """Every version the rule names, split first."""
        return [e.version for e in self.split] + [s.version for s in self.shadows]

    def to_json(self) -> str:
        """The stored document."""
        return json.dumps(
            {
                "model": self.model,
                "revision": self.revision,
                "split": [{"version": e.version, "weight": e.weight} for e in self.split],
                "shadows": [{"version": s.version, "percent": s.percent} for s in self.shadows],
                "sticky": self.sticky,
                "updated_by": self.updated_by,
                "updated_at": self.updated_at,
                "reason": self.reason,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> RouteRule:
        """Parse and validate a stored document; SchemaError names what is wrong."""
        if len(text) > MAX_RULE_DOCUMENT_BYTES:
            raise SchemaError(
                f"route document: {len(text)} bytes, expected at most {MAX_RULE_DOCUMENT_BYTES}"
            )
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise SchemaError(f"route document is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise SchemaError("route document: expected a JSON object")
        try:
            rule = cls(
                model=str(doc["model"]),
                split=tuple(Split(str(e["version"]), e["weight"]) for e in doc["split"]),
                shadows=tuple(
                    Shadow(str(s["version"]), s["percent"]) for s in doc.get("shadows", [])
                ),
                sticky=bool(doc.get("sticky", True)),
                revision=int(doc.get("revision", 0)),
                updated_by=str(doc.get("updated_by", "")),
                updated_at=str(doc.get("updated_at", "")),
                reason=str(doc.get("reason", "")),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise SchemaError(f"route document: missing or malformed field {exc}") from exc
        return rule.validate(text=False)
