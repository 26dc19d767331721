"""Bearer tokens and their scopes, read once from a file; compared in constant time.

The file has one token per line, `NAME SCOPES TOKEN`, with scopes separated by commas, e.g.

    payments   infer          7f3c...   # services calling ModelInfer
    deployer   infer,admin    c01d...
    labeller   feedback       5e8a...   # sends labels (PutLabels), nothing else
    prometheus metrics        9a2b...

Blank lines and `#` comments are ignored. The name is what logs show; the token never is.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MIN_TOKEN_CHARS", "SCOPES", "TokenError", "TokenTable"]

SCOPES = frozenset({"infer", "admin", "metrics", "feedback"})
MIN_TOKEN_CHARS = 16  # a guessable token is no token: refuse short ones at start-up
_BEARER = "bearer "


class TokenError(ValueError):
    """Raised for a tokens file that cannot be used; the message names the line."""


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    scopes: frozenset[str]
    digest: bytes


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TokenTable:
    """Who a bearer token belongs to and what it may do."""

    def __init__(self, entries: list[_Entry]) -> None:
        self._entries = tuple(entries)

    @classmethod
    def load(cls, path: Path) -> TokenTable:
        """Parse the tokens file; TokenError says which line is wrong and why."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(f"{path}: cannot read tokens: {exc}") from exc
        entries: list[_Entry] = []
        names: set[str] = set()
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            where = f"{path}:{number}"
            if len(fields) != 3:
                raise TokenError(f"{where}: expected NAME SCOPES TOKEN, got {len(fields)} fields")
            name, scope_list, token = fields
            scopes = frozenset(scope_list.split(","))
            if not scopes <= SCOPES:
                unknown = ",".join(sorted(scopes - SCOPES))
                raise TokenError(
                    f"{where}: unknown scope {unknown!r}; expected some of {sorted(SCOPES)}"
                )
            if len(token) < MIN_TOKEN_CHARS:
                raise TokenError(
                    f"{where}: token of {name!r} is {len(token)} characters;"
                    f" expected at least {MIN_TOKEN_CHARS}"
                )
            if name in names:
                raise TokenError(f"{where}: name {name!r} appears twice")
            names.add(name)
            entries.append(_Entry(name, scopes, _digest(token)))
        if not entries:
            raise TokenError(f"{path}: no tokens; expected lines of NAME SCOPES TOKEN")
        return cls(entries)

    def identify(self, authorization: str | None) -> tuple[str, frozenset[str]] | None:
        """(name, scopes) of the caller whose `authorization` value is `Bearer <token>`, or
        None. Every entry is compared, so the time taken does not tell how close a guess was."""
        if authorization is None or not authorization[: len(_BEARER)].lower() == _BEARER:
            return None
        presented = _digest(authorization[len(_BEARER) :].strip())
        found: _Entry | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, presented):
                found = entry
        return None if found is None else (found.name, found.scopes)
