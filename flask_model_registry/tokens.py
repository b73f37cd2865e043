"""Named tokens (``MODEL_REGISTRY_TOKENS``): who a bearer token is, and what role it holds.

Only the sha256 of each token is configured, so a leaked config grants nothing; a request's token is
hashed and compared with every entry in constant time (``hmac.compare_digest``, no early exit), so
timing tells neither which entry nor how much of it matched.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, InvalidMetadataError
from .metadata import check_stage

TOKENS_KEY = "MODEL_REGISTRY_TOKENS"
#: The roles, each holding the rights of the ones before it.
ROLES = ("reader", "editor", "promoter", "admin")
#: The name ``MODEL_REGISTRY_API_TOKEN`` is known by: one ``admin`` token.
API_TOKEN_NAME = "api"
MAX_NAME_LENGTH = 64
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_ENTRY_KEYS = frozenset({"sha256", "role", "stages"})


@dataclass(frozen=True)
class NamedToken:
    """One configured token: its name (the audit actor), the sha256 of its secret, its role, and
    the stages it may change (None: every stage; only a ``promoter`` may be limited)."""

    name: str
    sha256: str
    role: str
    stages: frozenset[str] | None = None

    def has(self, role: str) -> bool:
        """Whether this token holds ``role`` (or one above it)."""
        return ROLES.index(self.role) >= ROLES.index(role)

    def covers(self, stage: str | None) -> bool:
        """Whether this token may change versions in ``stage`` (no stage always counts as listed)."""
        return stage is None or self.stages is None or stage in self.stages


def hash_token(token: str) -> str:
    """The sha256 (hex) a token is configured by."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh random token (256 bits, URL-safe text) and its sha256."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def match(tokens: Iterable[NamedToken], given: str) -> NamedToken | None:
    """The token whose sha256 is the hash of ``given``, compared with every entry in constant time."""
    digest = hash_token(given).encode()
    found = None
    for token in tokens:
        if hmac.compare_digest(digest, token.sha256.encode()):
            found = token
    return found


def check_token_name(name: Any) -> str:
    """``name`` if it can name a token (it is recorded as the audit actor), else a ValueError."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH or not name.isprintable():
        raise ValueError(f"a token name is 1 to {MAX_NAME_LENGTH} printable characters, not {name!r}")
    if name != name.strip():
        raise ValueError(f"a token name has no spaces around it: {name!r}")
    return name


def _entry(name: Any, spec: Any) -> dict[str, Any]:
    """One checked entry of ``MODEL_REGISTRY_TOKENS``, normalised: lowercase sha256, stages a list."""
    try:
        check_token_name(name)
    except ValueError as exc:
        raise ConfigError(TOKENS_KEY, f"{TOKENS_KEY}: {exc}") from None
    where = f"{TOKENS_KEY}[{name!r}]"
    if not isinstance(spec, Mapping):
        raise ConfigError(TOKENS_KEY, f"{where} must be an object with 'sha256' and 'role'")
    unknown = sorted(map(repr, set(spec) - _ENTRY_KEYS))
    if unknown:
        raise ConfigError(
            TOKENS_KEY, f"{where}: unknown key {', '.join(unknown)} (known: sha256, role, stages)"
        )
    sha = spec.get("sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise ConfigError(
            TOKENS_KEY,
            f"{where}['sha256'] must be the 64 hex digits of the token's sha256"
            " (flask models token new prints it; never the token itself)",
        )
    role = spec.get("role")
    if role not in ROLES:
        raise ConfigError(TOKENS_KEY, f"{where}['role'] must be one of {', '.join(ROLES)}, not {role!r}")
    entry: dict[str, Any] = {"sha256": sha.lower(), "role": role}
    if spec.get("stages") is not None:
        entry["stages"] = _stages(where, role, spec["stages"])
    return entry


def _stages(where: str, role: str, stages: Any) -> list[str]:
    if role != "promoter":
        raise ConfigError(
            TOKENS_KEY, f"{where}['stages'] limits a promoter; role {role} {_WITHOUT_STAGES[role]}"
        )
    if not isinstance(stages, (list, tuple)) or not all(isinstance(s, str) for s in stages):
        raise ConfigError(TOKENS_KEY, f"{where}['stages'] must be a list of stage names")
    try:
        return [check_stage(stage, None) for stage in stages]
    except InvalidMetadataError as exc:
        raise ConfigError(TOKENS_KEY, f"{where}['stages']: {exc}") from None


_WITHOUT_STAGES = {
    "reader": "changes no stage",
    "editor": "changes no stage",
    "admin": "may change every stage",
}


def parse_tokens(value: Any) -> dict[str, dict[str, Any]]:
    """``MODEL_REGISTRY_TOKENS``, a mapping (or its JSON text, from the environment) name →
    ``{"sha256", "role", "stages"?}``: the checked entries; a :class:`ConfigError` naming the first
    bad one. Two names may not share a token."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigError(TOKENS_KEY, f"{TOKENS_KEY} is not valid JSON ({exc})") from None
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            TOKENS_KEY, f"{TOKENS_KEY} must map token names to objects, not {type(value).__name__}"
        )
    entries = {name: _entry(name, spec) for name, spec in value.items()}
    seen: dict[str, str] = {}
    for name, entry in entries.items():
        if entry["sha256"] in seen:
            raise ConfigError(
                TOKENS_KEY, f"{TOKENS_KEY}: {seen[entry['sha256']]!r} and {name!r} have the same sha256"
            )
        seen[entry["sha256"]] = name
    return entries


def token_table(entries: Mapping[str, Mapping[str, Any]], api_token: str | None) -> list[NamedToken]:
    """Every token a request may carry: the named ones, and ``MODEL_REGISTRY_API_TOKEN`` as the
    ``admin`` named ``api``."""
    table = [
        NamedToken(name, e["sha256"], e["role"], frozenset(e["stages"]) if "stages" in e else None)
        for name, e in parse_tokens(entries).items()
    ]
    if api_token is not None:
        if any(token.name == API_TOKEN_NAME for token in table):
            raise ConfigError(
                TOKENS_KEY,
                f"{TOKENS_KEY}: the name {API_TOKEN_NAME!r} is MODEL_REGISTRY_API_TOKEN's; choose another",
            )
        table.append(NamedToken(API_TOKEN_NAME, hash_token(api_token), "admin"))
    return table
