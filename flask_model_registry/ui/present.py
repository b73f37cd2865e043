"""What the console shows of a version: rows of the registry table, human times and sizes, scalar
metrics, flags, and the flattened metadata the diff page compares."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape

from ..registry import Entry, Snapshot
from ..rollout import canary_label
from ..routing import weight_of
from ..trail import CANARY
from .cells import (
    MISSING,
    Cell,
    json_text,
    metric_cell,
    odd,
    plain,
    sha_cell,
    size_cell,
    text_cell,
    time_cell,
)

#: The most metric columns the registry table shows (the most common names first).
MAX_METRIC_COLUMNS = 12
_MISSING = object()


def metadata_etag(metadata: Mapping[str, Any]) -> str:
    """A fingerprint of a version's metadata: forms carry it, and a write refuses a changed one."""
    canonical = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def scalar_metrics(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The number, string and boolean values of a top-level ``metrics`` object."""
    metrics = metadata.get("metrics") if metadata is not None else None
    if not isinstance(metrics, dict):
        return {}
    return {k: v for k, v in metrics.items() if isinstance(v, (str, int, float, bool))}


def flags(metadata: Mapping[str, Any] | None) -> list[Cell]:
    """Boolean flags that are set, and the canary as ``canary`` or ``canary 0.3``; a canary value
    routing refuses is shown as itself, marked: that version is no canary."""
    if metadata is None:
        return []
    found = [Cell(k) for k, v in sorted(metadata.items()) if v is True and k != CANARY]
    label = canary_label(metadata)
    if label is not None:
        refused = weight_of(dict(metadata), 1.0) is False
        why = "not a canary: 'canary' must be true or a number in (0, 1]" if refused else ""
        found.append(Cell(label, odd=refused, why=why))
    return sorted(found, key=lambda cell: cell.text)


def boolean_keys(metadata: Mapping[str, Any]) -> list[str]:
    """Every top-level key holding a boolean (true or false), and ``canary`` whatever it holds."""
    return sorted(k for k, v in metadata.items() if isinstance(v, bool) or k == CANARY)


def metric_columns(snapshot: Snapshot) -> tuple[str, ...]:
    """The metric names the registry table has columns for: the most common ones, then by name."""

    def compute() -> tuple[str, ...]:
        counts = Counter(name for entry in snapshot.entries for name in scalar_metrics(entry.metadata))
        ranked = sorted(counts, key=lambda name: (-counts[name], name))[:MAX_METRIC_COLUMNS]
        return tuple(sorted(ranked))

    return snapshot.memo(("ui", "metric-columns"), compute)


def stage_names(snapshot: Snapshot) -> list[str]:
    """Every stage some version is in (string stages only), sorted."""
    return snapshot.memo(("ui", "stages"), lambda: sorted(s for s in snapshot.stages if isinstance(s, str)))


def in_stage(snapshot: Snapshot, stage: str) -> tuple[Entry, ...]:
    """The entries of one stage, ascending (computed once per registry state and known stage)."""
    if stage not in snapshot.stages:  # no memo entry per made-up stage name
        return ()
    return snapshot.memo(
        ("ui", "in-stage", stage), lambda: tuple(e for e in snapshot.entries if e.stage == stage)
    )


@dataclass(frozen=True)
class Row:
    """One version in the registry table: each value as its cell shows it."""

    version: str
    error: str | None
    stage: object
    flags: list[Cell]
    created: Cell
    size: Cell
    sha256: Cell
    metrics: dict[str, Cell]
    prerelease: bool
    roles: list[tuple[str, str]]  # (stage, role) as rollout.roles tells
    signature: Markup  # the signature status badge (see signature_badge)

    @property
    def badges(self) -> Markup:
        """The flags as badges (a canary value routing refuses: marked)."""
        return Markup(" ").join(_badge(flag) for flag in self.flags)

    @property
    def marks(self) -> Markup:
        """What the version does for each stage it plays a part in (see :data:`ROLES`)."""
        return Markup("").join(_mark(stage, role, self.stage) for stage, role in self.roles)


#: Each role of :func:`~flask_model_registry.rollout.roles`: its marker's CSS class, and its tooltip.
ROLES = {
    "serving": ("serving", "route(stage='{stage}') serves this version"),
    "canary": ("canary", "takes a share of stage {stage}'s traffic"),
    "older": ("older", "an older holder of stage {stage}: a newer version serves it"),
    "not serving": ("idle", "in stage {stage}, but route() leaves it out (a prerelease, a bad canary value)"),
}


def _badge(flag: Cell) -> Markup:
    why = f' title="{escape(flag.why)}"' if flag.why else ""
    return Markup(f'<span class="badge flag{" odd" if flag.odd else ""}"{why}>{escape(flag.text)}</span>')


def _mark(stage: str, role: str, own_stage: object) -> Markup:
    css, why = ROLES[role]
    text = role if stage == own_stage else f"{role} of {stage}" if role == "canary" else f"{role} {stage}"
    title = escape(why.format(stage=stage))
    return Markup(f' <span class="role {css}" title="{title}">{escape(text)}</span>')


#: What each signature status means, for its badge's tooltip.
SIGNATURES = {
    "verified": "model.sig verifies with a trusted key, over this artefact",
    "unsigned": "no model.sig",
    "untrusted": "model.sig is well formed, but no trusted key verifies it",
    "invalid": "model.sig is damaged, altered, or lists other files or bytes",
}


def signature_badge(signature: Mapping[str, Any]) -> Markup:
    """A version's signature status as a badge; its tooltip says what it means and which key."""
    status = str(signature.get("status"))
    why = SIGNATURES.get(status, "")
    if signature.get("key"):
        why += f" (key sha256:{signature['key']})"
    return Markup(
        f'<span class="badge sig sig-{escape(status)}" title="{escape(why)}">{escape(status)}</span>'
    )


def row(
    entry: Entry, now: datetime, roles: Mapping[str, list[tuple[str, str]]], signature: Mapping[str, Any]
) -> Row:
    """The registry-table row of a version (a broken one has its error and signature, nothing else)."""
    metadata = entry.metadata
    prerelease = entry.key[3] == 0
    badge = signature_badge(signature)
    if metadata is None:
        return Row(entry.version, entry.error, None, [], MISSING, MISSING, MISSING, {}, prerelease, [], badge)
    artifact = metadata.get("artifact")
    facts: Mapping[str, Any] = artifact if isinstance(artifact, dict) else {}
    metrics = metadata.get("metrics")
    return Row(
        version=entry.version,
        error=None,
        stage=metadata.get("stage"),
        flags=flags(metadata),
        created=time_cell(metadata.get("created_at"), now),
        size=size_cell(facts.get("size"))
        if artifact is None or facts is artifact
        else odd(artifact, "not an object"),
        sha256=sha_cell(facts.get("sha256")),
        metrics={k: metric_cell(v) for k, v in metrics.items()} if isinstance(metrics, dict) else {},
        prerelease=prerelease,
        roles=roles.get(entry.version, []),
        signature=badge,
    )


def artifact_facts(metadata: Mapping[str, Any], now: datetime) -> dict[str, Cell]:
    """The version page's facts about the artefact, each as its own cell."""
    artifact = metadata.get("artifact")
    facts: Mapping[str, Any] = artifact if isinstance(artifact, dict) else {}
    tools = (("cloudpickle", facts.get("cloudpickle_version")), ("Python", facts.get("python_version")))
    written = [
        f"{tool} {value if isinstance(value, str) else json_text(value, 40)}"
        for tool, value in tools
        if value is not None
    ]
    created = metadata.get("created_at")
    return {
        "created": time_cell(created, now),
        "created_text": plain(created) if isinstance(created, str) else MISSING,
        "artifact": odd(artifact, "not an object")
        if artifact is not None and facts is not artifact
        else MISSING,
        "file": text_cell(facts.get("file")),
        "size": size_cell(facts.get("size")),
        "sha256": sha_cell(facts.get("sha256"), False),
        "serializer": text_cell(facts.get("serializer")),
        "written_with": plain(", ".join(written)) if written else MISSING,
    }


#: A key that needs no quoting in a shown path: it cannot be read as two keys, nor as a quoted one.
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def flatten(value: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Nested objects as paths of keys (a tuple: the top-level key ``"metrics.auc"`` and the nested
    ``metrics`` → ``auc`` stay apart); arrays, scalars and empty objects are leaves."""
    if isinstance(value, dict) and (value or not path):
        found: dict[tuple[str, ...], Any] = {}
        for key, item in value.items():
            found.update(flatten(item, (*path, key)))
        return found
    return {path: value}


def path_text(path: tuple[str, ...]) -> str:
    """A path as the diff shows it, one reading only: ``metrics.auc`` for nested keys, each key
    that holds anything but letters, digits, ``_`` and ``-`` as a JSON string (``"metrics.auc"``)."""
    return ".".join(key if _BARE_KEY.fullmatch(key) else json_text(key) for key in path)


@dataclass(frozen=True)
class DiffLine:
    """One metadata path in the diff: its value on each side (absent: ``None`` with ``has_*`` False)."""

    path: str
    left: str | None
    right: str | None
    changed: bool


def diff(left: Mapping[str, Any], right: Mapping[str, Any]) -> list[DiffLine]:
    """Every path of either side's metadata, sorted, its values shown as JSON, changed ones marked."""
    flat_left, flat_right = flatten(dict(left)), flatten(dict(right))
    lines = []
    for path in sorted({*flat_left, *flat_right}):
        a, b = flat_left.get(path, _MISSING), flat_right.get(path, _MISSING)
        shown_a = None if a is _MISSING else json_text(a)
        shown_b = None if b is _MISSING else json_text(b)
        lines.append(DiffLine(path_text(path), shown_a, shown_b, shown_a != shown_b))
    return lines
